r"""Slot gathering for :class:`SimComm`'s ``neighbor_allgather`` and ``neighbor_alltoall``.

A node-local tensor ``src`` of shape ``(rows, *s)`` is seen as the matrix of its rows. Both
ops compute ``out[i, t] = src[p(i, t)]`` for a flat source row ``p(i, t)`` precomputed from
the topology, and zero where slot ``t`` of node ``i`` is empty:

* allgather: ``p(i, t) = j``, the t-th in-neighbor of i (ascending, self excluded), for
  ``t < D_in(i)``;
* alltoall: ``p(i, t) = j * D_out + r`` where j is i's t-th in-neighbor and i is j's r-th
  out-neighbor (``m`` of shape ``(n, D_out, *s)`` flattened to ``(n * D_out, *s)``).

The plan (index and empty slots, on the target device) is built once per (topology, device)
in O(nnz) numpy and kept with :meth:`~declearn.topology.base.BaseTopology.memo`; a gather
is then one ``index_select`` and one ``index_fill_``, with no loop over nodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["SlotPlan", "allgather_plan", "alltoall_plan", "gather_slots"]


@dataclass(frozen=True)
class SlotPlan:
    """A gather ``out.view(n * slots, d)[r] = src.view(-1, d)[index[r]]``, then zero rows
    ``empty``. ``slots`` is the largest in-degree (self excluded)."""

    n: int
    slots: int
    index: torch.Tensor
    empty: torch.Tensor


def _in_slots(topology):
    """Off-diagonal entries in CSR order with, for each, its receiver, sender and slot (the
    rank of the sender among the receiver's in-neighbors, ascending); and D_in."""
    rows, cols = topology.rows, topology.indices
    off = rows != cols
    recv, send = rows[off], cols[off]  # sorted by receiver, then sender (canonical CSR)
    deg = np.bincount(recv, minlength=topology.n)
    start = np.concatenate(([0], np.cumsum(deg)[:-1]))
    slot = np.arange(recv.size) - start[recv]
    return recv, send, slot, int(deg.max()) if deg.size else 0


def _out_slots(recv, send, n):
    """For each off-diagonal entry (receiver, sender): the rank of the receiver among the
    sender's out-neighbors (ascending), and D_out."""
    order = np.lexsort((recv, send))
    deg = np.bincount(send, minlength=n)
    start = np.concatenate(([0], np.cumsum(deg)[:-1]))
    slot = np.empty(send.size, dtype=np.int64)
    slot[order] = np.arange(send.size) - start[send[order]]
    return slot, int(deg.max()) if deg.size else 0


def _slot_plan(topology, device, src_index_of_entry, recv, slot, D) -> SlotPlan:
    n = topology.n
    index = np.zeros(n * D, dtype=np.int64)
    dest = recv * D + slot
    index[dest] = src_index_of_entry
    filled = np.zeros(n * D, dtype=bool)
    filled[dest] = True
    return SlotPlan(
        n, D,
        torch.from_numpy(index).to(device),
        torch.from_numpy(np.flatnonzero(~filled)).to(device),
    )


def allgather_plan(topology, device: torch.device) -> SlotPlan:
    """Plan of ``neighbor_allgather``: slot t of node i reads node i's t-th in-neighbor."""

    def build():
        recv, send, slot, D = _in_slots(topology)
        return _slot_plan(topology, device, send, recv, slot, D)

    return topology.memo(("sim.allgather", device), build)


def alltoall_plan(topology, device: torch.device) -> tuple[SlotPlan, int]:
    """Plan of ``neighbor_alltoall`` and D_out: slot t of node i reads message row
    ``j * D_out + r`` where j is i's t-th in-neighbor and i is j's r-th out-neighbor."""

    def build():
        recv, send, slot, D_in = _in_slots(topology)
        out_slot, D_out = _out_slots(recv, send, topology.n)
        return _slot_plan(topology, device, send * D_out + out_slot, recv, slot, D_in), D_out

    return topology.memo(("sim.alltoall", device), build)


def gather_slots(src: torch.Tensor, plan: SlotPlan, tail: tuple) -> torch.Tensor:
    """Gather the rows of ``src`` (shape ``(rows, *tail)``) into a new tensor of shape
    ``(n, slots, *tail)`` following ``plan``; empty slots are zero."""
    flat = src.reshape(src.shape[0], math.prod(tail))
    out = flat.index_select(0, plan.index)
    if plan.empty.numel():
        out.index_fill_(0, plan.empty, 0)
    return out.reshape((plan.n, plan.slots) + tuple(tail))
