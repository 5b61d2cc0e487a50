r"""DelayedComm: a slow network, simulated, so that overlap and stragglers can be seen.

``DelayedComm(comm, latency=0.05, bandwidth=None)`` wraps a communicator (SimComm or MPIComm)
and charges every operation a simulated transfer time

.. math::  \delta = \text{latency} + b / \text{bandwidth}

where ``b`` is the size in bytes of one node's input (``x[i]`` under SimComm, the rank's ``x``
under MPIComm; no bandwidth term when ``bandwidth`` is None). Results are those of the
wrapped communicator, unchanged.

* A blocking operation returns no earlier than ``start + delta``: it runs, then sleeps for what
  is left of ``delta``.
* ``iallreduce`` returns at once; its ``wait()`` returns no earlier than ``start + delta``.
  Local work between the two *hides* the delay: ``tau`` local steps of ``s`` seconds then
  ``wait()`` take ``max(delta, tau s)``, not ``delta + tau s``. ``done()`` is False until
  ``start + delta`` has passed.
* Operations inside ``comm.untracked()`` (the metrics an algorithm logs) are not delayed:
  measuring a run should not slow it down.

Under SimComm the one process sleeps (once per operation, for all nodes at the same time), so
wall-clock plots tell the same story as on MPI engines. Everything else (``resync``,
``close``, ``progress``, ``partial_allreduce``, ``timeout``, ``dtype``...) is the wrapped
communicator's, reached through attribute lookup.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import time

import torch

from declearn.comm.base import Communicator, Pending, Traffic, old_weights_keyword

__all__ = ["DelayedComm"]


class _DelayedPending(Pending):
    """A pending operation that may not complete before ``ready`` (a monotonic time)."""

    __slots__ = ("inner", "ready")

    def __init__(self, inner: Pending, ready: float):
        self.inner = inner
        self.ready = ready

    def done(self) -> bool:
        inner_done = self.inner.done()  # also moves the real operation forward
        return inner_done and time.monotonic() >= self.ready

    def wait(self) -> torch.Tensor:
        value = self.inner.wait()
        _sleep_until(self.ready)
        return value


class DelayedComm(Communicator):
    """``comm`` with every operation taking at least ``latency + bytes / bandwidth`` seconds
    (see the module docstring).

    Parameters
    ----------
    comm : Communicator
        The communicator to slow down (SimComm or MPIComm).
    latency : float
        Seconds every operation takes at least (>= 0).
    bandwidth : float, optional
        Bytes per second; adds ``b / bandwidth`` for a node input of ``b`` bytes. None: no
        bandwidth term.
    """

    def __init__(self, comm: Communicator, latency: float = 0.05, bandwidth: float | None = None):
        if not isinstance(comm, Communicator):
            raise TypeError(
                f"DelayedComm wraps a declearn Communicator (SimComm(n) or MPIComm()), got "
                f"{type(comm).__name__}."
            )
        self.comm = comm
        self.latency = _check_seconds(latency, "latency")
        if bandwidth is not None:
            if isinstance(bandwidth, bool) or not isinstance(bandwidth, numbers.Real) \
                    or not bandwidth > 0 or not math.isfinite(bandwidth):
                raise ValueError(
                    f"bandwidth must be a positive number of bytes per second (or None for no "
                    f"bandwidth term), got {bandwidth!r}."
                )
            bandwidth = float(bandwidth)
        self.bandwidth = bandwidth
        self._quiet = 0  # depth of untracked() blocks: no delay inside

    # ------------------------------------------------------------------ identity
    @property
    def is_simulator(self) -> bool:  # type: ignore[override]
        return self.comm.is_simulator

    @property
    def size(self) -> int:
        return self.comm.size

    @property
    def rank(self):
        return self.comm.rank

    @property
    def device(self) -> torch.device:
        return self.comm.device

    @property
    def node_dims(self) -> tuple[int, ...]:
        return self.comm.node_dims

    @property
    def reports(self) -> bool:
        return self.comm.reports

    @property
    def iteration(self) -> int | None:  # type: ignore[override]
        return self.comm.iteration

    @iteration.setter
    def iteration(self, k: int | None) -> None:
        self.comm.iteration = k

    def __getattr__(self, name):
        if name == "comm":  # not set yet (during construction)
            raise AttributeError(name)
        return getattr(self.comm, name)

    def __repr__(self) -> str:
        bw = "" if self.bandwidth is None else f", bandwidth={self.bandwidth:g}"
        return f"DelayedComm({self.comm!r}, latency={self.latency:g}{bw})"

    # ------------------------------------------------------------------ traffic
    @property
    def traffic(self) -> Traffic:
        return self.comm.traffic

    def reset_traffic(self) -> None:
        self.comm.reset_traffic()

    def _new_traffic(self) -> Traffic:
        return self.comm._new_traffic()

    @contextlib.contextmanager
    def untracked(self):
        """The wrapped communicator's ``untracked()``; operations inside are not delayed."""
        with self.comm.untracked():
            self._quiet += 1
            try:
                yield self
            finally:
                self._quiet -= 1

    # ------------------------------------------------------------------ the delay
    def delay(self, x: torch.Tensor | None = None) -> float:
        """Seconds an operation on the node-local tensor ``x`` takes at least."""
        if self.bandwidth is None or x is None:
            return self.latency
        nbytes = x.numel() * x.element_size()
        if x.dim() >= len(self.comm.node_dims):
            nbytes /= math.prod(self.comm.node_dims)  # one node's share
        return self.latency + nbytes / self.bandwidth

    def _timed(self, x, run):
        if self._quiet:
            return run()
        ready = time.monotonic() + self.delay(x)
        out = run()
        _sleep_until(ready)
        return out

    # ------------------------------------------------------------------ operations
    def allreduce(self, x, op="mean", *, timeout=None, tag=None):
        return self._timed(x, lambda: self.comm.allreduce(x, op, timeout=timeout, tag=tag))

    def iallreduce(self, x, op="mean", *, timeout=None, tag=None) -> Pending:
        ready = time.monotonic() + (0.0 if self._quiet else self.delay(x))
        return _DelayedPending(self.comm.iallreduce(x, op, timeout=timeout, tag=tag), ready)

    def broadcast(self, x, root=0, *, timeout=None, tag=None):
        return self._timed(x, lambda: self.comm.broadcast(x, root, timeout=timeout, tag=tag))

    def allgather(self, x, *, timeout=None, tag=None):
        return self._timed(x, lambda: self.comm.allgather(x, timeout=timeout, tag=tag))

    def barrier(self, *, timeout=None, tag=None) -> None:
        self._timed(None, lambda: self.comm.barrier(timeout=timeout, tag=tag))

    def neighbor_allreduce(self, x, topology, *, weighted_by="receiver", timeout=None, tag=None,
                           weights=None):
        if weights is not None:
            weighted_by = old_weights_keyword(weights)
        return self._timed(x, lambda: self.comm.neighbor_allreduce(
            x, topology, weighted_by=weighted_by, timeout=timeout, tag=tag))

    def neighbor_allgather(self, x, topology, *, timeout=None, tag=None):
        return self._timed(x, lambda: self.comm.neighbor_allgather(
            x, topology, timeout=timeout, tag=tag))

    def neighbor_alltoall(self, m, topology, *, timeout=None, tag=None):
        return self._timed(m, lambda: self.comm.neighbor_alltoall(
            m, topology, timeout=timeout, tag=tag))


    # ------------------------------------------------------------------ the rest, forwarded
    def partial_allreduce(self, shape, **options):
        """The wrapped communicator's partial allreduce (not delayed)."""
        return self.comm.partial_allreduce(shape, **options)

    def pairwise_gossip(self, topology, x, **options):
        """The wrapped communicator's pairwise gossip (not delayed)."""
        return self.comm.pairwise_gossip(topology, x, **options)

    def progress(self) -> int:
        return self.comm.progress()

    @property
    def in_flight(self) -> int:
        return self.comm.in_flight

    def resync(self, *, timeout: float | None = None) -> None:
        self.comm.resync(timeout=timeout)


def _sleep_until(t: float) -> None:
    """Sleep until the monotonic time ``t`` (in slices, so Ctrl-C is seen promptly)."""
    while True:
        left = t - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.05))


def _check_seconds(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0 \
            or not math.isfinite(value):
        raise ValueError(f"{what} must be a number of seconds >= 0, got {value!r}.")
    return float(value)
