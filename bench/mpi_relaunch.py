"""What the MPI benchmarks share: run the calling script again under ``mpiexec -n N`` unless
it already runs under MPI (the benchmarks are started as plain ``python bench/<name>.py``)."""

from __future__ import annotations

import os
import subprocess
import sys

#: Variables a launcher (MPICH's Hydra or gforker, Open MPI, PMIx) sets in every rank.
MPI_ENV = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MPI_LOCALRANKID")


def relaunch_unless_under_mpi(n: int, script: str) -> None:
    """Return at once inside an MPI job; else run ``script`` with this process's arguments
    on ``n`` local ranks and exit with its status."""
    if any(v in os.environ for v in MPI_ENV):
        return
    from declearn.cluster.mpiexec import find_mpiexec, local_job

    if find_mpiexec() is None:
        sys.exit("No mpiexec found: pip install mpich (or put an MPI on PATH).")
    cmd, env = local_job(n, [sys.executable, os.path.abspath(script), *sys.argv[1:]])
    sys.exit(subprocess.call(cmd, env=env))
