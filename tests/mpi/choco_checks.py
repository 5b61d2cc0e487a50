"""Compressed gossip (naive, CHOCO-Gossip, CHOCO-SGD): the same iterates under a real mpiexec
as under SimComm, random compressors included.

Run as ``mpiexec -n N python tests/mpi/choco_checks.py`` (N >= 2; the pytest side uses N = 4).
Every rank builds the same topologies, x0 and problems from seeds, runs each method under
MPIComm (the messages travel as their compressed bytes, one ``neighbor_allgather`` per step),
runs it again under SimComm(N) in the same process, and checks:

* its iterate, its copy ``x_hat`` and its running sum ``s`` against row ``rank`` of the
  simulator's (float64, 1e-9; the random compressors draw from ``(seed, node, step)``, so
  both backends draw the same);
* the bytes it sent against the simulator's count for node ``rank``, and against
  ``steps * out_degree * compressor.bytes(d)`` (what really travelled);
* the logged consensus error against the simulator's.

Each rank ends with ``CHOCO-OK rank r of N: <checks> checks, <runs> runs``.
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
import torch

from declearn.algorithms.choco import (
    CHOCOSGD,
    CHOCOGossip,
    CompressedGossip,
    ConsensusStepWarning,
)
from declearn.compress import QSGD, Identity, RandK, Sign, TopK
from declearn.problems import LeastSquares
from declearn.topology import exponential, ring

STEPS = 25
TOL = 1e-9
D = 40


def cases(n: int):
    """``(label, factory(comm, x0), x0, compressor)``: x0 is node-local for SimComm (n, ...)."""
    gen = torch.Generator().manual_seed(11)
    x0 = torch.randn(n, D, generator=gen, dtype=torch.float64)
    x0_3d = torch.randn(n, 4, 5, generator=gen, dtype=torch.float64)
    topo = {"ring": ring(n), "exponential": exponential(n)}
    prob = LeastSquares(n, d=D, m=30, sigma=0.3, seed=5)
    out = []
    for comp, gamma in [(Identity(), 0.9), (TopK(3), 0.05), (RandK(4, seed=3), 0.05),
                        (Sign(), 0.3), (QSGD(4, seed=7), 0.4)]:
        for tname, top in topo.items():
            out.append((f"choco_gossip {comp!r} {tname}",
                        lambda c, x, top=top, comp=comp, g=gamma: CHOCOGossip(
                            c, top, x, compressor=comp, gamma=g), x0, comp))
    out.append(("choco_gossip TopK 3-d x", lambda c, x: CHOCOGossip(
        c, topo["ring"], x, compressor=TopK(2), gamma=0.05), x0_3d, TopK(2)))
    for variant in ("q1", "q2"):
        comp = RandK(5, unbiased=True, seed=1)
        out.append((f"compressed_gossip-{variant}", lambda c, x, v=variant, comp=comp:
                    CompressedGossip(c, topo["ring"], x, compressor=comp, gamma=0.5,
                                     variant=v), x0, comp))
    for comp in (QSGD(8, seed=2), RandK(6, seed=9)):
        out.append((f"choco_sgd {comp!r}", lambda c, x, comp=comp: CHOCOSGD(
            c, prob, topo["exponential"], lr=0.01, compressor=comp, gamma=0.1), None, comp))
    return out


def main():
    from mpi4py import MPI

    from declearn.comm import SimComm
    from declearn.comm.mpi import MPIComm

    warnings.simplefilter("ignore", ConsensusStepWarning)
    world = MPI.COMM_WORLD
    rank, n = world.Get_rank(), world.Get_size()
    checks = [0]

    def check(cond, what):
        checks[0] += 1
        if not cond:
            raise AssertionError(f"rank {rank}: {what}")

    t0 = time.monotonic()
    comm = MPIComm(timeout=30)
    runs = 0
    for label, factory, x0, comp in cases(n):
        sim = SimComm(n)
        comm.reset_traffic()
        alg_mpi = factory(comm, None if x0 is None else x0[rank])
        alg_sim = factory(sim, x0)
        h_mpi = alg_mpi.run(STEPS, log_every=5, progress=False)
        h_sim = alg_sim.run(STEPS, log_every=5, progress=False)
        parts = ("x", "x_hat", "s") if hasattr(alg_sim, "x_hat") else ("x",)
        for part in parts:
            mine, ref = getattr(alg_mpi, part), getattr(alg_sim, part)[rank]
            check(mine.shape == ref.shape, f"{label}: {part} shape {tuple(mine.shape)} vs "
                                           f"{tuple(ref.shape)}")
            err = float((mine - ref).abs().max())
            scale = max(1.0, float(ref.abs().max()))
            check(err <= TOL * scale, f"{label}: MPI and SimComm {part} differ by {err:.3g}")
        out_deg = int(alg_sim.topology.out_degrees[rank])
        d = alg_sim.exchange.d
        sent = float(comm.traffic.bytes)
        check(sent == float(sim.traffic.bytes[rank]),
              f"{label}: MPI sent {sent} bytes, the simulator counts {sim.traffic.bytes[rank]}")
        check(sent == STEPS * out_deg * comp.bytes(d),
              f"{label}: sent {sent} bytes, expected {STEPS} * {out_deg} * {comp.bytes(d)}")
        same = np.allclose(h_mpi["consensus_error"], h_sim["consensus_error"], rtol=1e-8,
                           atol=1e-12)
        check(same, f"{label}: consensus error differs: {h_mpi['consensus_error']} vs "
                    f"{h_sim['consensus_error']}")
        runs += 1
    comm.barrier()
    sys.stdout.write(f"CHOCO-OK rank {rank} of {n}: {checks[0]} checks, {runs} runs, "
                     f"{time.monotonic() - t0:.1f} s\n")
    sys.stdout.flush()


if __name__ == "__main__":
    from harness import run_or_abort  # this folder is sys.path[0] when run as a script

    run_or_abort(main, "CHOCO")
