r"""Ring allreduce built from point-to-point messages, so its traffic is counted, not assumed.

``comm.allreduce`` hands the whole job to MPI (or to one ``sum`` in the simulator) and counts
it *as if* it were a ring allreduce. :func:`ring_allreduce` actually runs that algorithm, one
``neighbor_allgather`` on the directed ring ``i -> i + 1`` per step, so ``comm.traffic``
records the messages it really sends. Chapter 00 uses it to reproduce the bandwidth cost of
Patarasuk & Yuan (J. Parallel Distrib. Comput. 69(2), 2009): every node sends
``2 (n - 1) / n * M`` bytes for a vector of ``M`` bytes, which they prove is the least any
allreduce can do.

The algorithm, with the vector of every node cut into n equal chunks ``c_0 .. c_{n-1}`` (zero
padding up to a multiple of n), node i sending only to ``i + 1`` and receiving only from
``i - 1`` (indices mod n):

* **reduce-scatter**, steps ``s = 0 .. n-2``: node i sends its running sum of chunk
  ``(i - s) mod n`` and adds what it receives into its own chunk ``(i - 1 - s) mod n``.
  Afterwards node i holds the complete sum of chunk ``(i + 1) mod n``.
* **allgather**, steps ``s = 0 .. n-2``: node i sends chunk ``(i + 1 - s) mod n`` (complete)
  and overwrites its chunk ``(i - s) mod n`` with the one it receives.

That is ``2 (n - 1)`` messages of ``M / n`` bytes per node. Runs on both backends (node-local
tensors: ``(n, *s)`` under SimComm, ``s`` on a rank); the result equals ``comm.allreduce`` up
to the rounding of a different summation order.
"""

from __future__ import annotations

import functools

import torch

from declearn.comm.base import REDUCE_OPS
from declearn.topology.base import Topology

__all__ = ["directed_ring", "ring_allreduce"]


@functools.lru_cache(maxsize=64)
def directed_ring(n: int) -> Topology:
    """The directed ring ``i -> i + 1 (mod n)``: ``W[i, i - 1] = 1``, no self weight (only its
    links are used: :func:`ring_allreduce` moves data with ``neighbor_allgather``). One object
    per n, so MPIComm reuses its call plans."""
    return Topology.from_circulant(n, {1: 1.0}, name="directed_ring")


def ring_allreduce(comm, x: torch.Tensor, op: str = "sum", *,
                   timeout: float | None = None) -> torch.Tensor:
    """Every node gets ``sum_j x_j`` (``op="sum"``) or the mean (``"mean"``), computed by the
    ring algorithm of the module docstring; every node must call it (it is a collective)."""
    if op not in REDUCE_OPS:
        raise ValueError(f"op must be one of {REDUCE_OPS}, got {op!r}.")
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}.")
    if op == "mean" and not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"op='mean' divides by n, so x must be floating point, got {x.dtype}.")
    n = comm.size
    lead = comm.node_dims
    if tuple(x.shape[:len(lead)]) != lead:
        raise ValueError(f"x must be node-local, shape (n, ...) with n = {n}; got "
                         f"{tuple(x.shape)}.")
    flat = x.reshape(lead + (-1,))
    d = flat.shape[-1]
    size = max(1, -(-d // n))  # chunk length
    buf = torch.zeros(lead + (n * size,), dtype=x.dtype, device=x.device)
    buf[..., :d] = flat
    buf = buf.view(lead + (n, size))
    if n > 1:
        ring = directed_ring(n)
        rank = comm.rank  # an int on a rank, arange(n) under SimComm
        nodes = torch.arange(n, device=x.device) if lead else None

        def chunk(c):  # node-local index -> node-local chunk (a view on a rank)
            return buf[nodes, c] if nodes is not None else buf[c]

        def receive(c):
            got = comm.neighbor_allgather(chunk(c).contiguous(), ring, timeout=timeout)
            return got[:, 0] if nodes is not None else got[0]

        for s in range(n - 1):  # reduce-scatter
            got = receive((rank - s) % n)
            c = (rank - 1 - s) % n
            if nodes is not None:
                buf[nodes, c] += got
            else:
                buf[c] += got
        for s in range(n - 1):  # allgather
            got = receive((rank + 1 - s) % n)
            c = (rank - s) % n
            if nodes is not None:
                buf[nodes, c] = got
            else:
                buf[c] = got
    out = buf.reshape(lead + (n * size,))[..., :d].reshape(x.shape).clone()
    return out.div_(n) if op == "mean" else out
