"""Asynchronous pairwise gossip for real: a service thread per rank pairs with its neighbors
with no global lock-step (the model is in :mod:`declearn.comm.gossip`)."""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from declearn.comm.gossip import (
    GossipTrace,
    _check_rate,
    _check_run,
    _sleep_until,
    _trace,
    gossip_neighbors,
)
from declearn.comm.mpi.service import Backoff, Service
from declearn.errors import CollectiveTimeoutError

__all__ = ["MPIGossip"]

_REQ_TAG, _REPLY_TAG = 21, 22  # a reply of 0 bytes means "busy"


class MPIGossip:
    """Pairwise gossip of this rank's value on MPI engines, with no global lock-step; see
    the module docstring. Every rank must create it together and :meth:`close` it
    together."""

    def __init__(self, comm, topology, x: torch.Tensor, *, rate: float = 1.0, seed: int = 0,
                 timeout: float | None = None):

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
