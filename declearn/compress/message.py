r"""A compressed message as the bytes that travel: one uint8 tensor per node.

A compressor turns one node's vector (the last dim ``d`` of a tensor ``(*lead, d)``) into a
message of a fixed number of bytes, a uint8 tensor ``(*lead, nbytes)``; ``lead`` is ``(n,)``
under SimComm (every node's message at once) and ``()`` on an MPI rank, and after a
``neighbor_allgather`` it is ``(n, D_in)`` or ``(D_in,)``. A message is cut into *segments*
laid side by side along the last dim:

* :func:`values_to_bytes` / :func:`bytes_to_values`: ``c`` numbers of a dtype as their
  ``c * itemsize`` raw bytes (floats, indices);
* :func:`pack_bits` / :func:`unpack_bits`: ``m`` codes of ``b`` bits each, packed into
  ``ceil(m b / 8)`` bytes (signs, quantisation levels; the bit layout is in
  :func:`pack_bits`).

:func:`join` puts segments side by side, :func:`split` cuts a message at the segments'
sizes (views, no copy). :func:`index_dtype` is the smallest integer dtype that holds the
indices ``0 .. d-1``.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "values_to_bytes", "bytes_to_values", "pack_bits", "unpack_bits", "join", "split",
    "index_dtype", "packed_size",
]


def index_dtype(d: int) -> torch.dtype:
    """The smallest integer dtype holding ``0 .. d - 1`` (uint8, int16, int32 or int64)."""
    if d <= 1 << 8:
        return torch.uint8
    if d <= 1 << 15:
        return torch.int16
    if d <= 1 << 31:
        return torch.int32
    return torch.int64


def packed_size(m: int, bits: int) -> int:
    """Bytes that ``m`` codes of ``bits`` bits take once packed: ``ceil(m bits / 8)``."""
    return (m * bits + 7) // 8


def values_to_bytes(t: torch.Tensor) -> torch.Tensor:
    """The raw bytes of ``t`` (``(*lead, c)``) as uint8 ``(*lead, c * itemsize)``."""
    if t.dtype == torch.uint8:
        return t
    return t.contiguous().view(torch.uint8)


def bytes_to_values(seg: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The inverse of :func:`values_to_bytes`: uint8 ``(*lead, c * itemsize)`` read as
    ``(*lead, c)`` numbers of ``dtype`` (a view when the bytes are aligned, else a copy)."""
    if dtype == torch.uint8:
        return seg
    size = torch.empty((), dtype=dtype).element_size()
    if seg.shape[-1] % size:
        raise ValueError(f"{seg.shape[-1]} bytes do not hold whole {dtype} values "
                         f"({size} bytes each).")
    try:
        return seg.view(dtype)
    except RuntimeError:  # a segment not aligned to the dtype's size, or strided: copy it
        return seg.clone(memory_format=torch.contiguous_format).view(dtype)


def _shl(t: torch.Tensor, s: int) -> torch.Tensor:
    return torch.bitwise_left_shift(t, s) if s else t.clone()


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes ``(*lead, m)`` in ``0 .. 2^bits - 1`` (any integer or bool dtype; bits <= 16)
    packed into uint8 ``(*lead, ceil(m bits / 8))``.

    Layout, with ``B`` the number of bytes: the bit string is the codes' bit planes one after
    the other (bit ``bits - 1`` of every code, then bit ``bits - 2``, ..., zero padded to
    ``8 B`` bits), and its bit ``t`` is bit ``7 - t // B`` of byte ``t % B``. Every step is an
    operation on contiguous uint8 slices (no interleaving), so packing and unpacking take a
    few fast passes."""
    lead, m = codes.shape[:-1], codes.shape[-1]
    if bits == 1:
        flat = codes.to(torch.uint8)
    else:
        c = codes.to(torch.uint8 if bits <= 8 else torch.int32)
        flat = torch.cat([torch.bitwise_right_shift(c, s).bitwise_and_(1).to(torch.uint8)
                          for s in range(bits - 1, -1, -1)], dim=-1)
    nbytes = packed_size(m, bits)
    pad = nbytes * 8 - m * bits
    if pad:
        flat = torch.cat([flat, flat.new_zeros(lead + (pad,))], dim=-1)
    out = _shl(flat[..., :nbytes], 7)
    for i in range(1, 8):
        out.bitwise_or_(_shl(flat[..., i * nbytes:(i + 1) * nbytes], 7 - i))
    return out


def unpack_bits(packed: torch.Tensor, bits: int, m: int) -> torch.Tensor:
    """The ``m`` codes that :func:`pack_bits` packed into ``packed``: ``(*lead, m)``, uint8 for
    ``bits <= 8``, int32 beyond."""
    flat = torch.cat([torch.bitwise_right_shift(packed, 7 - i).bitwise_and_(1)
                      for i in range(8)], dim=-1)
    if bits == 1:
        return flat[..., :m]
    if bits > 8:
        flat = flat.to(torch.int32)
    out = _shl(flat[..., :m], bits - 1)
    for p in range(1, bits):
        out.bitwise_or_(_shl(flat[..., p * m:(p + 1) * m], bits - 1 - p))
    return out


def join(*segments: torch.Tensor) -> torch.Tensor:
    """uint8 segments ``(*lead, b_s)`` side by side: one new message ``(*lead, sum b_s)``."""
    return torch.cat(segments, dim=-1)


def split(message: torch.Tensor, sizes) -> list[torch.Tensor]:
    """Views of ``message`` cut at the segment ``sizes`` (bytes), in order; a ValueError if
    they do not add up to the message's length."""
    total = math.fsum(sizes)
    if total != message.shape[-1]:
        raise ValueError(f"The segments take {int(total)} bytes, the message holds "
                         f"{message.shape[-1]}.")
    return list(torch.split(message, list(sizes), dim=-1))
