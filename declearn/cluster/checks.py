"""Checks run before any process starts: is the request for n engines sensible on this machine?

Rules, for n engines on one machine (``c`` = ``os.cpu_count()``):

* n must be a positive int;
* without ``oversubscribe=True`` n must satisfy ``n <= max(4, c)``. Four engines are always
  allowed, because the chapters' quick setting is 4 engines on a 2-core laptop and MPICH's Hydra
  oversubscribes silently (Open MPI needs ``--oversubscribe``, which start() then adds);
* n engines must fit in the available memory, at an estimated :data:`ENGINE_MEMORY_BYTES` each
  (an engine with numpy, mpi4py and torch imported, plus its nanny).

Pass ``check_resources=False`` to :func:`declearn.cluster.start` when the engines run on other
hosts (``mpi_args`` with a host file): these rules only describe the local machine.
"""

from __future__ import annotations

import os
from numbers import Integral

from declearn.errors import ClusterError

__all__ = [
    "ClusterRequestError",
    "ENGINE_MEMORY_BYTES",
    "QUICK_ENGINES",
    "check_engine_count",
    "check_capacity",
    "check_gpus",
    "max_engines_without_oversubscribe",
]

class ClusterRequestError(ClusterError, ValueError):
    """The cluster asked for cannot be started as asked (bad n, too many engines for this
    machine, bad gpus); also a ValueError, like every other bad-input error of declearn."""


#: Estimated resident memory of one engine with torch imported, its nanny included.
ENGINE_MEMORY_BYTES = 300 * 2**20
#: Engines always allowed on one machine, whatever its core count (the chapters' quick setting).
QUICK_ENGINES = 4


def check_engine_count(n) -> int:
    """Return n as an int if it is a positive integer, else raise ClusterRequestError."""
    if isinstance(n, bool) or not isinstance(n, Integral):
        raise ClusterRequestError(
            f"n (the number of engines) must be an int, got {n!r} of type {type(n).__name__}; "
            "for example declearn.cluster.start(4)."
        )
    if n < 1:
        raise ClusterRequestError(
            f"n (the number of engines) must be at least 1, got {n}; for example "
            "declearn.cluster.start(4)."
        )
    return int(n)


def max_engines_without_oversubscribe(cpu_count: int | None = None) -> int:
    """``max(4, cpu_count)``: the most engines start() launches without ``oversubscribe=True``."""
    cores = os.cpu_count() if cpu_count is None else cpu_count
    return max(QUICK_ENGINES, cores or 1)


def check_capacity(
    n: int,
    *,
    oversubscribe: bool | None = None,
    cpu_count: int | None = None,
    available_bytes: int | None = None,
) -> bool:
    """Raise ClusterError if n engines do not fit on this machine; return whether the launcher
    must be told to oversubscribe (more ranks than cores).

    ``oversubscribe``: None (default) allows up to ``max(4, cores)`` engines; True allows any
    number; False refuses more engines than cores. ``cpu_count`` and ``available_bytes`` default
    to this machine's (``os.cpu_count()``, ``psutil.virtual_memory().available``).
    """
    cores = (os.cpu_count() if cpu_count is None else cpu_count) or 1
    if oversubscribe is False and n > cores:
        raise ClusterRequestError(
            f"{n} engines on {cores} cores needs oversubscription, and oversubscribe=False "
            f"forbids it: start at most {cores} engines, or pass oversubscribe=None/True."
        )
    limit = max_engines_without_oversubscribe(cores)
    if oversubscribe is not True and n > limit:
        raise ClusterRequestError(
            f"{n} engines is more than this machine holds without oversubscription "
            f"({cores} cores; up to max(4, cores) = {limit} engines are allowed by default). "
            f"Start at most {limit} engines, or pass oversubscribe=True if you really want {n} "
            "processes to share the cores (every collective then waits for the slowest one)."
        )
    if available_bytes is None:
        import psutil

        available_bytes = psutil.virtual_memory().available
    need = n * ENGINE_MEMORY_BYTES
    if need > available_bytes:
        fit = max(int(available_bytes // ENGINE_MEMORY_BYTES), 0)
        raise ClusterRequestError(
            f"{n} engines would need about {need / 2**30:.1f} GiB (an estimate of "
            f"{ENGINE_MEMORY_BYTES // 2**20} MB per engine with torch imported) but only "
            f"{available_bytes / 2**30:.1f} GiB is available. Start at most {fit} engines, or "
            "free memory (stop other clusters: `declearn cluster stop`, close other kernels)."
        )
    return n > cores


def check_gpus(gpus) -> bool | str:
    """Validate the ``gpus`` argument: "auto", True or False."""
    if gpus == "auto" or gpus is True or gpus is False:
        return gpus
    raise ClusterRequestError(
        f"gpus must be 'auto' (one GPU per engine where GPUs exist), True (require them) or "
        f"False (CPU only), got {gpus!r}."
    )
