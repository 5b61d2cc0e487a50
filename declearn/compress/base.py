r"""What a compressor is: ``Q``, the bytes of its message, and its quality ``omega``.

A compressor ``Q`` maps one node's vector ``x`` (length ``d``) to an approximation ``Q(x)``
that is cheap to send. Koloskova, Stich & Jaggi (ICML 2019) measure its quality by the
``omega`` of their compression assumption,

.. math::  E_Q ||Q(x) - x||^2 \le (1 - \omega) ||x||^2 \quad \text{for all } x,

``omega = 1`` meaning no compression; CHOCO needs ``omega > 0`` (a *contractive* ``Q``). An
*unbiased* compressor (``E Q(x) = x``) with ``E||Q(x)||^2 <= tau ||x||^2`` has
``E||Q(x) - x||^2 <= (tau - 1) ||x||^2``, so its omega is ``2 - tau``, at most 0 once
``tau >= 2``: it is not contractive, but ``Q / tau`` is, with ``omega = 1 / tau`` (the
paper's rescaling); :meth:`Compressor.contractive` returns that version.

The message is what really travels (:mod:`declearn.compress.message`): ``compress(x)`` gives a
uint8 tensor ``(*lead, bytes(d, dtype))`` (``lead = (n,)`` under SimComm, ``()`` on a rank)
and ``decompress(message, shape, dtype)`` gives ``Q(x)`` back, ``(*lead, d)``. Random
compressors draw from :func:`declearn.compress.rng.uniform` keyed by ``(seed, node, step)``,
so node i's draws are the same in the simulator and on MPI rank i.

A new compressor subclasses :class:`Compressor` and implements ``_encode``, ``_decode``,
``omega`` and ``bytes``; :meth:`Compressor.compress` and :meth:`Compressor.decompress` check
what they return (dtype and shape) and say what was expected.
"""

from __future__ import annotations

import numbers

import torch

from declearn.compress.message import bytes_to_values, values_to_bytes
from declearn.compress.rng import check_seed

__all__ = ["Compressor", "Identity", "check_dim"]


def check_dim(d) -> int:
    """``d`` (a node's vector length) as a positive int, or a ValueError."""
    if isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1:
        raise ValueError(f"d, the length of a node's vector, must be a positive integer, "
                         f"got {d!r}.")
    return int(d)


def _itemsize(dtype: torch.dtype) -> int:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"Compressors send floating point vectors; dtype must be a floating "
                        f"torch dtype such as torch.float64, got {dtype!r}.")
    return torch.empty((), dtype=dtype).element_size()


class Compressor:
    """Base class: ``compress``, ``decompress``, ``omega(d)``, ``bytes(d, dtype)``.

    Class attributes: ``unbiased`` (``E Q(x) = x``) and ``random`` (draws from the seed).
    """

    name = "compressor"
    unbiased = False
    random = False

    def __init__(self, *, seed: int = 0):
        self.seed = check_seed(seed)

    # ------------------------------------------------------------------ to implement
    def omega(self, d: int) -> float:
        """The worst-case omega over vectors of length d (see the module docstring)."""
        raise NotImplementedError

    def bytes(self, d: int, dtype: torch.dtype = torch.float64) -> int:
        """Bytes of one node's message for a vector of length d and dtype ``dtype``."""
        raise NotImplementedError

    def _encode(self, x: torch.Tensor, nodes, step: int) -> torch.Tensor:
        """uint8 ``(*lead, bytes(d, x.dtype))`` from ``x`` ``(*lead, d)``."""
        raise NotImplementedError

    def _decode(self, message: torch.Tensor, d: int, dtype: torch.dtype) -> torch.Tensor:
        """``Q(x)`` ``(*lead, d)`` from ``message`` ``(*lead, nbytes)``; an all-zero message
        (a padded slot of ``neighbor_allgather``) must decode to zeros."""
        raise NotImplementedError

    # ------------------------------------------------------------------ public, checked
    def compress(self, x: torch.Tensor, *, nodes=None, step: int = 0) -> torch.Tensor:
        """The message of each node's vector ``x[..., :]`` (``x`` of shape ``(d,)`` on a rank,
        ``(n, d)`` in the simulator): a uint8 tensor ``(*lead, bytes(d, x.dtype))``.

        ``nodes``: the node index of each vector (an int, or an int tensor of shape
        ``lead``; default 0 for one vector, ``arange(n)`` for ``(n, d)``) and ``step`` the
        iteration: a random compressor's draws depend on ``(seed, node, step)`` only."""
        if not isinstance(x, torch.Tensor) or x.dim() < 1 or not x.is_floating_point():
            raise TypeError(f"{self!r}.compress needs a floating point tensor (*lead, d), got "
                            f"{type(x).__name__} {getattr(x, 'shape', '')}.")
        d = check_dim(x.shape[-1])
        nodes = self._nodes(x, nodes)
        step = check_seed(step, "step")
        message = self._encode(x, nodes, step)
        want = tuple(x.shape[:-1]) + (self.bytes(d, x.dtype),)
        if not isinstance(message, torch.Tensor) or message.dtype != torch.uint8 \
                or tuple(message.shape) != want:
            got = (f"{message.dtype} {tuple(message.shape)}" if isinstance(message, torch.Tensor)
                   else type(message).__name__)
            raise ValueError(
                f"{type(self).__name__}._encode must return the message as a uint8 tensor of "
                f"shape {want} (the vectors' leading dims, then bytes(d={d}, {x.dtype}) = "
                f"{want[-1]}), got {got}. Lay the message out with "
                "declearn.compress.message (values_to_bytes, pack_bits, join)."
            )
        return message

    def decompress(self, message: torch.Tensor, shape, dtype: torch.dtype = torch.float64
                   ) -> torch.Tensor:
        """``Q(x)`` of shape ``shape = (*lead, d)`` from messages ``(*lead, bytes(d, dtype))``."""
        shape = tuple(int(s) for s in shape)
        if not shape:
            raise ValueError("shape must end with d, the length of a node's vector.")
        d = check_dim(shape[-1])
        want = shape[:-1] + (self.bytes(d, dtype),)
        if not isinstance(message, torch.Tensor) or message.dtype != torch.uint8 \
                or tuple(message.shape) != want:
            raise ValueError(
                f"{self!r}.decompress expects uint8 messages of shape {want} for vectors of "
                f"shape {shape} and {dtype}, got {getattr(message, 'dtype', type(message))} "
                f"{tuple(getattr(message, 'shape', ()))}."
            )
        out = self._decode(message, d, dtype)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != shape or out.dtype != dtype:
            got = (f"{out.dtype} {tuple(out.shape)}" if isinstance(out, torch.Tensor)
                   else type(out).__name__)
            raise ValueError(
                f"{type(self).__name__}._decode must return Q(x) as a {dtype} tensor of shape "
                f"{shape} (the messages' leading dims, then d = {d}), got {got}."
            )
        return out

    def __call__(self, x: torch.Tensor, *, nodes=None, step: int = 0) -> torch.Tensor:
        """``Q(x)``: :meth:`compress` then :meth:`decompress`."""
        return self.decompress(self.compress(x, nodes=nodes, step=step), x.shape, x.dtype)

    def accumulate(self, messages: torch.Tensor, weights: torch.Tensor, d: int,
                   dtype: torch.dtype) -> torch.Tensor:
        """``sum_s weights[..., s] Q_s`` ``(*lead, d)`` from the messages ``(*lead, S, nbytes)``
        of S senders (a ``neighbor_allgather``'s slots) and ``weights`` ``(*lead, S)``.
        This default decompresses every slot; sparse messages scatter instead."""
        q = self.decompress(messages, tuple(messages.shape[:-1]) + (d,), dtype)
        return torch.matmul(weights.unsqueeze(-2), q).squeeze(-2)

    def contractive(self) -> Compressor:
        """The version of this compressor with ``omega > 0`` (itself when it already is)."""
        return self

    def compression_ratio(self, d: int, dtype: torch.dtype = torch.float64) -> float:
        """Uncompressed bytes over message bytes: ``d * itemsize / bytes(d, dtype)``."""
        return check_dim(d) * _itemsize(dtype) / self.bytes(d, dtype)

    def _nodes(self, x: torch.Tensor, nodes):
        if nodes is not None or not self.random:
            return nodes
        if x.dim() == 1:
            return 0
        if x.dim() == 2:
            return torch.arange(x.shape[0], device=x.device)
        raise ValueError(f"{self!r}: pass nodes= (the node index of each vector, shape "
                         f"{tuple(x.shape[:-1])}) for a tensor of shape {tuple(x.shape)}.")

    def __repr__(self) -> str:
        return self.name


class Identity(Compressor):
    """No compression: the message is the vector's raw bytes, ``Q(x) = x``, ``omega = 1``."""

    name = "identity"
    unbiased = True

    def omega(self, d: int) -> float:
        check_dim(d)
        return 1.0

    def bytes(self, d: int, dtype: torch.dtype = torch.float64) -> int:
        return check_dim(d) * _itemsize(dtype)

    def _encode(self, x, nodes, step):
        return values_to_bytes(x)

    def _decode(self, message, d, dtype):
        return bytes_to_values(message, dtype)
