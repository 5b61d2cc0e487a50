"""Where an engine computes: its rank on the node and the device it uses by default.

On a node with ``g`` GPUs and ``p`` engines, engine ``local_rank`` uses ``cuda:(local_rank % g)``,
so engines spread over the GPUs round-robin. The cluster code calls :func:`default_device`
when engines start; ``MPIComm(device=None)`` uses it too.
"""

from __future__ import annotations

import os

import torch

__all__ = ["local_rank", "local_size", "default_device", "LOCAL_RANK_ENV"]

#: Launcher variables holding the rank on the node: MPICH/Hydra, Open MPI, Slurm, MVAPICH.
LOCAL_RANK_ENV = (
    "MPI_LOCALRANKID",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "SLURM_LOCALID",
    "MV2_COMM_WORLD_LOCAL_RANK",
    "PMI_LOCAL_RANK",
)
_LOCAL_SIZE_ENV = (
    "MPI_LOCALNRANKS",
    "OMPI_COMM_WORLD_LOCAL_SIZE",
    "SLURM_NTASKS_PER_NODE",
    "MV2_COMM_WORLD_LOCAL_SIZE",
    "PMI_LOCAL_SIZE",
)

_SHARED: dict = {}


def _node_split(comm=None):
    """``(rank, size)`` of this process among the processes of ``comm`` (default
    ``COMM_WORLD``) that share its memory (its node), or None without MPI. A collective call
    over ``comm``; the answer for ``COMM_WORLD`` is computed once."""
    if comm is not None:
        from mpi4py import MPI

        if comm.Get_size() == 1:
            return (0, 1)
        node = comm.Split_type(MPI.COMM_TYPE_SHARED)
        try:
            return (node.Get_rank(), node.Get_size())
        finally:
            node.Free()
    if "world" not in _SHARED:
        try:
            from mpi4py import MPI
        except ImportError:
            _SHARED["world"] = None
        else:
            world = MPI.COMM_WORLD
            if world.Get_size() == 1:
                _SHARED["world"] = (0, 1)
            else:
                node = world.Split_type(MPI.COMM_TYPE_SHARED)
                _SHARED["world"] = (node.Get_rank(), node.Get_size())
                node.Free()
    return _SHARED["world"]


def _from_env(names) -> int | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return None


def local_rank(comm=None) -> int:
    """This process's rank among the MPI processes of ``comm`` (default ``COMM_WORLD``) on
    its node.

    ``comm.Split_type(COMM_TYPE_SHARED)`` gives it exactly; it is a collective call, so every
    rank of ``comm`` must call it (engines do at start-up; the ``COMM_WORLD`` answer is
    cached). Without mpi4py, the launcher's variables (:data:`LOCAL_RANK_ENV`) are read; with
    neither, 0.
    """
    split = _node_split(comm)
    if split is not None:
        return split[0]
    value = _from_env(LOCAL_RANK_ENV)
    return 0 if value is None else value


def local_size(comm=None) -> int:
    """Number of MPI processes of ``comm`` on this node (see :func:`local_rank`)."""
    split = _node_split(comm)
    if split is not None:
        return split[1]
    value = _from_env(_LOCAL_SIZE_ENV)
    return 1 if value is None else value


def default_device(rank_on_node: int | None = None, comm=None) -> torch.device:
    """``cuda:(local_rank % device_count)`` when CUDA is available, else ``cpu`` (without
    communicating). ``rank_on_node`` defaults to ``local_rank(comm)``."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if count == 0:
        return torch.device("cpu")
    rank_on_node = local_rank(comm) if rank_on_node is None else int(rank_on_node)
    return torch.device("cuda", rank_on_node % count)
