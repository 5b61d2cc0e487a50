r"""Asynchronous pairwise gossip (Boyd, Ghosh, Prabhakar, Shah, IEEE Trans. IT 2006).

* :class:`AsyncGossip`: every node has a Poisson clock of rate ``rate``; when node i's clock
  ticks it picks a neighbor j uniformly and ``x_i, x_j <- (x_i + x_j) / 2``. The sum is
  conserved exactly (up to rounding) and, on a connected graph, ``E||x(k) - x_bar||^2 <=
  lambda_2^k ||x(0) - x_bar||^2`` after k exchanges, with ``lambda_2`` the second largest
  eigenvalue of ``E[W]`` (:attr:`AsyncGossip.lambda2`).

Under SimComm the exchanges are events of a seeded stream on a simulated clock; on MPI
engines they happen for real, with no global lock-step (see :mod:`declearn.comm.gossip`).
Time is the axis: :meth:`AsyncGossip.run` takes ``ticks`` (clock ticks per node) or a
``duration`` (seconds, simulated or wall) and records the consensus error at
``log_points`` times; the history's ``iteration`` column counts exchanges (all nodes) and
``wall_time`` is the (simulated or wall) time. Runs on MPI are not reproducible: the order
of the exchanges depends on the machine.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from declearn.algorithms.base import Algorithm, check_divergence
from declearn.comm.gossip import _check_rate, expected_gossip_matrix, gossip_neighbors

__all__ = ["AsyncGossip"]


class AsyncGossip(Algorithm):
    """Randomized pairwise averaging with Poisson clocks (see the module docstring).

    Parameters
    ----------
    comm : Communicator
        SimComm (event-driven simulation) or MPIComm (service threads, wall-clock).
    topology : Topology
        A static, connected topology with a symmetric pattern (its weights are not used).
    x0 : tensor
        Node-local starting values.
    rate : float
        Clock ticks per node per second.
    seed : int
        Seeds the event stream (SimComm) or each rank's clock and choices (MPIComm).
    timeout : float, optional
        Longest wait for a neighbor's answer or the final barrier (MPIComm).

    On MPI engines call :meth:`close` on every rank when done (``with`` does it).
    """

    name = "async_gossip"
    _assigns_new_tensors = True
    _cannot_roll_back = (
        "AsyncGossip's exchanges happen in its gossip engine (service threads on MPI), "
        "pairwise and without a global step to go back to. close() it on every rank and "
        "build a new AsyncGossip (from a checkpoint of x)."
    )

    def __init__(self, comm, topology, x0, *, rate: float = 1.0, seed: int = 0,
                 timeout: float | None = None):
        self.topology = topology
        self.rate = _check_rate(rate)
        super().__init__(comm, None, x0=x0)
        comm._check_topology(topology)
        gossip_neighbors(topology)  # raises a TopologyError saying what to use
        if not (self.x.is_floating_point() or self.x.is_complex()):
            raise TypeError(f"Gossip averages values, so x0 must be floating point, got "
                            f"{self.x.dtype}; convert with x0.double().")
        self.engine = comm.pairwise_gossip(topology, self.x, rate=rate, seed=seed,
                                           timeout=timeout)
        self.seed = int(seed)

    def _params(self) -> dict:
        return {**super()._params(), "topology": self.topology.name, "rate": self.rate}

    @property
    def lambda2(self) -> float:
        """Second largest eigenvalue of the expected exchange matrix ``E[W]``: the expected
        squared consensus error shrinks at least by this factor per exchange."""
        vals = np.linalg.eigvalsh(expected_gossip_matrix(self.topology))
        return float(vals[-2]) if len(vals) > 1 else 0.0

    @property
    def time(self) -> float:
        """Seconds of gossip so far (simulated under SimComm, wall on MPI engines)."""
        return self.engine.time

    def _step(self) -> None:
        """One clock tick per node (n exchanges in the simulator, in expectation one tick
        each; one tick of this rank on MPI)."""
        self.engine.run(ticks=1, log_points=0)
        self.x = self.engine.value

    def run(  # type: ignore[override]  # counts clock ticks (or seconds), not steps
            self, ticks: int | None = None, *, duration: float | None = None,
            log_points: int = 50, progress: bool | None = None, divergence: float = 1e8):
        """Gossip for ``ticks`` clock ticks per node or for ``duration`` seconds; append
        ``log_points`` rows to the history (time-sampled; see the module docstring).
        ``divergence`` is checked (a number > 1) but not used: gossip only averages."""
        check_divergence(divergence)
        if len(self.history) == 0:
            self._row(self.engine.time, 0.0, float(self.metrics()["consensus_error"]),
                      0.0, 0.0)
        total = ticks if ticks is not None else None
        show = (progress if progress is not None else bool(total and total >= 200))
        show = show and self.comm.reports
        bar = None
        if show:
            from tqdm.auto import tqdm

            scale = math.prod(self.comm.node_dims)  # events of every node in the simulator
            bar = tqdm(total=None if total is None else total * scale, desc=self.name,
                       leave=False)
        try:
            trace = self.engine.run(ticks=ticks, duration=duration, log_points=log_points,
                                    on_progress=None if bar is None else bar.update)
        finally:
            if bar is not None:
                bar.close()
        self.x = self.engine.value
        for row in zip(trace.time, trace.events, trace.consensus_error, trace.messages,
                       trace.bytes):
            self._row(*row)
        if ticks is not None:
            self.k += int(ticks)
        return self.history

    def _row(self, t, events, error, messages, nbytes) -> None:
        self.history.append(iteration=events, consensus_error=error, wall_time=t,
                            messages=messages, bytes=nbytes)

    def close(self) -> None:
        """Stop the gossip (on MPI: its service thread; every rank together)."""
        self.engine.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def sum(self) -> torch.Tensor:
        """``sum_i x_i`` (a global collective, not counted as traffic): conserved."""
        with self.comm.untracked():
            return self.comm.allreduce(self.x, "sum")
