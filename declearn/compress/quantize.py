r"""Quantisers: one scale per node, a few bits per coordinate.

* :class:`Sign`: ``Q(x) = (||x||_1 / d) sign(x)`` (scaled sign, with ``sign(0) = +1``). With
  ``a = ||x||_1 / d`` and ``s_j x_j = |x_j|``, ``||Q(x) - x||^2 = d a^2 - 2 a ||x||_1 + ||x||^2
  = ||x||^2 - ||x||_1^2 / d``: deterministic, biased, ``omega(x) = ||x||_1^2 / (d ||x||_2^2)``,
  at least ``1/d`` (a one-hot x), so ``omega(d) = 1/d``. Message: the scale, then d sign bits.
* :class:`QSGD` with ``s`` levels (Alistarh et al. 2017): ``Q(x) = ||x||_2 sign(x) l / s``
  with the level ``l_j = floor(s |x_j| / ||x||_2 + u_j)``, ``u_j`` uniform on [0, 1) (drawn
  from the seed, per node and step), so ``l_j`` is ``s |x_j| / ||x||`` rounded up or down at
  random and ``E Q(x) = x``; its variance gives ``E||Q(x)||^2 <= tau ||x||^2`` with
  ``tau = 1 + min(d / s^2, sqrt(d) / s)``. ``unbiased=True`` sends that ``Q``
  (``omega = 2 - tau``); the default is the paper's contractive rescaling ``Q / tau``
  (``omega = 1 / tau``), the one CHOCO uses. Message: the scale ``||x|| / (s tau)`` (or
  ``||x|| / s``), then per coordinate its level (``ceil(log2(s + 1))`` bits) and sign (1 bit).
"""

from __future__ import annotations

import math
import numbers

import torch

from declearn.compress.base import Compressor, _itemsize, check_dim
from declearn.compress.message import (
    bytes_to_values,
    join,
    pack_bits,
    packed_size,
    split,
    unpack_bits,
    values_to_bytes,
)
from declearn.compress.rng import uniform

__all__ = ["Sign", "QSGD"]


class Sign(Compressor):
    """``(||x||_1 / d) sign(x)``: one scale and d bits (``omega = 1/d`` worst case; see the
    module docstring)."""

    name = "sign"

    def omega(self, d: int) -> float:
        return 1.0 / check_dim(d)

    @staticmethod
    def omega_of(x: torch.Tensor) -> torch.Tensor:
        """The exact ``omega`` for each vector of ``x``: ``||x||_1^2 / (d ||x||_2^2)``."""
        return x.abs().sum(-1) ** 2 / (x.shape[-1] * (x * x).sum(-1))

    def bytes(self, d: int, dtype: torch.dtype = torch.float64) -> int:
        return _itemsize(dtype) + packed_size(check_dim(d), 1)

    def _encode(self, x, nodes, step):
        scale = x.abs().mean(-1, keepdim=True)
        return join(values_to_bytes(scale), pack_bits(x >= 0, 1))

    def _decode(self, message, d, dtype):
        seg_s, seg_b = split(message, (_itemsize(dtype), message.shape[-1] - _itemsize(dtype)))
        scale = bytes_to_values(seg_s, dtype)
        signs = unpack_bits(seg_b, 1, d).to(dtype).mul_(2.0).sub_(1.0)
        return signs.mul_(scale)


class QSGD(Compressor):
    """Random rounding to ``s`` levels of ``|x_j| / ||x||`` (see the module docstring); the
    paper's contractive ``Q / tau`` by default, the unbiased ``Q`` with ``unbiased=True``."""

    name = "qsgd"
    random = True
    s: int
    level_bits: int

    def __init__(self, s: int, *, unbiased: bool = False, seed: int = 0):
        super().__init__(seed=seed)
        if isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1:
            raise ValueError(f"QSGD: s, the number of quantisation levels, must be an integer "
                             f">= 1 (s = 2^b - 1 uses b bits per level), got {s!r}.")
        self.s = int(s)
        self.unbiased = bool(unbiased)
        self.level_bits = max(1, math.ceil(math.log2(self.s + 1)))

    def tau(self, d: int) -> float:
        """``1 + min(d / s^2, sqrt(d) / s)``: the bound on ``E||Q(x)||^2 / ||x||^2`` of the
        unbiased quantiser."""
        d = check_dim(d)
        return 1.0 + min(d / self.s ** 2, math.sqrt(d) / self.s)

    def omega(self, d: int) -> float:
        return 2.0 - self.tau(d) if self.unbiased else 1.0 / self.tau(d)

    def bytes(self, d: int, dtype: torch.dtype = torch.float64) -> int:
        return _itemsize(dtype) + packed_size(check_dim(d), self.level_bits + 1)

    def _encode(self, x, nodes, step):
        d = x.shape[-1]
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        safe = torch.where(norm > 0, norm, torch.ones_like(norm))
        u = uniform(self.seed, nodes, step, d, device=x.device).to(x.dtype)
        level = torch.floor(x.abs() / safe * self.s + u).clamp_(max=self.s)
        codes = level.mul_(2).add_(x < 0).to(torch.uint8 if self.s < 128 else torch.int32)
        scale = norm / (self.s if self.unbiased else self.s * self.tau(d))
        return join(values_to_bytes(scale), pack_bits(codes, self.level_bits + 1))

    def _decode(self, message, d, dtype):
        size = _itemsize(dtype)
        seg_s, seg_c = split(message, (size, message.shape[-1] - size))
        scale = bytes_to_values(seg_s, dtype)
        codes = unpack_bits(seg_c, self.level_bits + 1, d)
        sign = (codes & 1).to(dtype).mul_(-2.0).add_(1.0)
        return (codes >> 1).to(dtype).mul_(sign).mul_(scale)

    def contractive(self) -> QSGD:
        return QSGD(self.s, seed=self.seed) if self.unbiased else self

    def __repr__(self) -> str:
        extra = ", unbiased=True" if self.unbiased else ""
        seed = f", seed={self.seed}" if self.seed else ""
        return f"QSGD(s={self.s}{extra}{seed})"
