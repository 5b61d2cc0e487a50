"""Problem oracles under a real mpiexec: each rank's oracle equals row ``rank`` of SimComm's.

Run as ``mpiexec -n N python tests/mpi/problems_checks.py``. Every rank builds the same
problems from their seeds (no communication), binds one oracle to MPIComm and one to
SimComm(N) in the same process, and compares, for several calls in a row: the noisy gradient
``grad`` (same noise for the same (seed, call) on both backends), the exact ``full_grad``,
``loss``, ``x0``, in float64 and float32. It also checks that every rank built bitwise the
same problem (x_star, f_star gathered over MPI). Each rank ends with one line
``PROBLEMS-OK rank r of N: <checks> checks``.
"""

from __future__ import annotations

import sys
import traceback

import numpy as np
import torch
from mpi4py import MPI

from declearn.comm.mpi import MPIComm
from declearn.comm.sim import SimComm
from declearn.problems import LeastSquares, LogisticRegression, RandomQuadratics

world = MPI.COMM_WORLD
RANK, N = world.Get_rank(), world.Get_size()
CHECKS = [0]


def check(cond, what):
    CHECKS[0] += 1
    if not cond:
        raise AssertionError(f"rank {RANK}: {what}")


def close(a, b, tol, what):
    err = (a.double() - b.double()).abs().max().item()
    check(a.shape == b.shape and err <= tol, f"{what}: shapes {tuple(a.shape)} vs "
          f"{tuple(b.shape)}, max error {err:.3g}")


def problems(n):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(97, 6))
    y = (X @ rng.normal(size=6) + 0.3 * rng.normal(size=97) > 0).astype(int)
    return [
        LeastSquares(n, d=6, m=9, heterogeneity=2.0, sigma=0.3, seed=11),
        LeastSquares(n, d=12, m=8, heterogeneity=1.0, seed=12),  # d > m: the A_i form
        LeastSquares(n, d=5, m=8, split="identical", sigma=0.1, seed=13),  # shared data
        LogisticRegression(n, d=7, m=15, heterogeneity=2.0, nonconvex_reg=0.05, sigma=0.2,
                           seed=14),
        LogisticRegression(n, d=4, m=6, split="identical", seed=15),
        LogisticRegression.from_data(X, y, n, partition="dirichlet", alpha=0.3,
                                     balanced=False, sigma=0.1, seed=16),
        RandomQuadratics(n, d=8, heterogeneity=0.5, mu=0.3, r0=4.0, sigma=0.2, seed=17),
    ]


def main():
    comm, sim = MPIComm(timeout=30), SimComm(N, dtype=torch.float64)
    for prob in problems(N):
        same = world.allgather((prob.x_star.numpy().tobytes(), prob.f_star))
        check(all(s == same[0] for s in same), f"{prob!r} differs between ranks")
        mine, ref = prob.on(comm), prob.on(sim)
        close(mine.x0(), ref.x0()[RANK], 0.0, f"{prob!r} x0")
        gen = torch.Generator().manual_seed(99)
        for call in range(4):
            for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
                X = torch.randn((N,) + prob.shape, generator=gen, dtype=torch.float64)
                X = X.to(dtype)
                g, g_ref = mine.grad(X[RANK]), ref.grad(X)
                check(g.dtype == dtype, f"{prob!r} grad dtype {g.dtype}")
                close(g, g_ref[RANK], tol, f"{prob!r} grad, call {call}, {dtype}")
                close(mine.full_grad(X[RANK]), ref.full_grad(X)[RANK], tol,
                      f"{prob!r} full_grad {dtype}")
                loss = mine.loss(X[RANK])
                check(loss.shape == (), f"{prob!r} loss shape {tuple(loss.shape)}")
                close(loss, ref.loss(X)[RANK], tol, f"{prob!r} loss {dtype}")
        want = 8 if prob.sigma > 0 else 0  # only noisy calls draw (and count) noise
        check(mine.calls == ref.calls == want, f"{prob!r} calls {mine.calls} {ref.calls}")
    print(f"PROBLEMS-OK rank {RANK} of {N}: {CHECKS[0]} checks", flush=True)


if __name__ == "__main__":
    try:
        main()
    except BaseException:  # noqa: BLE001 - make every failure loud and end the whole job
        print(f"PROBLEMS-FAIL rank {RANK}:\n{traceback.format_exc()}", file=sys.stderr,
              flush=True)
        world.Abort(1)
