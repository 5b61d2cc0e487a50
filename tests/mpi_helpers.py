"""Shared by the test files that launch real MPI processes: ``needs_mpi`` skips where no
``mpiexec`` or mpi4py is installed, ``run_mpi`` runs a script from tests/mpi/ under ``mpiexec``
with a hard timeout and fails the test showing the output when it hangs or fails.

Jobs run as :func:`declearn.cluster.mpiexec.local_job` launches them: on this machine, every
socket on loopback (MPICH's ``mpiexec.gforker``, network modules on ``lo``), as a local cluster.

pytest puts tests/ on ``sys.path`` (rootdir-relative imports), so test files write
``from mpi_helpers import needs_mpi, run_mpi``.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from declearn.cluster.mpiexec import find_mpiexec, launcher_failure, local_job

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


def _end_job(proc: subprocess.Popen) -> None:
    """SIGKILL the session that ``proc`` leads (mpiexec and its ranks)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def mpi_command(script: str, n: int, *args: str) -> tuple[list[str], dict]:
    """``(argv, env)`` of ``mpiexec -n n python tests/mpi/<script> args`` on loopback."""
    cmd, env = local_job(n, [sys.executable, str(MPI_SCRIPTS / script), *args])
    env.setdefault("DECLEARN_TIMEOUT", "60")
    # A rank that gets SIGABRT prints every thread's Python stack first: see _dump_stacks.
    env.setdefault("PYTHONFAULTHANDLER", "1")
    return cmd, env


def _dump_stacks(proc: subprocess.Popen) -> None:
    """Make the ranks of a job that hangs print where they are: SIGABRT to each of mpiexec's
    children (the ranks run with PYTHONFAULTHANDLER=1)."""
    import psutil

    try:
        ranks = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return
    for rank in ranks:
        try:
            rank.send_signal(signal.SIGABRT)
        except psutil.NoSuchProcess:
            pass


def run_mpi(script: str, n: int, *args: str, timeout: float = 120) -> str:
    """Run ``mpiexec -n n python tests/mpi/<script> args`` with a hard timeout; return its
    output, or fail showing it."""
    cmd, env = mpi_command(script, n, *args)
    start = time.monotonic()
    # Its own session: on a timeout (or Ctrl-C) the whole job goes, ranks included, not only
    # mpiexec (gforker's ranks would otherwise run on, orphaned).
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except BaseException as exc:
        stdout = stderr = ""
        if isinstance(exc, subprocess.TimeoutExpired):
            _dump_stacks(proc)
            try:  # a few seconds for mpiexec to pass the stacks on
                stdout, stderr = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if proc.returncode is None:
            _end_job(proc)
            stdout, stderr = proc.communicate()
        if not isinstance(exc, subprocess.TimeoutExpired):
            raise
        pytest.fail(f"{' '.join(cmd)} hung for {timeout} s.\n--- stdout\n{_text(stdout)}"
                    f"\n--- stderr\n{_text(stderr)}")
    output = stdout + stderr
    failure = launcher_failure(proc.returncode, output)
    if failure:
        pytest.fail(
            f"{' '.join(cmd)}: {failure} after "
            f"{time.monotonic() - start:.1f} s.\n--- output\n{output[-20000:]}"
        )
    return output
