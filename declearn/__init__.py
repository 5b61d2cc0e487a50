"""declearn: decentralized optimization and learning, taught in JupyterLab.

Write an algorithm once against a :class:`~declearn.comm.Communicator` and run it on the
one-process simulator (:class:`~declearn.comm.SimComm`) or on MPI engines
(:class:`~declearn.comm.MPIComm`). The PyPI distribution is ``declearn-tutorials``; the
unrelated federated-learning package named ``declearn`` on PyPI is a different project.
"""

from importlib import import_module

__version__ = "0.1.0"
__all__ = [
    "Communicator", "MPIComm", "SimComm", "errors", "topology", "comm", "cluster",
    "algorithms", "problems", "optim", "__version__",
]

_SUBPACKAGES = ("errors", "topology", "comm", "cluster", "algorithms", "problems", "optim")
_FROM_COMM = ("Communicator", "MPIComm", "SimComm")


def __getattr__(name):
    # Everything loads on first use, so `import declearn` (and the CLI) stays quick: torch
    # comes with declearn.comm, ipyparallel with declearn.cluster.
    if name in _SUBPACKAGES:
        return import_module(f"declearn.{name}")
    if name in _FROM_COMM:
        return getattr(import_module("declearn.comm"), name)
    raise AttributeError(f"module 'declearn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
