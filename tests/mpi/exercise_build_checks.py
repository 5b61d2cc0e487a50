"""The build-it-yourself exercise checks under a real mpiexec: every rank runs the chapter's
check with each right student step (all must pass) and each wrong one (all must be refused),
and the ranks must reach the same verdict.

Run as ``mpiexec -n N python tests/mpi/exercise_build_checks.py build_steps_ch01 ...`` where
each argument is a module of tests/ with ``CHECK``, ``RIGHT`` (a list of steps) and ``WRONG``
(a dict name -> step). Each rank ends with ``BUILD-OK rank r of N: <count> verdicts``.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/


def main() -> None:
    from mpi4py import MPI

    from declearn.comm import MPIComm

    world = MPI.COMM_WORLD
    comm = MPIComm(timeout=30)
    count = 0
    try:
        for name in sys.argv[1:]:
            cases = importlib.import_module(name)
            expected = [(f.__name__, True, f) for f in cases.RIGHT] + \
                [(label, False, f) for label, f in cases.WRONG.items()]
            for label, ok, step in expected:
                verdict = cases.CHECK(step, comm)
                messages = world.allgather(str(verdict))
                assert len(set(messages)) == 1, f"{name} {label}: ranks disagree: {messages}"
                assert bool(verdict) is ok, f"{name} {label}: expected ok={ok}, got {verdict}"
                count += 1
            print(f"rank {comm.rank}: {name} ok ({len(expected)} steps)", flush=True)
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        sys.stdout.flush()
        world.Abort(1)
    print(f"BUILD-OK rank {comm.rank} of {comm.size}: {count} verdicts", flush=True)


if __name__ == "__main__":
    main()
