"""MPIComm's resync: the handshake that brings every rank to one new epoch, the drain of
stale messages and the renewal of the collective communicator (see :mod:`declearn.comm.mpi`,
*Resync*); :func:`resync_all` for every live MPIComm of a process."""

from __future__ import annotations

import numpy as np

from declearn.comm.mpi.deadline import (
    Deadline,
    RequestSet,
    resolve_timeout,
    wait_until,
)
from declearn.comm.mpi.headers import _CTRL_LEN, _CTRL_TAG, _MAGIC, _RESTART_HINT, _TAG_BASE
from declearn.comm.mpi.registry import live_comms
from declearn.errors import (
    CollectiveTimeoutError,
    CommunicatorOutOfSyncError,
)


def resync_all(*, timeout: float | None = None) -> int:
    """Call :meth:`MPIComm.resync` on every live MPIComm of this process, oldest first (so
    every rank resyncs its communicators in the same order). Every rank must call it.
    Returns how many communicators were resynced."""
    comms = live_comms()
    for comm in comms:
        comm.resync(timeout=timeout)
    return len(comms)


class ResyncProtocol:
    """resync and its parts (a part of :class:`~declearn.comm.mpi.MPIComm`)."""

    def resync(self, *, timeout: float | None = None) -> None:
        """Bring every rank back in step after an abandoned operation. Every rank must call it
        (from a notebook: ``%px comm.resync()``); it is harmless on a healthy communicator.

        It succeeds only when every rank is in resync *at the same time* (see
        :meth:`_handshake`): a rank that was busy while the others resynced and gave up
        cannot complete on their stale messages. All ranks then move to the same new epoch
        (so messages of abandoned operations can never match new ones) and, if a native
        collective was abandoned anywhere, get a fresh collective communicator. Otherwise
        it raises CollectiveTimeoutError naming the ranks that did not take part, and the
        communicator stays out of sync until a resync that every rank calls together.
        """
        if self._broken is not None:
            raise CommunicatorOutOfSyncError(self._broken)
        deadline = Deadline(resolve_timeout(timeout, self._timeout))
        self._abandon_in_flight("resync() was called before it completed")
        self._graveyard.sweep()
        if self._size > 1:
            epoch, poisoned = self._handshake(deadline)
        else:
            epoch, poisoned = self._epoch + 1, self._coll_poisoned
        self._epoch, self._seq = epoch, 0
        self._drain(deadline)
        if poisoned:
            self._renew_coll(deadline)
        self._graveyard.sweep()
        self._drop_buffers()
        self._out_of_sync = None

    def _handshake(self, deadline: Deadline) -> tuple[int, bool]:
        """The control exchange of :meth:`resync`: returns the new epoch and whether some rank
        abandoned a native collective, the same on every rank, once all are in resync together.

        Rank r's k-th call has generation ``g_r = k``. It sends every rank j the control
        message ``[MAGIC, g_r, epoch_r, poisoned_r, seen_r[j]]``, where ``seen_r[j]`` is the
        newest generation r has received from j, and re-sends it to j each time ``seen_r[j]``
        grows. Control messages are only sent from inside resync, so a message from j whose
        last field equals ``g_r`` proves that j was in resync after r's call began. r
        completes when the newest message from every j carries ``g_r``; the new epoch is
        ``1 + max`` of the epochs in those messages (and r's). Messages of earlier calls
        (a resync that timed out on some rank) are still received, but only move ``seen``:
        they can never complete a later call. Control messages are received with matched
        probes (``Improbe``), so nothing is left posted when a call gives up.
        """
        n, r = self._size, self._rank
        self._resync_gen += 1
        gen = self._resync_gen
        seen, last = self._ctrl_seen, self._ctrl_last
        sends = RequestSet(self._MPI)

        def send(j: int) -> None:
            msg = np.array([_MAGIC, gen, self._epoch, int(self._coll_poisoned), seen[j]],
                           np.int64)
            sends.add(self._p2p.Isend(msg, j, _CTRL_TAG), ("send-ctrl", j), msg)

        def confirmed() -> bool:
            while True:
                message = self._p2p.Improbe(self._MPI.ANY_SOURCE, _CTRL_TAG, status)
                if message is None:
                    break
                j = status.Get_source()
                if self._take_ctrl(message, j):
                    send(j)  # tell j that its call is seen
            sends.test()
            return bool((last[others, 4] == gen).all())

        status = self._MPI.Status()
        others = np.array([j for j in range(n) if j != r])
        for j in others:
            send(int(j))
        try:
            done = wait_until(confirmed, deadline)
        except BaseException:  # Ctrl-C: MPI may still read the send buffers
            sends.abandon(self._graveyard)
            self._out_of_sync = self._out_of_sync or "resync() was interrupted"
            raise
        sends.abandon(self._graveyard)  # sends not finished yet: j receives them later
        if not done:
            missing = [int(j) for j in others if last[j, 4] != gen]
            self._out_of_sync = self._out_of_sync or "resync() timed out"
            raise CollectiveTimeoutError(
                "resync", missing, deadline.timeout, r,
                hint="resync completes only when every rank calls it at the same time: call "
                "comm.resync() on every rank together (from a notebook: %px comm.resync(); "
                "first cluster.interrupt() if some engine is still busy); if it keeps "
                "failing, restart the engines.",
            )
        epoch = max(self._epoch, int(last[others, 2].max())) + 1
        poisoned = self._coll_poisoned or bool(last[others, 3].any())
        return epoch, poisoned

    def _take_ctrl(self, message, j: int) -> bool:
        """Receive control message ``message`` (matched, from rank ``j``) and note it; True
        when it is the first one of a new call of ``j``."""
        buf = np.zeros(_CTRL_LEN, np.int64)
        message.Recv(buf)
        if buf[0] != _MAGIC:
            return False
        self._ctrl_last[j] = buf
        if buf[1] <= self._ctrl_seen[j]:
            return False
        self._ctrl_seen[j] = buf[1]
        return True

    def _renew_coll(self, deadline: Deadline) -> None:
        """Replace ``coll`` (a native collective was abandoned on it) by a fresh duplicate
        of ``p2p``; every rank does it in the same resync."""
        r = self._rank
        new, request = self._p2p.Idup()
        done = False
        try:
            done = wait_until(request.Test, deadline)
        finally:
            if not done:  # timed out or interrupted: the duplication cannot be cancelled
                self._graveyard.bury(request, new)
                self._broken = (
                    f"resync() could not renew the collective communicator on rank {r}. "
                    + _RESTART_HINT
                )
        if not done:
            raise CollectiveTimeoutError("resync", (), deadline.timeout, r, hint=_RESTART_HINT)
        self._retired.append(self._coll)
        self._coll = new
        self._coll_poisoned = False

    def _drain(self, deadline: Deadline) -> None:
        """Receive and drop the messages of earlier epochs already queued here (best effort:
        their senders' requests can then complete and leave the graveyard). Control messages
        on the way are noted (see :meth:`_handshake`: one may belong to a peer's next
        resync), and the first message of the current epoch from a peer ends its queue's
        drain: it sent nothing older after it."""
        MPI = self._MPI
        status = MPI.Status()
        current = self._epoch % self._epoch_slots
        for j in range(self._size):
            if j == self._rank:
                continue
            while self._p2p.Iprobe(j, MPI.ANY_TAG, status):
                tag = status.Get_tag()
                if tag == _CTRL_TAG:
                    message = self._p2p.Improbe(j, _CTRL_TAG, status)
                    if message is None:
                        break
                    self._take_ctrl(message, j)
                    continue
                if tag < _TAG_BASE or ((tag - _TAG_BASE) // 2) // self._seq_slots == current:
                    break
                message = self._p2p.Improbe(j, tag, status)
                if message is None:
                    break
                scratch = np.empty(status.Get_count(MPI.BYTE), np.uint8)
                request = message.Irecv(scratch)
                done = False
                try:
                    done = wait_until(request.Test, deadline)
                finally:
                    if not done:
                        self._graveyard.bury(request, scratch)
                if not done:
                    return
