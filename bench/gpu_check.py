"""``make gpu-check``: every GPU check and GPU benchmark in one run, with a report.

On a machine with a CUDA GPU this runs, each with its own time limit and all within
``--budget`` seconds (default 540, under ten minutes on one GPU):

checks (each must pass)
    * ``pytest -m gpu``: SimComm on CUDA against the dense oracle for every family,
      StackedModel on CUDA against the CPU, MPIComm on CUDA tensors through the staged,
      CUDA-aware and NCCL planes under mpiexec against the host plane (tests/test_gpu.py), and
      ``cluster.start(n, gpus=True)`` with more engines than GPUs, sharing them by local rank;
      with ``DECLEARN_REQUIRE_GPU=1``, so that none of them can pass by skipping;
    * the engines of a 4-engine cluster pinned by local rank (tests/test_cluster.py);
    * chapter 10 (decentralized deep learning), quick setting, executed top to bottom with its
      engines and simulator on the GPU (tests/test_tutorials.py);

benchmarks (figures for the report)
    * SimComm mixing on CUDA against the best plain torch expression and a device copy
      (bench_sim_neighbor_allreduce.py --device cuda);
    * StackedModel (16 small CNNs by vmap) against one CNN on a 16-times larger batch
      (bench_stacked_cnn.py --device cuda; target >= 0.5);
    * the data planes, NCCL against staged, 1-256 MiB (bench_gpu_planes.py).

It writes ``bench/results/gpu-check-<date>-<gpu>.md``: the device and versions, each check's
result and time, each benchmark's table. Exit status 0 when every check passed, 1 when one
failed, 2 when there is no GPU to check (it says so and runs nothing: a GPU check without a
GPU must not look like a pass).

Usage::

    python bench/gpu_check.py [--budget SECONDS] [--no-bench] [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
PYTEST = [PY, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider"]

CHECKS = [
    ("GPU tests (pytest -m gpu)", PYTEST + ["-m", "gpu", "tests/"], 300),
    ("engines pinned by local rank",
     PYTEST + ["tests/test_cluster.py::test_devices_follow_local_rank_on_gpus"], 150),
    ("chapter 10, quick setting, on the GPU",
     PYTEST + ["tests/test_tutorials.py", "-k", "10_ and runs_top_to_bottom"], 300),
]
BENCHES = [
    ("SimComm mixing on CUDA",
     [PY, "bench/bench_sim_neighbor_allreduce.py", "--quick", "--device", "cuda"], 240),
    ("StackedModel on CUDA", [PY, "bench/bench_stacked_cnn.py", "--device", "cuda"], 120),
    ("data planes: NCCL against staged", [PY, "bench/bench_gpu_planes.py", "--quick"], 240),
]


def no_gpu_reason() -> str | None:
    """Why this machine cannot run the GPU check, or None when it can."""
    try:
        import torch
    except ImportError:
        return "torch is not installed in this environment (make env, or pip install torch)."
    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return (f"torch {torch.__version__} is a CPU-only build (torch.version.cuda is None): "
                "install a CUDA build of torch on a machine with an NVIDIA GPU.")
    return (f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU: check "
            "nvidia-smi, the driver and CUDA_VISIBLE_DEVICES.")


def device_facts() -> list[tuple[str, str]]:
    import torch

    facts = [("date", datetime.datetime.now().isoformat(timespec="seconds"))]
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        facts.append((f"GPU {i}", f"{p.name}, {p.total_memory / 2**30:.0f} GiB, "
                      f"{p.multi_processor_count} SMs, compute {p.major}.{p.minor}"))
    facts.append(("driver", _run_text(["nvidia-smi", "--query-gpu=driver_version",
                                       "--format=csv,noheader"]).splitlines()[0:1]))
    nccl = ".".join(map(str, torch.cuda.nccl.version())) if hasattr(torch.cuda, "nccl") else "-"
    facts += [("torch", f"{torch.__version__} (CUDA {torch.version.cuda}, NCCL {nccl})"),
              ("python", sys.version.split()[0]), ("CPU cores", str(os.cpu_count()))]
    probe = ("from mpi4py import MPI; import mpi4py; "
             "from declearn.comm.mpi.planes import cuda_aware_mpi; "
             "print('mpi4py', mpi4py.__version__, '|', MPI.Get_library_version().splitlines()[0],"
             " '| CUDA-aware:', cuda_aware_mpi())")
    facts.append(("MPI", _run_text([PY, "-c", probe])))
    return [(k, v if isinstance(v, str) else " ".join(v) or "-") for k, v in facts]


def _run_text(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT)
        return (out.stdout or out.stderr).strip() or f"(exit {out.returncode}, no output)"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"({exc})"


def run_step(cmd: list[str], limit: float) -> tuple[str, float, str]:
    """``(PASS|FAIL|TIMEOUT, seconds, output)`` of one command, in its own session, killed
    with its children after ``limit`` seconds."""
    env = dict(os.environ, DECLEARN_REQUIRE_GPU="1", PYTHONUNBUFFERED="1")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=max(1.0, limit))
        status = "PASS" if proc.returncode == 0 else "FAIL"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        status = "TIMEOUT"
    finally:  # engines the step started, if it died before stopping them
        subprocess.run([PY, "-m", "declearn.cli", "cluster", "stop", "--all"], cwd=ROOT,
                       capture_output=True, timeout=60, check=False)
    return status, time.monotonic() - t0, out


def summary_line(output: str) -> str:
    """pytest's last line (``3 passed in 12 s``), or the output's last line."""
    lines = [ln.strip("= ") for ln in output.strip().splitlines() if ln.strip()]
    found = [ln for ln in lines if re.search(r"\b(passed|failed|error|skipped)\b", ln)]
    return (found or lines or ["(no output)"])[-1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=540, help="seconds for everything")
    ap.add_argument("--no-bench", action="store_true", help="checks only")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"), help="report folder")
    args = ap.parse_args(argv)
    reason = no_gpu_reason()
    if reason:
        print(f"make gpu-check needs a CUDA GPU, and this machine has none it can use: {reason}"
              "\nNothing was run and no report was written. Run it on a machine with an NVIDIA"
              " GPU (CONTRIBUTING.md, 'The GPU check').", file=sys.stderr)
        return 2
    deadline = time.monotonic() + args.budget
    facts = device_facts()
    for key, value in facts:
        print(f"{key}: {value}", flush=True)
    results = []
    steps = [("check", *c) for c in CHECKS] + ([] if args.no_bench else
                                                 [("bench", *b) for b in BENCHES])
    for kind, name, cmd, limit in steps:
        left = deadline - time.monotonic()
        if left < 20:
            results.append((kind, name, "NOT RUN", 0.0, "(out of time: --budget)"))
            continue
        print(f"\n== {name}: {' '.join(cmd[1:])}", flush=True)
        status, seconds, output = run_step(cmd, min(limit, left))
        print(output[-4000:] if kind == "check" else output, flush=True)
        print(f"-> {status} in {seconds:.0f} s", flush=True)
        results.append((kind, name, status, seconds, output))
    path = write_report(Path(args.out), facts, results)
    failed = [r for r in results if r[0] == "check" and r[2] != "PASS"]
    print(f"\nreport: {path}\n{len(failed)} of {sum(r[0] == 'check' for r in results)} "
          "checks failed" if failed else f"\nreport: {path}\nevery check passed", flush=True)
    return 1 if failed else 0


def write_report(folder: Path, facts, results) -> Path:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name(0)).strip("-").lower()
    path = folder / f"gpu-check-{datetime.date.today().isoformat()}-{gpu}.md"
    lines = ["# GPU check (make gpu-check)", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in facts]
    lines += ["", "## Checks", "", "| check | result | seconds | summary |", "|---|---|---|---|"]
    for kind, name, status, seconds, output in results:
        if kind == "check":
            lines.append(f"| {name} | {status} | {seconds:.0f} | {summary_line(output)} |")
    for kind, name, status, _seconds, output in results:
        if kind == "check" and status != "PASS":
            lines += ["", f"### {name}: {status}", "", "```", output[-6000:].strip(), "```"]
    lines += ["", "## Benchmarks"]
    for kind, name, status, seconds, output in results:
        if kind == "bench":
            lines += ["", f"### {name} ({status}, {seconds:.0f} s)", "", "```",
                      output.strip()[-12000:], "```"]
    path.write_text("\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
