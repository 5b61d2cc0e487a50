"""The MPIComm objects alive in this process, and the MPI objects abandoned while MPI may
still use them (kept referenced until the process ends)."""

from __future__ import annotations

import itertools
import weakref

__all__ = ["live_comms"]

_LIVE: weakref.WeakSet = weakref.WeakSet()
_ORPHANS: list = []  # duplications and service channels abandoned, kept alive for MPI
_SERIAL = itertools.count()


def live_comms() -> list:
    """The MPIComm objects alive in this process, oldest first."""
    return sorted(_LIVE, key=lambda c: c._serial)
