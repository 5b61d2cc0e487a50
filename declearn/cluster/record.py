"""What declearn remembers about a cluster it started, next to ipyparallel's own cluster file.

ipyparallel writes ``<profile_dir>/security/cluster-<id>.json`` (process ids, enough to stop
the cluster). It does not keep how the engines were launched (which ``mpiexec``, its
arguments, the GPU setting), which :meth:`Cluster.restart` needs after :func:`attach`; this
record keeps them in ``<profile_dir>/security/declearn-cluster-<id>.json``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field

__all__ = ["ClusterRecord"]


@dataclass
class ClusterRecord:
    """How a cluster was started: ``n`` engines via ``mpiexec`` + ``mpi_args``; ``gpus`` as
    given to start(); ``started_by`` is "python" or "cli"; ``persistent`` clusters outlive the
    process that started them."""

    profile_dir: str
    cluster_id: str
    n: int
    mpiexec: str
    mpi_args: list = field(default_factory=list)
    gpus: object = "auto"
    ip: str = "127.0.0.1"
    started_by: str = "python"
    persistent: bool = False
    started_at: float = field(default_factory=time.time)
    pid: int = field(default_factory=os.getpid)

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
