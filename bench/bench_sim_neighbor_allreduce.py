"""Benchmark: SimComm.neighbor_allreduce against plain torch and against a copy.

For each topology, n, d and thread setting, x is an (n, d) float64 tensor and we time (best
of up to k interleaved rounds, wall clock):

* ``sim``: ``SimComm(n).neighbor_allreduce(x, W)`` (plan built beforehand, as in a loop);
* the plain torch expressions a user would write for the same W (the best one is the
  baseline): ``dense`` = ``W_dense @ x``, ``csr`` = ``W_csr @ x`` (torch.sparse CSR),
  ``roll`` = ``sum_s w_s * torch.roll(x, s, 0)`` (circulant W only);
* ``copy`` = ``out.copy_(x)`` into a preallocated ``out``: the memory-bandwidth floor.

Each row prints the times and ``sim/best`` (target <= 1.0) and ``sim/copy`` (target <= 3 for
n >= 256). ``sim`` and the plain expressions return a new tensor at each call, ``copy`` does
not: above 32 MiB glibc hands out fresh pages that the OS zero-fills on first touch, which
the malloc setting of :mod:`declearn.comm.memory` avoids (SimComm applies it, process-wide,
so the plain expressions benefit too; ``--default-allocator`` keeps glibc's defaults). Sizes are
capped at n * d <= 2.6e7 elements (208 MB per float64 tensor, under 2 GB for everything alive
at once); dense matmuls above 4e9 flops are skipped (a quarter second or more each).

Usage::

    python bench/bench_sim_neighbor_allreduce.py            # full run, a few minutes
    python bench/bench_sim_neighbor_allreduce.py --quick    # under a minute
    python bench/bench_sim_neighbor_allreduce.py --default-allocator  # glibc's defaults
    # also time another copy of the kernels (e.g. the last commit's) in the same rounds:
    python bench/bench_sim_neighbor_allreduce.py --quick --baseline-kernels /tmp/sim_kernels_old.py

The machine may be shared: rerun rows that look off (``--only ring --n 256 --d 100000``).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time
import warnings

import torch

from declearn.comm.memory import ensure_cpu_allocator_tuned
from declearn.comm.sim import SimComm
from declearn.comm.sim import kernels as sim_kernels
from declearn.comm.sim.kernels import mix_plan
from declearn.errors import TopologyError
from declearn.topology import make

MAX_ELEMENTS = 26_000_000
MAX_DENSE_FLOPS = 4e9


def topologies(n: int, seed: int = 0):
    """The benchmarked topologies over n nodes, by name."""
    out = {"ring": make("ring", n), "exponential": make("exponential", n)}
    out["one_peer_exp[0]"] = make("one_peer_exponential", n).at(0)
    p = min(1.0, 2 * math.log(n) / n)  # connected with high probability, degree ~ 2 ln n
    for s in range(seed, seed + 20):
        try:
            out["erdos_renyi"] = make("erdos_renyi", n, p=p, seed=s)
            break
        except TopologyError:
            continue
    return out


def best_times(fns: dict, *, reps: int, budget: float) -> dict:
    """Best wall-clock time of each function over up to ``reps`` rounds (after a warm-up
    round). Rounds interleave the functions, so a burst of load from another process hits
    them alike; rounds stop early once ``budget`` seconds per function are spent."""
    for fn in fns.values():
        fn()
    best = dict.fromkeys(fns, math.inf)
    spent = 0.0
    for k in range(reps):
        if k >= 2 and spent > budget * len(fns):
            break
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            best[key] = min(best[key], dt)
            spent += dt
    return best


def plain_expressions(topo, x):
    """name -> zero-argument function computing W @ x with plain torch."""
    n, d = x.shape
    W = torch.tensor(topo.W, dtype=x.dtype)
    fns = {}
    if 2.0 * n * n * d <= MAX_DENSE_FLOPS:
        fns["dense"] = lambda: W @ x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        Wcsr = W.to_sparse_csr()
    fns["csr"] = lambda: Wcsr @ x
    if topo.shifts is not None:
        terms = list(topo.shifts.items())

        def roll():
            s0, w0 = terms[0]
            out = w0 * torch.roll(x, s0, 0)
            for s, w in terms[1:]:
                out = out + w * torch.roll(x, s, 0)
            return out

        fns["roll"] = roll
    return fns


def load_kernels(path: str):
    """Another copy of ``declearn/comm/sim/kernels.py`` (e.g. from an older commit), as a
    module, to time its kernels beside the current ones."""
    spec = importlib.util.spec_from_file_location("sim_kernels_baseline", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"--baseline-kernels: cannot load {path!r} as a Python module.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def baseline_mixer(kernels, topo, x):
    """The baseline module's own choice and mixer for ``x``, built without the topology's
    plan cache (which the current kernels fill)."""
    kernel = kernels.choose_kernel(topo, x.numel() // x.shape[0])
    plan = kernels._build_mix_plan(topo, x.device, x.dtype, kernel)
    return kernel, kernels.mixer(plan, x.shape)


def run_case(name, topo, d, threads, reps, budget, check=True, baseline=None):
    torch.set_num_threads(threads)
    n = topo.n
    x = torch.randn(n, d, dtype=torch.float64)
    comm = SimComm(n)
    plan = mix_plan(topo, comm.device, x.dtype, d=d)
    out = torch.empty_like(x)
    plain = plain_expressions(topo, x)
    if check:
        ref = plain["csr"]()
        assert torch.allclose(comm.neighbor_allreduce(x, topo), ref, atol=1e-12), name
    fns = {"sim": lambda: comm.neighbor_allreduce(x, topo), "copy": lambda: out.copy_(x)}
    before = ""
    if baseline is not None:
        base_kernel, base_fn = baseline_mixer(baseline, topo, x)
        if check:
            assert torch.allclose(base_fn(x), ref, atol=1e-12), name
        fns["before"] = lambda: base_fn(x)
        _, after_fn = baseline_mixer(sim_kernels, topo, x)  # the same route, current kernels
        fns["after"] = lambda: after_fn(x)
    times = best_times({**fns, **plain}, reps=reps, budget=budget)
    if baseline is not None:
        before = (f"  kernels only: before({base_kernel})/copy="
                  f"{times['before'] / times['copy']:6.2f} after/copy="
                  f"{times['after'] / times['copy']:6.2f}")
    best_key = min(plain, key=lambda k: times[k])
    r_best = times["sim"] / times[best_key]
    r_copy = times["sim"] / times["copy"]
    cols = " ".join(
        f"{k}={times[k] * 1e3:9.3f}" if k in times else f"{k}={'-':>9s}"
        for k in ("sim", "copy", "dense", "csr", "roll")
    )
    verdict = ""
    if n >= 256:
        verdict = ("ok " if r_best <= 1.0 else "SLOW-vs-plain ") + \
                  ("ok" if r_copy <= 3.0 else "SLOW-vs-copy")
    print(
        f"{name:16s} n={n:5d} d={d:6d} thr={threads} kernel={plan.kernel:9s} [ms] {cols}  "
        f"sim/best({best_key})={r_best:5.2f} sim/copy={r_copy:6.2f} {verdict}{before}",
        flush=True,
    )
    return r_best, r_copy


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few sizes, under a minute")
    ap.add_argument("--only", nargs="*", help="topology names to run")
    ap.add_argument("--n", nargs="*", type=int, help="node counts")
    ap.add_argument("--d", nargs="*", type=int, help="per-node sizes")
    ap.add_argument("--threads", nargs="*", type=int, help="torch thread counts")
    ap.add_argument("--baseline-kernels", metavar="FILE",
                    help="also time the kernels of this copy of comm/sim/kernels.py, same rounds")
    ap.add_argument("--default-allocator", action="store_true",
                    help="keep glibc's malloc defaults (DECLEARN_TUNE_ALLOCATOR=0)")
    args = ap.parse_args(argv)
    if args.default_allocator:
        os.environ["DECLEARN_TUNE_ALLOCATOR"] = "0"
    print("malloc tuned for reuse (declearn.comm.memory):", ensure_cpu_allocator_tuned())
    baseline = load_kernels(args.baseline_kernels) if args.baseline_kernels else None
    all_threads = torch.get_num_threads()
    if args.quick:
        ns, ds, reps, budget = [16, 256, 4096], [100, 10_000], 3, 0.05
    else:
        ns, ds, reps, budget = [16, 64, 256, 1024, 4096], [10, 1000, 10_000, 100_000], 7, 0.3
    ns = args.n or ns
    ds = args.d or ds
    threads = args.threads or sorted({1, all_threads})
    print(f"torch {torch.__version__}, {os.cpu_count()} cpus, float64, best of <= {reps}, "
          f"n*d <= {MAX_ELEMENTS}; targets for n >= 256: sim/best <= 1, sim/copy <= 3")
    misses = []
    for thr in threads:
        for n in ns:
            topos = topologies(n)
            for name, topo in topos.items():
                if args.only and name not in args.only:
                    continue
                for d in ds:
                    if n * d > MAX_ELEMENTS:
                        continue
                    r_best, r_copy = run_case(name, topo, d, thr, reps, budget,
                                              baseline=baseline)
                    if n >= 256 and (r_best > 1.0 or r_copy > 3.0):
                        misses.append((name, n, d, thr, r_best, r_copy))
    torch.set_num_threads(all_threads)
    print(f"\n{len(misses)} case(s) with n >= 256 miss a target:")
    for name, n, d, thr, rb, rc in misses:
        print(f"  {name:16s} n={n:5d} d={d:6d} thr={thr}  sim/best={rb:5.2f} sim/copy={rc:6.2f}")


if __name__ == "__main__":
    main()
