"""Shared by the test files that start real clusters: ``processes_mentioning(text)`` finds the
ipyparallel/MPI processes a test may have left behind.

``kill_processes_mentioning(text)`` ends them (SIGKILL). pytest puts tests/ on ``sys.path``, so
test files write ``from cluster_helpers import processes_mentioning``.
"""

from __future__ import annotations

import psutil


def processes_mentioning(text: str) -> list[psutil.Process]:
    """Live ipyparallel/MPI processes whose command line or environment mentions ``text``."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or ())
            if not any(k in cmd for k in ("ipyparallel", "mpiexec", "hydra_pmi_proxy")):
                continue
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            if text in cmd or text in " ".join(p.environ().values()):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def kill_processes_mentioning(text: str) -> None:
    """SIGKILL every process :func:`processes_mentioning` finds (a test's leftovers)."""
    for proc in processes_mentioning(text):
        try:
            proc.kill()
        except psutil.Error:
            pass
