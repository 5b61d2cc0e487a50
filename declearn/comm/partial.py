r"""Partial allreduce (eager-SGD's solo and majority collectives) with bounded staleness.

A partial allreduce is an allreduce that does not wait for everybody. Every node calls it once
per step with what it has just computed, ``y = pa(g)``; call ``t`` of every node returns the
result of *round* ``t``. The rules, the same on both backends:

* Node i keeps an accumulator ``acc_i``: ``pa(g)`` adds ``g`` to it.
* Round t *fires* when its initiator makes its call t:

  - ``mode="solo"``: the first node to make its call t;
  - ``mode="majority"``: node ``a_t``, drawn uniformly by a random generator seeded with
    ``(seed, t)`` (:func:`initiator`), the same draw on every rank; a uniformly random node
    arrives, in expectation, after half of the others;
  - *synchronous* rounds, every ``staleness``-th (``(t + 1) % staleness == 0``), and
    :meth:`~PartialAllreduce.flush`: the last node to make its call t.

  Rounds fire in order: round t never fires before round t - 1.
* When round t fires every node contributes its whole accumulator at that moment, and the
  accumulator is emptied. Node i's call t that came before the round fired is in it; a call
  that came later (a late node) stays in ``acc_i`` and goes into a later round. Nothing is
  lost, nothing is counted twice.
* Traffic: each round counts as one allreduce of the payload (``traffic.by_op
  ["partial_allreduce"]``); the small activation messages are not counted.
* Round t's result is ``sum_i c_i`` (``op="sum"``) or ``(1/n) sum_i c_i`` (``op="mean"``, what
  eager-SGD applies: each node's gradient divided by n), the same on every node.

*Staleness.* Call s of node i lands in the first round t >= s that fires after it; a
synchronous round takes everything, so ``t - s <= staleness - 1``. ``staleness=1`` makes every
round synchronous: a plain allreduce. A node that is late returns at once (its round has
already fired) and so catches up; the others wait for it only at synchronous rounds.

*Backends.*

* :class:`~declearn.comm.sim.partial.SimPartialAllreduce` (SimComm) emulates the rounds on a
  simulated clock, with no loop over nodes: node i makes call t at ``A_i(t) = R_i(t-1) +
  step_time + lag_i`` (``lag``: extra seconds of this step, the straggler knob) where
  ``R_i(t-1) = max(A_i(t-1), F(t-1))`` is when its previous call returned and ``F(t)`` when
  round t fired (``min_i A_i(t)`` for solo, ``A_{a_t}(t)`` for majority, ``max_i A_i(t)`` when
  synchronous). A call is in round t when ``A_i(s) <= F(t)`` (ties count as arrived: with
  equal times every node is in every round, as in an allreduce). Deterministic: the same times
  give the same rounds.
* :class:`~declearn.comm.mpi.partial.MPIPartialAllreduce` (MPIComm) does it for real, with a
  service thread per rank (:mod:`declearn.comm.mpi.service`) so that a straggler's rank takes
  part in rounds while its main thread sleeps. The thread runs the rounds in order on its own
  communicator: it starts round t when its main thread has made call t and it may initiate
  (solo: always; majority: it is ``a_t``; synchronous: always, and only then), sending an
  activation to every other rank, or when an activation for round t arrives. It then swaps its
  accumulator for an empty one (under the lock the main thread's ``pa(g)`` takes) and runs an
  ``Iallreduce`` of it. Round membership then follows real arrival times (and the activation's
  latency). ``lag`` makes the main thread sleep before arriving.

:func:`partial_allreduce` picks the right one for a communicator.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

from declearn.comm.base import REDUCE_OPS

__all__ = [
    "partial_allreduce",
    "PartialAllreduce",
    "initiator",
    "is_synchronous",
    "MODES",
]

MODES = ("solo", "majority")
_ACT_TAG = 11
_MAGIC = 0x45414752  # "EAGR"


def initiator(seed: int, t: int, n: int) -> int:
    """The initiator ``a_t`` of majority round t: uniform over ``0..n-1``, drawn by
    ``numpy.random.default_rng([seed, t])`` (the same on every rank)."""
    return int(np.random.default_rng([int(seed), int(t)]).integers(n))


def is_synchronous(t: int, staleness: int) -> bool:
    """Whether round t waits for every node (every ``staleness``-th round)."""
    return (t + 1) % staleness == 0


def partial_allreduce(comm, shape, *, dtype: torch.dtype = torch.float64, mode: str = "solo",
                      staleness: int = 8, seed: int = 0, op: str = "mean",
                      step_time: float = 0.0, timeout: float | None = None
                      ) -> PartialAllreduce:
    """A partial allreduce of node-local tensors of shape ``shape`` (one node's) on ``comm``:
    a :class:`~declearn.comm.sim.partial.SimPartialAllreduce` under SimComm, an
    :class:`~declearn.comm.mpi.partial.MPIPartialAllreduce` under MPIComm (every rank must
    create it at the same time). ``step_time`` is the simulated seconds of a step without
    lag (SimComm only); ``timeout`` bounds each wait (MPIComm)."""
    if not callable(getattr(comm, "partial_allreduce", None)):
        raise TypeError(
            f"partial_allreduce needs a declearn Communicator (SimComm(n) or MPIComm()), got "
            f"{type(comm).__name__}."
        )
    return comm.partial_allreduce(shape, dtype=dtype, mode=mode, staleness=staleness,
                                  seed=seed, op=op, step_time=step_time, timeout=timeout)


@dataclass(frozen=True)
class Round:
    """What a node knows of a fired round: its ``index``, its ``initiator`` (None when
    synchronous), whether it was ``synchronous``, and ``time`` (simulated seconds under
    SimComm; wall seconds since creation when the result reached this rank under MPIComm)."""

    index: int
    initiator: int | None
    synchronous: bool
    time: float


class PartialAllreduce:
    """Shared by both backends: argument checks, ``mode``/``staleness``/``op``, the log of
    rounds (``rounds``), and use as a context manager. See the module docstring."""

    def __init__(self, comm, shape, *, dtype, mode, staleness, seed, op):
        if mode not in MODES:
            raise ValueError(f"mode must be 'solo' or 'majority', got {mode!r}.")
        if isinstance(staleness, bool) or not isinstance(staleness, numbers.Integral) \
                or staleness < 1:
            raise ValueError(
                f"staleness must be an integer >= 1 (every staleness-th round waits for every "
                f"node; 1 makes every round a plain allreduce), got {staleness!r}."
            )
        if op not in REDUCE_OPS:
            raise ValueError(f"op must be one of {REDUCE_OPS}, got {op!r}.")
        if not isinstance(dtype, torch.dtype) or not (dtype.is_floating_point
                                                       or dtype.is_complex):
            raise TypeError(f"dtype must be a floating torch dtype, got {dtype!r}.")
        if isinstance(shape, numbers.Integral):
            shape = (int(shape),)
        try:
            shape = tuple(int(s) for s in shape)
        except TypeError:
            raise TypeError(f"shape must be a tuple of ints (one node's shape), got {shape!r}.") \
                from None
        if any(s < 0 for s in shape):
            raise ValueError(f"shape must have non-negative sizes, got {shape}.")
        self.comm = comm
        self.n = comm.size
        self.shape = shape
        self.dtype = dtype
        self.mode = mode
        self.staleness = int(staleness)
        self.seed = int(seed)
        self.op = op
        self.rounds: list[Round] = []
        self.closed = False
        self._nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()

    @property
    def calls(self) -> int:
        """Calls made so far by this node (by every node, under SimComm)."""
        return len(self.rounds)

    def synchronous(self, t: int) -> bool:
        return is_synchronous(t, self.staleness)

    def initiator(self, t: int) -> int | None:
        """Who fires round t: the majority draw, None for solo and synchronous rounds (the
        first / the last node to arrive)."""
        if self.mode == "majority" and not self.synchronous(t):
            return initiator(self.seed, t, self.n)
        return None

    def _finish(self, total: torch.Tensor) -> torch.Tensor:
        return total.div_(self.n) if self.op == "mean" else total

    @staticmethod
    def _lag_value(lag) -> float | np.ndarray:
        if isinstance(lag, torch.Tensor):
            lag = lag.detach().cpu().numpy()
        lag = np.asarray(lag, dtype=np.float64)
        if not np.all(np.isfinite(lag)) or np.any(lag < 0):
            raise ValueError(f"lag must be seconds >= 0 (node-local), got {lag!r}.")
        return lag

    # what each backend provides (see the module docstring)
    def __call__(self, g: torch.Tensor, *, lag=0.0) -> torch.Tensor:
        """Add ``g`` (this node's contribution of this step) and return the result of this
        call's round; ``lag`` is extra seconds this step takes (the straggler knob)."""
        raise NotImplementedError

    def flush(self) -> torch.Tensor:
        """A synchronous round now: every node's accumulator goes in, nothing is left."""
        raise NotImplementedError

    @property
    def simulated_time(self) -> float | None:
        """Seconds on the simulated clock (SimComm), None for real rounds (MPIComm)."""
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.closed = True

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.mode}, staleness {self.staleness}, n={self.n}, "
                f"{self.calls} rounds>")


