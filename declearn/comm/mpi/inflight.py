"""MPIComm's nonblocking allreduce: the operations in flight and the order in which their
native collectives are posted (see :mod:`declearn.comm.mpi`, *Nonblocking allreduce*)."""

from __future__ import annotations

import numpy as np
import torch

from declearn.comm.base import (
    REDUCE_OPS,
    Completed,
    Pending,
)
from declearn.comm.mpi.callsite import call_site
from declearn.comm.mpi.dataplane import _empty
from declearn.comm.mpi.deadline import (
    Deadline,
    RequestSet,
    resolve_timeout,
    spin_for,
    wait_until,
)
from declearn.comm.mpi.headers import _H_BYTES, _MPI_REDUCIBLE, _RESYNC_HINT, _sends_payload
from declearn.comm.mpi.operation import _Operation
from declearn.errors import (
    CollectiveTimeoutError,
    CommunicatorOutOfSyncError,
)

_HEADERS, _DRAINING, _NATIVE, _DONE, _FAILED = "headers", "draining", "native", "done", "failed"


class _InFlight(Pending):
    """An :meth:`MPIComm.iallreduce` in flight: its header exchange (``requests``, ``table``),
    then its native ``Iallreduce`` (``native``), then its result.

    ``stage`` goes ``headers -> native -> done``; a mismatch goes ``headers -> draining``
    (receiving the payloads announced by mismatching peers) ``-> failed``; an abandoned
    operation goes straight to ``failed``. ``done()`` moves every operation of the
    communicator forward without blocking; ``wait()`` waits up to the deadline.
    """

    __slots__ = ("comm", "seq", "epoch", "tag", "op", "x", "out", "timeout", "spin",
                 "requests", "table", "hdr", "native", "stage", "error", "result")

    def __init__(self, comm, seq, epoch, tag, op, x, timeout, spin):
        self.comm = comm
        self.seq, self.epoch, self.tag = seq, epoch, tag
        self.op = op
        self.x = x  # MPI reads it until the native collective completes
        self.out = None
        self.timeout = timeout
        self.spin = spin
        self.requests = None
        self.table = None
        self.hdr = None
        self.native = None
        self.stage = _HEADERS
        self.error: BaseException | None = None
        self.result: torch.Tensor | None = None

    @property
    def finished(self) -> bool:
        return self.stage == _DONE or self.stage == _FAILED

    def done(self) -> bool:
        if not self.finished:
            self.comm._progress()
        return self.finished

    def wait(self) -> torch.Tensor:
        if not self.finished:
            self.comm._wait_in_flight(self)
        if self.error is not None:
            raise self.error
        return self.result

    def __repr__(self) -> str:
        return f"<iallreduce {self.seq} of epoch {self.epoch}: {self.stage}>"


class InFlightOps:
    """iallreduce and the scheduler of the operations in flight (a part of
    :class:`~declearn.comm.mpi.MPIComm`)."""

    def iallreduce(self, x: torch.Tensor, op: str = "mean", *,
                   timeout: float | None = None, tag: str | None = None) -> Pending:
        """Start ``allreduce(x, op)`` and return a :class:`Pending` at once (see the module
        docstring, *Nonblocking allreduce*): its ``wait()`` gives the result, ``done()`` says
        whether it has completed and moves it forward. Do not modify ``x`` before ``wait()``
        returns. It matches an ``allreduce`` at the same point on another rank (from the same
        line, or with the same ``tag``)."""
        self._site = call_site(2) if tag is None and self._check_sites else self._tagged(tag)
        x = self._tensor(x)
        op = self._check_op(op)
        if x.dtype == torch.bool:
            raise TypeError("iallreduce cannot sum booleans; convert with x.int() first.")
        if op == "mean" and not (x.is_floating_point() or x.is_complex()):
            raise TypeError(
                f"iallreduce(op='mean') divides by n, so x must be floating point, got "
                f"{x.dtype}; convert with x.double() or use op='sum'."
            )
        plane = self._plane(x)
        n = self._size
        if n == 1 or not plane.direct or x.dtype not in _MPI_REDUCIBLE:
            return Completed(self.allreduce(x, op, timeout=timeout, tag=tag))
        seconds = resolve_timeout(timeout, self._timeout)
        self._check_usable("iallreduce")
        if len(self._graveyard):
            self._graveyard.sweep()
        nbytes = x.numel() * x.element_size()
        pending = _InFlight(self, self._seq, self._epoch, self._tag(0), op, x, seconds,
                            spin_for(4 * nbytes))
        pending.hdr = self._header("allreduce", x.shape, x.dtype, extra=REDUCE_OPS.index(op),
                                   plane=plane)
        pending.requests = RequestSet(self._MPI)
        pending.table = self._post_headers(pending.requests, pending.hdr, pending.tag)
        self._seq += 1
        self._in_flight.append(pending)
        self._count("allreduce", 2 * (n - 1), 2 * (n - 1) * nbytes / n)
        self._progress()
        return pending

    def progress(self) -> int:
        """Move every nonblocking operation in flight forward without blocking (MPICH moves
        them only inside MPI calls: call this, or ``pending.done()``, between local steps
        to overlap communication with computation). Returns how many are still in flight."""
        self._progress()
        return len(self._in_flight)

    @property
    def in_flight(self) -> int:
        """Number of nonblocking operations started and not finished yet."""
        return len(self._in_flight)

    def _progress(self) -> None:
        """Move every iallreduce in flight forward without blocking: post the native
        collectives whose headers are all in (in call order: a later one never starts
        before an earlier one), and collect those that completed."""
        if not self._in_flight:
            return
        may_post = True
        for pending in self._in_flight:
            if pending.stage == _HEADERS:
                if not may_post or not pending.requests.test():
                    may_post = False
                    continue
                self._start_native(pending)
            if pending.stage == _DRAINING and pending.requests.test():
                pending.stage = _FAILED
                pending.requests = None
            if pending.stage == _NATIVE and pending.native[0].Test():
                out = pending.out
                if pending.op == "mean":
                    out.div_(self._size)
                pending.result = out
                pending.stage = _DONE
                pending.native = pending.x = pending.out = None
        if any(p.finished for p in self._in_flight):
            self._in_flight = [p for p in self._in_flight if not p.finished]

    def _start_native(self, pending: _InFlight) -> None:
        """Every header of ``pending`` has arrived: post its native Iallreduce, or, on a
        mismatch (every rank sees it), fail it after receiving what mismatching peers send."""
        error = self._table_mismatch("iallreduce", pending.table)
        if error is not None:
            pending.error = error
            pending.stage = _DRAINING
            ptag = pending.tag + 1
            for j, h in enumerate(pending.table):
                if j != self._rank and _sends_payload(h):
                    scratch = np.empty(int(h[_H_BYTES]), np.uint8)
                    pending.requests.add(self._p2p.Irecv(scratch, j, ptag), ("recv-drain", j),
                                         scratch)
            return
        x = pending.x
        pending.out = out = _empty(x.shape, x)
        send, recv = x.numpy(), out.numpy()
        request = self._coll.Iallreduce(send, recv, self._MPI.SUM)
        pending.native = (request, (send, recv, x, out))
        pending.stage = _NATIVE
        pending.requests = None

    def _headers_settled(self) -> bool:
        self._progress()
        return all(p.stage != _HEADERS for p in self._in_flight)

    def _settle_in_flight(self, state: _Operation) -> None:
        """Before ``state`` posts a native collective on ``coll``: post those of the
        iallreduces started before it (same order on every rank). Their headers are due:
        every rank called them before this operation."""
        if not self._in_flight or self._headers_settled():
            return
        if not wait_until(self._headers_settled, state.deadline, state.spin):
            stuck = next(p for p in self._in_flight if p.stage == _HEADERS)
            missing = [note[1] for note in stuck.requests.pending() if note[0] == "recv-header"]
            raise self._timeout_error(
                state, missing,
                hint=f"They had not arrived at the iallreduce (operation {stuck.seq}) started "
                "before this operation.",
            )

    def _wait_in_flight(self, pending: _InFlight) -> None:
        """``pending.wait()``: wait up to its deadline (counted from now)."""
        deadline = Deadline(pending.timeout)
        try:
            done = wait_until(lambda: pending.done(), deadline, pending.spin)
        except BaseException:  # Ctrl-C: abandon, as a blocking operation would
            self._fail_in_flight(pending, "it was interrupted")
            raise
        if done:
            return
        stuck = next((p for p in self._in_flight if p.stage == _HEADERS), None)
        if stuck is not None:
            missing = [note[1] for note in stuck.requests.pending() if note[0] == "recv-header"]
            hint = ""
        else:
            missing, hint = (), ("Every rank had arrived, but the data did not move in time: "
                                 "another rank probably timed out or was interrupted meanwhile.")
        error = CollectiveTimeoutError(
            "iallreduce", missing, pending.timeout, self._rank,
            hint=(hint + " " + _RESYNC_HINT).strip(),
        )
        self._fail_in_flight(pending, "it timed out")
        pending.error = error

    def _fail_in_flight(self, pending: _InFlight, why: str) -> None:
        self._abandon_in_flight(
            f"iallreduce (operation {pending.seq} of epoch {pending.epoch}) was abandoned "
            f"because {why}"
        )
        self._out_of_sync = self._out_of_sync or (
            f"iallreduce (operation {pending.seq} of epoch {pending.epoch}) was abandoned "
            f"because {why}"
        )

    def _abandon_in_flight(self, why: str) -> None:
        """Give up every iallreduce in flight: its requests and buffers go to the graveyard
        (a posted native collective poisons ``coll``, renewed by resync), and its
        ``wait()`` raises CommunicatorOutOfSyncError saying ``why``."""
        if not self._in_flight:
            return
        for pending in self._in_flight:
            if pending.requests is not None:
                pending.requests.abandon(self._graveyard)
            if pending.native is not None:
                self._graveyard.bury(*pending.native)
                self._coll_poisoned = True
            pending.native = pending.requests = None
            pending.stage = _FAILED
            pending.error = CommunicatorOutOfSyncError(
                f"iallreduce (operation {pending.seq} of epoch {pending.epoch}) on rank "
                f"{self._rank} was abandoned: {why}. " + _RESYNC_HINT
            )
        self._in_flight = []
