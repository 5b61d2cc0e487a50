"""Shared by the test files that launch real MPI processes: ``needs_mpi`` skips where no
``mpiexec`` or mpi4py is installed, ``run_mpi`` runs a script from tests/mpi/ under ``mpiexec``
with a hard timeout and fails the test showing the output when it hangs or exits non-zero.

pytest puts tests/ on ``sys.path`` (rootdir-relative imports), so test files write
``from mpi_helpers import needs_mpi, run_mpi``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import pytest

from declearn.cluster.mpiexec import find_mpiexec, mpiexec_env

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MPI_SCRIPTS = HERE / "mpi"


def have_mpi() -> bool:
    """True where an ``mpiexec`` and mpi4py can be found (without initialising MPI here)."""
    try:
        return find_mpiexec() is not None and importlib.util.find_spec("mpi4py") is not None
    except Exception:  # noqa: BLE001
        return False


needs_mpi = pytest.mark.skipif(not have_mpi(), reason="needs mpiexec and mpi4py")


def _text(stream) -> str:
    return stream.decode() if isinstance(stream, bytes) else (stream or "")


def run_mpi(script: str, n: int, *args: str, timeout: float = 120) -> str:
    """Run ``mpiexec -n n python tests/mpi/<script> args`` with a hard timeout; return its
    output, or fail showing it."""
    mpiexec = find_mpiexec()
    cmd = [mpiexec, "-n", str(n), sys.executable, str(MPI_SCRIPTS / script), *args]
    env = mpiexec_env(mpiexec)
    env.setdefault("DECLEARN_TIMEOUT", "60")
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(cmd)} hung for {timeout} s.\n--- stdout\n{_text(exc.stdout)}"
                    f"\n--- stderr\n{_text(exc.stderr)}")
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} exited with {proc.returncode} after "
            f"{time.monotonic() - start:.1f} s.\n--- output\n{output[-20000:]}"
        )
    return output
