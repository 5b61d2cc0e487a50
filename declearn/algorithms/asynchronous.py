r"""What the asynchronous methods share: communication that runs on its own, and metrics
measured after the run.

An asynchronous method hands its communication to an ``engine`` that goes on by itself (a
partial allreduce, a gossip engine; on MPI engines a service thread per rank), so:

* :meth:`~AsynchronousAlgorithm.close` stops the engine, on every rank together; ``with
  Method(...) as alg:`` calls it;
* no step can be taken back (a round that fired, an exchange that happened, stays);
* a run never synchronises the nodes to log: at each log point it keeps a copy of ``x`` and
  of the traffic counts, and :meth:`~AsynchronousAlgorithm.finish` measures them after the
  last step (the metrics need global collectives; taking them on the fly would make the fast
  ranks wait for the slow ones at every log point). A divergence is therefore reported at
  the end of the run, naming the iteration where it was first seen. A method whose engine
  records its own trace (gossip) appends that instead.

The wall time of a log point is the simulated time under SimComm where the engine keeps one
(``_clock()``), the run's wall time otherwise.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from declearn.algorithms.base import Algorithm, _copy_count
from declearn.algorithms.history import History

__all__ = ["AsynchronousAlgorithm"]


class Engine(Protocol):
    """What an asynchronous method's engine offers the base (partial allreduce, gossip)."""

    def close(self) -> None:
        """Stop it (every node calls it)."""


class _LogPoint:
    """The state of one log point, kept until the run ends: ``k``, a copy of ``x``, the wall
    (or simulated) time and the traffic counts."""

    __slots__ = ("k", "x", "wall", "messages", "bytes")

    def __init__(self, k: int, x: torch.Tensor, wall: float, messages: Any, nbytes: Any):
        self.k, self.x, self.wall, self.messages, self.bytes = k, x, wall, messages, nbytes


class AsynchronousAlgorithm(Algorithm):
    """An algorithm whose communication runs in ``self.engine`` (see the module docstring).

    A subclass builds ``self.engine`` in its constructor and sets ``_cannot_roll_back`` to
    say why its steps cannot be undone."""

    engine: Engine
    _cannot_roll_back = ("its engine runs on its own and what it exchanged cannot be taken "
                         "back. close() it on every rank and build a new one (from a "
                         "checkpoint of x).")
    _points: list[_LogPoint] | None = None  # log points kept during run()
    _replay: tuple[Any, Any] | None = None  # their traffic counts while one is measured

    def close(self) -> None:
        """Stop the engine (on MPI: its service thread; every rank together)."""
        self.engine.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _clock(self) -> float:
        """Seconds of the run at this point (wall time unless a subclass simulates time)."""
        return self._wall

    # ------------------------------------------------------------ deferred metrics
    def run(self, steps: int, *, log_every: int | None = None, progress: bool | None = None,
            divergence: float = 1e8) -> History:
        """As :meth:`Algorithm.run`; the metrics of the log points are computed after the
        last step (see the module docstring)."""
        self._points = []
        try:
            return super().run(steps, log_every=log_every, progress=progress,
                               divergence=divergence)
        finally:
            self._points = None

    def _log(self) -> None:
        wall = self._clock()
        if self._points is None:  # not in a run: measure now
            self._wall = wall
            super()._log()
            return
        traffic = self.comm.traffic
        self._points.append(_LogPoint(self.k, self.x.clone(), wall,
                                      _copy_count(traffic.messages),
                                      _copy_count(traffic.bytes)))

    def finish(self) -> None:
        """Measure the log points kept during the run (collectives: every rank together)."""
        points, self._points = self._points or [], None
        now = (self.k, self.x, self._wall)
        try:
            for p in points:
                self.k, self.x, self._wall = p.k, p.x, p.wall
                self._replay = (p.messages, p.bytes)
                super()._log()
        finally:
            (self.k, self.x, self._wall), self._replay = now, None

    def metrics(self) -> dict:
        row = super().metrics()
        if self._replay is not None:  # the traffic at the log point being measured
            messages, nbytes = self._replay
            row["messages"] = self._mean_over_nodes(messages - self._traffic0[0])
            row["bytes"] = self._mean_over_nodes(nbytes - self._traffic0[1])
        return row
