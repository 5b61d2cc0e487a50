"""Benchmark: DGD and gradient tracking under SimComm against their gradient evaluations alone.

For each algorithm, topology (ring, static exponential), n (16 .. 4096) and d (1e3, 1e4), the
problem is least squares with ``m`` rows per node, ``f_i(x) = ||A_i x - b_i||^2 / (2m)``, whose
batched gradient (two batched mat-vecs over ``A`` of shape ``(n, m, d)``) is the realistic
cost a step must pay anyway. We time (best of interleaved rounds, wall clock, float64, one
torch thread by default):

* ``alg``: one ``step()`` of the algorithm (gradient, mixing, arithmetic; no metrics);
* ``grad``: ``oracle.grad(x)`` on the same x, as many calls as one step makes (the floor).

and print ``overhead = (alg - grad) / grad``: what communication and the method's own
arithmetic add on top of the gradients (target <= 1.0 for d >= 1e3). Sizes are capped at
``n * m * d <= 1.4e8`` (1.1 GB for A). The problem is defined here rather than taken from
:class:`declearn.problems.LeastSquares`, which solves for x* (a d x d factorisation, and
``n m >= d`` samples): impractical at d = 1e4 and not needed for timing. The gradient formula
is the same.

Usage::

    python bench/bench_algorithms_sim.py            # full run, several minutes
    python bench/bench_algorithms_sim.py --quick    # under a minute
    python bench/bench_algorithms_sim.py --m 1      # the cheapest gradient there is

The machine may be shared: rerun rows that look off (``--n 1024 --d 10000``).
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from declearn.algorithms import DGD, GradientTracking
from declearn.comm.sim import SimComm
from declearn.problems.base import Problem
from declearn.topology import exponential, ring

MAX_A_ELEMENTS = 140_000_000


class BatchedLeastSquares(Problem):
    """``f_i(x) = ||A_i x - b_i||^2 / (2m)`` with Gaussian ``A_i`` (m x d) and ``b_i``; the
    simulator's call (all nodes) uses ``A`` as is, without indexing a copy."""

    name = "least_squares"

    def __init__(self, n: int, d: int, m: int, seed: int = 0):
        super().__init__(n, (d,), seed=seed)
        g = torch.Generator().manual_seed(seed)
        self.A = torch.randn(n, m, d, generator=g, dtype=torch.float64) / math.sqrt(d)
        self.b = torch.randn(n, m, 1, generator=g, dtype=torch.float64)
        self.m = m

    def _data(self, nodes):
        if nodes.numel() == self.n:
            return self.A, self.b
        return self.A[nodes], self.b[nodes]

    def _loss(self, x, nodes):
        A, b = self._data(nodes)
        return 0.5 * (torch.bmm(A, x.unsqueeze(-1)) - b).pow(2).sum((1, 2)) / self.m

    def _grad(self, x, nodes):
        A, b = self._data(nodes)
        r = torch.bmm(A, x.unsqueeze(-1)).sub_(b)
        return torch.bmm(A.transpose(1, 2), r).squeeze(-1).div_(self.m)


ALGORITHMS = {  # name -> (factory, gradient calls per step)
    "dgd-atc": (lambda c, p, t, lr: DGD(c, p, t, lr=lr, variant="atc"), 1),
    "gt-atc": (lambda c, p, t, lr: GradientTracking(c, p, t, lr=lr, variant="atc"), 1),
    "gt-diging": (lambda c, p, t, lr: GradientTracking(c, p, t, lr=lr, variant="diging"), 1),
}
TOPOLOGIES = {"ring": ring, "exponential": exponential}


def best_times(fns: dict, *, reps: int, budget: float) -> dict:
    """Best wall-clock time per call of each function over up to ``reps`` rounds, after a
    warm-up. Rounds interleave the functions (a burst of load from another process hits them
    alike) and time ``inner`` calls at once so that a timed chunk lasts about 5 ms; rounds
    stop early once ``budget`` seconds per function are spent."""
    inner = {}
    for key, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        inner[key] = max(1, int(5e-3 / max(time.perf_counter() - t0, 1e-6)))
    best = dict.fromkeys(fns, math.inf)
    spent = 0.0
    for k in range(reps):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(inner[key]):
                fn()
            dt = time.perf_counter() - t0
            best[key] = min(best[key], dt / inner[key])
            spent += dt
        if k >= 2 and spent > budget * len(fns):
            break
    return best


def bench_row(alg_name, topo_name, n, d, m, *, reps, budget):
    prob = BatchedLeastSquares(n, d, m)
    comm = SimComm(n)
    factory, grads = ALGORITHMS[alg_name]
    alg = factory(comm, prob, TOPOLOGIES[topo_name](n), 1e-3)
    x = alg.x.clone()

    def gradients():
        for _ in range(grads):
            alg.oracle.grad(x)

    best = best_times({"alg": alg.step, "grad": gradients}, reps=reps, budget=budget)
    return best["alg"], best["grad"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer sizes, under a minute")
    ap.add_argument("--n", type=int, nargs="*", help="node counts (default 16 .. 4096)")
    ap.add_argument("--d", type=int, nargs="*", help="dimensions (default 1000 10000)")
    ap.add_argument("--m", type=int, default=8, help="rows of A_i per node (default 8)")
    ap.add_argument("--only", nargs="*", choices=sorted(ALGORITHMS), help="algorithms")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: steadier on a shared machine)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    ns = args.n or ([16, 256, 4096] if args.quick else [16, 64, 256, 1024, 4096])
    ds = args.d or [1000, 10000]
    algs = args.only or list(ALGORITHMS)
    reps, budget = (5, 0.3) if args.quick else (15, 1.0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float64, m = {args.m} "
          "rows per node; times per step in ms; overhead = (alg - grad) / grad (target <= 1)")
    print(f"{'algorithm':<10} {'topology':<12} {'n':>5} {'d':>6} {'alg ms':>9} {'grad ms':>9} "
          f"{'it/s':>8} {'overhead':>9}")
    worst = 0.0
    for d in ds:
        for n in ns:
            if n * d * args.m > MAX_A_ELEMENTS:
                print(f"{'(skipped)':<10} {'':<12} {n:>5} {d:>6}   n*m*d > {MAX_A_ELEMENTS:.2g}")
                continue
            for topo in TOPOLOGIES:
                for name in algs:
                    t_alg, t_grad = bench_row(name, topo, n, d, args.m, reps=reps, budget=budget)
                    over = (t_alg - t_grad) / t_grad
                    worst = max(worst, over)
                    print(f"{name:<10} {topo:<12} {n:>5} {d:>6} {1e3 * t_alg:>9.3f} "
                          f"{1e3 * t_grad:>9.3f} {1 / t_alg:>8.0f} {over:>9.2f}", flush=True)
    print(f"worst overhead: {worst:.2f} (target <= 1.0 for d >= 1e3)")


if __name__ == "__main__":
    main()
