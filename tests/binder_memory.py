"""Run a chapter the way a Binder session does and measure the memory it takes.

``run_chapter(python, chapter, workdir, env)`` executes a chapter with
tests/binder_run_chapter.py under ``python`` (a separate process, so the kernel and the engines
are that environment's), with ``IPYTHONDIR`` in ``workdir`` so that its cluster is its own, and
samples every ``interval`` seconds the processes of the run: the runner's descendants (the kernel
and what it starts) and every process whose environment names that ``IPYTHONDIR`` or a profile
under it (ipyparallel gives ``IPP_PROFILE_DIR`` to the controller, ``mpiexec``, the Hydra
proxies and the engines). Per sample it sums two numbers over those processes:

* RSS, resident set size: counts the pages that processes share (PyTorch's libraries, mapped by
  every engine) once per process, so it overstates;
* PSS, proportional set size (``/proc/<pid>/smaps_rollup``): a page shared by k processes
  counts 1/k in each, so the sum is what the processes hold together, the number that a
  container's memory limit (Binder's 2 GB) is compared with, page cache aside.

The peaks of both sums are returned with the processes seen. Afterwards every process of the
run still alive is stopped (``declearn cluster stop`` of that environment, then SIGKILL by pid).

As a script it measures one chapter in an existing environment, for the README's numbers::

    .venv/bin/python tests/binder_memory.py tutorials/10_decentralized_deep_learning.ipynb
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

RUNNER = Path(__file__).resolve().with_name("binder_run_chapter.py")
MB = 1024 * 1024


@dataclass
class Peak:
    """The largest sums seen, in bytes, and what was running then."""

    rss: int = 0
    pss: int = 0
    processes_at_pss_peak: int = 0
    samples: int = 0
    #: pid -> command line, of every process counted at least once
    seen: dict[int, list[str]] = field(default_factory=dict)
    #: kind of process -> (how many, their PSS in bytes), at the PSS peak
    kinds_at_pss_peak: dict[str, tuple[int, int]] = field(default_factory=dict)

    def summary(self) -> str:
        kinds = ", ".join(f"{kind} {n} x {pss / n / MB:.0f}"
                          for kind, (n, pss) in sorted(self.kinds_at_pss_peak.items()))
        return (f"peak PSS {self.pss / MB:.0f} MiB, peak RSS {self.rss / MB:.0f} MiB "
                f"({self.processes_at_pss_peak} processes at the PSS peak, {self.samples} samples;"
                f" MiB of PSS each: {kinds})")


#: The kind of a process: its program's name, else the first of these words in its command line
#: (mpiexec's own command line names the engine module too, hence the program first).
PROGRAMS = {"mpiexec": "mpiexec", "mpiexec.hydra": "mpiexec", "mpiexec.gforker": "mpiexec",
            "hydra_pmi_proxy": "hydra proxy"}
KINDS = (("ipykernel", "kernel"), ("ipyparallel.engine.nanny", "nanny"),
         ("ipyparallel.engine", "engine"), ("ipyparallel.controller", "controller"))


def kind_of(cmdline: list[str]) -> str:
    if cmdline and Path(cmdline[0]).name in PROGRAMS:
        return PROGRAMS[Path(cmdline[0]).name]
    line = " ".join(cmdline)
    return next((kind for word, kind in KINDS if word in line), "other")


def _of_run(environ: dict, ipython_dir: str) -> bool:
    """Whether a process environment belongs to the run whose ``IPYTHONDIR`` is ipython_dir."""
    return (environ.get("IPYTHONDIR") == ipython_dir
            or environ.get("IPP_PROFILE_DIR", "").startswith(ipython_dir + os.sep))


class MemorySampler:
    """Samples, in a thread, the memory of ``root``'s descendants and of the processes whose
    environment names ``ipython_dir`` (``root`` itself is not counted; ``root=None``: only the
    latter)."""

    def __init__(self, root: int | None, ipython_dir: Path, interval: float = 0.25):
        self.root = root
        self.ipython_dir = str(Path(ipython_dir).resolve())
        self.interval = interval
        self.peak = Peak()
        self._others: set[tuple[int, float]] = set()  # (pid, start time) of foreign processes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="memory-sampler")

    def processes(self) -> list[psutil.Process]:
        found: dict[int, psutil.Process] = {}
        if self.root is not None:
            try:
                for proc in psutil.Process(self.root).children(recursive=True):
                    found[proc.pid] = proc
            except psutil.NoSuchProcess:
                pass
        for proc in psutil.process_iter():
            try:
                key = (proc.pid, proc.create_time())
                if proc.pid in found or proc.pid in (self.root, os.getpid()) \
                        or key in self._others:
                    continue
                if _of_run(proc.environ(), self.ipython_dir):
                    found[proc.pid] = proc
                else:
                    self._others.add(key)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
                continue
        return list(found.values())

    def sample(self) -> None:
        rss = pss = count = 0
        kinds: dict[str, tuple[int, int]] = {}
        for proc in self.processes():
            try:
                info = proc.memory_full_info()
                cmdline = proc.cmdline()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            rss += info.rss
            pss += getattr(info, "pss", info.rss)
            count += 1
            self.peak.seen.setdefault(proc.pid, cmdline)
            n, total = kinds.get(kind_of(cmdline), (0, 0))
            kinds[kind_of(cmdline)] = (n + 1, total + getattr(info, "pss", info.rss))
        self.peak.samples += 1
        self.peak.rss = max(self.peak.rss, rss)
        if pss > self.peak.pss:
            self.peak.pss, self.peak.processes_at_pss_peak = pss, count
            self.peak.kinds_at_pss_peak = kinds

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@dataclass
class ChapterRun:
    returncode: int
    output: str
    seconds: float
    peak: Peak


def stop_leftovers(python: str, ipython_dir: Path, env: dict) -> list[int]:
    """Stop the clusters of ``ipython_dir`` with that environment's ``declearn cluster stop``,
    then SIGKILL, by pid, every process still alive whose environment names ``ipython_dir``
    (the kernel, the controller, mpiexec, the engines); return the pids killed."""
    try:
        subprocess.run([python, "-m", "declearn.cli", "cluster", "stop", "--all"], env=env,
                       capture_output=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        pass
    sampler = MemorySampler(None, ipython_dir)
    killed = []
    procs = sampler.processes()
    for proc in procs:
        try:
            proc.kill()
            killed.append(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    psutil.wait_procs(procs, timeout=10)
    return killed


def run_chapter(python: str, chapter: Path, workdir: Path, env: dict, *,
                executed: Path | None = None, timeout: float = 1500,
                interval: float = 0.25) -> ChapterRun:
    """Execute ``chapter`` with ``python`` and ``env`` (``IPYTHONDIR`` set to
    ``workdir/ipython``), sampling its memory; nothing of it is left running afterwards."""
    ipython_dir = Path(workdir) / "ipython"
    ipython_dir.mkdir(parents=True, exist_ok=True)
    ipython_dir = ipython_dir.resolve()
    env = dict(env, IPYTHONDIR=str(ipython_dir))
    executed = executed or Path(workdir) / f"executed-{Path(chapter).name}"
    start = time.monotonic()
    proc = subprocess.Popen([python, str(RUNNER), str(chapter), str(executed)], env=env,
                            cwd=str(Path(chapter).parent), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        with MemorySampler(proc.pid, ipython_dir, interval) as sampler:
            try:
                output, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                output, _ = proc.communicate(timeout=30)
                output += f"\n[binder_memory] stopped after {timeout:g} s"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        stop_leftovers(python, ipython_dir, env)
    return ChapterRun(proc.returncode, output, time.monotonic() - start, sampler.peak)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapter", type=Path, help="the chapter notebook (.ipynb)")
    parser.add_argument("--python", default=sys.executable,
                        help="the environment's interpreter (default: this one)")
    args = parser.parse_args(argv)
    if not args.chapter.is_file():
        chapters = sorted(p.name for p in Path("tutorials").glob("[0-9][0-9]_*.ipynb"))
        parser.error(f"no notebook at {args.chapter}; the chapters: {', '.join(chapters)}")
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "IPP_NONINTERACTIVE")}
    with tempfile.TemporaryDirectory(prefix="declearn-memory-") as workdir:
        run = run_chapter(args.python, args.chapter.resolve(), Path(workdir), env)
    print(run.output.strip())
    print(f"{args.chapter.name}: {run.seconds:.0f} s, {run.peak.summary()}")
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
