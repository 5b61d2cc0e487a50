r"""Sparsifiers: keep k of the d coordinates, send their values and indices.

* :class:`TopK`: the k coordinates of largest ``|x_j|``, ``top_k(x)``. Keeping the largest
  ones leaves at most the average share of ``||x||^2`` behind, so
  ``||top_k(x) - x||^2 <= (1 - k/d) ||x||^2``: ``omega = k/d``, deterministic, biased.
* :class:`RandK`: k coordinates drawn uniformly without replacement (from the seed, per node
  and step). Unscaled (the paper's ``rand_k``, biased): each coordinate is kept with
  probability k/d, so ``E||rand_k(x) - x||^2 = (1 - k/d) ||x||^2`` exactly: ``omega = k/d``.
  ``unbiased=True`` scales the kept values by d/k (``E Q(x) = x``), with
  ``E||Q(x) - x||^2 = (d/k - 1) ||x||^2``: ``omega = 2 - d/k`` (not contractive for
  ``k <= d/2``); its :meth:`~RandK.contractive` version is the unscaled one (``Q / tau``
  with ``tau = d/k``).

Message (``(*lead, k (itemsize + index bytes))``): the k values in the vector's dtype, then the
k indices in the smallest integer dtype holding ``0 .. d-1`` (uint8 up to d = 256, int16 up to
2^15, int32 beyond). ``k`` is a count or ``ratio=`` a fraction of d (``k = max(1,
round(ratio d))``; top-1% is ``TopK(ratio=0.01)``).
"""

from __future__ import annotations

import numbers

import torch

from declearn.compress.base import Compressor, _itemsize, check_dim
from declearn.compress.message import bytes_to_values, index_dtype, join, split, values_to_bytes
from declearn.compress.rng import _shr, random_bits

__all__ = ["TopK", "RandK"]


class _Sparsifier(Compressor):
    """k values and their indices; subclasses choose the indices."""

    def __init__(self, k: int | None = None, *, ratio: float | None = None, seed: int = 0):
        super().__init__(seed=seed)
        kind = type(self).__name__
        if (k is None) == (ratio is None):
            raise ValueError(f"{kind} needs exactly one of k (coordinates kept) or ratio (the "
                             f"fraction of d kept, e.g. {kind}(ratio=0.01) for 1%).")
        if k is not None and (isinstance(k, bool) or not isinstance(k, numbers.Integral)
                              or k < 1):
            raise ValueError(f"{kind}: k must be a positive integer (coordinates kept, "
                             f"1 .. d), got {k!r}.")
        if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, numbers.Real)
                                  or not 0 < ratio <= 1):
            raise ValueError(f"{kind}: ratio must be in (0, 1] (the fraction of the d "
                             f"coordinates kept), got {ratio!r}.")
        self.k_fixed = None if k is None else int(k)
        self.ratio = None if ratio is None else float(ratio)

    def k(self, d: int) -> int:
        """Coordinates kept of a vector of length d; a ValueError if k is not in 1..d."""
        d = check_dim(d)
        if self.k_fixed is None:
            return max(1, round(float(self.ratio or 0.0) * d))
        if self.k_fixed > d:
            raise ValueError(f"{self!r} keeps k={self.k_fixed} coordinates but a node's "
                             f"vector has only d={d}: use k in 1..{d} (or ratio=...).")
        return self.k_fixed

    def omega(self, d: int) -> float:
        return self.k(d) / d

    def bytes(self, d: int, dtype: torch.dtype = torch.float64) -> int:
        k = self.k(d)
        return k * (_itemsize(dtype) + index_dtype(d).itemsize)

    def _indices(self, x: torch.Tensor, k: int, nodes, step: int) -> torch.Tensor:
        raise NotImplementedError

    def _encode(self, x, nodes, step):
        d = x.shape[-1]
        k = self.k(d)
        idx = self._indices(x, k, nodes, step)
        values = torch.gather(x, -1, idx)
        return join(values_to_bytes(values), values_to_bytes(idx.to(index_dtype(d))))

    def _parts(self, message, d, dtype):
        k = self.k(d)
        vb = k * _itemsize(dtype)
        seg_v, seg_i = split(message, (vb, message.shape[-1] - vb))
        values = bytes_to_values(seg_v, dtype)
        idx = bytes_to_values(seg_i, index_dtype(d)).to(torch.int64)
        return values * self._scale(d) if self._scale(d) != 1 else values, idx

    def _scale(self, d: int) -> float:
        return 1.0

    def _decode(self, message, d, dtype):
        values, idx = self._parts(message, d, dtype)
        out = torch.zeros(message.shape[:-1] + (d,), dtype=dtype, device=message.device)
        return out.scatter_(-1, idx, values)

    def accumulate(self, messages, weights, d, dtype):
        """``sum_s weights[..., s] Q_s``, scattering the k weighted values of every slot into
        one dense ``(*lead, d)`` (no dense ``(*lead, S, d)`` in between)."""
        values, idx = self._parts(messages, d, dtype)
        lead = messages.shape[:-2]
        out = torch.zeros(lead + (d,), dtype=dtype, device=messages.device)
        weighted = (weights.to(dtype).unsqueeze(-1) * values).reshape(lead + (-1,))
        return out.scatter_add_(-1, idx.reshape(lead + (-1,)), weighted)

    def __repr__(self) -> str:
        k = f"k={self.k_fixed}" if self.k_fixed is not None else f"ratio={self.ratio:g}"
        extra = ", unbiased=True" if self.unbiased else ""
        seed = f", seed={self.seed}" if self.random and self.seed else ""
        return f"{type(self).__name__}({k}{extra}{seed})"


class TopK(_Sparsifier):
    """The k coordinates of largest magnitude (``omega = k/d``; see the module docstring)."""

    name = "top_k"

    def __init__(self, k: int | None = None, *, ratio: float | None = None):
        super().__init__(k, ratio=ratio)

    def _indices(self, x, k, nodes, step):
        return torch.topk(x.abs(), k, dim=-1, sorted=False).indices


class RandK(_Sparsifier):
    """k coordinates drawn uniformly without replacement, per node and step from ``seed``;
    unscaled by default (the paper's ``rand_k``, ``omega = k/d``), scaled by d/k with
    ``unbiased=True`` (see the module docstring)."""

    name = "rand_k"
    random = True

    def __init__(self, k: int | None = None, *, ratio: float | None = None,
                 unbiased: bool = False, seed: int = 0):
        super().__init__(k, ratio=ratio, seed=seed)
        self.unbiased = bool(unbiased)

    def omega(self, d: int) -> float:
        k = self.k(d)
        return 2.0 - d / k if self.unbiased else k / d

    def _scale(self, d: int) -> float:
        return d / self.k(d) if self.unbiased else 1.0

    def _indices(self, x, k, nodes, step):
        # The k largest of d random keys: a uniformly random k-subset. The keys are the top
        # 63 bits of the draws behind rng.uniform (the same order as those uniforms).
        keys = _shr(random_bits(self.seed, nodes, step, x.shape[-1], device=x.device), 1)
        return torch.topk(keys.expand(x.shape), k, dim=-1, sorted=False).indices

    def contractive(self) -> RandK:
        if not self.unbiased:
            return self
        return RandK(self.k_fixed, ratio=self.ratio, seed=self.seed)
