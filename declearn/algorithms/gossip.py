r"""Asynchronous pairwise gossip (Boyd, Ghosh, Prabhakar, Shah, IEEE Trans. IT 2006).

* :class:`AsyncGossip`: every node has a Poisson clock of rate ``rate``; when node i's clock
  ticks it picks a neighbor j uniformly and ``x_i, x_j <- (x_i + x_j) / 2``. The sum is
  conserved exactly (up to rounding) and, on a connected graph, ``E||x(k) - x_bar||^2 <=
  lambda_2^k ||x(0) - x_bar||^2`` after k exchanges, with ``lambda_2`` the second largest
  eigenvalue of ``E[W]`` (:attr:`AsyncGossip.lambda2`).

Under SimComm the exchanges are events of a seeded stream on a simulated clock; on MPI
engines they happen for real, with no global lock-step (see :mod:`declearn.comm.gossip`).
Time is the axis: :meth:`AsyncGossip.run` takes ``steps`` (clock ticks per node) or a
``duration`` (seconds, simulated or wall) and records the consensus error at ``log_points``
times (the engine samples it during the run; the rows are appended after it); the history's
``iteration`` column counts exchanges (all nodes) and ``wall_time`` is the (simulated or
wall) time. Runs on MPI are not reproducible: the order
of the exchanges depends on the machine.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from declearn._deprecation import renamed_keyword
from declearn.algorithms.asynchronous import AsynchronousAlgorithm
from declearn.algorithms.base import check_divergence, check_steps
from declearn.algorithms.history import History
from declearn.comm.gossip import (
    Gossip,
    _check_rate,
    _check_run,
    expected_gossip_matrix,
    gossip_neighbors,
)

__all__ = ["AsyncGossip"]


class AsyncGossip(AsynchronousAlgorithm):
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
    engine: Gossip
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

    @renamed_keyword("ticks", "steps")
    def run(self, steps: int | None = None, *, log_every: int | None = None,
            progress: bool | None = None, divergence: float = 1e8,
            duration: float | None = None, log_points: int | None = None) -> History:
        """Gossip for ``steps`` clock ticks per node (as many :meth:`step` calls would) or
        for ``duration`` seconds, and append the consensus error at ``log_points`` times
        (default 50; or one every ``log_every`` ticks per node, ``log_every / rate``
        seconds) to the history (see the module docstring). ``divergence`` is checked (a
        number > 1) but not used: gossip only averages."""
        check_divergence(divergence)
        if (steps is None) == (duration is None):
            raise ValueError("Give exactly one of steps (clock ticks per node) or duration "
                             "(seconds).")
        if steps is not None:
            steps = check_steps(steps, "steps (clock ticks per node)")
        else:
            _check_run(None, duration)
        points = self._log_points(steps, duration, log_every, log_points)
        if len(self.history) == 0:
            self._row(self.engine.time, 0.0, float(self.metrics()["consensus_error"]),
                      0.0, 0.0)
        bar = self._progress_bar(steps, progress, per_step=math.prod(self.comm.node_dims))
        try:  # the engine records its trace; the rows are appended after the run
            trace = self.engine.run(ticks=steps, duration=duration, log_points=points,
                                    on_progress=None if bar is None else bar.update)
        finally:
            if bar is not None:
                bar.close()
        self.x = self.engine.value
        for row in zip(trace.time, trace.events, trace.consensus_error, trace.messages,
                       trace.bytes):
            self._row(*row)
        if steps is not None:
            self.k += steps
        return self.history

    def _log_points(self, steps, duration, log_every, log_points) -> int:
        """How many rows a run appends (see :meth:`run`)."""
        if log_every is None:
            return 50 if log_points is None else check_steps(log_points, "log_points")
        if log_points is not None:
            raise ValueError("Give log_every (ticks per node between rows) or log_points "
                             "(rows per run), not both.")
        if isinstance(log_every, bool) or not isinstance(log_every, numbers.Integral) \
                or log_every < 1:
            raise ValueError(f"log_every must be a positive integer, got {log_every!r}.")
        ticks = steps if steps is not None else duration * self.rate
        return math.ceil(ticks / log_every)

    def _row(self, t, events, error, messages, nbytes) -> None:
        self.history.append(iteration=events, consensus_error=error, wall_time=t,
                            messages=messages, bytes=nbytes)

    @property
    def sum(self) -> torch.Tensor:
        """``sum_i x_i`` (a global collective, not counted as traffic): conserved."""
        with self.comm.untracked():
            return self.comm.allreduce(self.x, "sum")
