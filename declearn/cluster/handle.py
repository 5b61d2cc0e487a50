"""The handle on a running cluster of MPI engines: :class:`Cluster`.

Get one from :func:`declearn.cluster.start` (this process owns the cluster) or
:func:`declearn.cluster.attach` (someone else does, e.g. ``declearn cluster start``).
Engines are addressed by MPI rank: ``cluster.view`` targets engine ids ordered by rank, so the
i-th result of ``cluster.view.apply_sync(f)`` is rank i's, whatever ids ipyparallel gave them.

Ownership decides what :meth:`Cluster.stop` does. A cluster you started is stopped (every
process ended: controller, engines, nannies, mpiexec). An attached one is only disconnected
from, and keeps running for the others who use it; ``stop(shutdown=True)`` stops it anyway.
"""

from __future__ import annotations

import os
import signal
import time
from numbers import Integral

from declearn.cluster.engine_side import resync_engine, setup_engine
from declearn.cluster.processes import cluster_processes, end_processes
from declearn.cluster.record import ClusterRecord
from declearn.errors import ClusterError

__all__ = ["Cluster"]

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
    stop_engines(ipp_cluster, grace=grace)
    controller = ipp_cluster.controller
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
    record = ClusterRecord.load(ipp_cluster.profile_dir, ipp_cluster.cluster_id)
    if record is not None:
        record.remove()
    return survivors


class Cluster:
    """A running ipyparallel controller plus n engines that form ONE MPI job.

    Attributes
    ----------
    view : ipyparallel.DirectView
        Blocking view of all engines, ordered by MPI rank; what ``%px``/``%%px`` use.
    client : ipyparallel.Client
        The connection to the controller.
    ipp : ipyparallel.Cluster
        ipyparallel's own cluster object (launchers, log files).
    n, ranks : int, range
        Number of engines and their MPI ranks ``0..n-1``.
    info : list[dict]
        Per rank: ``rank, size, local_rank, host, pid, device, engine_id``.
    owned : bool
        True if this handle stops the cluster on :meth:`stop` (see the module docstring).
    """

    def __init__(self, ipp_cluster, client, *, n: int, owned: bool, gpus="auto",
                 timeout: float = 120.0, activate: bool = True):
        self.ipp = ipp_cluster
        self.client = client
        self.n = int(n)
        self.owned = bool(owned)
        self.gpus = gpus
        self.timeout = float(timeout)
        self._activate = bool(activate)
        self._view = None
        self._stopped = False
        self._detached = False
        self.info: list[dict] = []

    # ------------------------------------------------------------------ identity
    @property
    def profile_dir(self) -> str:
        return self.ipp.profile_dir

    @property
    def profile(self) -> str:
        name = os.path.basename(self.profile_dir.rstrip(os.sep))
        return name[len("profile_"):] if name.startswith("profile_") else self.profile_dir

    @property
    def cluster_id(self) -> str:
        return self.ipp.cluster_id

    @property
    def ranks(self) -> range:
        return range(self.n)

    @property
    def devices(self) -> list[str]:
        """The device each rank computes on, e.g. ``["cuda:0", "cuda:1"]`` or ``["cpu"] * n``."""
        return [d["device"] for d in self.info]

    @property
    def running(self) -> bool:
        return not self._stopped

    @property
    def view(self):
        self._check_running()
        return self._view

    def engine_id(self, rank: int) -> int:
        """The ipyparallel engine id of MPI rank ``rank``."""
        if isinstance(rank, bool) or not isinstance(rank, Integral) or not 0 <= rank < self.n:
            raise ValueError(f"rank must be an int in 0..{self.n - 1}, got {rank!r}.")
        return self.info[int(rank)]["engine_id"]

    def processes(self) -> list:
        """psutil handles of every local process of this cluster (controller, schedulers,
        mpiexec, proxies, engines, nannies)."""
        return cluster_processes(self.profile_dir, self.cluster_id)

    # ------------------------------------------------------------------ set-up
    def _setup(self, deadline: float, ids: list[int]) -> None:
        """Run :func:`setup_engine` on engines ``ids``, map ranks to engine ids, build the
        view."""
        try:
            results = self.client[ids].apply_async(setup_engine, self.gpus).get(
                timeout=max(deadline - time.monotonic(), 1.0)
            )
        except Exception as exc:
            raise ClusterError(
                f"Engine set-up failed: {exc}. Restart the cluster (cluster.restart()); if "
                "it fails again, run `declearn doctor`."
            ) from exc
        for engine_id, info in zip(ids, results, strict=True):
            info["engine_id"] = engine_id
        ranks = sorted(info["rank"] for info in results)
        sizes = {info["size"] for info in results}
        if ranks != list(range(self.n)) or sizes != {self.n}:
            raise ClusterError(
                f"Expected the {self.n} engines of one MPI job (ranks 0..{self.n - 1}), found "
                f"ranks {ranks} with COMM_WORLD sizes {sorted(sizes)}: engines of another job "
                "are registered with this controller. Stop this cluster and start a fresh one."
            )
        self.info = sorted(results, key=lambda info: info["rank"])
        view = self.client[[info["engine_id"] for info in self.info]]
        view.block = True  # a non-blocking %px prints nothing: the classic trap
        self._view = view
        if self._activate:
            try:
                from IPython import get_ipython
            except ImportError:
                return
            if get_ipython() is not None:
                view.activate()

    def _check_running(self) -> None:
        if self._stopped:
            raise ClusterError(
                f"Cluster {self.cluster_id!r} was stopped or detached; start a new one with "
                "declearn.cluster.start(n) or attach again with declearn.cluster.attach()."
            )

    # ------------------------------------------------------------------ control
    def stop(self, shutdown: bool | None = None, *, grace: float = 3.0) -> None:
        """Disconnect; and, if ``shutdown`` (default: :attr:`owned`), end every process of the
        cluster. Idempotent."""
        if self._stopped:
            return
        if shutdown is None:
            shutdown = self.owned
        self._stopped = True
        self._detached = not shutdown
        try:
            self.client.close()
        except Exception:
            pass
        if not shutdown:
            return
        survivors = shutdown_cluster(self.ipp, grace=grace)
        if survivors:
            raise ClusterError(
                f"Processes {[p.pid for p in survivors]} of cluster {self.cluster_id!r} "
                "survived SIGKILL; end them by pid (kill -9)."
            )

    def restart(self, timeout: float | None = None) -> Cluster:
        """Stop the engines (whatever state they are in: one killed takes the whole MPI job
        down) and start n new ones with the same ranks; re-runs the engine set-up, so
        ``rank``, ``size`` and ``device`` are back, everything else in the namespaces is gone.
        Returns self."""
        self._check_running()
        timeout = self.timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + timeout
        stop_engines(self.ipp)
        # New engines ask for ids 0..n-1 again: let the old registrations go first (the
        # nannies report a death at once; the heartbeat window is 30 s).
        wait_until = min(deadline, time.monotonic() + 35.0)
        while self.client.ids and time.monotonic() < wait_until:
            time.sleep(_POLL)
        stale = self.client.ids
        self.ipp.start_engines_sync(self.n)
        ids = wait_for_engines(self.client, self.n, deadline, self.ipp,
                               what="Restarting the engines", exclude=stale)
        self._setup(deadline, ids)
        return self

    def interrupt(self) -> None:
        """Send SIGINT to every engine (through its nanny, so remote engines too). A Python
        loop, e.g. declearn's deadline loop around a collective, raises KeyboardInterrupt and
        the engine is usable again; a wait inside the MPI library itself is not interrupted
        (then use :meth:`restart`)."""
        self._check_running()
        self.client.send_signal(signal.SIGINT, targets=[d["engine_id"] for d in self.info],
                                block=True)

    def resync(self, timeout: float | None = None) -> list[int] | None:
        """Call ``declearn.comm.mpi.resync_all()`` on every engine at once, after a timed-out
        collective left the ranks out of step. Returns, per rank, how many MPIComm objects
        were resynced; None if this declearn has no ``resync_all``."""
        self._check_running()
        done = self._view.apply_sync(resync_engine, timeout)
        return None if all(d is None for d in done) else done

    # ------------------------------------------------------------------ protocol
    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "owned" if self.owned else "attached"
        if self._stopped:
            state = "detached" if self._detached else "stopped"
        head = (f"<declearn Cluster: {self.n} engines, profile {self.profile!r}, "
                f"cluster id {self.cluster_id!r}, {state}")
        if not self.info:
            return head + ">"
        hosts = {d["host"] for d in self.info}
        lines = [
            f"  rank {d['rank']}: {d['device']}"
            + (f" on {d['host']}" if len(hosts) > 1 else "")
            + f" (engine {d['engine_id']}, pid {d['pid']})"
            for d in self.info
        ]
        where = f" on {hosts.pop()}" if len(hosts) == 1 else ""
        return head + where + "\n" + "\n".join(lines) + ">"
