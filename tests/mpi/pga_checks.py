"""Gossip-PGA (declearn.algorithms.GossipPGA and declearn.optim.GossipPGA): the same iterates
under a real mpiexec as under SimComm.

Run as ``mpiexec -n N python tests/mpi/pga_checks.py`` (N >= 2; the pytest side,
tests/test_algorithms_pga.py, uses N = 4). Every rank builds the same problems, topologies and
data from seeds and

* runs the algorithm under MPIComm and again under SimComm(N) in the same process, and
  compares its iterate with row ``rank`` of the simulator's after every step (float64,
  1e-9), the logged metrics and traffic, and that all ranks hold the same model right after
  each global average (bit for bit);
* trains a float64 linear model with the optimizer on its own rows of the data (a seeded
  noise drawn for all ranks and sliced), next to N stacked copies under SimComm, and compares
  the parameters after every ``average()`` (1e-9).

Static, dynamic (one-peer exponential) and random (OD-EquiDyn) topologies, H = 1 to 5, with
and without gradient noise, momentum and ``tau = 2`` for the optimizer. Each rank ends with
``PGA-OK rank r of N: <checks> checks, <runs> runs``.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

STEPS = 17
TOL = 1e-9
D, M = 4, 9


def algorithm_cases(n: int):
    """``(label, factory(comm))`` for the algorithm runs compared across backends."""
    import declearn.algorithms as A
    from declearn.problems import LeastSquares
    from declearn.topology import exponential, od_equidyn, one_peer_exponential, ring

    noisy = LeastSquares(n, d=5, m=20, sigma=0.4, heterogeneity=1.5, seed=2)
    det = LeastSquares(n, d=5, m=20, seed=1)
    lr = 0.3 / det.smoothness
    return [
        ("ring H3 sigma", lambda c: A.GossipPGA(c, noisy, ring(n), lr=lr, period=3)),
        ("ring H1 sigma", lambda c: A.GossipPGA(c, noisy, ring(n), lr=lr, period=1)),
        ("exp H4 det", lambda c: A.GossipPGA(c, det, exponential(n), lr=lr, period=4)),
        ("one-peer exp H5 sigma", lambda c: A.GossipPGA(c, noisy, one_peer_exponential(n),
                                                        lr=lr, period=5)),
        ("od_equidyn H2 sigma diminishing", lambda c: A.GossipPGA(
            c, noisy, od_equidyn(n, seed=3), lr=A.diminishing(lr), period=2)),
        ("ring H > steps sigma", lambda c: A.GossipPGA(c, noisy, ring(n), lr=lr,
                                                       period=STEPS + 1)),
    ]


def optimizer_cases():
    """``(label, factory(params, comm), tau, period)`` for the optimizer runs."""
    import declearn.optim as O
    from declearn.topology import one_peer_exponential, ring

    return [
        ("optim ring H3", lambda ps, c: O.GossipPGA(ps, c, ring(c.size), lr=0.05, period=3),
         1, 3),
        ("optim one-peer exp H2 momentum", lambda ps, c: O.GossipPGA(
            ps, c, one_peer_exponential(c.size), lr=0.05, period=2, momentum=0.9,
            weight_decay=1e-3), 1, 2),
        ("optim ring H2 tau2 nesterov", lambda ps, c: O.GossipPGA(
            ps, c, ring(c.size), lr=0.05, period=2, tau=2, momentum=0.5, nesterov=True), 2, 2),
    ]


def make_data(n: int):
    """Node-specific least-squares data for the optimizer runs: ``X`` (n, M, D), ``y`` (n, M)."""
    g = torch.Generator().manual_seed(11)
    X = torch.randn(n, M, D, generator=g, dtype=torch.float64)
    y = torch.randn(n, M, generator=g, dtype=torch.float64) + torch.arange(n)[:, None]
    return X, y


def train_step(opt, w, X, y, noise):
    """One ``step()`` + ``average()`` on ``0.5 mean((X w - y)^2)`` plus a noise term; ``w``
    is ``(D,)`` on a rank and ``(n, D)`` stacked, X and y the matching rows."""
    opt.zero_grad()
    r = torch.einsum("...md,...d->...m", X, w) - y
    (0.5 * r.pow(2).mean(-1).sum() + (noise * w).sum()).backward()
    opt.step()
    opt.average()


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
    for label, factory in algorithm_cases(n):
        comm.reset_traffic()  # history counts what the communicator sent since its start
        alg_mpi, alg_sim = factory(comm), factory(SimComm(n))
        alg_mpi.run(1, progress=False)  # the first row of each history, then step by step
        alg_sim.run(1, progress=False)
        for k in range(1, STEPS):
            alg_mpi.step()
            alg_sim.step()
            mine, ref = alg_mpi.x, alg_sim.x[rank]
            err = float((mine - ref).abs().max())
            check(err <= TOL * max(1.0, float(ref.abs().max())),
                  f"{label}: MPI and SimComm iterates differ by {err:.3g} at k={k + 1}")
            if alg_mpi.averages_globally(k):
                with comm.untracked():  # not the algorithm's traffic
                    everyone = comm.allgather(mine)
                check(bool((everyone == mine).all()),
                      f"{label}: ranks differ right after the global average at k={k + 1}")
        h_mpi = alg_mpi.run(2, log_every=1, progress=False)
        h_sim = alg_sim.run(2, log_every=1, progress=False)
        for col in ("consensus_error", "suboptimality", "messages", "bytes"):
            a, b = h_mpi[col], h_sim[col]
            check(np.allclose(a, b, rtol=1e-6, atol=1e-9, equal_nan=True),
                  f"{label}: history {col} differs: MPI {a} vs SimComm {b}")
        check(float((alg_sim.x[rank] - alg_sim.x[(rank + 1) % n]).abs().max()) > 0
              or "H1" in label,
              f"{label}: nodes identical, the comparison would prove little")
        runs += 1

    X, y = make_data(n)
    for label, build, tau, period in optimizer_cases():
        w0 = torch.linspace(-1, 1, D, dtype=torch.float64)
        mine = torch.nn.Parameter(w0 + 0.1 * rank)  # the optimizer broadcasts rank 0's
        stacked = torch.nn.Parameter(torch.stack([w0 + 0.1 * r for r in range(n)]))
        opt, opt_sim = build([mine], comm), build([stacked], SimComm(n))
        noise_gen = torch.Generator().manual_seed(3)
        for it in range(1, 4 * tau * period + 2):
            noise = 0.05 * torch.randn(n, D, generator=noise_gen, dtype=torch.float64)
            train_step(opt, mine, X[rank], y[rank], noise[rank])
            train_step(opt_sim, stacked, X, y, noise)
            err = float((mine.detach() - stacked.detach()[rank]).abs().max())
            check(err <= TOL, f"{label}: MPI and stacked SimComm differ by {err:.3g} at {it}")
            if it % (tau * period) == 0:
                with comm.untracked():
                    everyone = comm.allgather(mine.detach())
                check(bool((everyone == mine.detach()).all()),
                      f"{label}: ranks differ right after the global average at {it}")
        check(float((stacked[rank] - stacked[(rank + 1) % n]).detach().abs().max()) > 0,
              f"{label}: ranks identical, the comparison would prove little")
        runs += 1
    comm.barrier()
    sys.stdout.write(f"PGA-OK rank {rank} of {n}: {checks[0]} checks, {runs} runs, "
                     f"{time.monotonic() - t0:.1f} s\n")
    sys.stdout.flush()


if __name__ == "__main__":
    from harness import run_or_abort  # this folder is sys.path[0] when run as a script

    run_or_abort(main, "PGA")
