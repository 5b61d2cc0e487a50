"""Benchmark: RelaySGD under SimComm.

(a) Against the single-process "academic" RelaySGD of the RelaySGD repository's README
    (Vogels et al., epfml/relaysgd). Its code is *not* part of declearn: this script reads the
    README from the seed file ``seeds/000_345e003a0c594acb.txt`` of the reference folder
    (``$DECLEARN_REFERENCE_DIR``, default ``<repo>/../shared/reference``), extracts the code
    block under "## Academic version of the algorithm" and execs it, with ``task`` / ``world``
    adapters written here. Both run on the same problem from the same start on a chain, with
    the README's fill rule (``RelaySGD(..., fill="own")``); their iterates are checked to agree
    (1e-9) before anything is timed. Prints seconds per step and the speed-up; target >= 50x at
    n = 256, d = 100, growing with n.
    The problem is a cheap separable quadratic, ``f_i(x) = a_i / 2 ||x - c_i||^2``, so that
    the time measured is the algorithm's, not the gradient's.

(b) Iterations per second of ``RelaySGD(SimComm(n), LeastSquares(n, d), chain(n))`` against
    the same number of gradient evaluations alone (the floor: ``oracle.grad(x)``), for
    n = 16 .. 4096 and d = 1e3 (and d = 100 for reference), with m = max(20, 1.5 d / n)
    samples per node (enough for a unique x*). Prints ``overhead = (step - grad) / grad``:
    what the relay communication and the update add; target <= 1 for d >= 1e3.

Timings are the best of a few rounds, with one torch thread (the machine may be shared)::

    python bench/bench_relaysgd.py            # full run, a few minutes
    python bench/bench_relaysgd.py --quick    # under a minute
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path

import torch

from declearn.algorithms import RelaySGD
from declearn.comm import SimComm
from declearn.problems import LeastSquares
from declearn.problems.base import Problem
from declearn.topology import chain

SEED_FILE = "seeds/000_345e003a0c594acb.txt"
SECTION = "## Academic version of the algorithm"


# ---------------------------------------------------------------------- the reference code
def reference_dir() -> Path:
    env = os.environ.get("DECLEARN_REFERENCE_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "reference"


def load_academic_relaysgd():
    """The README's ``relaysgd(task, world, learning_rate, num_steps)``, or None with a reason."""
    path = reference_dir() / SEED_FILE
    if not path.is_file():
        return None, f"{path} not found (set DECLEARN_REFERENCE_DIR to the reference folder)"
    text = path.read_text()
    try:
        readme = json.loads(text)["readme"]
    except (ValueError, KeyError, TypeError):
        readme = text  # a plain README
    start = readme.find(SECTION)
    if start < 0:
        return None, f"no '{SECTION}' section in {path}"
    block = re.search(r"```python\n(.*?)```", readme[start:], re.S)
    if block is None:
        return None, f"no python code block under '{SECTION}' in {path}"
    namespace: dict = {}
    exec(compile(block.group(1), f"{path.name}:academic", "exec"), namespace)
    if "relaysgd" not in namespace:
        return None, "the code block defines no relaysgd()"
    return namespace["relaysgd"], ""


# ---------------------------------------------------------------------- the shared problem
class ScalarQuadratics(Problem):
    """``f_i(x) = a_i / 2 ||x - c_i||^2``: heterogeneous, separable, gradient ``a_i (x - c_i)``."""

    name = "scalar_quadratics"

    def __init__(self, n, d, seed=0):
        super().__init__(n, (d,), seed=seed)
        g = torch.Generator().manual_seed(seed)
        self.a = 0.5 + 0.5 * torch.rand(n, 1, generator=g, dtype=torch.float64)
        self.c = torch.randn(n, d, generator=g, dtype=torch.float64)
        self.x_star = (self.a * self.c).sum(0) / self.a.sum()
        self.f_star = float(self._loss(self.x_star.expand(n, d), torch.arange(n)).mean())

    def _loss(self, x, nodes):
        return 0.5 * self.a[nodes].squeeze(-1) * (x - self.c[nodes]).pow(2).sum(-1)

    def _grad(self, x, nodes):
        if nodes.numel() == self.n:
            return self.a * (x - self.c)
        return self.a[nodes] * (x - self.c[nodes])


class AcademicTask:
    """What the README's code calls ``task``: ``init_state()`` and ``grad(state)``; it records
    the state at each gradient call when ``record`` is set (the code returns nothing)."""

    def __init__(self, problem, record=False):
        self.problem, self.record, self.states = problem, record, []

    def init_state(self):
        return self.problem.initial_point().expand(self.problem.n, -1).clone()

    def grad(self, state):
        if self.record:
            self.states.append(state.clone())
        return self.problem._grad(state, self.problem.all_nodes)


class AcademicWorld:
    """What the README's code calls ``world``: ``workers``, ``num_workers``, ``neighbors(i)``."""

    def __init__(self, tree):
        self.num_workers = tree.n
        self.workers = list(range(tree.n))
        self._nbrs = [[int(j) for j in tree.in_neighbors(i)] for i in range(tree.n)]

    def neighbors(self, i):
        return self._nbrs[i]


def best_time(fn, rounds):
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def bench_academic(ns, d, lr, rounds):
    academic, why = load_academic_relaysgd()
    print(f"(a) RelaySGD under SimComm vs the README's academic version (chain, d = {d})")
    if academic is None:
        print(f"    SKIPPED: {why}")
        return {}
    print(f"    {'n':>6} {'academic s/step':>16} {'declearn s/step':>16} {'speed-up':>9}"
          f"  {'max |diff|':>10}")
    ratios = {}
    for n in ns:
        problem, tree = ScalarQuadratics(n, d, seed=1), chain(n)
        check_steps = max(2 * n, 40) if n <= 256 else 40  # past full counts where affordable
        task = AcademicTask(problem, record=True)
        academic(task, AcademicWorld(tree), lr, check_steps + 1)
        alg = RelaySGD(SimComm(n), problem, tree, lr=lr, fill="own")
        for _ in range(check_steps):
            alg.step()
        diff = float((alg.x - task.states[-1]).abs().max())
        if not diff <= 1e-9:
            raise AssertionError(f"n={n}: declearn and the academic code differ by {diff:.3g}")
        steps_ref, steps_ours = max(3, int(2000 / n)), 200

        def reference(problem=problem, tree=tree, steps=steps_ref):
            return academic(AcademicTask(problem), AcademicWorld(tree), lr, steps)

        def ours(alg=alg, steps=steps_ours):
            return [alg.step() for _ in range(steps)]

        t_ref = best_time(reference, rounds) / steps_ref
        t_ours = best_time(ours, rounds) / steps_ours
        ratios[n] = t_ref / t_ours
        print(f"    {n:>6} {t_ref:>16.3e} {t_ours:>16.3e} {ratios[n]:>8.0f}x  {diff:>10.1e}")
    return ratios


def bench_floor(ns, ds, lr, rounds):
    print("(b) RelaySGD step vs gradient evaluations alone (LeastSquares, chain)")
    print(f"    {'n':>6} {'d':>6} {'m':>4} {'grad it/s':>10} {'relay it/s':>11} {'overhead':>9}")
    out = {}
    for d in ds:
        for n in ns:
            m = max(20, -(-3 * d // (2 * n)))  # n m >= 1.5 d samples, so that x* is unique
            problem = LeastSquares(n, d, m=m, seed=0)
            comm = SimComm(n)
            alg = RelaySGD(comm, problem, chain(n), lr=lr)
            oracle = problem.on(comm)
            x = alg.x.clone()
            k = max(2, min(50, int(2e7 / (n * d))))
            def grads(oracle=oracle, x=x, k=k):
                return [oracle.grad(x) for _ in range(k)]

            def steps(alg=alg, k=k):
                return [alg.step() for _ in range(k)]

            t_grad = best_time(grads, rounds) / k
            t_step = best_time(steps, rounds) / k
            out[(n, d)] = overhead = (t_step - t_grad) / t_grad
            print(f"    {n:>6} {d:>6} {m:>4} {1 / t_grad:>10.1f} {1 / t_step:>11.1f} "
                  f"{overhead:>8.2f}x")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes, under a minute")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    if args.quick:
        bench_academic([64, 256], 100, lr=0.05, rounds=2)
        bench_floor([16, 256, 1024], [1000], lr=1e-3, rounds=2)
    else:
        bench_academic([64, 256, 1024], 100, lr=0.05, rounds=3)
        bench_floor([16, 64, 256, 1024, 4096], [100, 1000], lr=1e-3, rounds=3)


if __name__ == "__main__":
    main()
