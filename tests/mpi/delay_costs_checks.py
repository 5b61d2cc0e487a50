"""DelayedComm(cost="alpha_beta", clock="virtual") and time_collectives on MPIComm ranks.

Run: ``mpiexec -n 4 python tests/mpi/delay_costs_checks.py``. Every rank's virtual clock equals
the closed forms of declearn.comm.costs (worked out here by hand), after the ring allreduce run
message by message and after one call of each collective; results equal the SimComm ones; and
time_collectives returns finite positive medians on every rank. Prints ``COSTS-OK rank r``.
"""

from __future__ import annotations

import math
import sys

import torch

from declearn.comm import DelayedComm, MPIComm, SimComm, ring_allreduce
from declearn.comm.timing import time_collectives
from declearn.topology import exponential, one_peer_exponential


def main() -> None:
    base = MPIComm()
    rank, n = base.rank, base.size
    comm = DelayedComm(base, latency=1e-3, bandwidth=1e6, cost="alpha_beta", clock="virtual")
    d = 100 * n  # float64: 800 n bytes per node, chunks of 800 bytes
    x = torch.arange(d, dtype=torch.float64) + rank
    stacked = torch.stack([torch.arange(d, dtype=torch.float64) + r for r in range(n)])
    got = ring_allreduce(comm, x)
    ring_cost = 2 * (n - 1) * (1e-3 + 800 / 1e6)
    assert math.isclose(comm.clock, ring_cost, rel_tol=1e-12), (comm.clock, ring_cost)
    assert torch.allclose(got, stacked.sum(0)), "ring_allreduce result"
    before = comm.clock
    exact = comm.allreduce(x, "sum")
    assert math.isclose(comm.clock - before, ring_cost, rel_tol=1e-12)
    assert torch.equal(exact, SimComm(n).allreduce(stacked, "sum")[rank])
    before = comm.clock
    mixed = comm.neighbor_allreduce(x, one_peer_exponential(n).at(1))
    assert math.isclose(comm.clock - before, 1e-3 + 8 * d / 1e6, rel_tol=1e-12)
    sim = SimComm(n).neighbor_allreduce(stacked, one_peer_exponential(n).at(1))[rank]
    assert torch.allclose(mixed, sim, rtol=0, atol=1e-12)
    before = comm.clock
    comm.neighbor_allreduce(x, exponential(n))
    p = (n - 1).bit_length()  # log2 n peers each way for n a power of 2
    assert math.isclose(comm.clock - before, p * (1e-3 + 8 * d / 1e6), rel_tol=1e-12)
    times = time_collectives(base, one_peer_exponential(n), [10, 1000], repeats=2)
    for op, secs in times.seconds.items():
        assert all(0 < s < 5 and math.isfinite(s) for s in secs), (op, secs)
    base.barrier()
    sys.stdout.write(f"COSTS-OK rank {rank} of {n}\n")
    sys.stdout.flush()


if __name__ == "__main__":
    from harness import run_or_abort  # this folder is sys.path[0] when run as a script

    run_or_abort(main, "COSTS")
