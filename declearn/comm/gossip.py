r"""Asynchronous pairwise gossip (Boyd, Ghosh, Prabhakar, Shah 2006): the two backends.

Every node has a Poisson clock of rate ``rate`` (ticks per second). When node i's clock
ticks it picks a neighbor j uniformly at random (``P_ij = 1 / deg_i``) and both replace
their values by their average, ``x_i, x_j <- (x_i + x_j) / 2``: one step is
``W = I - (e_i - e_j)(e_i - e_j)^T / 2``, symmetric and doubly stochastic, so the sum
``sum_i x_i`` never changes and the values converge to the mean on a connected graph.
The graph is the sparsity pattern of a static topology whose pattern is symmetric (its
weights are not used).

* :class:`SimGossip` (SimComm): an event-driven simulation. The n clocks together are one
  Poisson process of rate ``n * rate``; :class:`PairEvents` draws its stream of events
  ``(time, i, j)`` from ``numpy.random.default_rng(seed)`` in fixed chunks, so the stream does
  not depend on how a run consumes it. Events are applied in order, those touching disjoint
  pairs in one vectorized step (a loop over events, never over nodes). Time is simulated.
* :class:`MPIGossip` (MPIComm): no global lock-step. Each rank runs a service thread
  (:mod:`declearn.comm.service`) that answers averaging requests; its main thread sleeps
  exponential times (rate ``rate``) and then asks a random neighbor. The exchange is atomic
  on both sides: the initiator marks itself busy (under the lock around its value) and sends
  ``x_i``; the neighbor's thread, under its lock, answers "busy" if it is itself waiting for
  a reply (the initiator then gives up this tick: two ranks asking each other can never
  deadlock), else replies ``x_j`` and sets ``x_j <- (x_i + x_j) / 2``; the initiator sets
  ``x_i <- (x_i + x_j) / 2``. Both compute the same floating-point sum, so the total is kept
  to rounding. A rank whose main thread is busy or asleep (a straggler) still answers.
  Every change of the value is recorded with its time, so the consensus error over wall
  time can be rebuilt after the run (:meth:`MPIGossip.run` gathers the records).

Both engines' ``run(ticks=..., duration=...)`` return a :class:`GossipTrace`: ``ticks`` runs
``n * ticks`` exchanges in the simulator (``ticks`` per node on average) and exactly ``ticks``
clock ticks per rank on MPI; ``duration`` runs for that many (simulated or wall) seconds.
"""

from __future__ import annotations

import itertools
import math
import numbers
import time
from dataclasses import dataclass

import numpy as np
import torch

from declearn.errors import CollectiveTimeoutError, TopologyError

__all__ = [
    "GossipTrace", "PairEvents", "SimGossip", "MPIGossip", "gossip_neighbors",
    "expected_gossip_matrix",
]

_REQ_TAG, _REPLY_TAG = 21, 22  # a reply of 0 bytes means "busy"


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
    cache = topology._cache
    if "gossip-neighbors" not in cache:
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
        cache["gossip-neighbors"] = (indptr, forward % n)
    return cache["gossip-neighbors"]


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


class SimGossip:
    """Event-driven pairwise gossip of the node-local ``x`` (shape ``(n, *s)``, updated in
    place) on SimComm; see the module docstring."""

    def __init__(self, comm, topology, x: torch.Tensor, *, rate: float = 1.0, seed: int = 0,
                 timeout=None):
        comm._check_topology(topology)
        indptr, indices = gossip_neighbors(topology)
        self.comm = comm
        self.n = comm.size
        self.rate = _check_rate(rate)
        self.x = x
        self.events = PairEvents(indptr, indices, self.rate, seed) if self.n > 1 else None
        self.time = 0.0
        self.exchanges = 0
        self.sent = np.zeros(self.n, np.int64)  # messages sent by each node
        self._nbytes = _node_bytes(x, True)

    @property
    def value(self) -> torch.Tensor:
        return self.x

    def run(self, ticks: int | None = None, *, duration: float | None = None,
            log_points: int = 50, on_progress=None) -> GossipTrace:
        _check_run(ticks, duration)
        start = self.time
        if self.events is None:  # one node: nothing to exchange
            times, I, J = np.empty(0), np.empty(0, np.int64), np.empty(0, np.int64)
        elif ticks is not None:
            times, I, J = self.events.take(self.n * int(ticks))
        else:
            times, I, J = self.events.until(start + float(duration))
        end = start + float(duration) if duration is not None else (
            float(times[-1]) if len(times) else start)
        grid = np.linspace(start, end, max(int(log_points), 0) + 1)[1:] if log_points else \
            np.empty(0)
        stops = np.searchsorted(times, grid, side="right")
        rows = []
        done = 0
        for stop in list(stops) + [len(times)]:
            if stop > done:
                self._apply(I[done:stop], J[done:stop])
                if on_progress is not None:
                    on_progress(int(stop - done))
                done = int(stop)
            if len(rows) < len(grid):
                rows.append(self._sample(float(grid[len(rows)])))
        self.time = end
        return _trace(rows)

    def _apply(self, I: np.ndarray, J: np.ndarray) -> None:
        x = self.x
        cuts = _disjoint_runs(I, J)
        dev = x.device
        for a, b in itertools.pairwise(cuts):
            if b - a == 1:
                i, j = int(I[a]), int(J[a])
                m = (x[i] + x[j]) * 0.5
                x[i] = m
                x[j] = m
            else:
                ii = torch.from_numpy(I[a:b]).to(dev)
                jj = torch.from_numpy(J[a:b]).to(dev)
                m = (x[ii] + x[jj]) * 0.5
                x[ii] = m
                x[jj] = m
        self.sent += np.bincount(I, minlength=self.n) + np.bincount(J, minlength=self.n)
        self.exchanges += len(I)

    def _sample(self, t: float) -> tuple:
        x = self.x
        flat = x.reshape(self.n, -1)
        err = float((flat - flat.mean(0)).abs().pow(2).sum(1).mean())
        messages = float(self.sent.mean())
        return (t, self.exchanges, err, messages, messages * self._nbytes)

    def close(self) -> None:
        pass


def _trace(rows) -> GossipTrace:
    cols = list(zip(*rows)) if rows else [[] for _ in range(5)]
    return GossipTrace(*(np.asarray(c, dtype=float) for c in cols))


# ====================================================================== MPI engines
class MPIGossip:
    """Pairwise gossip of this rank's value on MPI engines, with no global lock-step; see
    the module docstring. Every rank must create it together and :meth:`close` it
    together."""

    def __init__(self, comm, topology, x: torch.Tensor, *, rate: float = 1.0, seed: int = 0,
                 timeout: float | None = None):
        from declearn.comm.service import Service

        comm._check_topology(topology)
        indptr, indices = gossip_neighbors(topology)
        if x.numel() == 0:
            raise ValueError("Gossip needs a value with at least one entry.")
        if x.device.type != "cpu":
            raise TypeError(
                f"Gossip on MPI engines exchanges CPU tensors; this value is on {x.device}. "
                "Pass x0.cpu()."
            )
        self.comm = comm
        self.n, self.rank = comm.size, comm.rank
        self.rate = _check_rate(rate)
        self.seed = int(seed)
        self.neighbors = indices[indptr[self.rank]:indptr[self.rank + 1]].astype(np.int64)
        self._x = x.detach().clone().contiguous()
        self._nbytes = self._x.numel() * self._x.element_size()
        outer = self

        class _Thread(Service):
            kind = "gossip"

            def serve(self):
                outer._serve()

        self.service = _Thread(comm, timeout=timeout)
        self.mpi, self.MPI = self.service.mpi, self.service.MPI
        self.busy = False
        self.exchanges = 0  # completed exchanges this rank initiated
        self.refused = 0  # ticks whose neighbor was busy
        self._requests_sent = 0  # by the main thread
        self._replies_sent = 0  # by the service thread (under the lock)
        self.time = 0.0  # wall seconds of gossip runs so far
        self.total_exchanges = 0  # by every rank, as gathered at the end of each run
        self._total_ticks = [0]
        self._runs = 0
        self.failed: str | None = None
        self._t0 = None
        self._changes: list = []  # (time since the run started, value) after each change
        self._ticks: list = []  # (time, completed?) of this rank's ticks in the current run
        self.service.start()

    @property
    def value(self) -> torch.Tensor:
        """A copy of this rank's current value."""
        with self.service.lock:
            return self._x.clone()

    # ------------------------------------------------------------------ service thread
    def _serve(self) -> None:
        from declearn.comm.service import Backoff

        svc, MPI = self.service, self.MPI
        status = MPI.Status()
        buf = torch.empty_like(self._x)
        view = buf.numpy()
        request = self.mpi.Irecv(view, MPI.ANY_SOURCE, _REQ_TAG)
        replies: list = []
        backoff = Backoff()
        try:
            while not svc.stopping:
                if replies:
                    replies = [(r, keep) for r, keep in replies if not r.Test()]
                if not request.Test(status):
                    backoff.pause()
                    continue
                peer = status.Get_source()
                with svc.lock:
                    if self.busy:
                        reply = np.empty(0, np.uint8)
                    else:
                        mine = self._x
                        reply = mine.numpy()
                        self._x = (buf + mine) * 0.5  # the initiator computes x_i + x_j too
                        self._record()
                    replies.append((self.mpi.Isend(reply, peer, _REPLY_TAG), reply))
                    self._replies_sent += 1
                request = self.mpi.Irecv(view, MPI.ANY_SOURCE, _REQ_TAG)
                backoff.reset()
        finally:
            request.Cancel()
            pending = [r for r, _ in replies]
            deadline = time.monotonic() + svc.timeout
            while not request.Test() or not (not pending or MPI.Request.Testall(pending)):
                if time.monotonic() > deadline:
                    svc.orphan(request, (buf, replies))
                    break
                time.sleep(1e-4)

    def _record(self) -> None:
        """Log the value (called under the lock, during a run)."""
        if self._t0 is not None:
            self._changes.append((time.monotonic() - self._t0, self._x.clone()))

    # ------------------------------------------------------------------ main thread
    def exchange(self, j: int, deadline: float) -> bool:
        """Average with neighbor ``j``; False if it was busy (nothing changed)."""
        svc, MPI = self.service, self.MPI
        svc.check()
        if self.failed:
            raise RuntimeError(self.failed)
        with svc.lock:
            self.busy = True
            mine = self._x.clone()
        reply = torch.empty_like(mine)
        status = MPI.Status()
        receive = self.mpi.Irecv(reply.numpy(), j, _REPLY_TAG)
        send = self.mpi.Isend(mine.numpy(), j, _REQ_TAG)
        self._requests_sent += 1
        sleep = 2e-5
        ok = False
        try:
            while not receive.Test(status):
                if time.monotonic() > deadline:
                    svc.orphan([receive, send], (reply, mine))
                    self.failed = (f"a gossip exchange of rank {self.rank} with rank {j} timed "
                                   "out; close the gossip on every rank and start a new one.")
                    raise CollectiveTimeoutError(
                        "gossip exchange", [j], svc.timeout, self.rank,
                        hint=f"Rank {j} did not answer: its gossip service is not running "
                        "(closed, crashed, or never created).",
                    )
                time.sleep(sleep)
                sleep = min(2 * sleep, 5e-4)
            ok = status.Get_count(MPI.BYTE) > 0  # an empty reply: the neighbor was busy
            while not send.Test():
                time.sleep(2e-5)
        finally:
            with svc.lock:
                if ok:
                    self._x = (mine + reply) * 0.5
                    self._record()
                self.busy = False
        if ok:
            self.exchanges += 1
        else:
            self.refused += 1
        if self._t0 is not None:
            self._ticks.append((time.monotonic() - self._t0, ok))
        return ok

    def run(self, ticks: int | None = None, *, duration: float | None = None,
            log_points: int = 50, on_progress=None) -> GossipTrace:
        """Gossip (every rank together), then rebuild the consensus error over wall time from
        every rank's records."""
        _check_run(ticks, duration)
        comm = self.comm
        svc = self.service
        rng = np.random.default_rng([self.seed, self.rank, self._runs])
        self._runs += 1
        with comm.untracked():
            comm.barrier(timeout=svc.timeout)
        with svc.lock:
            self._t0 = time.monotonic()
            self._changes = [(0.0, self._x.clone())]
            self._ticks = []
        t0 = self._t0
        stop_at = None if duration is None else t0 + float(duration)
        done = 0
        while True:
            if ticks is not None and done >= ticks:
                break
            wake = time.monotonic() + rng.exponential(1.0 / self.rate)
            if stop_at is not None and wake >= stop_at:
                _sleep_until(stop_at)
                break
            _sleep_until(wake)
            j = int(self.neighbors[rng.integers(len(self.neighbors))]) if len(self.neighbors) \
                else None
            if j is not None:
                self.exchange(j, time.monotonic() + svc.timeout)
            done += 1
            if on_progress is not None:
                on_progress(1)
        with comm.untracked():
            comm.barrier(timeout=svc.timeout)  # the service keeps answering meanwhile
        with svc.lock:
            elapsed = time.monotonic() - t0
            changes, ticks = self._changes, self._ticks
            self._t0 = None
        return self._rebuild(changes, ticks, elapsed, log_points)

    def _rebuild(self, changes, ticks, elapsed, log_points) -> GossipTrace:
        """Every rank's records, gathered (measurement traffic, not counted); the state at a
        sample time is each rank's latest value recorded before it. Each tick sends a
        request and gets a reply (empty when the neighbor was busy)."""
        comm = self.comm
        n = self.n
        with comm.untracked():
            counts = comm.allgather(torch.tensor([len(changes), len(ticks)],
                                                 dtype=torch.int64)).numpy()
            end = float(comm.allreduce(torch.tensor([elapsed], dtype=torch.float64),
                                       "mean")[0])
            width = int(counts[:, 0].max())
            times = torch.full((width,), math.inf, dtype=torch.float64)
            values = torch.zeros((width,) + tuple(self._x.shape), dtype=self._x.dtype)
            times[:len(changes)] = torch.tensor([c[0] for c in changes], dtype=torch.float64)
            values[:len(changes)] = torch.stack([c[1] for c in changes])
            all_times = comm.allgather(times).numpy()
            all_values = comm.allgather(values).reshape(n, width, -1).to(torch.float64)
            tw = max(int(counts[:, 1].max()), 1)
            mine = torch.full((tw, 2), math.inf, dtype=torch.float64)
            if ticks:
                mine[:len(ticks)] = torch.tensor(ticks, dtype=torch.float64)
            every = comm.allgather(mine).reshape(-1, 2).numpy()
        tick_times = np.sort(every[:, 0])
        done_times = np.sort(every[every[:, 1] == 1, 0])
        grid = np.linspace(0.0, end, max(int(log_points), 1) + 1)[1:]
        base_time, base_events = self.time, self.total_exchanges
        base_ticks = self._total_ticks
        rows = []
        ranks = torch.arange(n)
        for t in grid:
            idx = np.array([max(int(np.searchsorted(all_times[r], t, side="right")) - 1, 0)
                            for r in range(n)])
            X = all_values[ranks, torch.from_numpy(idx)]
            err = float((X - X.mean(0)).abs().pow(2).sum(1).mean())
            tk = base_ticks[0] + int(np.searchsorted(tick_times, t, side="right"))
            ok = base_events + int(np.searchsorted(done_times, t, side="right"))
            rows.append((base_time + float(t), float(ok), err, 2.0 * tk / n,
                         (tk + ok) * self._nbytes / n))
        self.time = base_time + end
        self.total_exchanges = base_events + int(np.isfinite(done_times).sum())
        base_ticks[0] += int(np.isfinite(tick_times).sum())
        return _trace(rows)

    def close(self) -> None:
        """Stop the service thread and free its communicator (every rank, together)."""
        self.service.close(failed=self.failed is not None)


def _sleep_until(t: float) -> None:
    while True:
        left = t - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.05))
