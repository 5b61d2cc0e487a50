r"""Several node-local tensors side by side in one buffer, so that one message carries them.

A node-local tensor has ``comm.node_dims`` in front of one node's value (``(n,)`` in the
simulator, ``()`` on a rank). :func:`pack` flattens each part to ``node_dims + (d_p,)`` and
concatenates them into ``node_dims + (d_1 + d_2 + ...,)``; a ``neighbor_allreduce`` of that
buffer computes ``W [x_1, x_2, ...] = [W x_1, W x_2, ...]`` in one message per neighbor, and
:func:`unpack` gives each part back as a view. Push-sum, gradient tracking and push-DIGing
use them.
"""

from __future__ import annotations

import math

import torch

__all__ = ["node_dims", "pack", "unpack"]


def node_dims(comm) -> int:
    """How many leading dims of a node-local tensor index the node: 1 under SimComm (the node
    dim), 0 on an MPI rank (``len(comm.node_dims)``)."""
    return len(comm.node_dims)


def pack(comm, *parts: torch.Tensor) -> torch.Tensor:
    """Node-local tensors (same dtype and device) side by side in one new buffer of shape
    ``(n, d_1 + d_2 + ...)`` under SimComm, ``(d_1 + d_2 + ...)`` on a rank; a
    ``neighbor_allreduce`` of it mixes every part with the same weights, in one message."""
    p = node_dims(comm)
    return torch.cat([t.reshape(t.shape[:p] + (-1,)) for t in parts], dim=-1)


def unpack(comm, packed: torch.Tensor, shapes) -> list[torch.Tensor]:
    """Views of ``packed`` (from :func:`pack`) with the node-local ``shapes`` of the parts (no
    copy: writing into a view writes into ``packed``)."""
    p = node_dims(comm)
    out, start = [], 0
    for shape in shapes:
        size = math.prod(shape[p:])
        out.append(packed[..., start:start + size].view(shape))
        start += size
    if start != packed.shape[-1]:
        raise ValueError(f"The parts take {start} values per node, the buffer holds "
                         f"{packed.shape[-1]}.")
    return out
