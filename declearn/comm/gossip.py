r"""Asynchronous pairwise gossip (Boyd, Ghosh, Prabhakar, Shah 2006): the two backends.

Every node has a Poisson clock of rate ``rate`` (ticks per second). When node i's clock
ticks it picks a neighbor j uniformly at random (``P_ij = 1 / deg_i``) and both replace
their values by their average, ``x_i, x_j <- (x_i + x_j) / 2``: one step is
``W = I - (e_i - e_j)(e_i - e_j)^T / 2``, symmetric and doubly stochastic, so the sum
``sum_i x_i`` never changes and the values converge to the mean on a connected graph.
The graph is the sparsity pattern of a static topology whose pattern is symmetric (its
weights are not used).

* :class:`~declearn.comm.sim.gossip.SimGossip` (SimComm): an event-driven simulation. The n
  clocks together are one Poisson process of rate ``n * rate``; :class:`PairEvents` draws its
  stream of events ``(time, i, j)`` from ``numpy.random.default_rng(seed)`` in fixed chunks,
  so the stream does not depend on how a run consumes it. Events are applied in order, those
  touching disjoint pairs in one vectorized step (a loop over events, never over nodes). Time
  is simulated.
* :class:`~declearn.comm.mpi.gossip.MPIGossip` (MPIComm): no global lock-step. Each rank runs
  a service thread (:mod:`declearn.comm.mpi.service`) that answers averaging requests; its
  main thread sleeps exponential times (rate ``rate``) and then asks a random neighbor. The
  exchange is atomic on both sides: the initiator marks itself busy (under the lock around its
  value) and sends ``x_i``; the neighbor's thread, under its lock, answers "busy" if it is
  itself waiting for a reply (the initiator then gives up this tick: two ranks asking each
  other can never deadlock), else replies ``x_j`` and sets ``x_j <- (x_i + x_j) / 2``; the
  initiator sets ``x_i <- (x_i + x_j) / 2``. Both compute the same floating-point sum, so the
  total is kept to rounding. A rank whose main thread is busy or asleep (a straggler) still
  answers. Every change of the value is recorded with its time, so the consensus error over
  wall time can be rebuilt after the run (:meth:`MPIGossip.run` gathers the records).

Both engines' ``run(ticks=..., duration=...)`` return a :class:`GossipTrace`: ``ticks`` runs
``n * ticks`` exchanges in the simulator (``ticks`` per node on average) and exactly ``ticks``
clock ticks per rank on MPI; ``duration`` runs for that many (simulated or wall) seconds.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from declearn.errors import TopologyError

__all__ = ["Gossip", "GossipTrace", "PairEvents", "gossip_neighbors", "expected_gossip_matrix"]


class Gossip(Protocol):
    """What ``comm.pairwise_gossip(topology, x)`` returns on either backend."""

    @property
    def value(self) -> torch.Tensor:
        """The node-local values now."""

    @property
    def time(self) -> float:
        """Seconds gossiped so far (simulated under SimComm, wall-clock on MPI)."""

    def run(self, ticks: int | None = None, *, duration: float | None = None,
            log_points: int = 50, on_progress=None) -> GossipTrace:
        """Gossip for ``ticks`` clock ticks (or ``duration`` seconds); return the trace."""

    def close(self) -> None:
        """Stop (every node calls it)."""


@dataclass
class GossipTrace:
    """A run sampled at ``log_points`` times: ``time`` (seconds since the engine started),
    ``events`` (exchanges completed so far, all nodes), ``consensus_error``
    (``(1/n) sum_i ||x_i - x_bar||^2``), ``messages`` (sent per node so far, mean over
    nodes) and ``bytes`` (the same in bytes)."""

    time: np.ndarray
    events: np.ndarray
    consensus_error: np.ndarray
    messages: np.ndarray
    bytes: np.ndarray


def gossip_neighbors(topology) -> tuple[np.ndarray, np.ndarray]:
    """CSR ``(indptr, indices)`` of each node's neighbors (self excluded) for pairwise gossip,
    or a TopologyError if the topology cannot be used: dynamic, pattern not symmetric, or
    not connected."""
    from declearn.topology.base import DynamicTopology, Topology

    if isinstance(topology, DynamicTopology):
        raise TopologyError(
            f"Pairwise gossip runs on one static graph; {topology.name} is dynamic. Pass a "
            "static topology (e.g. ring(n), grid(n), erdos_renyi(n, p))."
        )
    if not isinstance(topology, Topology):
        raise TopologyError(
            f"Expected a declearn Topology, got {type(topology).__name__}; build one with "
            "declearn.topology (e.g. ring(n))."
        )
    return topology.memo("gossip.neighbors", lambda: _gossip_neighbors(topology))


def _gossip_neighbors(topology) -> tuple[np.ndarray, np.ndarray]:
    n = topology.n
    rows, cols = topology.rows, topology.indices
    off = rows != cols
    forward = np.unique(rows[off] * n + cols[off])
    backward = np.unique(cols[off] * n + rows[off])
    if not np.array_equal(forward, backward):
        raise TopologyError(
            f"Pairwise gossip averages two nodes both ways, so the graph must be "
            f"undirected: {topology.name} has a link j -> i without i -> j. Use an "
            "undirected topology (or symmetrize it: from_networkx(G.to_undirected()))."
        )
    if n > 1 and not topology.is_connected:
        raise TopologyError(
            f"{topology.name} is not connected: gossip cannot reach the global mean. Use a "
            "connected graph."
        )
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(forward // n, minlength=n), out=indptr[1:])
    return indptr, forward % n


def expected_gossip_matrix(topology) -> np.ndarray:
    r"""``E[W]`` of one exchange (one tick of a uniformly random node):
    ``I - D / (2n) + (P + P^T) / (2n)`` with ``P_ij = 1/deg_i`` on the edges and
    ``D = diag_i(sum_j P_ij + P_ji)`` (Boyd et al. 2006). ``E||x(k) - x_bar||^2 <=
    lambda_2(E[W])^k ||x(0) - x_bar||^2`` after k exchanges."""
    indptr, indices = gossip_neighbors(topology)
    n = topology.n
    deg = np.diff(indptr)
    P = np.zeros((n, n))
    rows = np.repeat(np.arange(n), deg)
    P[rows, indices] = 1.0 / deg[rows]
    S = P + P.T
    return np.eye(n) - np.diag(S.sum(1)) / (2 * n) + S / (2 * n)


def _check_rate(rate) -> float:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not rate > 0 \
            or not math.isfinite(rate):
        raise ValueError(f"rate must be a positive number of clock ticks per second, got "
                         f"{rate!r}.")
    return float(rate)


def _check_run(ticks, duration) -> None:
    if (ticks is None) == (duration is None):
        raise ValueError("Give exactly one of ticks (clock ticks per node) or duration "
                         "(seconds).")
    if ticks is not None and (isinstance(ticks, bool) or not isinstance(ticks, numbers.Integral)
                              or ticks < 0):
        raise ValueError(f"ticks must be an integer >= 0, got {ticks!r}.")
    if duration is not None and (isinstance(duration, bool)
                                 or not isinstance(duration, numbers.Real)
                                 or not duration >= 0 or not math.isfinite(duration)):
        raise ValueError(f"duration must be a number of seconds >= 0, got {duration!r}.")


def _node_bytes(x: torch.Tensor, simulated: bool) -> int:
    per = x[0] if simulated else x
    return per.numel() * x.element_size()


# ====================================================================== simulator
class PairEvents:
    """The seeded stream of gossip events ``(time, i, j)`` of n Poisson clocks of rate
    ``rate`` on a graph given by CSR ``(indptr, indices)``: inter-event times are exponential
    with mean ``1 / (n rate)``, ``i`` is uniform, ``j`` uniform among i's neighbors. Drawn in
    chunks of ``CHUNK`` from ``default_rng(seed)``, so any way of consuming the stream sees
    the same events."""

    CHUNK = 4096

    def __init__(self, indptr, indices, rate: float, seed: int = 0):
        self.indptr, self.indices = indptr, indices
        self.n = len(indptr) - 1
        self.rate = float(rate)
        self.rng = np.random.default_rng(int(seed))
        self.now = 0.0  # time of the last event drawn
        self._t = np.empty(0)
        self._i = np.empty(0, np.int64)
        self._j = np.empty(0, np.int64)

    def _draw(self) -> None:
        n, C = self.n, self.CHUNK
        gaps = self.rng.exponential(1.0 / (n * self.rate), C)
        i = self.rng.integers(n, size=C)
        u = self.rng.random(C)
        deg = self.indptr[i + 1] - self.indptr[i]
        j = self.indices[self.indptr[i] + np.minimum((u * deg).astype(np.int64), deg - 1)]
        times = self.now + np.cumsum(gaps)
        self.now = float(times[-1])
        self._t = np.concatenate([self._t, times])
        self._i = np.concatenate([self._i, i])
        self._j = np.concatenate([self._j, j])

    def take(self, count: int):
        """The next ``count`` events, as arrays ``(times, i, j)``."""
        while len(self._t) < count:
            self._draw()
        return self._pop(count)

    def until(self, t: float):
        """Every next event with time ``< t``."""
        while not len(self._t) or self._t[-1] < t:
            self._draw()
        return self._pop(int(np.searchsorted(self._t, t, side="left")))

    def _pop(self, count: int):
        out = (self._t[:count], self._i[:count], self._j[:count])
        self._t, self._i, self._j = self._t[count:], self._i[count:], self._j[count:]
        return out


def _disjoint_runs(i: np.ndarray, j: np.ndarray) -> list[int]:
    """Cut points splitting the events into runs in which no node appears twice (each run
    can then be applied at once)."""
    cuts, seen = [0], set()
    for e, (a, b) in enumerate(zip(i.tolist(), j.tolist())):
        if a in seen or b in seen:
            cuts.append(e)
            seen = {a, b}
        else:
            seen.add(a)
            seen.add(b)
    cuts.append(len(i))
    return cuts


def _trace(rows) -> GossipTrace:
    cols = list(zip(*rows)) if rows else [[] for _ in range(5)]
    return GossipTrace(*(np.asarray(c, dtype=float) for c in cols))


# ====================================================================== MPI engines


def _sleep_until(t: float) -> None:
    while True:
        left = t - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.05))
