"""Communication: the :class:`Communicator` protocol and its two backends.

``SimComm(n)`` runs all n nodes in this process (node dim first); ``MPIComm()`` is one node per
MPI rank. mpi4py is imported only when an MPIComm is created.
"""

from declearn.comm.base import (
    Communicator,
    Traffic,
    get_default_timeout,
    set_default_timeout,
)
from declearn.comm.costs import NetworkModel
from declearn.comm.delay import DelayedComm
from declearn.comm.mpi import MPIComm
from declearn.comm.partial import partial_allreduce
from declearn.comm.ring import ring_allreduce
from declearn.comm.sim import SimComm

__all__ = [
    "Communicator", "SimComm", "MPIComm", "Traffic", "get_default_timeout",
    "set_default_timeout",
    "DelayedComm", "NetworkModel", "partial_allreduce", "ring_allreduce",
]
