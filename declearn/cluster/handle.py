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
import socket
import time
from numbers import Integral, Real

from declearn.cluster.checks import ClusterRequestError
from declearn.cluster.engine_set import (
    _exit_status,
    _launcher_alive,
    _tail,
    shutdown_cluster,
    stop_engines,
    wait_for_engines,
)
from declearn.cluster.engine_side import resync_engine, setup_engine
from declearn.cluster.faults import (
    JOB_END_WAIT,
    ClusterBusyError,
    ClusterStoppedError,
    DeathWatch,
    JobEnd,
    MPIJobEndedError,
    read_hydra_report,
)
from declearn.cluster.processes import cluster_processes
from declearn.cluster.record import ClusterRecord, cluster_files, remove_cluster_files
from declearn.cluster.shm import sweep_stale_segments
from declearn.cluster.view import ClusterView, _engine_died
from declearn.errors import ClusterError

__all__ = ["Cluster", "ClusterView", "stop_advice"]

_POLL = 0.02  # seconds between two looks at the engine registry
#: Seconds cluster.resync() waits for the engines' answers beyond their own resync deadline.
RESYNC_GRACE = 5.0
#: Seconds resync() waits for engines that look busy to settle: the controller's queue counts
#: can lag the reply of a request that just finished.
BUSY_SETTLE = 1.0


def _rank_list(ranks) -> str:
    """``"rank 2"`` / ``"ranks 0, 2"``."""
    ranks = list(ranks)
    if len(ranks) == 1:
        return f"rank {ranks[0]}"
    return f"ranks {', '.join(map(str, ranks))}"


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
        self._watch: DeathWatch | None = None
        self._output_links: list[str] = []
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
            if "torch sees no GPU" in str(exc):  # engines on another host: restarting cannot help
                raise ClusterRequestError(
                    f"Engine set-up failed: {exc}. No GPU is visible to the engines, so "
                    "restarting cannot help: start the cluster with gpus=False (CPU engines) or "
                    "gpus='auto', or on machines with GPUs and a CUDA build of torch."
                ) from exc
            raise ClusterError(
                f"Engine set-up failed: {exc}. Restart the cluster (cluster.restart()); if "
                "it fails again, run `declearn doctor`."
            ) from exc
        for engine_id, info in zip(ids, results, strict=True):
            info["engine_id"] = engine_id
        ranks = sorted(info["rank"] for info in results)
        sizes = {info["size"] for info in results}
        if ranks != list(range(self.n)) or sizes != {self.n}:
            if sizes == {1}:
                why = ("these engines were not started as one MPI job (each is an MPI world of "
                       "its own), as JupyterLab's IPython Parallel sidebar or `ipcluster start` "
                       "start them from a profile without declearn's ipcluster_config.py")
            else:
                why = "engines of another MPI job are registered with this controller"
            raise ClusterError(
                f"Expected the {self.n} engines of one MPI job (ranks 0..{self.n - 1}), found "
                f"ranks {ranks} with COMM_WORLD sizes {sorted(sizes)}: {why}. Stop them: "
                f"{stop_advice(self.profile_dir)}; then run declearn.cluster.connect({self.n}) "
                "again, which starts a cluster of MPI engines."
            )
        self.info = sorted(results, key=lambda info: info["rank"])
        view = ClusterView(client=self.client, socket=self.client._mux_stream,
                           targets=[info["engine_id"] for info in self.info])
        view._cluster = self
        view.block = True  # a non-blocking %px prints nothing: the classic trap
        self._view = view
        self._start_watch()
        if self._activate:
            try:
                from IPython import get_ipython
            except ImportError:
                return
            shell = get_ipython()
            if shell is not None:
                view.activate()
                _show_outputs_by_rank(shell)

    def _check_running(self) -> None:
        if not self._stopped:
            return
        if self._detached:
            raise ClusterStoppedError(
                f"This notebook detached from cluster {self.cluster_id!r} (cluster.stop()); "
                "it keeps running for others. Use it again with declearn.cluster.connect(n) "
                "(or declearn.cluster.attach()), or start a new one with "
                "declearn.cluster.start(n)."
            )
        raise ClusterStoppedError(
            f"Cluster {self.cluster_id!r} was stopped (cluster.stop()) and its engines are "
            "gone: start a new one with declearn.cluster.connect(n) (or "
            "declearn.cluster.start(n)), then re-run your set-up cells."
        )

    # ------------------------------------------------------------------ health
    def _start_watch(self) -> None:
        """Watch the engines that run on this host, to name the first one that dies."""
        self._stop_watch()
        here = socket.gethostname()
        local = {d["rank"]: d["pid"] for d in self.info if d.get("host") == here}
        if local:
            self._watch = DeathWatch(local)
        # ipyparallel deletes mpiexec's output file as soon as its event loop (a kernel's)
        # sees mpiexec exit; a second name for the file keeps Hydra's report readable.
        for es in self.ipp.engines.values():
            path = getattr(es, "output_file", "")
            link = f"{path}.declearn-{os.getpid()}"
            try:
                if os.path.exists(link):
                    os.remove(link)
                os.link(path, link)
            except OSError:
                continue
            self._output_links.append(link)

    def _stop_watch(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        for link in self._output_links:
            try:
                os.remove(link)
            except OSError:
                pass
        self._output_links = []

    def _mpiexec_state(self) -> tuple[bool, str, int | None]:
        """(still running, its output, its exit status if known) for the engines' mpiexec."""
        sets = list(self.ipp.engines.values())
        running = all(_launcher_alive(es) for es in sets)
        output, code = "", None
        if not running:
            for link in self._output_links:
                try:
                    with open(link, errors="replace") as f:
                        output += f.read()
                except OSError:
                    pass
            for es in sets:
                if not self._output_links:
                    try:
                        output += es.get_output() or ""
                    except Exception:
                        pass
                code = _exit_status(es)
        return running, output, code

    def _job_end(self, wait: float = 0.0) -> JobEnd | None:
        """Why the MPI job is over, or None while it runs. With ``wait``, first give mpiexec
        up to that many seconds to exit (when an engine died, so its report is complete)."""
        ids = {d["engine_id"] for d in self.info}
        deadline = time.monotonic() + wait
        while True:
            dead = self._watch.dead_ranks() if self._watch is not None else []
            running, output, code = self._mpiexec_state()
            try:
                missing = bool(ids - set(self.client.ids))
            except Exception:
                missing = True
            if not (dead or missing or not running):
                return None
            if not running or time.monotonic() >= deadline:
                break
            time.sleep(_POLL)
        return JobEnd.build(self.cluster_id, self.n, self._watch,
                            read_hydra_report(output, code), mpiexec_running=running,
                            output_tail=_tail(output, 15))

    def _check_usable(self, view=None, *, wait: float = 0.0) -> None:
        """Raise a ClusterError that says what to do if this cluster (or ``view``, a view of
        an earlier job) cannot serve a request; cheap enough to run before each one."""
        self._check_running()
        if view is not None and view is not self._view and (
                self._view is None or list(view.targets) != list(self._view.targets)):
            raise ClusterError(
                "This view belongs to an MPI job that cluster.restart() replaced; use "
                "cluster.view (%px already runs on the new engines)."
            )
        end = self._job_end(wait)
        if end is not None:
            raise MPIJobEndedError(end.message(during=False), ranks_first=end.first,
                                   how=end.how)

    def _explain_failure(self, exc: BaseException) -> MPIJobEndedError | None:
        """The error to raise instead of ``exc`` when engines died during a request."""
        if not _engine_died(exc) or self._stopped:
            return None
        end = self._job_end(wait=JOB_END_WAIT)
        if end is None:
            return None
        return MPIJobEndedError(end.message(during=True), ranks_first=end.first, how=end.how,
                                during=True)

    def check(self) -> None:
        """Raise the error the next use would raise (cluster stopped, MPI job ended, with
        what to do); return None if the engines can serve requests."""
        self._check_usable()

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
        self._stop_watch()
        remote = shutdown and self._started_on_another_host()
        if remote:  # its pids are another machine's: ask the controller to end it all
            try:
                self.client.shutdown(targets="all", hub=True, block=True)
            except Exception as exc:
                raise ClusterError(
                    f"Could not shut down cluster {self.cluster_id!r} from this host: {exc}. "
                    f"Stop it on the host that started it: {stop_advice(self.profile_dir)}."
                ) from exc
        try:
            self.client.close()
        except Exception:
            pass
        if not shutdown:
            return
        if remote:
            remove_cluster_files(self.profile_dir, self.cluster_id,
                                 cluster_files(self.profile_dir, self.cluster_id))
            self.ipp.remove_cluster_file()
            return
        survivors = shutdown_cluster(self.ipp, grace=grace)
        if survivors:
            raise ClusterError(
                f"Processes {[p.pid for p in survivors]} of cluster {self.cluster_id!r} "
                "survived SIGKILL; end them by pid (kill -9)."
            )

    def _started_on_another_host(self) -> bool:
        """Whether the controller and mpiexec of this cluster run on another machine (one
        that shares the profile's folder): their pids mean nothing here."""
        record = ClusterRecord.load(self.profile_dir, self.cluster_id)
        return record is not None and record.host != socket.gethostname()

    def restart(self, timeout: float | None = None) -> Cluster:
        """Stop the engines (whatever state they are in: one killed takes the whole MPI job
        down) and start n new ones with the same ranks; re-runs the engine set-up, so
        ``rank``, ``size`` and ``device`` are back, everything else in the namespaces is gone.
        Returns self."""
        self._check_running()
        timeout = self.timeout if timeout is None else float(timeout)
        deadline = time.monotonic() + timeout
        self._stop_watch()
        stop_engines(self.ipp)
        # New engines ask for ids 0..n-1 again: let the old registrations go first (the
        # nannies report a death at once; the heartbeat window is 30 s).
        wait_until = min(deadline, time.monotonic() + 35.0)
        while self.client.ids and time.monotonic() < wait_until:
            time.sleep(_POLL)
        stale = self.client.ids
        sweep_stale_segments()  # the killed job's, among others: see cluster.shm
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
        self._check_usable()
        self.client.send_signal(signal.SIGINT, targets=[d["engine_id"] for d in self.info],
                                block=True)

    def resync(self, timeout: float = 30.0) -> list[int] | None:
        """Call ``declearn.comm.mpi.resync_all(timeout=timeout)`` on every engine at once,
        after a timed-out collective left the ranks out of step. Returns, per rank, how many
        MPIComm objects were resynced; None if this declearn has no ``resync_all``.

        A resync needs every rank at the same time, so it is refused at once, with
        :class:`ClusterBusyError` naming the ranks, while some engine still runs an earlier
        request (a ``%px`` cell, an ``apply``): ``cluster.interrupt()`` frees them. It also
        has its own deadline here: ranks that have not answered ``timeout`` +
        :data:`RESYNC_GRACE` seconds after the request are named the same way, and their
        request is cancelled if it has not started.
        """
        self._check_usable()
        if isinstance(timeout, bool) or not isinstance(timeout, Real) or not timeout > 0:
            raise ClusterRequestError(
                f"timeout must be a positive number of seconds, got {timeout!r}; for example "
                "cluster.resync(timeout=30)."
            )
        eids = [d["engine_id"] for d in self.info]
        busy = self._busy_ranks(eids)
        settle = time.monotonic() + BUSY_SETTLE
        while busy and time.monotonic() < settle:  # the controller's count may lag a reply
            time.sleep(_POLL)
            busy = self._busy_ranks(eids)
        if busy:
            raise ClusterBusyError(
                f"cluster.resync() did not start: {_rank_list(busy)} "
                f"{'is' if len(busy) == 1 else 'are'} still running an earlier "
                "request (a %px cell or an apply), and a resync needs every rank at once. "
                "Stop it with cluster.interrupt() (or wait for it to finish), then call "
                "cluster.resync() again.", busy)
        result = self._view.apply_async(resync_engine, float(timeout))
        try:
            done = result.get(timeout=float(timeout) + RESYNC_GRACE)
        except TimeoutError:
            pending = [rank for rank, msg_id in enumerate(result.msg_ids)
                       if msg_id in self.client.outstanding]
            try:  # a request still queued behind another one must not run later, alone
                self.client.abort(jobs=[result.msg_ids[r] for r in pending],
                                  targets=[eids[r] for r in pending], block=False)
            except Exception:
                pass
            raise ClusterBusyError(
                f"cluster.resync(timeout={timeout:g}) got no answer from {_rank_list(pending)}"
                f" within {timeout + RESYNC_GRACE:g} s: busy with an earlier request, or stuck"
                " inside MPI itself. Call cluster.interrupt(), then cluster.resync() again; "
                "if a rank still does not answer, cluster.restart() (engine state is lost).",
                pending) from None
        return None if all(d is None for d in done) else done

    def _busy_ranks(self, eids: list[int]) -> list[int]:
        """Ranks whose engine has requests queued or running (from any client)."""
        try:
            status = self.client.queue_status(targets=eids, verbose=False)
        except Exception:
            return []
        return [rank for rank, eid in enumerate(eids)
                if status.get(eid, {}).get("queue", 0) or status.get(eid, {}).get("tasks", 0)]

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


def stop_advice(profile_dir: str) -> str:
    """How to stop the clusters of ``profile_dir``: the shell command and its Python twin."""
    from IPython.paths import get_ipython_dir

    from declearn.cluster.profile import DEFAULT_PROFILE

    parent, name = os.path.split(os.path.abspath(profile_dir).rstrip(os.sep))
    if parent == os.path.abspath(get_ipython_dir()) and name.startswith("profile_"):
        profile = name[len("profile_"):]
        option = "" if profile == DEFAULT_PROFILE else f" --profile {profile}"
        call = "" if profile == DEFAULT_PROFILE else f"profile={profile!r}"
    else:
        option, call = f" --profile-dir {profile_dir}", f"profile_dir={profile_dir!r}"
    return (f"`declearn cluster stop{option}` in a terminal (or "
            f"declearn.cluster.stop_clusters({call}) here)")


def _show_outputs_by_rank(shell) -> None:
    """``%px`` prints each cell's outputs once every rank is done, in rank order, instead of
    streaming them as they arrive (mixed, in whatever order the ranks print). Engine ids are
    the MPI ranks (ipyparallel's MPI launcher starts the engines with ``--mpi``), so
    ``[stdout:r]`` is rank r. ``%%px --stream`` streams one cell; ``%pxconfig --stream`` all."""
    magics = shell.magics_manager.registry.get("ParallelMagics")
    if magics is not None:
        magics.stream_output = False
