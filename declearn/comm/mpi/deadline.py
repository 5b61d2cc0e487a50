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

import functools
import math
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

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
    """The MPI requests of one operation, each with a note (for instance ``("recv", rank)``),
    and the buffers they use (``keep``: referenced as long as the set lives).

    Requests complete *in place*: MPI sets a completed request to ``MPI.REQUEST_NULL``, so
    the i-th request keeps its index and its note (the first ``count`` requests can be
    waited for alone, e.g. the headers before the payloads). :meth:`test` is one
    ``MPI.Request.Testall``. A request that completes with an error (``MPI_ERR_TRUNCATE``:
    the message was larger than the receive buffer; MPI drops the rest and the sender
    completes) counts as completed; its note and exception are kept in ``failed`` for the
    caller to judge.
    """

    __slots__ = ("_MPI", "requests", "notes", "keep", "failed")

    def __init__(self, MPI):
        self._MPI = MPI
        self.requests: list = []
        self.notes: list = []
        self.keep: list = []
        self.failed: list = []  # (note, MPI.Exception) of requests that ended in an error

    def add(self, request, note: Any, keep: Any = None) -> None:
        self.requests.append(request)
        self.notes.append(note)
        if keep is not None:
            self.keep.append(keep)

    def extend(self, requests: list, notes: Iterable, keep: Any = None) -> None:
        """Add ``requests`` with their ``notes`` (same order) and the buffers ``keep``."""
        self.requests += requests
        self.notes += notes
        if keep is not None:
            self.keep.append(keep)

    def __len__(self) -> int:
        """Number of requests not completed yet."""
        self._test_each(len(self.requests))
        return sum(1 for request in self.requests if request)

    def pending(self, count: int | None = None) -> list:
        """Notes of the requests (of the first ``count``) not completed yet (each is tested:
        a Testall that returns False leaves every request as it was)."""
        self._test_each(len(self.requests[:count]))
        pairs = zip(self.requests[:count], self.notes[:count])
        return [note for request, note in pairs if request]

    def test(self, count: int | None = None) -> bool:
        """True when every request (or each of the first ``count``) has completed."""
        requests = self.requests if count is None else self.requests[:count]
        try:
            return self._MPI.Request.Testall(requests)
        except self._MPI.Exception:  # some request ended in an error: find which, one by one
            return self._test_each(len(requests))

    def _test_each(self, count: int) -> bool:
        """Test the first ``count`` requests one by one (recording those that end in an
        error); True when all of them have completed."""
        done = True
        for i in range(count):
            request = self.requests[i]
            if not request:
                continue
            try:
                done = request.Test() and done
            except self._MPI.Exception as exc:
                self.failed.append((self.notes[i], exc))
                self.requests[i] = self._MPI.REQUEST_NULL  # completed (in error) and freed
        return done

    def wait(self, deadline: Deadline, spin: float = SPIN_S, count: int | None = None) -> bool:
        """Wait for every request (or the first ``count``): True when they have completed,
        False if the deadline passed first (the rest stay pending)."""
        if self.test(count):  # often done already: skip setting up the loop
            return True
        return wait_until(functools.partial(self.test, count), deadline, spin)

    def cancel(self, index: int) -> None:
        """Cancel the receive at ``index`` (a message that will never come); it completes
        at the next :meth:`test`."""
        if self.requests[index]:
            self.requests[index].Cancel()

    def abandon(self, graveyard: Graveyard) -> None:
        """Give up on every pending request: cancel the receives, and hand whatever MPI may
        still touch (with the buffers) to ``graveyard``."""
        for request, note in zip(self.requests, self.notes):
            if not request:
                continue
            if isinstance(note, tuple) and note and str(note[0]).startswith("recv"):
                try:
                    request.Cancel()
                except Exception:  # noqa: BLE001 - a failed cancel leaves it to the graveyard
                    pass
            graveyard.bury(request, self.keep)
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
        pairs = []
        for request, keep in zip(self.requests, self.keep):
            try:
                done = not request or request.Test()
            except Exception:  # noqa: BLE001 - ended in an error (a truncated receive): done
                done = True
            if not done:
                pairs.append((request, keep))
        self.requests = [r for r, _ in pairs]
        self.keep = [k for _, k in pairs]
        return len(self.requests)

    def __len__(self) -> int:
        return len(self.requests)
