"""Benchmark: DSGD's transient iterations, measured, against the orders of the literature.

For ring, 2-D torus, static exponential, one-peer exponential, OD-EquiDyn and the complete
graph, and n in a range the simulator handles, T = the first iteration after which DSGD's
``E||x_bar^k - x*||^2`` stays within a factor 2 of parallel SGD's (same problem, step sizes
and noise; :mod:`declearn.algorithms.speedup`), in two settings:

* heterogeneous: :class:`declearn.problems.TwoTypeQuadratics`, ``f_i = a_i/2 ||x - c_i||^2``
  with two kinds of node (``a_i = 1 +- kappa``, placed at random) whose gradients at x* are
  ``+- zeta u``: the stiff nodes pull one way, the soft ones the other (zeta = 3, kappa =
  1/2, sigma = 1, d = 5). The curvature is correlated with the heterogeneity, so the nodes'
  disagreement leaks into the averaged model *systematically*. With independent curvature
  and minimisers (``RandomQuadratics``, ``LeastSquares``) the leak is a sum of n terms of
  random sign: T then depends more on the draw of the data than on n (measured:
  ``RandomQuadratics(zeta^2=100)`` with the exponential graph gave T = 20, 27, 32, 279, 0,
  33 at n = 4 .. 128);
* iid: ``LogisticRegression(n, d=5, m=50, split="identical", reg=0.1, sigma=10)`` (every
  node holds the same data: ``f_i = f``, the iid case of Koloskova et al.).

Each (topology, n) averages the error curves over a few data draws (problem seeds, which
also place the node types and seed the noise) times R noise replicas. Both methods start at
x* with ``lr(k) = 2 / (mu (k + k0))`` (``InverseTimeSchedule``). For every
topology it prints T per n (with rho, the run length and the seconds each measurement took)
and the exponent of ``T ~ c n^a`` fitted over the n with ``0 < T < inf`` (and that of the
tail constant C of ``e_DSGD / e_PSGD ~ 1 + C/k``, a smoother proxy), next to: the order
in the issue's table (non-convex, iid, asymptotic); the *local* slope, over the same n, of
``n^3 rho^4 / (1 - rho)^2`` (iid) or ``n^3 rho^4 / (1 - rho)^4`` (heterogeneous)
(``declearn.topology.transient_iterations``); and the local slope of Pu et al.'s strongly
convex ``n rho^2 / (1 - rho)^2``. For the iid setting it also prints the largest ratio
``e_DSGD / e_PSGD`` (the peak of the bump) and T at factor 1.25.

The baseline of the timings is parallel SGD at the same n (it runs once per n and serves
every topology): ``dsgd/psgd`` is the cost ratio per measurement. One torch thread (the
measurement sets it), float64::

    python bench/bench_transient.py            # full: n up to 64-128, tens of minutes
    python bench/bench_transient.py --quick    # about a minute on 2 cores
    python bench/bench_transient.py --setting iid --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from declearn.algorithms.speedup import fit_exponent, transient_table
from declearn.problems import LogisticRegression, TwoTypeQuadratics
from declearn.topology import make, transient_iterations

FAMILIES = {
    "ring": lambda n: make("ring", n),
    "torus": lambda n: make("grid", n, torus=True),
    "exponential": lambda n: make("exponential", n),
    "one_peer_exponential": lambda n: make("one_peer_exponential", n),
    "od_equidyn": lambda n: make("od_equidyn", n),
    "complete": lambda n: make("complete", n),
}
#: The orders of the issue's table (DSGD, iid, non-convex): ring n^7, torus n^5, the others
#: n^3 up to log factors; the complete graph has none (rho = 0).
PAPER_ORDER = {"ring": "n^7", "torus": "n^5", "exponential": "~n^3 (n^3 log^2 n)",
               "one_peer_exponential": "~n^3", "od_equidyn": "n^3", "complete": "0"}
NS = {
    "quick": {"ring": [4, 8, 12], "torus": [16, 36], "exponential": [4, 8, 16, 32],
              "one_peer_exponential": [4, 8, 16, 32], "od_equidyn": [4, 8, 16, 32],
              "complete": [4, 16]},
    "full": {"ring": [4, 6, 8, 12, 16, 20], "torus": [9, 16, 25, 36, 49, 64],
             "exponential": [4, 8, 16, 32, 64, 128],
             "one_peer_exponential": [4, 8, 16, 32, 64, 128],
             "od_equidyn": [4, 8, 16, 32, 64, 128], "complete": [4, 16, 64]},
}
PROBLEMS = {
    "heterogeneous": lambda n, seed: TwoTypeQuadratics(n, d=5, zeta=3.0, kappa=0.5, sigma=1.0,
                                                       seed=seed),
    "iid": lambda n, seed: LogisticRegression(n, d=5, m=50, split="identical", reg=0.1,
                                              sigma=10.0, seed=seed),
}


def local_slope(ns, fn) -> float | None:
    """The exponent of ``fn(n)`` fitted over ``ns`` (None where fn is 0 or inf)."""
    vals = [fn(n) for n in ns]
    if len(set(ns)) < 2 or not all(0 < v < math.inf for v in vals):
        return None
    return fit_exponent(ns, vals).exponent


def measure(setting: str, mode: str, families, replicas: int, max_steps: int,
            seeds: int) -> list[dict]:
    ns = {name: NS[mode][name] for name in families}
    rows = transient_table(PROBLEMS[setting], {f: FAMILIES[f] for f in families}, ns,
                           steps=250, max_steps=max_steps, replicas=replicas,
                           seeds=range(seeds), keep_curves=setting == "iid")
    for row in rows:
        curves = row.pop("curves", None)
        if curves is not None:
            row["T_1.25"] = curves.transient(1.25)
    return rows


def report(setting: str, rows: list[dict]) -> None:
    theory = "iid" if setting == "iid" else "heterogeneous"
    print(f"\n== {setting}: T = first k after which e_DSGD / e_PSGD stays in [1/2, 2]")
    head = f"{'topology':22s} {'n':>4s} {'rho':>6s} {'T':>7s} {'C':>8s} {'steps':>6s}" \
           f" {'dsgd s':>7s} {'psgd s':>7s} {'dsgd/psgd':>9s}"
    if setting == "iid":
        head += f" {'peak':>6s} {'T@1.25':>7s}"
    print(head)
    for r in rows:
        line = (f"{r['topology']:22s} {r['n']:4d} {r['rho']:6.3f} {_t(r['T']):>7s} "
                f"{r['C']:8.1f} {r['steps']:6d} {r['seconds']:7.2f} {r['parallel_seconds']:7.2f} "
                f"{r['seconds'] / max(r['parallel_seconds'], 1e-9):9.2f}")
        if setting == "iid":
            line += f" {r['peak']:6.2f} {_t(r['T_1.25']):>7s}"
        print(line)
    print(f"\n{'topology':22s} {'exponent of T (95% CI)':34s} {'of C':>6s} {'paper':>20s}"
          f" {'n^3rho^4/(1-rho)^' + ('2' if theory == 'iid' else '4'):>20s}"
          f" {'n rho^2/(1-rho)^2':>18s}")
    for name in dict.fromkeys(r["topology"] for r in rows):
        mine = [r for r in rows if r["topology"] == name]
        ns = [r["n"] for r in mine]
        rho = {r["n"]: r["rho"] for r in mine}
        ok = [(r["n"], r["T"]) for r in mine if 0 < r["T"] < math.inf]
        if len({n for n, _ in ok}) >= 2:
            fit = fit_exponent(*zip(*ok))
            lo, hi = fit.ci
            ci = f"{lo:.1f}..{hi:.1f}" if math.isfinite(lo) else "2 points"
            measured = f"{fit.exponent:5.2f} ({ci}; {fit.points} pts)"
        else:
            measured = f"n/a ({len(ok)} of {len(mine)} n with 0 < T < inf)"
        okc = [(r["n"], r["C"]) for r in mine if r["C"] >= 1]  # C < 1: joined from the start
        of_c = f"{fit_exponent(*zip(*okc)).exponent:6.2f}" if len({n for n, _ in okc}) >= 2 \
            else f"{'n/a':>6s}"
        big = local_slope(ns, lambda n, r=rho: transient_iterations(r[n], n=n, setting=theory))
        sc = local_slope(ns, lambda n, r=rho: n * r[n] ** 2 / (1 - r[n]) ** 2)
        print(f"{name:22s} {measured:34s} {of_c} {PAPER_ORDER[name]:>20s} {_s(big):>20s} "
              f"{_s(sc):>18s}")


def _t(T) -> str:
    return str(int(T)) if math.isfinite(T) else "inf"


def _s(v) -> str:
    return "n/a (rho=0)" if v is None else f"{v:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small n, 2 draws x 8 replicas (~1 min)")
    ap.add_argument("--setting", choices=["heterogeneous", "iid", "both"], default="both")
    ap.add_argument("--families", default=",".join(FAMILIES),
                    help="comma-separated subset of " + ", ".join(FAMILIES))
    ap.add_argument("--replicas", type=int, default=None)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=None,
                    help="data draws averaged per (topology, n) (default 2 quick, 3 full)")
    ap.add_argument("--json", default=None, help="also write the rows to this file")
    args = ap.parse_args()
    mode = "quick" if args.quick else "full"
    replicas = args.replicas or (8 if args.quick else 16)
    seeds = args.seeds or (2 if args.quick else 3)
    max_steps = args.max_steps or (16000 if args.quick else 64000)
    families = [f for f in args.families.split(",") if f]
    settings = ["heterogeneous", "iid"] if args.setting == "both" else [args.setting]
    out = {}
    for setting in settings:
        t = time.perf_counter()
        rows = measure(setting, mode, families, replicas, max_steps, seeds)
        report(setting, rows)
        print(f"({setting}: {time.perf_counter() - t:.1f} s in all, {seeds} data draws x "
              f"{replicas} replicas, max {max_steps} steps)")
        out[setting] = rows
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1, default=lambda v: None if v is np.nan else float(v))


if __name__ == "__main__":
    main()
