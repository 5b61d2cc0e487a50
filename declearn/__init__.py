"""declearn: decentralized optimization and learning, taught in JupyterLab.

Write an algorithm once against a :class:`~declearn.comm.Communicator` and run it on the
one-process simulator (:class:`~declearn.comm.SimComm`) or on MPI engines
(:class:`~declearn.comm.MPIComm`). The PyPI distribution is ``declearn-tutorials``; the
unrelated federated-learning package named ``declearn`` on PyPI is a different project.
"""

from importlib import import_module

from declearn import errors, topology
from declearn.comm import Communicator, MPIComm, SimComm

__version__ = "0.1.0"
__all__ = [
    "Communicator", "MPIComm", "SimComm", "errors", "topology", "comm", "cluster",
    "algorithms", "problems", "optim", "__version__",
]

_LAZY = ("cluster", "algorithms", "problems", "optim", "comm")


def __getattr__(name):
    # Subpackages with heavy imports (ipyparallel, ...) load on first use.
    if name in _LAZY:
        return import_module(f"declearn.{name}")
    raise AttributeError(f"module 'declearn' has no attribute {name!r}")
