r"""Waiting with a deadline: how MPIComm waits for messages without ever hanging.

A blocking MPI call (``Wait``, ``Allreduce``) waits inside the C library: it cannot be
interrupted from Python (Ctrl-C, the notebook's stop button) and never gives up when a peer
never arrives. MPIComm therefore only starts *nonblocking* operations and waits for them here,
in a Python loop that tests the requests and backs off:

* for the first ``spin`` seconds it tests and yields the core (``os.sched_yield``) between
  tests: small messages complete in microseconds, and yielding (rather than spinning hard)
  lets the peer ranks that share our cores make progress. ``spin = SPIN_S + nbytes /
  YIELD_BANDWIDTH`` (:func:`spin_for`) grows with the bytes the operation moves, because MPI
  moves a large intranode message only while we test (the receiver copies it inside its
  progress calls): sleeping in the middle of a transfer would stall it;
* after that it sleeps between tests, starting at ``FIRST_SLEEP_S`` and doubling up to
  ``MAX_SLEEP_S``, so an engine that waits a long time for a late peer costs almost no CPU;
* at the deadline it gives up and reports which requests are still pending.

Because every wait returns to the interpreter between tests, SIGINT (``KeyboardInterrupt``)
interrupts a waiting engine.

Requests still pending when an operation is abandoned (deadline, Ctrl-C) cannot simply be
dropped: MPI may still write into a receive buffer or read from a send buffer. Receives are
cancelled; whatever does not complete at once goes, with the buffers it uses, into a
:class:`Graveyard` that keeps them alive until MPI is done with them.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Iterable

from declearn.comm.base import get_default_timeout

__all__ = [
    "Deadline",
    "resolve_timeout",
    "spin_for",
    "wait_until",
    "RequestSet",
    "Graveyard",
    "SPIN_S",
    "FIRST_SLEEP_S",
    "MAX_SLEEP_S",
]

#: Seconds of test-and-yield before the loop starts sleeping.
SPIN_S = 0.1
#: Bytes per second a transfer is assumed to move at least, while we keep yielding.
YIELD_BANDWIDTH = 2e8
#: First sleep of the back-off, in seconds (it doubles up to MAX_SLEEP_S).
FIRST_SLEEP_S = 1e-4
#: Longest sleep between two tests, in seconds: the worst extra latency of a long wait.
MAX_SLEEP_S = 5e-3

_yield = getattr(os, "sched_yield", lambda: time.sleep(0))


def resolve_timeout(*candidates: float | None) -> float:
    """The first of ``candidates`` that is not None (a per-call timeout, then the
    communicator's), else :func:`~declearn.comm.base.get_default_timeout`; checked positive."""
    for seconds in candidates:
        if seconds is not None:
            break
    else:
        return get_default_timeout()
    if isinstance(seconds, bool):
        raise TypeError(f"timeout must be a number of seconds, got {seconds!r}.")
    try:
        seconds = float(seconds)
    except (TypeError, ValueError):
        raise TypeError(f"timeout must be a number of seconds, got {seconds!r}.") from None
    if not seconds > 0 or math.isnan(seconds):
        raise ValueError(f"timeout must be a positive number of seconds, got {seconds!r}.")
    return seconds


class Deadline:
    """A point in time ``timeout`` seconds from now (monotonic clock)."""

    __slots__ = ("timeout", "start", "expires")

    def __init__(self, timeout: float):
        self.timeout = float(timeout)
        self.start = time.monotonic()
        self.expires = self.start + self.timeout

    def remaining(self) -> float:
        return self.expires - time.monotonic()

    def expired(self) -> bool:
        return time.monotonic() >= self.expires

    def elapsed(self) -> float:
        return time.monotonic() - self.start


def spin_for(nbytes: float = 0) -> float:
    """Seconds to keep yielding (not sleeping) for an operation that moves ``nbytes``."""
    return SPIN_S + float(nbytes) / YIELD_BANDWIDTH


def wait_until(done: Callable[[], bool], deadline: Deadline, spin: float = SPIN_S) -> bool:
    """Call ``done()`` until it returns True (-> True) or the deadline passes (-> False)."""
    monotonic = time.monotonic
    spin_until = monotonic() + spin
    sleep = FIRST_SLEEP_S
    while not done():
        now = monotonic()
        if now >= deadline.expires:
            return bool(done())
        if now < spin_until:
            _yield()
        else:
            time.sleep(sleep)
            sleep = min(2.0 * sleep, MAX_SLEEP_S)
    return True


class RequestSet:
    """The MPI requests of one operation, each with a note (for instance ``("recv", rank)``).

    :meth:`wait` tests them with :meth:`mpi4py.MPI.Request.Testsome` under a deadline and
    calls ``on_done(note)`` for each one that completes; the callback may :meth:`add` new
    requests (a payload receive posted once its header has arrived). Buffers passed as
    ``keep`` stay referenced as long as their request is pending.
    """

    def __init__(self, MPI):
        self._MPI = MPI
        self.requests: list = []
        self.notes: list = []
        self.keep: list = []

    def add(self, request, note: Any, keep: Any = None) -> None:
        self.requests.append(request)
        self.notes.append(note)
        self.keep.append(keep)

    def __len__(self) -> int:
        return len(self.requests)

    def pending(self) -> list:
        """Notes of the requests not completed yet."""
        return list(self.notes)

    def _complete(self, done, on_done) -> None:
        """Drop the requests at indices ``done`` (they completed) and report their notes."""
        requests, notes, keep = self.requests, self.notes, self.keep
        if len(done) == len(requests):
            finished = notes
            self.requests, self.notes, self.keep = [], [], []
        else:
            finished = [notes[i] for i in done]
            done = set(done)
            rest = [i for i in range(len(requests)) if i not in done]
            self.requests = [requests[i] for i in rest]
            self.notes = [notes[i] for i in rest]
            self.keep = [keep[i] for i in rest]
        if on_done is not None:
            for note in finished:
                on_done(note)

    def wait(self, deadline: Deadline, on_done: Callable[[Any], None] | None = None,
             spin: float = SPIN_S) -> bool:
        """Wait for every request (including any that ``on_done`` adds). True when all have
        completed, False if the deadline passed first (the rest stay in the set)."""
        # The loop is written out (no helper calls) because its speed matters: ranks that
        # share a core take turns through these tests, so a slower turn is a slower transfer.
        testsome = self._MPI.Request.Testsome
        monotonic = time.monotonic
        yield_core = _yield
        expires = deadline.expires
        spin_until = monotonic() + spin
        sleep = FIRST_SLEEP_S
        while self.requests:
            done = testsome(self.requests)
            if done:
                self._complete(done, on_done)
                continue
            now = monotonic()
            if now >= expires:
                done = testsome(self.requests)
                if done:
                    self._complete(done, on_done)
                return not self.requests
            if now < spin_until:
                yield_core()
            else:
                time.sleep(sleep)
                sleep = min(2.0 * sleep, MAX_SLEEP_S)
        return True

    def abandon(self, graveyard: "Graveyard") -> None:
        """Give up on every pending request: cancel the receives, and hand whatever MPI may
        still touch (with its buffers) to ``graveyard``."""
        for request, note, keep in zip(self.requests, self.notes, self.keep):
            if isinstance(note, tuple) and note and str(note[0]).startswith("recv"):
                try:
                    request.Cancel()
                except Exception:  # noqa: BLE001 - a failed cancel leaves it to the graveyard
                    pass
            graveyard.bury(request, keep)
        self.requests, self.notes, self.keep = [], [], []


class Graveyard:
    """Requests abandoned by timed-out or interrupted operations, and the buffers they use.

    MPI may still read a send buffer or write a receive buffer after we stopped waiting, so
    those buffers must not be freed (or reused) before the request completes. :meth:`sweep`
    tests them and forgets those that are done.
    """

    def __init__(self, MPI):
        self._MPI = MPI
        self.requests: list = []
        self.keep: list = []

    def bury(self, request, keep: Any = None) -> None:
        self.requests.append(request)
        self.keep.append(keep)

    def bury_all(self, requests: Iterable, keep: Any = None) -> None:
        for request in requests:
            self.bury(request, keep)

    def sweep(self) -> int:
        """Forget the requests that have completed; return how many are still pending."""
        if not self.requests:
            return 0
        try:
            done = set(self._MPI.Request.Testsome(self.requests) or ())
        except Exception:  # noqa: BLE001 - an errored request is finished as far as we care
            done = set(range(len(self.requests)))
        pairs = [(r, k) for i, (r, k) in enumerate(zip(self.requests, self.keep)) if i not in done]
        self.requests = [r for r, _ in pairs]
        self.keep = [k for _, k in pairs]
        return len(self.requests)

    def __len__(self) -> int:
        return len(self.requests)
