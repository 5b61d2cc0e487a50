"""Stale MPICH shared-memory segments (declearn.cluster.shm): removed before a launch when no
process maps them and they are old; left alone otherwise. Real files in /dev/shm, a real
mapping held by a real child process, and a real job after a killed one."""

from __future__ import annotations

import mmap
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from declearn.cluster.mpiexec import local_job
from declearn.cluster.shm import PREFIX, SHM_DIR, sweep_stale_segments

from mpi_helpers import needs_mpi

pytestmark = pytest.mark.skipif(not SHM_DIR.is_dir() or not Path("/proc/self/maps").exists(),
                                reason="needs /dev/shm and /proc (Linux)")


def _segment(tag: str, age: float) -> Path:
    path = SHM_DIR / f"{PREFIX}test_{tag}_{uuid.uuid4().hex[:8]}"
    path.write_bytes(b"\0" * mmap.PAGESIZE)
    then = time.time() - age
    os.utime(path, (then, then))
    return path


def test_sweep_removes_old_unmapped_segments_only():
    stale = _segment("stale", age=3600)
    young = _segment("young", age=0)
    held = _segment("held", age=3600)
    other = SHM_DIR / f"not_mpich_{uuid.uuid4().hex[:8]}"
    other.write_bytes(b"\0")
    os.utime(other, (time.time() - 3600,) * 2)
    # another process maps `held` (as every rank of a running job maps its segment)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import mmap, sys; f = open(sys.argv[1], 'r+b'); m = mmap.mmap(f.fileno(), 0); "
         "f.close(); print('mapped', flush=True); sys.stdin.read()", str(held)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "mapped"
        os.utime(held, (time.time() - 3600,) * 2)
        removed = sweep_stale_segments(min_age=10.0)
        assert stale.name in removed and not stale.exists()
        assert young.exists() and held.exists() and other.exists()
        assert young.name not in removed and held.name not in removed
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
        for p in (young, held, other):
            p.unlink(missing_ok=True)
    # once its holder is gone, `held` is stale too
    held.write_bytes(b"\0")
    os.utime(held, (time.time() - 3600,) * 2)
    assert held.name in sweep_stale_segments() and not held.exists()


@needs_mpi
def test_a_killed_job_leaves_a_segment_that_the_next_launch_removes(tmp_path):
    script = tmp_path / "sleep.py"
    script.write_text("from mpi4py import MPI\nimport time\nMPI.COMM_WORLD.Barrier()\n"
                      "if MPI.COMM_WORLD.Get_rank() == 0:\n    print('up', flush=True)\n"
                      "time.sleep(600)\n")  # one rank prints: two could share a line
    before = {p.name for p in SHM_DIR.glob(f"{PREFIX}*")}
    cmd, env = local_job(2, [sys.executable, str(script)])
    job = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        assert job.stdout.readline().strip() == "up"
        left = {p.name for p in SHM_DIR.glob(f"{PREFIX}*")} - before
        assert left, "the running job has no MPICH segment in /dev/shm"
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(timeout=30)
    assert all((SHM_DIR / name).exists() for name in left)  # kill -9: nobody unlinked it
    for name in left:  # age it as a segment of an earlier run
        os.utime(SHM_DIR / name, (time.time() - 3600,) * 2)
    local_job(2, [sys.executable, "-c", "pass"])  # what every launch does first
    assert not left & set(os.listdir(SHM_DIR))
