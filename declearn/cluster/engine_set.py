"""The engines' MPI job as ipyparallel launched it: waiting for the engines to register
(:func:`wait_for_engines`), what mpiexec and the controller printed (:func:`launch_output`),
and ending it (:func:`stop_engines`, :func:`shutdown_cluster`), for clusters this process
started as well as for clusters loaded from their file."""

from __future__ import annotations

import time

from declearn.cluster.launchers import detach_output
from declearn.cluster.processes import cluster_processes, end_processes
from declearn.cluster.record import cluster_files, remove_cluster_files
from declearn.errors import ClusterError

__all__ = ["wait_for_engines", "launch_output", "stop_engines", "shutdown_cluster"]

_POLL = 0.02  # seconds between two looks at the engine registry


def _tail(text: str, lines: int = 40) -> str:
    return "".join((text or "").splitlines(True)[-lines:]).rstrip()


def _launcher_alive(launcher) -> bool:
    """Whether the process a ipyparallel launcher started (mpiexec, controller) still runs."""
    popen = getattr(launcher, "_popen_process", None)
    if popen is not None:
        return popen.poll() is None
    proc = getattr(launcher, "process", None)
    if proc is None:
        return True  # not started from here and not reconstructed: cannot tell
    try:
        import psutil

        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except Exception:
        return False


def launch_output(ipp_cluster) -> str:
    """The tail of what mpiexec (engines) and the controller printed, for error messages."""
    parts = []
    for engine_set in list(ipp_cluster.engines.values()):
        try:
            out = engine_set.get_output()
        except Exception as exc:  # the file may be gone; say so rather than fail again
            out = f"(could not read the mpiexec output: {exc})"
        command = " ".join(engine_set.args)
        parts.append(f"--- mpiexec output ({command}):\n{_tail(out) or '(empty)'}")
    controller = ipp_cluster.controller
    if controller is not None:
        try:
            out = controller.get_output()
        except Exception as exc:
            out = f"(could not read: {exc})"
        parts.append(f"--- controller output:\n{_tail(out, 15) or '(empty)'}")
    return "\n".join(parts)


def wait_for_engines(client, n: int, deadline: float, ipp_cluster, *, what: str,
                     exclude=()) -> list[int]:
    """Return the ids of ``n`` registered engines (ignoring the ids in ``exclude``: engines of
    a previous job not yet unregistered); raise ClusterError, with mpiexec's output, at
    ``deadline`` (a time.monotonic() value) or as soon as mpiexec has exited."""
    exclude = set(exclude)
    while True:
        ids = [i for i in client.ids if i not in exclude]
        have = len(ids)
        if have >= n:
            return ids
        engine_sets = list(ipp_cluster.engines.values())
        dead = [es for es in engine_sets if not _launcher_alive(es)]
        if dead or time.monotonic() > deadline:
            why = "mpiexec exited" if dead else "the timeout passed"
            raise ClusterError(
                f"{what}: only {have} of {n} engines registered before {why}. What mpiexec "
                f"printed is below; a `python -m ipyparallel.engine` error means the engines "
                f"could not start (run `declearn doctor`), a Hydra/PMI error means MPI itself "
                f"could not (check mpi_args). If the machine is just slow, pass a larger "
                f"timeout.\n{launch_output(ipp_cluster)}"
            )
        time.sleep(_POLL)


def _exit_status(launcher) -> int | None:
    """The exit status of the launcher's process once it has ended, when this process is its
    parent: from ipyparallel's stop notice, or psutil's cached wait, or Popen's; else None."""
    stop_data = getattr(launcher, "stop_data", None) or {}
    if isinstance(stop_data.get("exit_code"), int):
        return stop_data["exit_code"]
    proc = getattr(launcher, "process", None)
    if proc is not None:
        try:
            code = proc.wait(timeout=0)
        except Exception:  # still running, or not ours to wait for
            code = None
        if isinstance(code, int):
            return code
    popen = getattr(launcher, "_popen_process", None)
    # Popen says 0 when another wait reaped the process first: only trust a failure
    return popen.returncode if popen is not None and popen.returncode else None


def _local_child(launcher) -> bool:
    """Whether this process started the launcher's process (else it was loaded from a file)."""
    return getattr(launcher, "_popen_process", None) is not None


def _remove_output(launcher) -> None:
    try:
        launcher.get_output(remove=True)
    except Exception:
        pass


def stop_engines(ipp_cluster, *, grace: float = 3.0) -> None:
    """End the engines' MPI job (mpiexec, proxies, engines, nannies); forget its engine sets.

    ipyparallel's own stop is used for processes this one started. For a cluster loaded from
    its file the processes are signalled directly: their parent is gone, and ipyparallel would
    wait until init reaps them, seconds on some systems.
    """
    sets = list(ipp_cluster.engines.values())
    for es in sets:  # before any signal: see declearn.cluster.launchers
        detach_output(es)
    for es in [es for es in sets if getattr(es, "job_id", "")]:  # a batch job: its scheduler's
        try:
            es.stop()  # scancel (or qdel...), whoever submitted it
        except Exception:
            pass
        sets.remove(es)
        ipp_cluster.engines.pop(es.engine_set_id if hasattr(es, "engine_set_id") else None, None)
    if sets and all(_local_child(es) for es in sets):
        try:
            ipp_cluster.stop_engines_sync()
        except Exception:
            pass  # leftovers are ended below
    else:
        end_processes([es.process for es in sets if getattr(es, "process", None) is not None],
                      grace=grace)
        for es in sets:
            _remove_output(es)
        ipp_cluster.engines.clear()
    end_processes(cluster_processes(ipp_cluster.profile_dir, ipp_cluster.cluster_id,
                                    engines_only=True), grace=grace)


def shutdown_cluster(ipp_cluster, *, grace: float = 3.0) -> list:
    """End every process of the cluster, engines first (a controller that vanishes first
    makes engines wait for it), remove its files; return the processes that survived."""
    files = cluster_files(ipp_cluster.profile_dir, ipp_cluster.cluster_id)  # named in them
    controller = ipp_cluster.controller
    if controller is not None:
        detach_output(controller)
    stop_engines(ipp_cluster, grace=grace)
    if controller is not None:
        if _local_child(controller):
            try:
                ipp_cluster.stop_controller_sync()
            except Exception:
                pass
        else:
            if getattr(controller, "process", None) is not None:
                end_processes([controller.process], grace=grace)
            _remove_output(controller)
            ipp_cluster.controller = None
    survivors = end_processes(cluster_processes(ipp_cluster.profile_dir, ipp_cluster.cluster_id),
                              grace=grace)
    ipp_cluster.remove_cluster_file()
    remove_cluster_files(ipp_cluster.profile_dir, ipp_cluster.cluster_id, files)
    return survivors
