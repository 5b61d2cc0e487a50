r"""eager-SGD (Li, Ben-Nun, Di Girolamo, Alistarh, Hoefler, PPoPP 2020): gradient averaging
with a partial allreduce, so fast nodes do not wait for stragglers.

* :class:`EagerSGD`: ``x <- x - lr * r_k`` where ``r_k`` is the result of round k of a
  partial allreduce of the gradients (:mod:`declearn.comm.partial`): ``(1/n)`` times the sum
  of the gradients that landed in round k. In ``mode="solo"`` the first node to finish its
  step fires the round; in ``mode="majority"`` a node drawn by a shared seeded generator
  does (in expectation half the nodes have arrived by then); every ``staleness``-th round
  waits for everybody. A late node's gradient goes into a later round: it is applied at
  most ``staleness - 1`` rounds after the model it was computed at. Every node applies the
  same ``r_k``, so nodes that start together stay identical.

``straggler=(rank, seconds)`` slows one node down at every step: on MPI engines that rank
sleeps ``seconds`` before arriving; under SimComm the seconds are added to its simulated
step time. ``rank="random"`` draws the straggler of each step from ``(seed, k)`` (the
imbalance of the paper's experiments, one node at a time here).

Logging never synchronises the nodes: at each log point :meth:`EagerSGD.run` keeps a copy of
the model (identical on every node) and the traffic counts, and computes the metrics, which
need global collectives, after the last step (:mod:`declearn.algorithms.asynchronous`), so a
divergence is reported at the end of the run. Under SimComm the history's ``wall_time`` is
the simulated time.

With ``staleness=1`` every round is synchronous and EagerSGD is parallel SGD with an
allreduce, on both backends; otherwise which gradient lands in which round depends on
(simulated or real) arrival times, so iterates under SimComm and on MPI engines agree only
as far as the arrival orders do.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from declearn.algorithms.asynchronous import AsynchronousAlgorithm
from declearn.algorithms.flat import node_dims
from declearn.comm.partial import MODES, PartialAllreduce, partial_allreduce

__all__ = ["EagerSGD"]


class EagerSGD(AsynchronousAlgorithm):
    r"""``x_i <- x_i - lr * r_k`` with ``r_k = (1/n) sum`` of the gradients in round k of a
    solo or majority partial allreduce with bounded ``staleness`` (see the module docstring).

    Parameters
    ----------
    comm, problem, lr, x0 : as for every :class:`Algorithm`.
    mode : "solo" or "majority"
        Who fires a round: the first node to arrive, or a seeded random node.
    staleness : int
        Every ``staleness``-th round waits for every node (1: synchronous SGD).
    straggler : (rank, seconds), optional
        Node ``rank`` (or ``"random"``: a node drawn per step) takes ``seconds`` longer per
        step: it sleeps on MPI engines, its simulated clock advances under SimComm.
    step_time : float
        Simulated seconds of one step without delay (SimComm only).
    seed : int
        Seeds the majority initiators and the random straggler.
    timeout : float, optional
        Longest wait for a round (MPIComm).

    Call :meth:`flush` to apply the gradients still pending (a synchronous round), and
    :meth:`close` on every rank when done (it stops the MPI service thread); ``with
    EagerSGD(...) as alg:`` does the latter.
    """

    name = "eager_sgd"
    _assigns_new_tensors = True
    engine: PartialAllreduce
    _cannot_roll_back = (
        "the rounds of EagerSGD's partial allreduce run on their own (a service thread on "
        "MPI) and a round that fired cannot be taken back. close() it on every rank and "
        "build a new EagerSGD (from a checkpoint of x)."
    )

    def __init__(self, comm, problem, *, lr, mode: str = "solo", staleness: int = 8,
                 straggler=None, step_time: float = 0.01, seed: int = 0, x0=None,
                 timeout: float | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be 'solo' or 'majority', got {mode!r}.")
        self.mode = mode
        self.staleness = staleness
        self.seed = int(seed)
        self.straggler = _check_straggler(straggler, comm.size)
        super().__init__(comm, problem, x0=x0, lr=lr)
        shape = tuple(self.x.shape[node_dims(comm):])
        self.engine = partial_allreduce(
            comm, shape, dtype=self.x.dtype, mode=mode, staleness=staleness, seed=seed,
            op="mean", step_time=step_time, timeout=timeout,
        )
        self.staleness = self.engine.staleness

    @property
    def partial(self) -> PartialAllreduce:
        """The partial allreduce of the gradients (``self.engine``)."""
        return self.engine

    def _params(self) -> dict:
        p = {**super()._params(), "mode": self.mode, "staleness": self.staleness}
        if self.straggler is not None:
            p["straggler"] = self.straggler
        return p

    def lag(self, k: int) -> torch.Tensor:
        """Node-local extra seconds of step k (the straggler's delay, 0 elsewhere): an
        ``(n,)`` tensor under SimComm, a scalar tensor on a rank."""
        lags = torch.zeros(self.comm.size, dtype=torch.float64)
        if self.straggler is not None:
            who, seconds = self.straggler
            if who == "random":
                who = int(np.random.default_rng([self.seed, 1 << 20, k]).integers(self.comm.size))
            lags[who] = seconds
        return lags[self.comm.rank]

    def _step(self) -> None:
        g = self.grad(self.x)
        r = self.engine(g, lag=self.lag(self.k))
        self.x = torch.add(self.x, r, alpha=-self.lr())

    def flush(self) -> None:
        """Apply every gradient still pending (one synchronous round, every node/rank)."""
        self.x = torch.add(self.x, self.engine.flush(), alpha=-self.lr())

    def _clock(self) -> float:
        simulated = self.engine.simulated_time
        return simulated if simulated is not None else self._wall  # SimComm: simulated time


def _check_straggler(straggler, n: int):
    if straggler is None:
        return None
    try:
        who, seconds = straggler
    except (TypeError, ValueError):
        raise ValueError(
            f"straggler must be (rank, seconds) or ('random', seconds), got {straggler!r}."
        ) from None
    if who != "random" and (isinstance(who, bool) or not isinstance(who, numbers.Integral)
                            or not 0 <= int(who) < n):
        raise ValueError(f"The straggler's rank must be in 0..{n - 1} or 'random', got {who!r}.")
    if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real) \
            or not float(seconds) >= 0 or not np.isfinite(float(seconds)):
        raise ValueError(f"The straggler's delay must be seconds >= 0, got {seconds!r}.")
    return (who if who == "random" else int(who), float(seconds))
