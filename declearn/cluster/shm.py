"""Stale MPICH shared-memory segments, and their removal before a launch.

MPICH's ranks on one machine share a segment ``/dev/shm/mpich_shm_<id>_<node>``, where
``<id>`` is a hash of the job's PMI name. The ranks unlink it when they end normally; a job
that is killed (a test that hangs, a cell interrupted hard, ``kill -9``, an engine that
crashes) leaves it behind. MPICH's fork launcher ``mpiexec.gforker`` names its job after its
own process id (``kvs_<pid>_0``), so a later job whose launcher gets the same pid (Linux
reuses pids, by default among 32768) opens the stale segment as if a rank of its own had
just made it, and ``MPI_Init`` hangs or fails ("Message truncated" in
``MPIDI_UCX_comm_set_vcis``). One stale segment among 32768 pids is a 1-in-32768 chance per
launch; a machine with a few hundred of them fails about one launch in a hundred.

:func:`sweep_stale_segments` removes the segments of this user that no live process maps
and that are older than a few seconds (a starting job maps its segment within microseconds
of creating it); :func:`declearn.cluster.mpiexec.local_job` calls it before every launch.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["sweep_stale_segments", "SHM_DIR", "PREFIX"]

SHM_DIR = Path("/dev/shm")
PREFIX = "mpich_"


def _mapped_paths() -> set[str]:
    """Paths under SHM_DIR that some process of this user maps (reads ``/proc/*/maps``)."""
    mapped: set[str] = set()
    shm = str(SHM_DIR) + "/"
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/maps", "rb") as maps:
                for line in maps:
                    at = line.find(shm.encode())
                    if at >= 0:
                        mapped.add(line[at:].split(b" (deleted)")[0].strip().decode())
        except OSError:  # ended meanwhile, or another user's
            continue
    return mapped


def sweep_stale_segments(min_age: float = 10.0) -> list[str]:
    """Remove this user's ``/dev/shm/mpich_*`` segments that no live process maps and that
    were last changed more than ``min_age`` seconds ago; return their names. A no-op where
    there is no ``/dev/shm`` or ``/proc`` (macOS) or nothing is stale."""
    if not SHM_DIR.is_dir() or not Path("/proc/self/maps").exists():
        return []
    uid, now = os.getuid(), time.time()
    candidates = []
    try:
        entries = list(os.scandir(SHM_DIR))
    except OSError:
        return []
    for entry in entries:
        if not entry.name.startswith(PREFIX):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if st.st_uid == uid and now - st.st_mtime > min_age:
            candidates.append(entry.path)
    if not candidates:
        return []
    mapped = _mapped_paths()
    removed = []
    for path in candidates:
        if path in mapped:
            continue
        try:
            os.unlink(path)
            removed.append(os.path.basename(path))
        except OSError:
            pass
    return removed
