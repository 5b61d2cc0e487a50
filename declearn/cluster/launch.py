"""Start a cluster of MPI engines from Python, attach to a running one, list or stop them.

A cluster is one ipyparallel controller plus n engines launched as ONE MPI job,
``mpiexec -n n python -m ipyparallel.engine --mpi``, with the ``mpiexec`` that
:func:`~declearn.cluster.mpiexec.find_mpiexec` finds (passed by full path: a Jupyter kernel may
not have the virtual environment on PATH). Engines run the same Python as the caller, so
whatever is importable here (declearn, torch) is importable there.

Exposure. By default (``open_network=False``) every process of the cluster listens on the
loopback interface only: the controller on 127.0.0.1, the MPI job started by MPICH's
``mpiexec.gforker`` (no TCP port) with the ranks' network module on ``lo`` (see
:mod:`declearn.cluster.mpiexec`). ``open_network=True`` launches with the MPI's own ``mpiexec``
(Hydra: its proxies, host files, ``-ppn``...), which listens on every interface, as engines on
other hosts need; ``ip`` then chooses the controller's interface.

Start-up is faster than ipyparallel's defaults: no fixed 1 s delay between controller and
engines (the engines get the connection info once the controller has written it), and the
controller pings heartbeats every 0.5 s instead of 3 s. An engine counts as registered only
after its first heartbeat, so the default costs up to 3 s per start for nothing; the
unregistration window stays at ipyparallel's 30 s (60 missed pings).
"""

from __future__ import annotations

import glob
import logging
import os
import socket
import sys
import time

from declearn.cluster.checks import (
    ClusterRequestError,
    check_capacity,
    check_engine_count,
    check_gpus,
)
from declearn.cluster.handle import Cluster, shutdown_cluster, wait_for_engines
from declearn.cluster.hosts import (
    check_controller_address,
    controller_answers,
    host_launch,
    loopback_launch,
    shutdown_remote,
    started_elsewhere,
)
from declearn.cluster.mpiexec import (
    launch_args,
    mpi_runtime,
    mpiexec_env,
)
from declearn.cluster.processes import cluster_processes, end_processes, pid_alive
from declearn.cluster.profile import (
    DEFAULT_PROFILE,
    HEARTBEAT_MISSES,
    HEARTBEAT_MS,
    resolve_profile_dir,
)
from declearn.cluster.record import ClusterRecord, cluster_files, remove_cluster_files
from declearn.cluster.shm import sweep_stale_segments
from declearn.cluster.slurm import check_slurm, slurm_config
from declearn.cluster.slurm import timeout_error as slurm_timeout_error
from declearn.errors import ClusterError

__all__ = ["start", "attach", "list_clusters", "stop_clusters", "forget_stale",
           "resolve_profile_dir", "DEFAULT_PROFILE"]



def _config(runtime, mpi_args, env=None, slurm=None, profile_dir: str = "."):
    """ipyparallel configuration that launches the engines with ``runtime.mpiexec`` and
    ``mpi_args``, with the variables ``env`` added to their environment."""
    from traitlets.config import Config

    cfg = Config()
    cfg.MPILauncher.mpi_cmd = [runtime.mpiexec]
    cfg.MPILauncher.mpi_args = list(mpi_args)
    # Hydra finds its proxy next to mpiexec; the kernel's PATH may not have that directory.
    path = mpiexec_env(runtime.mpiexec)["PATH"]
    cfg.MPIEngineSetLauncher.environment = {"PATH": path, **(env or {})}
    # the profile's ipcluster_config.py (declearn.cluster.profile) may name another Python
    cfg.MPIEngineSetLauncher.engine_cmd = [sys.executable, "-m", "ipyparallel.engine"]
    if slurm is not None:
        slurm_config(cfg, slurm, [sys.executable, "-m", "ipyparallel.engine"], env or {},
                     profile_dir)
    return cfg


def _check_gpus_visible(gpus) -> None:
    """``gpus=True`` for engines on this machine: fail now, before any process starts, if
    torch sees no GPU here (the engines would see none either; a restart cannot help)."""
    if gpus is not True:
        return
    import torch

    if torch.cuda.is_available():
        return
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    masked = f", CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
    raise ClusterRequestError(
        f"gpus=True but torch sees no GPU on this machine ({socket.gethostname()}; torch "
        f"{torch.__version__}, CUDA build {torch.version.cuda}{masked}), so no engine could "
        "get one and restarting cannot help. Start the cluster with gpus=False (CPU engines) "
        "or gpus='auto' (one GPU per engine where there are GPUs, else CPU), or run it on a "
        "machine with GPUs and a CUDA build of torch."
    )


def _ipp_logger(level: int) -> logging.Logger:
    """ipyparallel's launchers log every engine's full output when the engines stop (exit
    code 1 after SIGTERM), into the kernel's log, i.e. into the notebook. declearn reports
    real failures itself (with that output), so ipyparallel only speaks for errors."""
    log = logging.getLogger("declearn.cluster.ipyparallel")
    log.setLevel(level)
    return log


def _ipp_cluster(*, slurm: bool = False, **kwargs):
    import ipyparallel as ipp

    from declearn.cluster.launchers import QuietControllerLauncher, QuietMPIEngineSetLauncher

    engines = "slurm" if slurm else QuietMPIEngineSetLauncher
    return ipp.Cluster(engines=engines, controller=QuietControllerLauncher,
                       log=_ipp_logger(logging.ERROR), **kwargs)


def _running_cluster_ids(profile_dir: str) -> list[str]:
    pattern = os.path.join(profile_dir, "security", "cluster-*.json")
    prefix = os.path.join(profile_dir, "security", "cluster-")
    return sorted(path[len(prefix):-len(".json")] for path in glob.glob(pattern))


def start(
    n: int = 4,
    *,
    profile: str | None = None,
    cluster_id: str | None = None,
    timeout: float = 120,
    oversubscribe: bool | None = None,
    gpus="auto",
    mpi_args=(),
    activate: bool = True,
    ip: str = "127.0.0.1",
    profile_dir: str | None = None,
    controller_args=(),
    check_resources: bool = True,
    persistent: bool = False,
    open_network: bool = False,
    hosts=None,
    interface: str | None = None,
    slurm=None,
) -> Cluster:
    """Start a controller and ``n`` MPI engines, wait until all are registered, set them up,
    and return a :class:`Cluster` handle (which stops them all on ``stop()`` / ``with`` exit /
    interpreter exit).

    Parameters
    ----------
    n : int
        Number of engines = MPI ranks.
    profile, profile_dir : str, optional
        IPython profile (default ``"declearn"`` in ``$IPYTHONDIR``) or an explicit directory.
    cluster_id : str, optional
        Name of this cluster in the profile (default: a fresh time-based id).
    timeout : float
        Seconds allowed until every engine is registered and set up.
    oversubscribe : bool or None
        None: up to ``max(4, cores)`` engines; True: any number; False: at most ``cores``.
    gpus : "auto", True or False
        One GPU per engine by local rank where GPUs exist ("auto"), required (True: refused at
        once when torch sees no GPU on this machine), or none.
    mpi_args : sequence of str
        Extra ``mpiexec`` arguments. On loopback only ``mpiexec.gforker``'s few options
        (``-genv``, ``-wdir``...); host files, ``-ppn``, ``-bind-to`` need ``open_network``.
    activate : bool
        Make ``%px``/``%%px`` run on this cluster's (blocking, rank-ordered) view.
    ip : str
        Address the controller listens on: loopback unless ``open_network``; ``"*"`` for
        engines on other hosts.
    controller_args : sequence of str
        Extra ``ipcontroller`` arguments (e.g. ``["--usethreads"]`` to save memory).
    check_resources : bool
        Apply the local core/memory rules of :mod:`declearn.cluster.checks` (turn off when the
        engines run elsewhere).
    persistent : bool
        Keep the cluster running after this Python process exits (``declearn cluster start``
        uses it); the handle returned then does not own the cluster.
    open_network : bool
        False (default): every process of the cluster listens on loopback only (see the
        module docstring). True: launch with the MPI's own ``mpiexec``, which listens on
        every network interface, as engines on other hosts need; only on a trusted network.
    hosts : list of str, optional
        Engines on several hosts as one MPI job, ranks numbered host by host: each entry
        ``"address"`` or ``"address:slots"`` (Hydra's ``-hosts``, started over ssh; see
        :mod:`declearn.cluster.hosts`). Needs ``open_network=True`` and an ``ip`` the hosts
        reach; each host must answer on its ssh port (checked before anything starts).
    interface : str, optional
        The network interface (same name on every host) that carries the job's traffic:
        Hydra's ``-iface`` and the ranks' UCX/libfabric settings.
    slurm : True or dict, optional
        Start the engines as one Slurm job (``sbatch``, then ``srun --mpi=pmi2``) instead of
        ``mpiexec``: True, or a dict of sbatch options such as ``{"time": "01:00:00",
        "partition": "debug"}`` (see :mod:`declearn.cluster.slurm`). A job still queued when
        ``timeout`` passes is cancelled, saying what it waited for. ``mpi_args``, ``hosts`` and
        the local core rules do not apply.
    """
    n = check_engine_count(n)
    gpus = check_gpus(gpus)
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ClusterError(f"timeout must be a positive number of seconds, got {timeout!r}.")
    if not isinstance(open_network, bool):
        raise ClusterRequestError(f"open_network must be True or False, got {open_network!r}.")
    if (hosts is not None or interface is not None) and not open_network:
        raise ClusterRequestError(
            "hosts= and interface= put the MPI job on a network, so they need "
            "open_network=True as well (`--open-network`), on a trusted network, with an ip= "
            "the hosts reach.")
    options = None if slurm is None else check_slurm(slurm)
    runtime = mpi_runtime()
    engine_env = {}
    if not open_network:
        runtime, engine_env = loopback_launch(runtime, mpi_args, ip)
    else:
        check_controller_address(ip)
        mpi_args, engine_env = host_launch(hosts, interface, mpi_args, runtime=runtime)
    if check_resources:
        _check_gpus_visible(gpus)
    if check_resources and options is None:
        over = check_capacity(n, oversubscribe=oversubscribe)
    else:
        over = oversubscribe is True
    args = launch_args(runtime, mpi_args, over or oversubscribe is True)
    pdir = resolve_profile_dir(profile, profile_dir)
    if cluster_id is not None and cluster_id in _running_cluster_ids(pdir):
        if _attachable(pdir, cluster_id):
            raise ClusterError(
                f"A cluster with id {cluster_id!r} already runs in {pdir}. Use it with "
                f"declearn.cluster.attach(profile_dir={pdir!r}, cluster_id={cluster_id!r}), or "
                f"stop it first (`declearn cluster stop --profile-dir {pdir}`)."
            )
        _forget(pdir, cluster_id)

    kwargs = dict(n=n, profile_dir=pdir, delay=0, engine_timeout=int(timeout) + 1,
                  controller_ip=ip, shutdown_atexit=not persistent,
                  controller_args=[f"--HeartMonitor.period={HEARTBEAT_MS}",
                                   f"--HeartMonitor.max_heartmonitor_misses={HEARTBEAT_MISSES}",
                                   *map(str, controller_args)],
                  config=_config(runtime, args, engine_env, options, pdir))
    if cluster_id is not None:
        kwargs["cluster_id"] = str(cluster_id)
    ipp_cluster = _ipp_cluster(slurm=options is not None, **kwargs)
    record = ClusterRecord(profile_dir=pdir, cluster_id=ipp_cluster.cluster_id, n=n,
                           mpiexec=runtime.mpiexec, mpi_args=args, gpus=gpus, ip=ip,
                           started_by="cli" if persistent else "python", persistent=persistent,
                           open_network=open_network, mpi_env=engine_env, slurm=options)
    deadline = time.monotonic() + timeout
    handle = None
    try:
        ipp_cluster.start_controller_sync()
        sweep_stale_segments()  # see declearn.cluster.shm
        ipp_cluster.start_engines_sync(n)
        record.save()
        client = ipp_cluster.connect_client_sync()
        handle = Cluster(ipp_cluster, client, n=n, owned=not persistent, gpus=gpus,
                         timeout=timeout, activate=activate)
        how = "as a Slurm job" if options is not None else f"with {runtime.mpiexec}"
        ids = wait_for_engines(client, n, deadline, ipp_cluster,
                               what=f"Starting {n} engines {how}")
        handle._setup(deadline, ids)
    except BaseException as exc:
        error = None
        if options is not None and isinstance(exc, ClusterError):
            error = slurm_timeout_error(ipp_cluster, n, timeout, exc)  # before scancel
        if handle is not None:
            handle.stop(shutdown=True)
        else:
            shutdown_cluster(ipp_cluster)
            record.remove()
        if error is not None:
            raise error from exc
        raise
    return handle


def _load(pdir: str, cluster_id: str):
    """ipyparallel's Cluster for the cluster file, configured as declearn started it."""
    import ipyparallel as ipp

    record = ClusterRecord.load(pdir, cluster_id)
    kwargs = dict(log=_ipp_logger(logging.CRITICAL), shutdown_atexit=False)
    if record is not None:
        from declearn.cluster.mpiexec import MPIRuntime

        runtime = MPIRuntime(record.mpiexec, "unknown", "")
        kwargs["config"] = _config(runtime, record.mpi_args, record.mpi_env, record.slurm, pdir)
    path = os.path.join(pdir, "security", f"cluster-{cluster_id}.json")
    return ipp.Cluster.from_file(path, **kwargs), record


def _attachable(pdir: str, cluster_id: str) -> bool:
    """Whether the controller of that cluster file still runs."""
    try:
        ipp_cluster, record = _load(pdir, cluster_id)
    except Exception:
        return False
    return _controller_running(ipp_cluster, record)


def _controller_running(ipp_cluster, record=None) -> bool:
    """Whether the cluster's controller process runs (a zombie does not); for a cluster of
    another machine, whether its controller answers."""
    if started_elsewhere(record):
        return controller_answers(ipp_cluster.profile_dir, ipp_cluster.cluster_id)
    controller = ipp_cluster.controller
    return (controller is not None and controller.running
            and pid_alive(getattr(controller, "pid", None)))


def _forget(pdir: str, cluster_id: str, files: list[str] | None = None) -> None:
    """End the leftovers of a cluster whose controller is gone, and remove its files (``files``
    as listed by :func:`~declearn.cluster.record.cluster_files` before anything was removed,
    plus whatever of them exists now). Leftovers are looked for on this machine only."""
    if not started_elsewhere(ClusterRecord.load(pdir, cluster_id)):
        end_processes(cluster_processes(pdir, cluster_id))
    remove_cluster_files(pdir, cluster_id, [*(files or ()), *cluster_files(pdir, cluster_id)])


def forget_stale(pdir: str) -> list[str]:
    """Remove the files of clusters whose controller is gone (and end their leftovers), and
    declearn records without an ipyparallel cluster file; return the ids cleaned."""
    cleaned = [cid for cid in _running_cluster_ids(pdir) if not _attachable(pdir, cid)]
    prefix = os.path.join(pdir, "security", "declearn-cluster-")
    for path in glob.glob(prefix + "*.json"):
        cid = path[len(prefix):-len(".json")]
        if cid not in _running_cluster_ids(pdir):
            cleaned.append(cid)
    for cid in cleaned:
        _forget(pdir, cid)
    return sorted(set(cleaned))


def _pick_cluster_id(pdir: str, cluster_id: str | None) -> str:
    ids = _running_cluster_ids(pdir)
    if cluster_id is not None:
        if cluster_id not in ids:
            raise ClusterError(
                f"No cluster with id {cluster_id!r} in {pdir} (running there: {ids or 'none'}). "
                "Start one with `declearn cluster start -n 4` or declearn.cluster.start(4)."
            )
        return cluster_id
    live = [cid for cid in ids if _attachable(pdir, cid)]
    if not live:
        raise ClusterError(
            f"No running cluster in {pdir}. Start one with `declearn cluster start -n 4` "
            "(it keeps running for every notebook), or declearn.cluster.start(4) from here."
        )
    if len(live) > 1:
        raise ClusterError(
            f"Several clusters run in {pdir}: {live}; pass cluster_id=... to choose one."
        )
    return live[0]


def attach(
    profile: str | None = None,
    cluster_id: str | None = None,
    *,
    profile_dir: str | None = None,
    timeout: float = 60,
    activate: bool = True,
) -> Cluster:
    """Connect to a cluster that is already running (for example one started with
    ``declearn cluster start``), set its engines up, and return a :class:`Cluster` that does
    NOT own it: ``stop()`` disconnects and leaves it running for others; ``stop(shutdown=True)``
    or ``declearn cluster stop`` ends it. ``cluster_id=None`` picks the only running cluster
    of the profile (default profile ``declearn``)."""
    pdir = resolve_profile_dir(profile, profile_dir)
    cid = _pick_cluster_id(pdir, cluster_id)
    ipp_cluster, record = _load(pdir, cid)
    if not _controller_running(ipp_cluster, record):
        raise ClusterError(
            f"The controller of cluster {cid!r} in {pdir} is not running (a stale file). "
            "`declearn cluster stop` cleans it up; then start a new cluster."
        )
    if record is not None:
        n = record.n
    else:
        n = sum(es.n for es in ipp_cluster.engines.values())
    deadline = time.monotonic() + timeout
    client = ipp_cluster.connect_client_sync()
    if not n:
        n = len(client.ids)
    handle = Cluster(ipp_cluster, client, n=n, owned=False,
                     gpus=record.gpus if record else "auto", timeout=timeout,
                     activate=activate)
    try:
        ids = wait_for_engines(client, n, deadline, ipp_cluster,
                               what=f"Attaching to cluster {cid!r}")
        handle._setup(deadline, ids)
    except BaseException:
        handle.stop(shutdown=False)
        raise
    return handle


def list_clusters(profile: str | None = None, *, profile_dir: str | None = None,
                  query_timeout: float = 5.0) -> list[dict]:
    """What runs in a profile: per cluster file, ``cluster_id, running, engines`` (registered
    count), ``ranks`` (engine id -> MPI rank, or None if the engines were too busy to answer
    within ``query_timeout``), ``n`` (expected) and ``started_by``."""
    from declearn.cluster.engine_side import engine_identity

    pdir = resolve_profile_dir(profile, profile_dir)
    out = []
    for cid in _running_cluster_ids(pdir):
        entry = {"cluster_id": cid, "profile_dir": pdir, "running": False, "engines": 0,
                 "ranks": None, "n": None, "started_by": None}
        try:
            ipp_cluster, record = _load(pdir, cid)
        except Exception:
            out.append(entry)
            continue
        if record is not None:
            entry.update(n=record.n, started_by=record.started_by)
        entry["running"] = _controller_running(ipp_cluster, record)
        if entry["running"]:
            try:
                client = ipp_cluster.connect_client_sync()
            except Exception:  # a controller that does not answer: listed, engines unknown
                out.append(entry)
                continue
            try:
                ids = client.ids
                entry["engines"] = len(ids)
                if ids:
                    ranks = client[ids].apply_async(engine_identity).get(timeout=query_timeout)
                    entry["ranks"] = {eid: r for eid, (r, _) in zip(ids, ranks, strict=True)}
            except Exception:
                pass
            finally:
                client.close()
        out.append(entry)
    return out


def stop_clusters(profile: str | None = None, cluster_id: str | None = None, *,
                  profile_dir: str | None = None) -> list[str]:
    """Stop the cluster ``cluster_id`` of a profile, or all of them; return the ids stopped.
    Stale files (controller gone) are cleaned up too."""
    pdir = resolve_profile_dir(profile, profile_dir)
    ids = _running_cluster_ids(pdir)
    if cluster_id is not None:
        ids = [cid for cid in ids if cid == cluster_id]
    stopped = []
    for cid in ids:
        files = cluster_files(pdir, cid)  # shutdown_cluster removes the file that names some
        try:
            ipp_cluster, record = _load(pdir, cid)
        except Exception:
            _forget(pdir, cid, files)
            continue
        was_running = ipp_cluster.controller is not None or bool(ipp_cluster.engines)
        if started_elsewhere(record):  # its pids are another machine's
            was_running = controller_answers(pdir, cid)
            if was_running:
                shutdown_remote(ipp_cluster)
            remove_cluster_files(pdir, cid, [*files, *cluster_files(pdir, cid)])
            if was_running:
                stopped.append(cid)
            continue
        shutdown_cluster(ipp_cluster)
        _forget(pdir, cid, files)
        if was_running:
            stopped.append(cid)
    return stopped



def connect(n: int = 4, *, profile: str | None = None, profile_dir: str | None = None,
            timeout: float = 120, **start_kwargs) -> Cluster:
    """What a chapter's first cell calls: attach to the cluster already running in the profile
    (a lecturer's ``declearn cluster start -n 8``, whatever its size: read ``cluster.n``) or,
    when none runs, start ``n`` engines that this notebook owns and stops.

    ``start_kwargs`` go to :func:`start` (``gpus``, ``oversubscribe``, ``mpi_args``...). Several
    running clusters in the profile are an error that names them (pass the profile of one)."""
    pdir = resolve_profile_dir(profile, profile_dir)
    forget_stale(pdir)
    live = [cid for cid in _running_cluster_ids(pdir) if _attachable(pdir, cid)]
    if live:
        handle = attach(profile_dir=pdir, timeout=timeout)
        print(f"Attached to the running cluster {handle.cluster_id!r}: {handle.n} engines "
              "(it keeps running after this notebook).")
        return handle
    return start(n, profile_dir=pdir, timeout=timeout, **start_kwargs)
