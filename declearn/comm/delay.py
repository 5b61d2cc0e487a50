r"""DelayedComm: a slow network, simulated, so that overlap, stragglers and the cost of each
collective can be seen.

``DelayedComm(comm, latency=0.05, bandwidth=None, *, cost="per_call", clock="sleep")`` wraps a
communicator (SimComm or MPIComm) and charges every operation a modelled transfer time
``delta``. Results are those of the wrapped communicator, unchanged. With ``b`` the size in
bytes of one node's input (``x[i]`` under SimComm, the rank's ``x`` under MPIComm), ``n`` the
number of nodes, ``alpha = latency`` and ``beta = bandwidth`` (``inf`` when None):

* ``cost="per_call"`` (the default): every operation, whatever it is, costs one message,

  .. math::  \delta = \alpha + b / \beta .

  Simple to reason about ("every allreduce takes delta"); it cannot tell a ring allreduce over
  256 nodes from one exchange with one neighbor.
* ``cost="alpha_beta"``: each operation costs what its algorithm sends on its critical path
  (:class:`~declearn.comm.costs.NetworkModel`, formulas in :mod:`declearn.comm.costs`):
  ``allreduce`` ``2 (n - 1) (alpha + b / (n beta))`` (ring), ``allgather``
  ``(n - 1) (alpha + b / beta)``, ``broadcast`` ``ceil(log2 n) (alpha + b / beta)``,
  ``barrier`` ``ceil(log2 n) alpha``, ``neighbor_allreduce`` and ``neighbor_allgather``
  ``p (alpha + b / beta)``, ``neighbor_alltoall`` ``p (alpha + b / (D_out beta))``, with ``p``
  the peers of the busiest node (:func:`~declearn.comm.costs.peers`: 1 on one-peer graphs).

The clock:

* ``clock="sleep"`` (the default): a blocking operation returns no earlier than ``start +
  delta`` (it runs, then sleeps for what is left of ``delta``), so wall-clock plots show the
  network. ``iallreduce`` returns at once; its ``wait()`` returns no earlier than ``start +
  delta``. Local work between the two *hides* the delay: ``tau`` local steps of ``s`` seconds
  then ``wait()`` take ``max(delta, tau s)``, not ``delta + tau s``. ``done()`` is False until
  ``start + delta`` has passed.
* ``clock="virtual"``: nothing sleeps; the modelled time only adds up in ``comm.clock``, so a
  run over 256 simulated nodes on a slow network takes no more wall time than without it.

Either way ``comm.clock`` holds the modelled seconds of this process: a blocking operation adds
``delta``; ``iallreduce`` started at clock ``t`` is ready at ``t + delta`` and its ``wait()``
moves the clock to ``max(clock, t + delta)``; ``comm.advance(s)`` adds ``s`` seconds of local
computation (the model does not time computation by itself). So in the sleeping mode a run's
wall time is at least its ``clock``, and both modes give the same ``clock`` for the same calls.
Operations inside ``comm.untracked()`` (the metrics an algorithm logs) are neither delayed
nor clocked: measuring a run should not slow it down.

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
from declearn.comm.costs import NetworkModel, peers

__all__ = ["DelayedComm", "COSTS", "CLOCKS"]

#: The cost models: one message per call, or what each collective's algorithm sends.
COSTS = ("per_call", "alpha_beta")
#: Sleep for the modelled time, or only add it up in ``comm.clock``.
CLOCKS = ("sleep", "virtual")


class _DelayedPending(Pending):
    """A pending operation that may not complete before ``ready`` (a monotonic time, or None
    with a virtual clock) nor before ``owner.clock`` reaches ``ready_clock``."""

    __slots__ = ("inner", "ready", "ready_clock", "owner")

    def __init__(self, inner: Pending, ready: float | None, ready_clock: float, owner):
        self.inner = inner
        self.ready = ready
        self.ready_clock = ready_clock
        self.owner = owner

    def done(self) -> bool:
        inner_done = self.inner.done()  # also moves the real operation forward
        if self.ready is None:
            return inner_done and self.owner.clock >= self.ready_clock
        return inner_done and time.monotonic() >= self.ready

    def wait(self) -> torch.Tensor:
        value = self.inner.wait()
        if self.ready is not None:
            _sleep_until(self.ready)
        self.owner.clock = max(self.owner.clock, self.ready_clock)
        return value


class DelayedComm(Communicator):
    """``comm`` with every operation taking a modelled time (see the module docstring): by
    default at least ``latency + bytes / bandwidth`` seconds each.

    Parameters
    ----------
    comm : Communicator
        The communicator to slow down (SimComm or MPIComm).
    latency : float
        Seconds one message takes at least (>= 0): ``alpha``.
    bandwidth : float, optional
        Bytes per second (``beta``); adds ``b / bandwidth`` per message of ``b`` bytes. None:
        no bandwidth term.
    cost : {"per_call", "alpha_beta"}
        One message per operation (default), or each collective's own count of messages.
    clock : {"sleep", "virtual"}
        Sleep for the modelled time (default), or only add it to ``comm.clock``.
    """

    def __init__(self, comm: Communicator, latency: float = 0.05, bandwidth: float | None = None,
                 *, cost: str = "per_call", clock: str = "sleep"):
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
        if cost not in COSTS:
            raise ValueError(f"cost must be one of {COSTS}: 'per_call' charges every operation "
                             f"latency + bytes / bandwidth, 'alpha_beta' what its algorithm "
                             f"sends (declearn.comm.costs); got {cost!r}.")
        if clock not in CLOCKS:
            raise ValueError(f"clock must be one of {CLOCKS}: 'sleep' waits for the modelled "
                             f"time, 'virtual' only adds it to comm.clock; got {clock!r}.")
        self.cost, self.clock_mode = cost, clock
        self.network = NetworkModel(self.latency, math.inf if bandwidth is None else bandwidth)
        #: Modelled seconds so far (communication, plus what advance() was given).
        self.clock = 0.0
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
        modes = "".join(f", {k}={v!r}" for k, v, default in
                        (("cost", self.cost, "per_call"), ("clock", self.clock_mode, "sleep"))
                        if v != default)
        return f"DelayedComm({self.comm!r}, latency={self.latency:g}{bw}{modes})"

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
    def _node_bytes(self, x: torch.Tensor | None) -> float:
        """Bytes of one node's share of the node-local ``x`` (0 for no payload)."""
        if x is None:
            return 0.0
        nbytes = x.numel() * x.element_size()
        if x.dim() >= len(self.comm.node_dims):
            nbytes /= math.prod(self.comm.node_dims)  # one node's share
        return float(nbytes)

    def delay(self, x: torch.Tensor | None = None, op: str = "allreduce",
              topology=None) -> float:
        """Modelled seconds of ``op`` on the node-local tensor ``x`` (``topology``: the static
        graph of a neighbor operation). ``cost="per_call"``: ``latency + b / bandwidth``
        whatever the op; ``cost="alpha_beta"``: the op's formula (module docstring)."""
        b = self._node_bytes(x)
        if self.cost == "per_call":
            return self.latency if self.bandwidth is None else self.latency + b / self.bandwidth
        net, n = self.network, self.comm.size
        if op in ("allreduce", "iallreduce"):
            return net.allreduce(n, b)
        if op == "allgather":
            return net.allgather(n, b)
        if op == "broadcast":
            return net.broadcast(n, b)
        if op == "barrier":
            return net.barrier(n)
        if op in ("neighbor_allreduce", "neighbor_allgather", "neighbor_alltoall"):
            if topology is None:
                raise ValueError(f"{op} needs the topology to count its peers.")
            p = peers(self.comm._check_topology(topology))
            if op == "neighbor_alltoall" and x is not None:
                slots = x.shape[len(self.comm.node_dims)] if x.dim() > len(
                    self.comm.node_dims) else 1
                b /= max(1, slots)  # one slot per out-neighbor
            return net.neighbor(p, b)
        raise ValueError(f"op must be one of allreduce, iallreduce, allgather, broadcast, "
                         f"barrier, neighbor_allreduce, neighbor_allgather, neighbor_alltoall; "
                         f"got {op!r}.")

    def advance(self, seconds: float) -> float:
        """Add ``seconds`` of local computation to ``clock`` (nothing sleeps); returns the
        clock. With a virtual clock this is how compute enters the modelled time."""
        self.clock += _check_seconds(seconds, "seconds (of local computation)")
        return self.clock

    def _timed(self, x, run, op: str, topology=None):
        if self._quiet:
            return run()
        delta = self.delay(x, op, topology)
        ready = time.monotonic() + delta
        out = run()
        if self.clock_mode == "sleep":
            _sleep_until(ready)
        self.clock += delta
        return out

    # ------------------------------------------------------------------ operations
    def allreduce(self, x, op="mean", *, timeout=None, tag=None):
        return self._timed(x, lambda: self.comm.allreduce(x, op, timeout=timeout, tag=tag),
                           "allreduce")

    def iallreduce(self, x, op="mean", *, timeout=None, tag=None) -> Pending:
        delta = 0.0 if self._quiet else self.delay(x, "iallreduce")
        ready = time.monotonic() + delta if self.clock_mode == "sleep" else None
        inner = self.comm.iallreduce(x, op, timeout=timeout, tag=tag)
        return _DelayedPending(inner, ready, self.clock + delta, self)

    def broadcast(self, x, root=0, *, timeout=None, tag=None):
        return self._timed(x, lambda: self.comm.broadcast(x, root, timeout=timeout, tag=tag),
                           "broadcast")

    def allgather(self, x, *, timeout=None, tag=None):
        return self._timed(x, lambda: self.comm.allgather(x, timeout=timeout, tag=tag),
                           "allgather")

    def barrier(self, *, timeout=None, tag=None) -> None:
        self._timed(None, lambda: self.comm.barrier(timeout=timeout, tag=tag), "barrier")

    def neighbor_allreduce(self, x, topology, *, weighted_by="receiver", timeout=None, tag=None,
                           weights=None):
        if weights is not None:
            weighted_by = old_weights_keyword(weights)
        return self._timed(x, lambda: self.comm.neighbor_allreduce(
            x, topology, weighted_by=weighted_by, timeout=timeout, tag=tag),
            "neighbor_allreduce", topology)

    def neighbor_allgather(self, x, topology, *, timeout=None, tag=None):
        return self._timed(x, lambda: self.comm.neighbor_allgather(
            x, topology, timeout=timeout, tag=tag), "neighbor_allgather", topology)

    def neighbor_alltoall(self, m, topology, *, timeout=None, tag=None):
        return self._timed(m, lambda: self.comm.neighbor_alltoall(
            m, topology, timeout=timeout, tag=tag), "neighbor_alltoall", topology)

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
