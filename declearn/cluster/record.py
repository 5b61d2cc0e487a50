"""What declearn remembers about a cluster it started, next to ipyparallel's own cluster file.

ipyparallel writes ``<profile_dir>/security/cluster-<id>.json`` (process ids, enough to stop
the cluster). It does not keep how the engines were launched (which ``mpiexec``, its
arguments, the GPU setting), which :meth:`Cluster.restart` needs after :func:`attach`; this
record keeps them in ``<profile_dir>/security/declearn-cluster-<id>.json``.

:func:`cluster_files` lists every file a cluster leaves in its profile, which ipyparallel
removes only in part when the processes are signalled (its controller never deletes the engine
table ``log/engines<id>.json``), and not at all for a cluster whose processes died.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import asdict, dataclass, field

__all__ = ["ClusterRecord", "cluster_files", "remove_cluster_files"]


@dataclass
class ClusterRecord:
    """How a cluster was started: ``n`` engines via ``mpiexec`` + ``mpi_args``; ``gpus`` as
    given to start(); ``started_by`` is "python" or "cli"; ``persistent`` clusters outlive the
    process that started them; ``open_network`` as given to start() (None: a record written
    before declearn had it); ``mpi_env``: the variables added to the engines' environment
    (the loopback confinement), given again on restart; ``host``: the machine whose processes
    ``pid`` and the launchers' pids are (the controller's and mpiexec's)."""

    profile_dir: str
    cluster_id: str
    n: int
    mpiexec: str
    mpi_args: list = field(default_factory=list)
    gpus: object = "auto"
    ip: str = "127.0.0.1"
    started_by: str = "python"
    persistent: bool = False
    open_network: bool | None = None
    mpi_env: dict = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)
    slurm: dict | None = None  # sbatch options of engines started as a Slurm job

    @staticmethod
    def path_for(profile_dir: str, cluster_id: str) -> str:
        return os.path.join(profile_dir, "security", f"declearn-cluster-{cluster_id}.json")

    @property
    def path(self) -> str:
        return self.path_for(self.profile_dir, self.cluster_id)

    def save(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(asdict(self), f)
        os.replace(tmp, self.path)

    def remove(self) -> None:
        try:
            os.remove(self.path)
        except FileNotFoundError:
            pass

    @classmethod
    def load(cls, profile_dir: str, cluster_id: str) -> ClusterRecord | None:
        """The record of that cluster, or None if declearn did not start it."""
        try:
            with open(cls.path_for(profile_dir, cluster_id)) as f:
                data = json.load(f)
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def cluster_files(profile_dir: str, cluster_id: str) -> list[str]:
    """The files of cluster ``cluster_id`` in ``profile_dir`` that exist: ipyparallel's cluster
    file, declearn's record, the two connection files, the controller's engine table, and the
    launchers' output files (those the cluster file names, and those named after this id)."""
    security = os.path.join(profile_dir, "security")
    prefix = f"ipcontroller-{cluster_id}" if cluster_id else "ipcontroller"
    cluster_file = os.path.join(security, f"cluster-{cluster_id}.json")
    paths = [cluster_file, ClusterRecord.path_for(profile_dir, cluster_id),
             os.path.join(security, f"{prefix}-client.json"),
             os.path.join(security, f"{prefix}-engine.json"),
             os.path.join(profile_dir, "log", f"engines{cluster_id}.json")]
    try:
        with open(cluster_file) as f:
            data = json.load(f)
        states = [(data.get("controller") or {}).get("state") or {}]
        states += list(((data.get("engines") or {}).get("sets") or {}).values())
        log_dir = os.path.realpath(os.path.join(profile_dir, "log"))
        for state in states:
            out = state.get("output_file") if isinstance(state, dict) else None
            # only this profile's log folder: a cluster file is no licence to delete elsewhere
            if out and os.path.dirname(os.path.realpath(out)) == log_dir:
                paths.append(out)
    except (OSError, ValueError, AttributeError):
        pass
    # The launchers' logs, also when the cluster file no longer names them (ipyparallel
    # rewrites it as soon as it sees the processes gone): ipyparallel names them
    # <name>[-<cluster id>][-<engine set id>]-<pid>.log, which tells cluster ids apart.
    cid = f"{re.escape(cluster_id)}-" if cluster_id else ""
    # (-stopping.log once a stop has begun: declearn.cluster.launchers.detach_output)
    own_log = re.compile(rf"(ipcontroller-{cid}\d+|ipengine-{cid}\d+-\d+)(-stopping)?\.log")
    log_dir = os.path.join(profile_dir, "log")
    try:
        paths += [os.path.join(log_dir, name) for name in sorted(os.listdir(log_dir))
                  if own_log.fullmatch(name)]
    except OSError:
        pass
    return [p for p in dict.fromkeys(paths) if os.path.isfile(p)]


def remove_cluster_files(profile_dir: str, cluster_id: str,
                         paths: list[str] | None = None) -> list[str]:
    """Delete the files of that cluster (``paths``, by default :func:`cluster_files`); return
    those removed."""
    removed = []
    for path in cluster_files(profile_dir, cluster_id) if paths is None else paths:
        try:
            os.remove(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed
