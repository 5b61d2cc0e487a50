"""Consensus variants, DGD, gradient tracking, push-DIGing, ED, D2, EXTRA: the same iterates
under a real mpiexec as under SimComm.

Run as ``mpiexec -n N python tests/mpi/algorithms_classic_checks.py`` (N >= 2; the pytest
side uses N = 4). Every rank builds the same problems, topologies and x0 from seeds, runs each
algorithm under MPIComm, runs it again under SimComm(N) in the same process, and compares its
own iterate with row ``rank`` of the simulator's (float64, 1e-6; in practice ~1e-14), and the
logged metrics (consensus error, suboptimality, gradient norm, messages) with the simulator's.
Deterministic and stochastic (sigma > 0) problems, static and dynamic topologies.

Each rank ends with ``CLASSIC-OK rank r of N: <checks> checks, <runs> runs``.

The graph builders at the top are imported by tests/test_algorithms_classic.py too; this
module imports mpi4py only in ``main()``.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from declearn.problems import LeastSquares
from declearn.topology import Topology, apply_weights, sequence

STEPS = 30
TOL = 1e-6


# --------------------------------------------------------------------- shared builders
def directed_graph(n: int, rule: str) -> Topology:
    """Directed, not regular: node j sends to j+1, and also to j+3 when j is even. With
    ``rule="uniform_out"`` the weights are column-stochastic (push-sum), with ``"uniform"``
    row-stochastic (each receiver averages what it hears)."""
    edges = [(j, (j + 1) % n) for j in range(n)]
    edges += [(j, (j + 3) % n) for j in range(0, n, 2) if (j + 3) % n not in (j, (j + 1) % n)]
    return apply_weights(n, edges, rule, directed=True, name=f"directed_{rule}")


def directed_one_peer(n: int):
    """Time-varying, directed, one message per node per step, column-stochastic but not
    row-stochastic: at step k even node i sends half its mass to ``i + 2^(k mod tau)``, odd
    node i to ``i + 1`` (tau = ceil(log2 n)); the union over a period contains the directed
    ring, so it is jointly strongly connected."""
    tau = max(1, (n - 1).bit_length())
    i = np.arange(n)
    steps = []
    for k in range(tau):
        dest = np.where(i % 2 == 0, (i + (1 << k)) % n, (i + 1) % n)
        steps.append(Topology.from_coo(
            n, np.concatenate([i, dest]), np.concatenate([i, i]), np.full(2 * n, 0.5),
            name="directed_one_peer", params={"k": k}, stochastic="column",
            allow_disconnected=True))
    return sequence(steps, name="directed_one_peer")


def cases(n: int):
    """``(label, factory(comm))`` for every algorithm configuration compared across backends."""
    import declearn.algorithms as A
    from declearn.topology import exponential, od_equidyn, one_peer_exponential, ring

    det = LeastSquares(n, d=5, m=20, seed=1)
    noisy = LeastSquares(n, d=5, m=20, sigma=0.3, seed=2)
    L = det.smoothness
    lr = 0.3 / L
    x0 = torch.randn(n, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    push, push_dyn = directed_graph(n, "uniform_out"), directed_one_peer(n)
    ring_, lazy_ring = ring(n), ring(n).lazy()
    out = [
        ("average_consensus exp", lambda c, x: A.AverageConsensus(c, exponential(n), x), x0),
        ("push_sum static", lambda c, x: A.PushSumConsensus(c, push, x), x0),
        ("push_sum dynamic", lambda c, x: A.PushSumConsensus(c, push_dyn, x), x0),
        ("ceca 2-port", lambda c, x: A.CECA(c, x, ports=2), x0),
    ]
    if n % 2 == 0:
        out.append(("ceca 1-port", lambda c, x: A.CECA(c, x, ports=1), x0))
    for prob, tag in ((det, "det"), (noisy, "sigma")):
        for v in ("atc", "awc", "cta"):
            out.append((f"dgd-{v} {tag}", lambda c, x, v=v, p=prob: A.DGD(c, p, ring_, lr=lr,
                                                                          variant=v), None))
        for v in ("atc", "diging"):
            out.append((f"gt-{v} {tag}", lambda c, x, v=v, p=prob: A.GradientTracking(
                c, p, ring_, lr=lr if v == "atc" else 0.1 / L, variant=v), None))
        out += [
            (f"push_diging static {tag}", lambda c, x, p=prob: A.PushDIGing(c, p, push, lr=lr),
             None),
            (f"exact_diffusion {tag}", lambda c, x, p=prob: A.ExactDiffusion(c, p, ring_, lr=lr),
             None),
            (f"d2 {tag}", lambda c, x, p=prob: A.D2(c, p, lazy_ring, lr=lr), None),
            (f"extra {tag}", lambda c, x, p=prob: A.EXTRA(c, p, ring_, lr=lr), None),
        ]
    out += [
        ("dgd-atc diminishing", lambda c, x: A.DGD(c, det, ring_, lr=A.diminishing(lr)), None),
        ("dgd-awc one_peer_exp", lambda c, x: A.DGD(c, det, one_peer_exponential(n), lr=lr,
                                                    variant="awc"), None),
        ("gt-atc od_equidyn", lambda c, x: A.GradientTracking(c, noisy, od_equidyn(n, seed=3),
                                                              lr=lr), None),
        ("push_diging dynamic", lambda c, x: A.PushDIGing(c, det, push_dyn, lr=0.1 / L),
         None),
        ("dgd x0 given", lambda c, x: A.DGD(c, det, ring_, lr=lr, x0=x), x0[:, :1].expand(n, 5)
         .contiguous()),
    ]
    return out


# --------------------------------------------------------------------------- the checks
def main():
    from mpi4py import MPI

    from declearn.comm import SimComm
    from declearn.comm.mpi import MPIComm

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
    for label, factory, x0 in cases(n):
        comm.reset_traffic()  # history counts what the communicator sent since its start
        alg_mpi = factory(comm, None if x0 is None else x0[rank])
        alg_sim = factory(SimComm(n), x0)
        h_mpi = alg_mpi.run(STEPS, log_every=10, progress=False)
        h_sim = alg_sim.run(STEPS, log_every=10, progress=False)
        mine, ref = alg_mpi.iterate, alg_sim.iterate[rank]
        check(mine.shape == ref.shape, f"{label}: shape {tuple(mine.shape)} vs {tuple(ref.shape)}")
        err = float((mine - ref).abs().max())
        scale = max(1.0, float(ref.abs().max()))
        check(err <= TOL * scale, f"{label}: MPI and SimComm iterates differ by {err:.3g}")
        for col in ("consensus_error", "suboptimality", "grad_norm", "messages", "bytes"):
            a, b = h_mpi[col], h_sim[col]
            same = np.allclose(a, b, rtol=1e-6, atol=1e-9, equal_nan=True)
            check(same, f"{label}: history {col} differs: MPI {a} vs SimComm {b}")
        check(alg_mpi.k == alg_sim.k == STEPS, f"{label}: iteration counts")
        runs += 1
    comm.barrier()
    sys.stdout.write(f"CLASSIC-OK rank {rank} of {n}: {checks[0]} checks, {runs} runs, "
                     f"{time.monotonic() - t0:.1f} s\n")
    sys.stdout.flush()


if __name__ == "__main__":
    from harness import run_or_abort  # this folder is sys.path[0] when run as a script

    run_or_abort(main, "CLASSIC")
