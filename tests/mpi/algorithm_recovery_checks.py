"""An Algorithm after a one-rank failure, under a real mpiexec (the pytest side:
tests/test_algorithm_recovery.py, N = 4).

Run as ``mpiexec -n 4 python tests/mpi/algorithm_recovery_checks.py``. The scenario:
DGD (ATC) on ring(4) with stochastic gradients (float64); the gradient raises once on rank 1
inside step 3. Rank 1 raises at once, its neighbors 0 and 2 time out waiting for it, rank 3
(whose neighbors are 0 and 2) completes the step: iterations 3, 3, 3, 4 after
``comm.resync()``. Then:

* *recover*: ``alg.recover()`` on every rank returns 3 and the run goes on with the iterates
  of an uninterrupted run (the same MPIComm, no fault) to 1e-12, the noise stream included;
* *detect*: without recover(), the next step raises IterationMismatchError on some rank
  instead of mixing iterates of iterations 3 and 4; recover() then still brings the run back
  onto the uninterrupted one;
* *too far*: on a graph where rank 3 is alone (it needs nobody to step), rank 3 takes one
  extra step: recover() rolls it back; two extra steps: recover() raises
  IterationMismatchError on every rank, naming rank 3. (The extra steps also put rank 3's
  operation count ahead; the resync inside recover() takes care of that.)

Every check is run and reported (``RECOVERY-FAIL rank r: ...``); each rank ends with
``RECOVERY-OK rank r of N: <checks> checks`` when all of its checks passed.
"""

from __future__ import annotations

import sys
import time
import traceback

import numpy as np
import torch

from declearn.algorithms import DGD
from declearn.comm.mpi import MPIComm
from declearn.errors import CollectiveTimeoutError, IterationMismatchError
from declearn.problems import LeastSquares
from declearn.topology import Topology, ring

STEPS = 8
FAIL_AT = 3  # the step k -> k + 1 that fails on rank 1
TOL = 1e-12
TIMEOUT = 3.0  # how long rank 1's neighbors wait for it
N_EXPECTED = 4


class GradientFailed(RuntimeError):
    """The fault injected on rank 1."""


def _make(comm, topology=None):
    problem = LeastSquares(comm.size, 5, 10, sigma=0.2, seed=3)
    return DGD(comm, problem, topology or ring(comm.size), lr=0.05)


def _fail_once_on_rank_1(alg, comm):
    """The oracle's gradient raises on rank 1 in step FAIL_AT, once."""
    if comm.rank != 1:
        return
    real, fired = alg.oracle.grad, [False]

    def grad(x):
        if alg.k == FAIL_AT and not fired[0]:
            fired[0] = True
            raise GradientFailed(f"injected: the gradient failed on rank 1 in step {alg.k}")
        return real(x)

    alg.oracle.grad = grad


def _gather(comm, value) -> list:
    with comm.untracked():
        got = comm.allgather(torch.tensor([value], dtype=torch.int64), timeout=30)
    return [int(v) for v in got.reshape(-1)]


def main() -> None:
    comm = MPIComm(timeout=TIMEOUT)
    rank, n = comm.rank, comm.size
    assert n == N_EXPECTED, f"run with mpiexec -n {N_EXPECTED}"
    checks, failures = [0], []
    t0 = time.monotonic()

    def check(ok, what):
        checks[0] += 1
        if not ok:
            failures.append(what)
            print(f"RECOVERY-FAIL rank {rank}: {what}", file=sys.stderr, flush=True)

    # the uninterrupted run, on the same communicator
    ref = _make(comm)
    ref_x = [ref.x.clone()]
    for _ in range(STEPS):
        ref.step()
        ref_x.append(ref.x.clone())

    def failing_run():
        alg = _make(comm)
        _fail_once_on_rank_1(alg, comm)
        for _ in range(FAIL_AT):
            alg.step()
        outcome = "completed"
        try:
            alg.step()
        except GradientFailed:
            outcome = "gradient"
        except CollectiveTimeoutError:
            outcome = "timeout"
        comm.resync(timeout=30)
        return alg, outcome

    def goes_on_like_the_uninterrupted_run(alg, label):
        for k in range(alg.k, STEPS):
            alg.step()
            err = float((alg.x - ref_x[k + 1]).abs().max())
            check(err <= TOL, f"{label}: x at k={k + 1} is {err:.3g} away from the "
                              "uninterrupted run")
        its = alg.history["iteration"]
        check(bool(np.all(np.diff(its) > 0)) if len(its) > 1 else True,
              f"{label}: history iterations {its} are not increasing")

    # ---- recover: the failing run, then recover() on every rank
    alg, outcome = failing_run()
    want = {0: "timeout", 1: "gradient", 2: "timeout", 3: "completed"}[rank]
    check(outcome == want, f"recover: step {FAIL_AT} {outcome} on rank {rank}, expected {want}")
    ks = _gather(comm, alg.k)
    check(ks == [3, 3, 3, 4], f"recover: iterations after the failure {ks}, expected 3/3/3/4")
    check(alg.k == 3 or torch.allclose(alg.x, ref_x[4], rtol=0, atol=TOL),
          "recover: rank 3's completed step differs from the uninterrupted one")
    if alg.k == 3:
        err = float((alg.x - ref_x[3]).abs().max())
        check(err <= TOL, f"recover: the failed step left x {err:.3g} away from iteration 3")
    got = alg.recover(timeout=30)
    check(got == 3, f"recover: recover() returned {got}, expected 3")
    check(alg.k == 3, f"recover: k = {alg.k} after recover(), expected 3")
    err = float((alg.x - ref_x[3]).abs().max())
    check(err <= TOL, f"recover: x is {err:.3g} away from iteration 3 after recover()")
    goes_on_like_the_uninterrupted_run(alg, "recover")

    # ---- detect: without recover(), the next step must not mix iterations 3 and 4
    alg, outcome = failing_run()
    mismatch = 0
    try:
        alg.step()
    except IterationMismatchError as exc:
        mismatch = 1
        text = "".join(traceback.format_exception(exc))
        check("recover()" in text, f"detect: the error does not say to call recover(): {text}")
    except CollectiveTimeoutError:
        mismatch = 2
    seen = _gather(comm, mismatch)
    check(1 in seen, f"detect: no rank raised IterationMismatchError at the step after the "
                     f"failure (per rank: {seen}; 0 = went on, 2 = timed out)")
    got = alg.recover(timeout=30)
    check(got == 3, f"detect: recover() returned {got}, expected 3")
    goes_on_like_the_uninterrupted_run(alg, "detect")

    # ---- too far: rank 3 alone on its side of the graph steps without the others
    W = np.zeros((n, n))
    W[: n - 1, : n - 1] = ring(n - 1).W
    W[n - 1, n - 1] = 1.0
    split = Topology.from_matrix(W, name="ring(3) + one alone", allow_disconnected=True)
    for extra, can in ((1, True), (2, False)):
        alg, x2 = _make(comm, split), _make(comm, split)
        alg.run(2, progress=False)
        x2.run(2, progress=False)
        if rank == n - 1:  # its only neighbor is itself: nothing to wait for
            for _ in range(extra):
                alg.step()
        if can:
            got = alg.recover(timeout=30)
            check(got == 2 and alg.k == 2, f"too far: one step ahead: recover() gave {got}")
            check(torch.equal(alg.x, x2.x), "too far: the rolled back x is not iteration 2's")
            check(np.array_equal(alg.history["iteration"], x2.history["iteration"]),
                  f"too far: history {alg.history['iteration']} after the roll-back")
        else:
            try:
                alg.recover(timeout=30)
                check(False, "too far: recover() accepted a rank two steps ahead")
            except IterationMismatchError as exc:
                check(exc.iterations == {0: 2, 1: 2, 2: 2, 3: 4},
                      f"too far: the error's iterations are {exc.iterations}")
                check("rank 3 is more than one step ahead" in str(exc),
                      f"too far: the error does not name rank 3: {exc}")
            check(alg.k == (4 if rank == n - 1 else 2), "too far: recover() changed k")

    comm.barrier(timeout=30)
    if not failures:
        sys.stdout.write(f"RECOVERY-OK rank {rank} of {n}: {checks[0]} checks, "
                         f"{time.monotonic() - t0:.1f} s\n")
        sys.stdout.flush()


if __name__ == "__main__":
    from harness import run_or_abort  # this folder is sys.path[0] when run as a script

    run_or_abort(main, "RECOVERY")
