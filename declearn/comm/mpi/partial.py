"""The partial allreduce of eager-SGD for real: a service thread per rank runs the rounds (the
rules are in :mod:`declearn.comm.partial`)."""

from __future__ import annotations

import time

import numpy as np
import torch

from declearn.comm.mpi.deadline import Deadline, wait_until
from declearn.comm.mpi.service import Backoff, Service
from declearn.comm.partial import (
    _ACT_TAG,
    _MAGIC,
    PartialAllreduce,
    Round,
    initiator,
)
from declearn.errors import CollectiveTimeoutError, CommunicatorOutOfSyncError

__all__ = ["MPIPartialAllreduce"]


class MPIPartialAllreduce(PartialAllreduce):
    """The partial allreduce on MPI ranks, for real (see the module docstring): ``pa(g)`` with
    the rank's ``g`` of shape ``shape``; ``lag`` seconds of sleep before arriving. Every rank
    must create it together, call it the same number of times (``flush()`` included), and
    :meth:`close` it together; ``timeout`` bounds every wait for a round.

    ``rounds[t].time`` is when round t's result reached this rank (seconds since creation)."""

    def __init__(self, comm, shape, *, dtype=torch.float64, mode="solo", staleness=8,
                 seed=0, op="mean", step_time=0.0, timeout=None):
        super().__init__(comm, shape, dtype=dtype, mode=mode, staleness=staleness, seed=seed,
                         op=op)
        self._service = _RoundService(self, comm, timeout)
        self._t0 = time.monotonic()
        self._service.start()

    @property
    def simulated_time(self) -> None:
        """None: times on MPI engines are real (see ``rounds``)."""
        return None

    def __call__(self, g: torch.Tensor, *, lag=0.0) -> torch.Tensor:
        if not isinstance(g, torch.Tensor) or tuple(g.shape) != self.shape:
            got = tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__
            raise ValueError(f"The partial allreduce takes this rank's tensor of shape "
                             f"{self.shape}, got {got}.")
        lag = float(self._lag_value(lag))
        if lag > 0:
            time.sleep(lag)
        return self._service.arrive(g, flush=False).to(g.device)

    def flush(self) -> torch.Tensor:
        """A synchronous round with nothing new: every rank's leftovers (call it on every
        rank, at the same point)."""
        return self._service.arrive(None, flush=True).to(self.comm.device)

    def close(self) -> None:
        """Stop the service thread and free its communicator (every rank, together). Call
        :meth:`flush` before if leftovers should count."""
        if self.closed:
            return
        self.closed = True
        self._service.close()


class _RoundService:
    """The service thread and the state it shares with the main thread (under ``cv``)."""

    def __init__(self, pa: MPIPartialAllreduce, comm, timeout):

        svc = self

        class _Thread(Service):
            kind = "partial-allreduce"

            def serve(self):
                svc._serve()

            def _cleanup(self):
                svc._settle_activations()

        self.pa = pa
        self.service = _Thread(comm, timeout=timeout)
        self.mpi = self.service.mpi
        self.MPI = self.service.MPI
        self.rank, self.n = comm.rank, comm.size
        self.acc = torch.zeros(pa.shape, dtype=pa.dtype)
        self.calls = 0
        self.flushes: set[int] = set()
        self.results: dict[int, torch.Tensor] = {}
        self.failed: str | None = None
        self.sent = np.zeros(self.n, np.int64)  # activations sent to / received from each rank
        self.received = np.zeros(self.n, np.int64)
        self.heard = -1  # the latest round an activation announced
        self._act_buf = np.zeros(2, np.int64)
        self._act_req = None
        self._sends: list = []

    def start(self) -> None:
        self._act_req = self.mpi.Irecv(self._act_buf, self.MPI.ANY_SOURCE, _ACT_TAG)
        self.service.start()

    # ------------------------------------------------------------------ main thread
    def arrive(self, g: torch.Tensor | None, *, flush: bool) -> torch.Tensor:
        svc, pa = self.service, self.pa
        if pa.closed:
            raise RuntimeError("This partial allreduce was closed; create a new one.")
        if self.failed:
            raise CommunicatorOutOfSyncError(self.failed)
        svc.check()
        if g is not None:
            g = g.detach().to(device="cpu", dtype=pa.dtype)
        deadline = time.monotonic() + svc.timeout
        with svc.cv:
            t = self.calls
            if g is not None:
                self.acc.add_(g.reshape(pa.shape))
            if flush:
                self.flushes.add(t)
            self.calls += 1
            svc.wake.set()
            try:
                while t not in self.results:
                    if svc.error is not None:
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    svc.cv.wait(min(left, 0.05))
            except BaseException:  # Ctrl-C: this rank would miss round t's result
                self.failed = (f"round {t} of the partial allreduce was interrupted on rank "
                               f"{self.rank}; close this object on every rank and create a "
                               "new one.")
                raise
            result = self.results.pop(t, None)
        if result is None:
            svc.check()
            sync = flush or pa.synchronous(t)
            who = None if sync else pa.initiator(t)
            self.failed = (
                f"round {t} of the partial allreduce timed out on rank {self.rank}; the "
                "ranks are out of step: close this object on every rank and create a new one."
            )
            raise CollectiveTimeoutError(
                f"partial allreduce round {t}", [who] if who is not None else [], svc.timeout,
                self.rank,
                hint=("A synchronous round waits for every rank: one stopped calling, or "
                      "ranks called a different number of times." if sync else
                      "Its initiator never made its call." if who is not None else
                      "No rank made its call in time.")
                + " Close this object on every rank and create a new one.",
            )
        pa.rounds.append(Round(t, None if (flush or pa.synchronous(t)) else pa.initiator(t),
                               flush or pa.synchronous(t), time.monotonic() - pa._t0))
        n = self.n  # traffic: one allreduce of the payload per round (activations not counted)
        pa.comm._count("partial_allreduce", 2 * (n - 1), 2 * (n - 1) * pa._nbytes / n)
        return result

    def close(self) -> None:
        self.service.close(failed=self.failed is not None)

    # ------------------------------------------------------------------ service thread
    def _serve(self) -> None:
        try:
            self._serve_rounds()
        finally:
            self._stop_listening()

    def _stop_listening(self) -> None:
        """Cancel the activation receive (thread exit); count it if a message matched it."""
        request, self._act_req = self._act_req, None
        if request is None:
            return
        status = self.MPI.Status()
        request.Cancel()
        request.Wait(status)  # at once: cancelled, or matched before the cancel
        if not status.Is_cancelled():
            self.received[status.Get_source()] += 1

    def _serve_rounds(self) -> None:

        pa, svc, MPI = self.pa, self.service, self.MPI
        status = MPI.Status()
        backoff = Backoff()
        t = 0
        who_t = (-1, -1)  # (round, its majority initiator), drawn once per round
        while not svc.stopping:
            self._listen(status)
            self._reap_sends()
            with svc.cv:
                arrived = self.calls > t
                sync = t in self.flushes or pa.synchronous(t)
            if sync:
                go, initiate = arrived, False
            elif pa.mode == "solo":
                go = arrived or self.heard >= t
                initiate = self.heard < t
            else:
                if who_t[0] != t:
                    who_t = (t, initiator(pa.seed, t, self.n))
                go = self.heard >= t or (arrived and who_t[1] == self.rank)
                initiate = self.heard < t
            if not go:
                backoff.pause(svc.wake)
                continue
            if initiate:
                self._activate(t)
            with svc.cv:
                contribution, self.acc = self.acc, torch.zeros_like(self.acc)
            out = torch.empty_like(contribution)
            send, recv = contribution.numpy(), out.numpy()
            request = self.mpi.Iallreduce(send, recv, MPI.SUM)
            backoff.reset()
            while not request.Test():
                if svc.stopping:
                    svc.orphan(request, (send, recv, contribution, out))
                    return
                self._listen(status)
                backoff.pause()
            pa._finish(out)
            with svc.cv:
                self.results[t] = out
                svc.cv.notify_all()
            t += 1
            backoff.reset()

    def _listen(self, status) -> None:
        """Take in the activations that arrived (any round >= the current one)."""
        while self._act_req.Test(status):
            src = status.Get_source()
            self.received[src] += 1
            if int(self._act_buf[0]) == _MAGIC:
                self.heard = max(self.heard, int(self._act_buf[1]))
            self._act_req = self.mpi.Irecv(self._act_buf, self.MPI.ANY_SOURCE, _ACT_TAG)

    def _activate(self, t: int) -> None:
        """Tell every other rank that round t fires."""
        msg = np.array([_MAGIC, t], np.int64)
        for j in range(self.n):
            if j != self.rank:
                self._sends.append((self.mpi.Isend(msg, j, _ACT_TAG), msg))
                self.sent[j] += 1

    def _reap_sends(self) -> None:
        if self._sends:
            self._sends = [(r, m) for r, m in self._sends if not r.Test()]

    def _settle_activations(self) -> None:
        """After the thread stopped (every rank in close()): receive every activation still
        on its way, so no message is left behind. The ranks exchange how many each sent to
        each, then each receives what it has not yet."""

        MPI = self.MPI
        deadline = Deadline(self.service.timeout)
        counts = np.zeros(self.n, np.int64)
        exchange = self.mpi.Ialltoall(self.sent, counts)
        if not wait_until(exchange.Test, deadline):
            self.service.orphan(exchange, (self.sent, counts))
            raise CollectiveTimeoutError(
                "partial allreduce close()", [], deadline.timeout, self.rank,
                hint="Every rank must close its partial allreduce (EagerSGD.close()) together.",
            )
        buf = np.zeros(2, np.int64)
        for j in range(self.n):
            for _ in range(int(counts[j] - self.received[j])):
                r = self.mpi.Irecv(buf, j, _ACT_TAG)
                if not wait_until(r.Test, deadline):
                    self.service.orphan(r, buf)
                    raise CollectiveTimeoutError("partial allreduce close()", [j],
                                                 deadline.timeout, self.rank)
                self.received[j] += 1
        sends = [r for r, _ in self._sends]
        if sends and not wait_until(lambda: MPI.Request.Testall(sends), deadline):
            self.service.orphan(sends, self._sends)
        self._sends = []
