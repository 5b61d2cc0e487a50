"""Find and end the processes of one cluster.

ipyparallel launches the controller and ``mpiexec`` with ``IPP_CLUSTER_ID`` and
``IPP_PROFILE_DIR`` in their environment, and every descendant inherits it: the controller's
schedulers, Hydra's ``hydra_pmi_proxy``, the engines and their nannies. Those two variables
therefore name exactly the processes of one cluster, even though an engine's command line
(``python -m ipyparallel.engine --mpi``) does not.
"""

from __future__ import annotations

import os
import time

import psutil

__all__ = ["cluster_processes", "end_processes", "pid_alive"]


def pid_alive(pid) -> bool:
    """Whether process ``pid`` runs: exists and is not a zombie. (A process killed after its
    parent exited stays a zombie until init reaps it, which may take a while; ipyparallel's
    launchers count it as running.)"""
    try:
        return psutil.Process(int(pid)).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.ZombieProcess, TypeError, ValueError):
        return False
    except psutil.AccessDenied:
        return True


def cluster_processes(profile_dir: str, cluster_id: str, *, engines_only: bool = False):
    """The live processes of the cluster (``profile_dir``, ``cluster_id``), this one excluded.

    ``engines_only`` leaves out the controller and its schedulers, keeping mpiexec, its proxies,
    the engines and the nannies.
    """
    profile_dir = os.path.abspath(profile_dir)
    me = os.getpid()
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid == me:
            continue
        try:
            env = proc.environ()
            if env.get("IPP_CLUSTER_ID") != cluster_id:
                continue
            if os.path.abspath(env.get("IPP_PROFILE_DIR", "")) != profile_dir:
                continue
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
        if engines_only and "ipyparallel.controller" in " ".join(proc.info["cmdline"] or ()):
            continue
        found.append(proc)
    return found


def _gone(proc) -> bool:
    """Exited, or a zombie waiting for its parent (often init, which may reap late)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return True
    except psutil.AccessDenied:
        return False


def _wait_gone(procs, timeout: float) -> list:
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if not _gone(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if not _gone(p)]
    return alive


def end_processes(procs, *, grace: float = 3.0) -> list:
    """SIGTERM the given processes, SIGKILL those still alive after ``grace`` seconds; return
    the ones that survived both (normally none). A zombie counts as ended."""
    alive = [p for p in procs if not _gone(p)]
    for sig in ("terminate", "kill"):
        for proc in alive:
            try:
                getattr(proc, sig)()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        alive = _wait_gone(alive, grace)
        if not alive:
            break
    return alive
