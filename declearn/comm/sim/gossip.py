"""Asynchronous pairwise gossip in one process: the pairs of a Poisson clock, applied in
batches of disjoint pairs (the model is in :mod:`declearn.comm.gossip`)."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from declearn.comm.gossip import (
    GossipTrace,
    PairEvents,
    _check_rate,
    _check_run,
    _disjoint_runs,
    _node_bytes,
    _trace,
    gossip_neighbors,
)

__all__ = ["SimGossip"]


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
