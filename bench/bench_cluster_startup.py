"""Time until a 4-engine MPI cluster is ready: declearn.cluster.start vs plain ipyparallel.

    python bench/bench_cluster_startup.py [--quick] [-n 4] [--repeat 3]

Baseline (named): ``ipyparallel.Cluster(engines="mpi", n=4).start_and_connect_sync()`` then
``client.wait_for_engines(4)``, ipyparallel's defaults. declearn's ``start(4)`` is timed until
it returns: engines registered, set up (rank, size, device in each namespace) and the
rank-ordered view built. Runs alternate between the two; best of ``--repeat`` each (1 with
``--quick``). Stopping is not timed. Each run uses a fresh profile in a temporary IPYTHONDIR.
Target: ratio declearn / ipyparallel <= 1.5.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("IPP_NONINTERACTIVE", "1")
# The plain baseline finds `mpiexec` on PATH, like a user's shell with the venv activated.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")


def time_declearn(n: int, profile_dir: str) -> float:
    import declearn.cluster as dc

    t0 = time.perf_counter()
    cluster = dc.start(n, profile_dir=profile_dir, activate=False)
    ready = time.perf_counter() - t0
    assert cluster.view.pull("rank") == list(range(n))
    cluster.stop()
    return ready


def time_ipyparallel(n: int, profile_dir: str) -> float:
    import ipyparallel as ipp

    t0 = time.perf_counter()
    cluster = ipp.Cluster(engines="mpi", n=n, profile_dir=profile_dir, log_level=40)
    client = cluster.start_and_connect_sync()
    client.wait_for_engines(n, timeout=120)
    ready = time.perf_counter() - t0
    assert sorted(client[:].apply_sync(lambda: 0)) == [0] * n
    client.close()
    cluster.stop_engines_sync()
    cluster.stop_controller_sync()
    return ready


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one run of each")
    args = parser.parse_args(argv)
    repeat = 1 if args.quick else args.repeat

    times = {"declearn.cluster.start": [], "ipyparallel.Cluster(engines='mpi')": []}
    runners = dict(zip(times, (time_declearn, time_ipyparallel), strict=True))
    with tempfile.TemporaryDirectory(prefix="declearn-bench-") as tmp:
        for i in range(repeat):
            for name, run in runners.items():
                profile_dir = os.path.join(tmp, f"profile_{len(times[name])}_{run.__name__}")
                times[name].append(run(args.n, profile_dir))
                print(f"  run {i + 1}: {name:<36} {times[name][-1]:6.2f} s", flush=True)
    ours, base = (min(t) for t in times.values())
    print(f"{args.n}-engine cluster ready (best of {repeat}):")
    print(f"  declearn.cluster.start({args.n})              {ours:6.2f} s")
    print(f"  ipyparallel.Cluster(engines='mpi', n={args.n}) {base:6.2f} s  (baseline)")
    print(f"  ratio declearn / ipyparallel = {ours / base:.2f}  (target <= 1.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
