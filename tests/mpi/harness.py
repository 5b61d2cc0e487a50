"""What every check script under tests/mpi shares: :func:`run_or_abort` runs its ``main()`` and,
on any failure, prints ``<WORD>-FAIL rank r:`` with the traceback and aborts the whole MPI job,
so that no rank waits forever for one that failed.

The scripts run as ``mpiexec -n N python tests/mpi/<script>.py``: this folder is then first on
``sys.path``, and they import it under ``if __name__ == "__main__":`` (some test files load
a script as a module for its builders, without this folder on ``sys.path``).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable


def run_or_abort(main: Callable[[], None], word: str) -> None:
    """``main()``; on any exception (Ctrl-C included), report it and ``MPI_Abort`` the job."""
    try:
        main()
    except BaseException:  # noqa: BLE001 - make every failure loud and end the whole job
        from mpi4py import MPI

        print(f"{word}-FAIL rank {MPI.COMM_WORLD.Get_rank()}:\n{traceback.format_exc()}",
              file=sys.stderr, flush=True)
        MPI.COMM_WORLD.Abort(1)
