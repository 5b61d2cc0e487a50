"""Benchmark: SimComm.neighbor_allreduce against a copy of x and against plain torch.

For every topology family (dynamic ones at one step), n, d and thread setting, x is an
(n, d) float64 tensor and we time (best of up to k interleaved rounds):

* ``sim``: ``SimComm(n).neighbor_allreduce(x, W)`` (plan built beforehand, as in a loop);
* ``copy`` = ``out.copy_(x)`` into a preallocated ``out``: the memory-bandwidth floor and
  the baseline of the target, ``sim/copy <= 3`` for n >= 256; ``clone`` = ``x.clone()``
  (allocates, as ``sim`` does) is printed beside it;
* the plain torch expressions a user would write for the same W (the best one is the
  baseline of ``sim/best``, target <= 1): ``dense`` = ``W_dense @ x``, ``csr`` =
  ``W_csr @ x`` (torch.sparse CSR), ``roll`` = ``sum_s w_s * torch.roll(x, s, 0)``
  (circulant W with at most 16 shifts).

Each row prints the times, the kernel SimComm chose and both ratios with a verdict; the end
prints, per family, n >= 256 and thread count, the worst ``sim/copy`` over d and whether it
meets the 3x target. ``sim`` returns a new tensor at each call: above 32 MiB glibc hands
out fresh pages that the OS zero-fills on first touch, which the malloc setting of
:mod:`declearn.comm.memory` avoids (SimComm applies it, process-wide, so the plain
expressions benefit too; ``--default-allocator`` keeps glibc's defaults). Sizes are capped
at n * d <= 2.6e7 elements (208 MB per float64 tensor); plain expressions above 4e9 flops
(dense) or 5e8 multiply-adds (csr, roll) are skipped (``sim/best`` is then ``nan``). Each
result is checked on its first 16 columns against the dense product.

On a shared machine, wall-clock times of one-thread rows include the time other processes
hold the core: ``--clock cpu`` times them with the calling thread's CPU time instead (rows
with more threads keep the wall clock).

Usage::

    python bench/bench_sim_neighbor_allreduce.py            # full run, several minutes
    python bench/bench_sim_neighbor_allreduce.py --quick    # n = 16, 256, 4096; d = 100, 1e4
    python bench/bench_sim_neighbor_allreduce.py --only ring exponential --n 256 --d 10000
    # on a GPU (make gpu-check): n = 16, 256, 4096; d = 100, 1e4, 1e6, n*d <= 2^28
    python bench/bench_sim_neighbor_allreduce.py --quick --device cuda
    # also time another copy of the kernels (e.g. the last commit's) in the same rounds:
    python bench/bench_sim_neighbor_allreduce.py --quick --baseline-kernels /tmp/kernels_old.py
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
from declearn.topology import families, make

MAX_ELEMENTS = 26_000_000
MAX_DENSE_FLOPS = 4e9
MAX_SPARSE_MACS = 5e8
MAX_ROLL_SHIFTS = 16
TARGET_COPY = 3.0
# On CUDA (--device cuda): larger tensors, and plain expressions up to far more work.
CUDA_MAX_ELEMENTS = 1 << 28
CUDA_MAX_DENSE_FLOPS = 2e13
CUDA_MAX_SPARSE_MACS = 2e11
DEVICE = torch.device("cpu")


def _connected(name: str, n: int, **params):
    """``make(name, n, ...)`` with the first seed that gives a connected graph."""
    for seed in range(20):
        try:
            return make(name, n, seed=seed, **params)
        except TopologyError:
            continue
    raise SystemExit(f"no connected {name}(n={n}, {params}) in 20 seeds")


def topologies(n: int) -> dict:
    """One topology of every registered family over n nodes, by name: random graphs with
    degree ~ 2 ln n (connected with high probability), dynamic families at step 1."""
    out = {}
    for name in families():
        if name == "hypercube" and n & (n - 1):
            continue
        if name == "erdos_renyi":
            topo = _connected(name, n, p=min(1.0, 2 * math.log(n) / n))
        elif name == "geometric":  # expected degree n pi r^2 = 2 ln n
            topo = _connected(name, n, radius=math.sqrt(2 * math.log(n) / (math.pi * n)))
        else:
            topo = make(name, n)
        if topo.is_dynamic:
            name, topo = f"{name}[1]", topo.at(1)
        out[name] = topo
    return out


def best_times(fns: dict, *, reps: int, budget: float, clock) -> dict:
    """Best time of each function over up to ``reps`` rounds. Rounds interleave the
    functions, so a burst of load from another process hits them alike; each timed call
    follows an untimed call of the same function, so each is timed with its data as hot in
    cache as in a loop that calls it again and again (else the one after a large dense
    product would read x from memory and the others from cache). Rounds stop early once
    ``budget`` seconds per function are spent."""
    best = dict.fromkeys(fns, math.inf)
    spent = 0.0
    for k in range(reps):
        if k >= 2 and spent > budget * len(fns):
            break
        for key, fn in fns.items():
            fn()
            t0 = clock()
            fn()
            dt = clock() - t0
            best[key] = min(best[key], dt)
            spent += 2 * dt
    return best


def plain_expressions(topo, x):
    """name -> zero-argument function computing W @ x with plain torch (within the caps)."""
    n, d = x.shape
    W = torch.tensor(topo.W, dtype=x.dtype, device=x.device)
    fns = {}
    cuda = x.device.type == "cuda"
    if 2.0 * n * n * d <= (CUDA_MAX_DENSE_FLOPS if cuda else MAX_DENSE_FLOPS):
        fns["dense"] = lambda: W @ x
    if topo.nnz * d <= (CUDA_MAX_SPARSE_MACS if cuda else MAX_SPARSE_MACS):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            Wcsr = W.to_sparse_csr()
        fns["csr"] = lambda: Wcsr @ x
    if topo.shifts is not None and len(topo.shifts) <= MAX_ROLL_SHIFTS:
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


def run_case(name, topo, d, threads, reps, budget, clock, baseline=None):
    torch.set_num_threads(threads)
    n = topo.n
    x = torch.randn(n, d, dtype=torch.float64, device=DEVICE)
    comm = SimComm(n, device=DEVICE)
    plan = mix_plan(topo, comm.device, x.dtype, d=d)
    out = torch.empty_like(x)
    plain = plain_expressions(topo, x)
    cols = min(d, 16)  # the result checked on a few columns against the dense product
    ref = torch.tensor(topo.W, dtype=x.dtype, device=DEVICE) @ x[:, :cols]
    assert torch.allclose(comm.neighbor_allreduce(x, topo)[:, :cols], ref, atol=1e-12), name
    fns = {"sim": lambda: comm.neighbor_allreduce(x, topo), "copy": lambda: out.copy_(x),
           "clone": lambda: x.clone()}
    if baseline is not None:
        base_kernel, base_fn = baseline_mixer(baseline, topo, x)
        assert torch.allclose(base_fn(x)[:, :cols], ref, atol=1e-12), name
        fns["before"] = lambda: base_fn(x)
        _, after_fn = baseline_mixer(sim_kernels, topo, x)  # the same route, current kernels
        fns["after"] = lambda: after_fn(x)
    times = best_times({**fns, **plain}, reps=reps, budget=budget, clock=clock)
    best_key = min(plain, key=lambda k: times[k]) if plain else None
    r_best = times["sim"] / times[best_key] if plain else math.nan
    r_copy = times["sim"] / times["copy"]
    cols = " ".join(
        f"{k}={times[k] * 1e3:8.3f}" if k in times else f"{k}={'-':>8s}"
        for k in ("sim", "copy", "dense", "csr", "roll")
    )
    verdict = ""
    if n >= 256:
        verdict = ("ok " if not r_best > 1.0 else "SLOW-vs-plain ") + \
                  ("ok" if r_copy <= TARGET_COPY else "SLOW-vs-copy")
    extra = ""
    if baseline is not None:
        extra = (f"  kernels only: before({base_kernel})/copy="
                 f"{times['before'] / times['copy']:6.2f} after/copy="
                 f"{times['after'] / times['copy']:6.2f}")
    print(
        f"{name:22s} n={n:5d} d={d:6d} thr={threads} kernel={plan.kernel:9s} [ms] {cols}  "
        f"sim/best({best_key})={r_best:6.2f} sim/copy={r_copy:6.2f} "
        f"sim/clone={times['sim'] / times['clone']:6.2f} {verdict}{extra}",
        flush=True,
    )
    return r_best, r_copy


def _synchronized(clock):
    """``clock`` read after every queued CUDA kernel has finished."""
    def read():
        torch.cuda.synchronize()
        return clock()
    return read


def summary(worst: dict) -> int:
    """Print the worst sim/copy per (family, n >= 256) and thread count, over d; return
    how many (family, n, threads) miss the target."""
    threads = sorted({thr for (_, _, thr) in worst})
    print(f"\nsim/copy per family and n, worst over d (target <= {TARGET_COPY:g}), "
          f"by torch threads:")
    misses = 0
    for name, n in sorted({(name, n) for (name, n, _) in worst}):
        cells = []
        for thr in threads:
            if (name, n, thr) not in worst:
                continue
            r_copy, d = worst[(name, n, thr)]
            ok = r_copy <= TARGET_COPY
            misses += not ok
            verdict = "meets 3x" if ok else "MISSES 3x"
            cells.append(f"thr={thr}: {r_copy:7.2f} (d={d:<6d}) {verdict:9s}")
        print(f"  {name:24s} n={n:5d}  " + "   ".join(cells))
    print(f"{misses} of {len(worst)} (family, n, threads) miss the {TARGET_COPY:g}x target")
    return misses


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="n = 16, 256, 4096; d = 100, 1e4")
    ap.add_argument("--only", nargs="*", help="topology names to run (as printed)")
    ap.add_argument("--n", nargs="*", type=int, help="node counts")
    ap.add_argument("--d", nargs="*", type=int, help="per-node sizes")
    ap.add_argument("--threads", nargs="*", type=int, help="torch thread counts")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: time one-thread rows with the thread's CPU time")
    ap.add_argument("--baseline-kernels", metavar="FILE",
                    help="also time the kernels of this copy of comm/sim/kernels.py, same rounds")
    ap.add_argument("--default-allocator", action="store_true",
                    help="keep glibc's malloc defaults (DECLEARN_TUNE_ALLOCATOR=0)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = ap.parse_args(argv)
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch {torch.__version__} sees no CUDA GPU.")
    if args.default_allocator:
        os.environ["DECLEARN_TUNE_ALLOCATOR"] = "0"
    print("malloc tuned for reuse (declearn.comm.memory):", ensure_cpu_allocator_tuned())
    baseline = load_kernels(args.baseline_kernels) if args.baseline_kernels else None
    all_threads = torch.get_num_threads()
    if args.quick:
        ns, ds, reps, budget = [16, 256, 4096], [100, 10_000], 3, 0.05
    else:
        ns, ds, reps, budget = [16, 64, 256, 1024, 4096], [10, 1000, 10_000, 100_000], 7, 0.3
    max_elements = MAX_ELEMENTS
    if DEVICE.type == "cuda":
        ds, max_elements = [100, 10_000, 1_000_000], CUDA_MAX_ELEMENTS
        if not args.quick:
            ds = [10, 1000, 100_000, 1_000_000]
    ns = args.n or ns
    ds = args.d or ds
    threads = args.threads or (sorted({1, all_threads}) if DEVICE.type == "cpu" else [1])
    if DEVICE.type == "cuda":
        where = f"{torch.cuda.get_device_name(DEVICE)} (CUDA {torch.version.cuda})"
    else:
        where = f"{os.cpu_count()} cpus"
    print(f"torch {torch.__version__}, {where}, float64, best of <= {reps}, "
          f"{args.clock} clock, n*d <= {max_elements}; targets for n >= 256: "
          f"sim/best <= 1, sim/copy <= {TARGET_COPY:g}")
    worst: dict = {}
    for thr in threads:
        clock = time.thread_time if args.clock == "cpu" and thr == 1 else time.perf_counter
        if DEVICE.type == "cuda":
            clock = _synchronized(time.perf_counter)
        for n in ns:
            for name, topo in topologies(n).items():
                if args.only and name not in args.only and name.split("[")[0] not in args.only:
                    continue
                for d in ds:
                    if n * d > max_elements:
                        continue
                    _, r_copy = run_case(name, topo, d, thr, reps, budget, clock, baseline)
                    if n >= 256 and r_copy > worst.get((name, n, thr), (-1.0,))[0]:
                        worst[(name, n, thr)] = (r_copy, d)
    torch.set_num_threads(all_threads)
    summary(worst)


if __name__ == "__main__":
    main()
