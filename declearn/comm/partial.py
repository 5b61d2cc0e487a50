r"""Partial allreduce (eager-SGD's solo and majority collectives) with bounded staleness.

A partial allreduce is an allreduce that does not wait for everybody. Every node calls it once
per step with what it has just computed, ``y = pa(g)``; call ``t`` of every node returns the
result of *round* ``t``. The rules, the same on both backends:

* Node i keeps an accumulator ``acc_i``: ``pa(g)`` adds ``g`` to it.
* Round t *fires* when its initiator makes its call t:

  - ``mode="solo"``: the first node to make its call t;
  - ``mode="majority"``: node ``a_t``, drawn uniformly by a random generator seeded with
    ``(seed, t)`` (:func:`initiator`), the same draw on every rank; a uniformly random node
    arrives, in expectation, after half of the others;
  - *synchronous* rounds, every ``staleness``-th (``(t + 1) % staleness == 0``), and
    :meth:`~PartialAllreduce.flush`: the last node to make its call t.

  Rounds fire in order: round t never fires before round t - 1.
* When round t fires every node contributes its whole accumulator at that moment, and the
  accumulator is emptied. Node i's call t that came before the round fired is in it; a call
  that came later (a late node) stays in ``acc_i`` and goes into a later round. Nothing is
  lost, nothing is counted twice.
* Traffic: each round counts as one allreduce of the payload (``traffic.by_op
  ["partial_allreduce"]``); the small activation messages are not counted.
* Round t's result is ``sum_i c_i`` (``op="sum"``) or ``(1/n) sum_i c_i`` (``op="mean"``, what
  eager-SGD applies: each node's gradient divided by n), the same on every node.

*Staleness.* Call s of node i lands in the first round t >= s that fires after it; a
synchronous round takes everything, so ``t - s <= staleness - 1``. ``staleness=1`` makes every
round synchronous: a plain allreduce. A node that is late returns at once (its round has
already fired) and so catches up; the others wait for it only at synchronous rounds.

*Backends.*

* :class:`SimPartialAllreduce` (SimComm) emulates the rounds on a simulated clock, with no
  loop over nodes: node i makes call t at ``A_i(t) = R_i(t-1) + step_time + lag_i`` (``lag``:
  extra seconds of this step, the straggler knob) where ``R_i(t-1) = max(A_i(t-1), F(t-1))``
  is when its previous call returned and ``F(t)`` when round t fired (``min_i A_i(t)`` for
  solo, ``A_{a_t}(t)`` for majority, ``max_i A_i(t)`` when synchronous). A call is in round t
  when ``A_i(s) <= F(t)`` (ties count as arrived: with equal times every node is in every
  round, as in an allreduce). Deterministic: the same times give the same rounds.
* :class:`MPIPartialAllreduce` (MPIComm) does it for real, with a service thread per rank
  (:mod:`declearn.comm.service`) so that a straggler's rank takes part in rounds while its
  main thread sleeps. The thread runs the rounds in order on its own communicator: it starts
  round t when its main thread has made call t and it may initiate (solo: always; majority:
  it is ``a_t``; synchronous: always, and only then), sending an activation to every other
  rank, or when an activation for round t arrives. It then swaps its accumulator for an
  empty one (under the lock the main thread's ``pa(g)`` takes) and runs an ``Iallreduce`` of
  it. Round membership then follows real arrival times (and the activation's latency).
  ``lag`` makes the main thread sleep before arriving.

:func:`partial_allreduce` picks the right one for a communicator.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass

import numpy as np
import torch

from declearn.comm.base import REDUCE_OPS
from declearn.errors import CollectiveTimeoutError, CommunicatorOutOfSyncError

__all__ = [
    "partial_allreduce",
    "PartialAllreduce",
    "SimPartialAllreduce",
    "MPIPartialAllreduce",
    "initiator",
    "is_synchronous",
    "MODES",
]

MODES = ("solo", "majority")
_ACT_TAG = 11
_MAGIC = 0x45414752  # "EAGR"


def initiator(seed: int, t: int, n: int) -> int:
    """The initiator ``a_t`` of majority round t: uniform over ``0..n-1``, drawn by
    ``numpy.random.default_rng([seed, t])`` (the same on every rank)."""
    return int(np.random.default_rng([int(seed), int(t)]).integers(n))


def is_synchronous(t: int, staleness: int) -> bool:
    """Whether round t waits for every node (every ``staleness``-th round)."""
    return (t + 1) % staleness == 0


def partial_allreduce(comm, shape, *, dtype: torch.dtype = torch.float64, mode: str = "solo",
                      staleness: int = 8, seed: int = 0, op: str = "mean",
                      step_time: float = 0.0, timeout: float | None = None
                      ) -> "PartialAllreduce":
    """A partial allreduce of node-local tensors of shape ``shape`` (one node's) on ``comm``:
    a :class:`SimPartialAllreduce` under SimComm, an :class:`MPIPartialAllreduce` under
    MPIComm (every rank must create it at the same time). ``step_time`` is the simulated
    seconds of a step without lag (SimComm only); ``timeout`` bounds each wait (MPIComm)."""
    make = getattr(comm, "partial_allreduce", None)
    if make is None:
        raise TypeError(
            f"{type(comm).__name__} offers no partial collectives; use SimComm(n) or MPIComm()."
        )
    return make(shape, dtype=dtype, mode=mode, staleness=staleness, seed=seed, op=op,
                step_time=step_time, timeout=timeout)


@dataclass(frozen=True)
class Round:
    """What a node knows of a fired round: its ``index``, its ``initiator`` (None when
    synchronous), whether it was ``synchronous``, and ``time`` (simulated seconds under
    SimComm; wall seconds since creation when the result reached this rank under MPIComm)."""

    index: int
    initiator: int | None
    synchronous: bool
    time: float


class PartialAllreduce:
    """Shared by both backends: argument checks, ``mode``/``staleness``/``op``, the log of
    rounds (``rounds``), and use as a context manager. See the module docstring."""

    def __init__(self, comm, shape, *, dtype, mode, staleness, seed, op):
        if mode not in MODES:
            raise ValueError(f"mode must be 'solo' or 'majority', got {mode!r}.")
        if isinstance(staleness, bool) or not isinstance(staleness, numbers.Integral) \
                or staleness < 1:
            raise ValueError(
                f"staleness must be an integer >= 1 (every staleness-th round waits for every "
                f"node; 1 makes every round a plain allreduce), got {staleness!r}."
            )
        if op not in REDUCE_OPS:
            raise ValueError(f"op must be one of {REDUCE_OPS}, got {op!r}.")
        if not isinstance(dtype, torch.dtype) or not (dtype.is_floating_point
                                                       or dtype.is_complex):
            raise TypeError(f"dtype must be a floating torch dtype, got {dtype!r}.")
        if isinstance(shape, numbers.Integral):
            shape = (int(shape),)
        try:
            shape = tuple(int(s) for s in shape)
        except TypeError:
            raise TypeError(f"shape must be a tuple of ints (one node's shape), got {shape!r}.") \
                from None
        if any(s < 0 for s in shape):
            raise ValueError(f"shape must have non-negative sizes, got {shape}.")
        self.comm = comm
        self.n = comm.size
        self.shape = shape
        self.dtype = dtype
        self.mode = mode
        self.staleness = int(staleness)
        self.seed = int(seed)
        self.op = op
        self.rounds: list[Round] = []
        self.closed = False
        self._nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()

    @property
    def calls(self) -> int:
        """Calls made so far by this node (by every node, under SimComm)."""
        return len(self.rounds)

    def synchronous(self, t: int) -> bool:
        return is_synchronous(t, self.staleness)

    def initiator(self, t: int) -> int | None:
        """Who fires round t: the majority draw, None for solo and synchronous rounds (the
        first / the last node to arrive)."""
        if self.mode == "majority" and not self.synchronous(t):
            return initiator(self.seed, t, self.n)
        return None

    def _finish(self, total: torch.Tensor) -> torch.Tensor:
        return total.div_(self.n) if self.op == "mean" else total

    @staticmethod
    def _lag_value(lag) -> float | np.ndarray:
        if isinstance(lag, torch.Tensor):
            lag = lag.detach().cpu().numpy()
        lag = np.asarray(lag, dtype=np.float64)
        if not np.all(np.isfinite(lag)) or np.any(lag < 0):
            raise ValueError(f"lag must be seconds >= 0 (node-local), got {lag!r}.")
        return lag

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.closed = True

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.mode}, staleness {self.staleness}, n={self.n}, "
                f"{self.calls} rounds>")


class SimPartialAllreduce(PartialAllreduce):
    """The rounds of a partial allreduce emulated on a simulated clock (see the module
    docstring): ``pa(g, lag=...)`` with ``g`` of shape ``(n, *shape)`` and ``lag`` a number or
    an ``(n,)`` array of extra seconds; returns ``(n, *shape)``, every row the round's result.

    ``clock`` (the ``R_i``: when each node's last call returned) and ``rounds[t].time``
    (``F(t)``) are simulated seconds; ``pending`` holds the calls not contributed yet (at
    most ``staleness`` per node)."""

    def __init__(self, comm, shape, *, dtype=torch.float64, mode="solo", staleness=8,
                 seed=0, op="mean", step_time=0.0, timeout=None):
        super().__init__(comm, shape, dtype=dtype, mode=mode, staleness=staleness, seed=seed,
                         op=op)
        if isinstance(step_time, bool) or not isinstance(step_time, numbers.Real) \
                or not step_time >= 0 or not math.isfinite(step_time):
            raise ValueError(f"step_time must be simulated seconds >= 0, got {step_time!r}.")
        self.step_time = float(step_time)
        S, n = self.staleness, self.n
        # Ring of the calls not contributed yet: slot t % S holds every node's call t.
        self._values = torch.zeros((S, n) + self.shape, dtype=dtype, device=comm.device)
        self._arrival = np.full((S, n), np.inf)  # +inf: nothing pending in that slot
        self.clock = np.zeros(n)

    @property
    def pending(self) -> int:
        """Calls (over all nodes) made but not contributed to a round yet."""
        return int(np.isfinite(self._arrival).sum())

    @property
    def simulated_time(self) -> float:
        """When the latest round fired (simulated seconds)."""
        return self.rounds[-1].time if self.rounds else 0.0

    def __call__(self, g: torch.Tensor, *, lag=0.0) -> torch.Tensor:
        g = self._check_input(g)
        arrival = self.clock + self.step_time + np.broadcast_to(self._lag_value(lag),
                                                                 (self.n,))
        return self._round(g, arrival, forced=False)

    def flush(self) -> torch.Tensor:
        """A synchronous round with nothing new: every node's leftovers, now."""
        zeros = torch.zeros((self.n,) + self.shape, dtype=self.dtype, device=self.comm.device)
        return self._round(zeros, self.clock.copy(), forced=True)

    def _check_input(self, g) -> torch.Tensor:
        if self.closed:
            raise RuntimeError("This partial allreduce was closed; create a new one.")
        want = (self.n,) + self.shape
        if not isinstance(g, torch.Tensor) or tuple(g.shape) != want:
            got = tuple(g.shape) if isinstance(g, torch.Tensor) else type(g).__name__
            raise ValueError(f"The partial allreduce takes node-local tensors of shape {want} "
                             f"under SimComm, got {got}.")
        return g

    def _round(self, g, arrival: np.ndarray, forced: bool) -> torch.Tensor:
        t = len(self.rounds)
        slot = t % self.staleness
        if np.isfinite(self._arrival[slot]).any():  # pragma: no cover - the bound guarantees it
            raise AssertionError("a call older than the staleness bound is still pending")
        self._values[slot].copy_(g)
        self._arrival[slot] = arrival
        who = None if forced else self.initiator(t)
        if forced or self.synchronous(t):
            fire = float(arrival.max())
        elif who is None:  # solo: the first to arrive
            fire = float(arrival.min())
        else:
            fire = float(arrival[who])
        if self.rounds:
            fire = max(fire, self.rounds[-1].time)
        landed = self._arrival <= fire  # (S, n): the calls in this round
        weights = torch.from_numpy(landed).to(device=self._values.device, dtype=self.dtype)
        total = torch.tensordot(weights.reshape(-1), self._values.reshape(landed.size, -1),
                                dims=1).reshape(self.shape)
        self._arrival[landed] = np.inf
        self.clock = np.maximum(arrival, fire)
        synchronous = forced or self.synchronous(t)
        if who is None and not synchronous:
            who = int(arrival.argmin())
        self.rounds.append(Round(t, None if synchronous else who, synchronous, fire))
        comm, n = self.comm, self.n  # traffic: one allreduce of the payload per round
        comm._record("partial_allreduce", comm._every_node(2 * (n - 1)), self._nbytes / n)
        out = self._finish(total)
        return out.expand((self.n,) + self.shape).clone()


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
        from declearn.comm.service import Service

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
        from declearn.comm.service import Backoff

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
        from declearn.comm.deadline import Deadline, wait_until

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
