"""MPIComm under faults on purpose (resync, call sites), under a real ``mpiexec -n N``, N >= 3.

* Resync that a busy rank missed: rank 2 sleeps while the others resync and give up; the
  rank-2-busy sequence then leaves every rank with an error saying why (none succeeds
  alone), and one resync that every rank calls together restores a working communicator
  (same epoch everywhere, allreduce equal to the sum computed here).
* Any sequence: random per-rank sequences of short resyncs, skipped collectives and sleeps
  (the same seed on every rank, each rank its own draws), then one resync together: it
  succeeds everywhere and the communicator works. Also after a resync interrupted by Ctrl-C.
* An extra collective on one rank (the classic ``if rank == 0:`` bug): CollectiveMismatchError
  on every rank naming both lines and the ranks, no wrong result, still in sync; ``tag=`` pairs
  calls made from different lines on purpose; ``check_call_sites=False`` turns the check off;
  iallreduce and DelayedComm report the user's line. An extra small neighbor_allreduce (its
  payload travels inside the header's message): the rank that made it and its neighbors
  raise naming both lines, the others get the right result, still in sync.
* Iteration stamps: operations made at different ``comm.iteration`` raise
  IterationMismatchError (every rank for a global collective, the neighbors for a neighbor
  operation), with the iterations of the ranks.

Each rank ends with ``RELIABILITY-OK rank r of N: <checks> checks``.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
import traceback

import torch
from mpi4py import MPI

import declearn.topology as T
from declearn.comm.delay import DelayedComm
from declearn.comm.mpi import MPIComm
from declearn.errors import (
    CollectiveMismatchError,
    CollectiveTimeoutError,
    CommError,
    CommunicatorOutOfSyncError,
    IterationMismatchError,
)

world = MPI.COMM_WORLD
RANK, N = world.Get_rank(), world.Get_size()
CHECKS = [0]
HERE = os.path.basename(__file__)


def check(ok: bool, what: str) -> None:
    if not ok:
        raise AssertionError(f"rank {RANK}: {what}")
    CHECKS[0] += 1


def works_everywhere(comm, what: str) -> None:
    """Every rank on the same epoch, and an allreduce equal to the sum computed here."""
    epochs = world.allgather(comm.epoch)
    check(len(set(epochs)) == 1, f"{what}: same epoch on every rank, got {epochs}")
    check(comm.in_sync, f"{what}: in sync")
    x = torch.full((3,), float(RANK + 1), dtype=torch.float64)
    total = comm.allreduce(x, "sum", timeout=20)
    check(torch.equal(total, torch.full((3,), N * (N + 1) / 2, dtype=torch.float64)),
          f"{what}: allreduce gives the sum, got {total}")


def busy_rank_missed_resync(comm):
    """Rank 2 busy (8 s) while the others resync with a 3 s deadline."""
    t0 = time.monotonic()
    if RANK == 2:
        time.sleep(8)
    outcomes = []
    for seconds in (3, 10):
        try:
            comm.resync(timeout=seconds)
            outcomes.append("ok")
        except CollectiveTimeoutError as exc:
            outcomes.append(f"timeout {exc.missing}")
    try:
        comm.allreduce(torch.ones(1, dtype=torch.float64), timeout=5)
        outcomes.append("allreduce ok")
    except CommError as exc:
        outcomes.append(type(exc).__name__)
    report = world.allgather(outcomes)
    print(f"rank {RANK}: busy-rank sequence {outcomes} after {time.monotonic() - t0:.1f} s",
          flush=True)
    # every rank was told something went wrong; no rank went on with a silent success
    check(all(any("timeout" in o or "Error" in o for o in r) for r in report),
          f"every rank raised somewhere in the sequence: {report}")
    world.Barrier()
    comm.resync(timeout=20)
    works_everywhere(comm, "one resync by every rank after the busy-rank sequence")


def random_faults(comm, seed: int):
    """Per rank: a random mix of short resyncs, lone collectives and sleeps; then one resync."""
    rng = random.Random(seed * 1000 + RANK)
    for _ in range(rng.randint(2, 5)):
        event = rng.choice(("resync", "resync", "allreduce", "sleep", "neighbor"))
        try:
            if event == "resync":
                comm.resync(timeout=rng.choice((0.2, 0.5, 1.0)))
            elif event == "allreduce":
                comm.allreduce(torch.ones(4, dtype=torch.float64), timeout=0.3, tag="fault")
            elif event == "neighbor":
                comm.neighbor_allreduce(torch.ones(4, dtype=torch.float64), T.ring(N),
                                        timeout=0.3, tag="fault")
            else:
                time.sleep(rng.choice((0.1, 0.4, 0.8)))
        except CommError:
            pass
    world.Barrier()
    comm.resync(timeout=20)
    works_everywhere(comm, f"one resync by every rank after random faults (seed {seed})")


def interrupted_resync(comm):
    """Ctrl-C on rank 1 in a resync the others never join; then one resync together."""
    if RANK == 1:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        try:
            comm.resync(timeout=30)
        except KeyboardInterrupt:
            CHECKS[0] += 1
        else:
            raise AssertionError("rank 1: the interrupted resync returned")
        check(not comm.in_sync, "out of sync after an interrupted resync")
        exc = None
        try:
            comm.barrier()
        except CommunicatorOutOfSyncError as e:
            exc = e
        check(exc is not None and "resync" in str(exc), f"refused until resync: {exc}")
    world.Barrier()
    comm.resync(timeout=20)
    works_everywhere(comm, "one resync by every rank after an interrupted resync")


def raised(fn):
    try:
        return None, fn()
    except Exception as exc:  # noqa: BLE001
        return exc, None


def extra_collective(comm):
    """Rank 0 makes one extra allreduce before the common one."""
    r = comm.rank
    x = torch.arange(12, dtype=torch.float64).reshape(4, 3)[r % 4]

    def body():
        if r == 0: comm.allreduce(torch.full((3,), 100.0, dtype=torch.float64))  # noqa: E701
        return comm.allreduce(x)

    exc, value = raised(body)
    check(isinstance(exc, CollectiveMismatchError),
          f"the extra allreduce raises CollectiveMismatchError, not {exc!r} / {value}")
    text = str(exc)
    first = body.__code__.co_firstlineno
    check(f"{HERE}:{first + 1}" in text and f"{HERE}:{first + 2}" in text,
          f"names both call sites ({HERE}:{first + 1} and :{first + 2}): {text}")
    others = ", ".join(str(j) for j in range(1, N))
    check("rank 0 called allreduce" in text and f"ranks {others} called allreduce" in text,
          f"names the ranks: {text}")
    check("tag=" in text, f"says how to pair different lines on purpose: {text}")
    check(comm.in_sync, "still in sync after a call-site mismatch")
    rows = torch.arange(12, dtype=torch.float64).reshape(4, 3)[[j % 4 for j in range(N)]]
    check(torch.equal(comm.allreduce(x), rows.mean(0)), "the next common allreduce is right")

    # tag=: calls from different lines pair on purpose
    if r == 0:
        y = comm.broadcast(torch.full((2,), 7.0, dtype=torch.float64), 0, tag="weights")
    else:
        y = comm.broadcast(torch.zeros(2, dtype=torch.float64), 0, tag="weights")
    check(torch.equal(y, torch.full((2,), 7.0, dtype=torch.float64)), "tagged broadcast")
    exc, _ = raised(lambda: comm.allreduce(x, tag="a" if r == 0 else "b"))
    check(isinstance(exc, CollectiveMismatchError) and "tag 'a'" in str(exc)
          and "tag 'b'" in str(exc), f"different tags do not pair: {exc}")
    exc, _ = raised(lambda: comm.allreduce(x, tag=3))
    check(isinstance(exc, TypeError) and "tag" in str(exc), f"a bad tag: {exc}")
    check(comm.in_sync, "in sync after tag checks")

    # iallreduce: the mismatch surfaces at wait(), naming the user's lines
    def ibody():
        if r == 0: return comm.iallreduce(x * 0)  # noqa: E701
        return comm.iallreduce(x)

    exc, _ = raised(lambda: ibody().wait())
    first = ibody.__code__.co_firstlineno
    check(isinstance(exc, CollectiveMismatchError) and f"{HERE}:{first + 1}" in str(exc)
          and f"{HERE}:{first + 2}" in str(exc), f"iallreduce call sites: {exc}")

    # a DelayedComm in front reports the user's line, not its own
    slow = DelayedComm(comm, latency=0.0)

    def dbody():
        if r == 0: return slow.allreduce(x * 0)  # noqa: E701
        return slow.allreduce(x)

    exc, _ = raised(dbody)
    first = dbody.__code__.co_firstlineno
    check(isinstance(exc, CollectiveMismatchError) and f"{HERE}:{first + 1}" in str(exc)
          and "delay.py" not in str(exc), f"DelayedComm call sites: {exc}")
    check(comm.in_sync, "in sync after the iallreduce / DelayedComm mismatches")

    # check_call_sites=False: the old pairing by order, op, shape and dtype
    loose = MPIComm(timeout=20, check_call_sites=False)
    if r == 0:
        y = loose.allreduce(torch.ones(3, dtype=torch.float64), "sum")
    else:
        y = loose.allreduce(torch.ones(3, dtype=torch.float64), "sum")
    check(torch.equal(y, torch.full((3,), float(N), dtype=torch.float64)),
          "check_call_sites=False pairs calls from different lines")
    loose.close()


def extra_neighbor_op(comm):
    """Rank 0 makes one extra neighbor_allreduce on the ring before the common one."""
    r = comm.rank
    ring = T.ring(N)
    x = torch.full((3,), float(r), dtype=torch.float64)
    expect = float(torch.as_tensor(ring.W[r]) @ torch.arange(N, dtype=torch.float64))

    def body():
        if r == 0: comm.neighbor_allreduce(x * 0, ring)  # noqa: E701
        return comm.neighbor_allreduce(x, ring)

    exc, y = raised(body)
    first = body.__code__.co_firstlineno
    if r in (0, 1, N - 1):  # rank 0 and the ranks it sends to
        check(isinstance(exc, CollectiveMismatchError) and f"{HERE}:{first + 1}" in str(exc)
              and f"{HERE}:{first + 2}" in str(exc),
              f"the extra neighbor_allreduce names both call sites: {exc!r}")
    else:  # its in-neighbors made the common call: y = W[r] . (0, 1, ..., N-1)
        check(exc is None and torch.allclose(y, torch.full((3,), expect, dtype=torch.float64)),
              f"far from the extra call: {exc!r}, {y} vs {expect}")
    check(comm.in_sync, "in sync after an extra neighbor_allreduce")
    y = comm.neighbor_allreduce(x, ring)
    check(torch.allclose(y, torch.full((3,), expect, dtype=torch.float64)),
          f"the next common neighbor_allreduce is right: {y} vs {expect}")


def iteration_stamps(comm):
    """Ranks at different iterations: global op -> every rank raises; neighbor op -> the
    neighbors of the rank that is ahead raise, naming the iterations; still in sync."""
    ahead = N - 1
    x = torch.ones(3, dtype=torch.float64)
    with comm.at_iteration(4 if ahead == RANK else 3):
        exc, _ = raised(lambda: comm.allreduce(x))
    check(isinstance(exc, IterationMismatchError), f"global op at different iterations: {exc!r}")
    expected = {j: (4 if j == ahead else 3) for j in range(N)}
    check(exc.iterations == expected, f"iterations of every rank: {exc.iterations}")
    check("alg.recover()" in str(exc) and "iteration 4" in str(exc), f"says what to do: {exc}")
    check(comm.in_sync, "in sync after an iteration mismatch")
    ring = T.ring(N)
    near = {(ahead - 1) % N, (ahead + 1) % N, ahead}
    with comm.at_iteration(4 if ahead == RANK else 3):
        exc, y = raised(lambda: comm.neighbor_allreduce(x, ring, timeout=20))
    if RANK in near:
        check(isinstance(exc, IterationMismatchError) and ahead in exc.iterations,
              f"neighbor op at different iterations: {exc!r}")
    else:
        check(exc is None and torch.allclose(y, x), f"far from the rank ahead: {exc!r}")
    with comm.at_iteration(5):
        y = comm.neighbor_allreduce(x, ring, timeout=20)
    check(torch.allclose(y, x), "the same iteration everywhere pairs")
    check(comm.iteration is None, "at_iteration restores the stamp")


def main():
    comm = MPIComm(timeout=20)
    if N < 3:
        raise SystemExit("run with mpiexec -n 3 or more")
    extra_collective(comm)
    extra_neighbor_op(comm)
    iteration_stamps(comm)
    busy_rank_missed_resync(comm)
    for seed in range(4):
        random_faults(comm, seed)
    interrupted_resync(comm)
    comm.close()
    print(f"RELIABILITY-OK rank {RANK} of {N}: {CHECKS[0]} checks", flush=True)


if __name__ == "__main__":
    try:
        main()
    except BaseException:  # noqa: BLE001 - report and abort every rank
        print(f"RELIABILITY-FAIL rank {RANK}:\n{traceback.format_exc()}", flush=True)
        sys.stdout.flush()
        world.Abort(1)
