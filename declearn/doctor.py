"""``declearn doctor``: is this machine ready for the chapters?

Prints the versions that matter, then runs each check and prints ``OK``, ``FAIL`` (with its
fix), ``WARN`` (an optional feature is missing, with its fix) or ``SKIP``. Required checks:
Python >= 3.10, the core packages import, an ``mpiexec`` is found, mpi4py loads an MPI library,
a real 2-rank MPI round trip (rank 0 sends a value, rank 1 echoes it back, rank 0 compares), and,
unless ``--quick``, a 2-engine cluster starts, runs a function on each engine and stops.
Optional: GPUs seen by torch (with CUDA-aware MPI where it can be told), and JupyterLab widget
support. The exit code is 0 iff every required check passes.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

__all__ = ["Check", "run_doctor", "mpi_roundtrip", "PACKAGES"]

#: (import name, distribution name, required)
PACKAGES = [
    ("declearn", "declearn-tutorials", True),
    ("torch", "torch", True),
    ("numpy", "numpy", True),
    ("mpi4py", "mpi4py", True),
    ("ipyparallel", "ipyparallel", True),
    ("ipywidgets", "ipywidgets", False),
    ("jupyterlab", "jupyterlab", False),
    ("sklearn", "scikit-learn", False),  # the digits of the deep-learning chapter
]

_ROUNDTRIP = r"""
import sys
from mpi4py import MPI
comm = MPI.COMM_WORLD
assert comm.Get_size() == 2, f"expected 2 ranks, got {comm.Get_size()}"
value = 123456789
if comm.Get_rank() == 0:
    comm.send(value, dest=1, tag=7)
    echo = comm.recv(source=1, tag=8)
    print("ROUNDTRIP", "OK" if echo == value else f"BAD echo {echo!r}", flush=True)
else:
    comm.send(comm.recv(source=0, tag=7), dest=0, tag=8)
"""

_MPI_INFO = r"""
import ctypes
from mpi4py import MPI
print(MPI.Get_library_version().strip().splitlines()[0])
lib = ctypes.CDLL(None)
cuda = "unknown"
try:                                    # Open MPI
    cuda = "yes" if lib.MPIX_Query_cuda_support() else "no"
except AttributeError:
    try:                                # MPICH: MPIX_GPU_query_support(CUDA=0, &out)
        out = ctypes.c_int(0)
        lib.MPIX_GPU_query_support(0, ctypes.byref(out))
        cuda = "yes" if out.value else "no"
    except AttributeError:
        pass
print(cuda)
"""


@dataclass
class Check:
    """One line of the report: ``status`` is OK, FAIL, WARN or SKIP."""

    name: str
    status: str
    detail: str = ""
    fix: str = ""
    required: bool = True

    def line(self) -> str:
        text = f"[{self.status:^4}] {self.name}" + (f": {self.detail}" if self.detail else "")
        if self.status in ("FAIL", "WARN") and self.fix:
            text += f"\n       fix: {self.fix}"
        return text


def _dist_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def check_python() -> Check:
    ok = sys.version_info >= (3, 10)
    return Check("Python >= 3.10", "OK" if ok else "FAIL",
                 f"{sys.version.split()[0]} at {sys.executable}",
                 "create the environment with Python 3.10 or newer (make env PYTHON=python3.11)")


def check_packages() -> list[Check]:
    checks = []
    for module, dist, required in PACKAGES:
        try:
            mod = importlib.import_module(module)
            ver = _dist_version(dist) or getattr(mod, "__version__", "?")
            checks.append(Check(f"{module}", "OK", ver, required=required))
        except Exception as exc:  # an ImportError, or a broken build raising anything
            checks.append(Check(
                module, "FAIL" if required else "WARN", f"cannot import: {exc}",
                f"pip install {dist}" if module != "declearn" else "pip install -e . (in the repo)",
                required=required))
    return checks


def check_mpiexec():
    from declearn.cluster.mpiexec import mpi_runtime
    from declearn.errors import ClusterError

    try:
        rt = mpi_runtime()
    except ClusterError as exc:
        return Check("mpiexec", "FAIL", str(exc).split(".")[0],
                     "pip install mpich (or set DECLEARN_MPIEXEC=/path/to/mpiexec)"), None
    return Check("mpiexec", "OK", f"{rt.mpiexec} ({rt.flavor}, {rt.version_text})"), rt


def check_mpi_library(timeout: float) -> tuple[Check, str]:
    """The MPI library mpi4py loads, asked in a subprocess so this one stays MPI-free."""
    try:
        out = subprocess.run([sys.executable, "-c", _MPI_INFO], capture_output=True,
                             text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Check("MPI library (mpi4py)", "FAIL", f"no answer in {timeout:g} s",
                     "reinstall the MPI runtime: pip install --force-reinstall mpich mpi4py"), "?"
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        err = (out.stderr.strip().splitlines() or ["no output"])[-1]
        return Check("MPI library (mpi4py)", "FAIL", err,
                     "pip install mpich mpi4py (an MPI runtime and mpi4py built for it)"), "?"
    cuda_aware = lines[1] if len(lines) > 1 else "?"
    return Check("MPI library (mpi4py)", "OK", " ".join(lines[0].split())), cuda_aware


def mpi_roundtrip(runtime, timeout: float = 60) -> Check:
    """``mpiexec -n 2 python -c ...``: rank 0 sends a value, rank 1 echoes it, rank 0 checks."""
    from declearn.cluster.mpiexec import local_job

    name = "MPI round trip over 2 ranks"
    if runtime is None:
        return Check(name, "SKIP", "no mpiexec")
    cmd, env = local_job(2, [sys.executable, "-c", _ROUNDTRIP], runtime=runtime)  # loopback
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return Check(name, "FAIL", f"no answer in {timeout:g} s",
                     "MPI processes cannot reach each other: check the hostname resolves "
                     "(`hostname -i`), or try FI_PROVIDER=tcp / a different MPI runtime wheel")
    seconds = time.perf_counter() - t0
    if out.returncode == 0 and "ROUNDTRIP OK" in out.stdout:
        return Check(name, "OK", f"rank 0 -> rank 1 -> rank 0 in {seconds:.2f} s")
    tail = (out.stdout + out.stderr).strip().splitlines()[-3:]
    return Check(name, "FAIL", f"exit {out.returncode}: {' | '.join(tail)}",
                 "make mpi4py and mpiexec come from the same MPI: pip install mpich mpi4py in "
                 "this environment (or point DECLEARN_MPIEXEC at the matching mpiexec)")


def check_engines(timeout: float) -> Check:
    """Start a 2-engine cluster in a throw-away profile, run a function on each, stop it."""
    from declearn.cluster import start

    name = "ipyparallel engines start (2 MPI engines)"
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="declearn-doctor-") as tmp:
        try:
            with start(2, profile_dir=os.path.join(tmp, "profile_doctor"), timeout=timeout,
                       activate=False, gpus=False) as cluster:
                ranks = cluster.view.pull("rank")  # set by the engine set-up, per rank
                ready = time.perf_counter() - t0
        except Exception as exc:
            return Check(name, "FAIL", str(exc).splitlines()[0],
                         "read the mpiexec output above; `pip install -U ipyparallel mpi4py` "
                         "and rerun; run `declearn doctor` with --timeout 180 on slow machines")
    if ranks != [0, 1]:
        return Check(name, "FAIL", f"engines report ranks {ranks}, expected [0, 1]",
                     "engines do not form one MPI job: mpi4py and mpiexec come from different "
                     "MPIs (pip install mpich mpi4py)")
    return Check(name, "OK", f"ready in {ready:.1f} s, stopped in "
                             f"{time.perf_counter() - t0 - ready:.1f} s")


def check_gpus(cuda_aware: str) -> Check:
    try:
        import torch
    except Exception:
        return Check("GPUs", "SKIP", "torch not importable", required=False)
    if not torch.cuda.is_available():
        build = f"CUDA build {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
        return Check("GPUs", "OK", f"none seen by torch ({build}); engines compute on CPU",
                     required=False)
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    detail = f"{len(names)}: {', '.join(names)}; CUDA-aware MPI: {cuda_aware}"
    if cuda_aware != "yes":
        return Check("GPUs", "WARN", detail,
                     "MPIComm stages GPU tensors through host memory; for direct GPU messages "
                     "use a CUDA-aware MPI (e.g. conda-forge openmpi with "
                     "OMPI_MCA_opal_cuda_support=true)", required=False)
    return Check("GPUs", "OK", detail, required=False)


def check_widgets() -> Check:
    name = "JupyterLab widgets"
    ver = _dist_version("jupyterlab_widgets")
    if ver is None:
        return Check(name, "WARN", "jupyterlab_widgets not installed",
                     "pip install 'ipywidgets>=8.1,<9' (brings jupyterlab_widgets)",
                     required=False)
    try:
        from jupyter_core.paths import jupyter_path

        dirs = jupyter_path("labextensions")
    except Exception:
        dirs = [os.path.join(sys.prefix, "share", "jupyter", "labextensions")]
    found = [d for d in dirs if os.path.isfile(
        os.path.join(d, "@jupyter-widgets", "jupyterlab-manager", "package.json"))]
    if not found:
        return Check(name, "WARN", f"jupyterlab_widgets {ver} but no labextension in {dirs}",
                     "pip install --force-reinstall jupyterlab_widgets, then restart JupyterLab",
                     required=False)
    return Check(name, "OK", f"jupyterlab_widgets {ver}, labextension in {found[0]}",
                 required=False)


def run_doctor(*, quick: bool = False, timeout: float = 60, out=None) -> int:
    """Run every check, print the report to ``out`` (stdout), return the exit code."""
    out = out or sys.stdout

    def show(check: Check) -> Check:
        print(check.line(), file=out, flush=True)
        return check

    print(f"declearn doctor ({sys.executable})", file=out)
    checks = [show(check_python())]
    checks += [show(c) for c in check_packages()]
    mpiexec_check, runtime = check_mpiexec()
    checks.append(show(mpiexec_check))
    library_check, cuda_aware = check_mpi_library(timeout)
    checks.append(show(library_check))
    checks.append(show(mpi_roundtrip(runtime, timeout)))
    if quick:
        checks.append(show(Check("ipyparallel engines start", "SKIP", "--quick")))
    elif runtime is None or library_check.status != "OK":
        checks.append(show(Check("ipyparallel engines start", "SKIP", "MPI is not working")))
    else:
        checks.append(show(check_engines(max(timeout, 30))))
    checks.append(show(check_gpus(cuda_aware)))
    checks.append(show(check_widgets()))
    failed = [c for c in checks if c.required and c.status == "FAIL"]
    if failed:
        print(f"{len(failed)} required check(s) failed: "
              + ", ".join(c.name for c in failed), file=out)
        return 1
    print("All required checks passed.", file=out)
    return 0
