r"""The shape every decentralized method in declearn shares.

An :class:`Algorithm` holds node-local state (at least ``x``), advances it by one iteration
per :meth:`~Algorithm.step`, and communicates only through ``self.comm`` (a
:class:`~declearn.comm.Communicator`), so the same subclass runs under ``SimComm`` (state of
shape ``(n, *shape)``) and under ``MPIComm`` (the rank's own ``shape``). Gradients come from
``self.grad(x)``, the problem's node-local oracle (:meth:`declearn.problems.Problem.on`).

A subclass sets ``name``, implements ``_step()`` (iteration ``k -> k + 1``; ``self.k`` is
advanced by :meth:`step`), and overrides ``iterate`` when the model is not ``self.x`` (e.g.
push-sum's ratio ``x / w``).

:meth:`~Algorithm.run` steps ``steps`` times with a tqdm bar, records metrics in
``self.history`` (see :mod:`declearn.algorithms.history`) every ``log_every`` iterations,
and stops with :class:`~declearn.errors.DivergenceError` when a metric is NaN/inf or grows
past ``divergence`` times its first value. Metrics are global (computed with collectives
under ``comm.untracked()``), so under MPI every rank sees the same values and stops at the
same iteration.
"""

from __future__ import annotations

import math
import numbers
import time
from typing import Callable

import numpy as np
import torch

from declearn.algorithms.history import History
from declearn.errors import DivergenceError
from declearn.problems.base import as_problem

__all__ = ["Algorithm", "StepSize", "check_step_size", "diminishing"]


def check_step_size(lr, what: str = "lr") -> float:
    """``lr`` as a positive float, or a ValueError saying what a step size must be."""
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr):
        raise ValueError(f"The step size {what} must be a positive number, got {lr!r}.")
    if lr <= 0:
        raise ValueError(
            f"The step size {what} must be > 0, got {lr!r}. (A negative step climbs the loss; "
            "0 never moves.)"
        )
    return float(lr)


class StepSize:
    """A constant step ``lr`` or a schedule ``lr(k)``; ``step_size(k)`` returns a float."""

    def __init__(self, lr, what: str = "lr"):
        self.what = what
        if callable(lr):
            self.fn, self.constant = lr, None
            check_step_size(lr(0), f"{what}(0)")
        else:
            self.fn, self.constant = None, check_step_size(lr, what)

    def __call__(self, k: int) -> float:
        if self.constant is not None:
            return self.constant
        return check_step_size(self.fn(k), f"{self.what}({k})")

    def __repr__(self) -> str:
        return repr(self.constant) if self.constant is not None else getattr(
            self.fn, "__name__", "schedule")


def diminishing(lr0: float, power: float = 0.5, offset: float = 1.0) -> Callable[[int], float]:
    """The schedule ``lr(k) = lr0 / (k + offset)^power`` (power in (0, 1]; 1/2 and 1 are the
    classic choices: sum lr = inf, and for power > 1/2 also sum lr^2 < inf)."""
    check_step_size(lr0, "lr0")
    if not 0 < power <= 1:
        raise ValueError(f"power must be in (0, 1], got {power!r}.")

    def schedule(k: int) -> float:
        return lr0 / (k + offset) ** power

    schedule.__name__ = f"{lr0:g}/(k+{offset:g})^{power:g}"
    return schedule


class Algorithm:
    """Base class: node-local state, ``step()``, ``run(steps)``, ``history``, ``metrics()``.

    Parameters
    ----------
    comm : Communicator
        SimComm or MPIComm.
    problem : Problem or callable, optional
        The problem (or a node-local gradient function ``grad(x)``); consensus algorithms
        take none.
    x0 : torch.Tensor, optional
        Node-local starting point; default: every node at the problem's initial point.
    lr : float or callable, optional
        Step size, constant or a schedule ``lr(k)`` (see :func:`diminishing`).
    """

    name = "algorithm"

    def __init__(self, comm, problem=None, *, x0=None, lr=None):
        from declearn.comm.base import Communicator

        if not isinstance(comm, Communicator):
            raise TypeError(
                f"comm must be a declearn Communicator (SimComm(n) or MPIComm()), got "
                f"{type(comm).__name__}."
            )
        self.comm = comm
        self.problem = None if problem is None else as_problem(problem)
        self.oracle = None if self.problem is None else self.problem.on(comm)
        self.step_size = None if lr is None else StepSize(lr)
        self.k = 0
        self.x = self._initial_x(x0)
        self.history = History(self.name, self._params())
        traffic = comm.traffic  # the run counts what it sends from here on
        self._traffic0 = (_copy_count(traffic.messages), _copy_count(traffic.bytes))
        self._wall = 0.0
        self._ref: dict[str, float] = {}

    # ------------------------------------------------------------------ state
    def _initial_x(self, x0) -> torch.Tensor:
        if x0 is None:
            if self.oracle is None:
                raise ValueError(f"{self.name} needs x0, the node-local starting values.")
            return self.oracle.x0()
        if not isinstance(x0, torch.Tensor):
            x0 = torch.as_tensor(x0, dtype=torch.float64)
        if self.comm.is_simulator and (x0.dim() == 0 or x0.shape[0] != self.comm.size):
            raise ValueError(
                f"x0 must be node-local: shape (n, ...) with n = {self.comm.size} under SimComm, "
                f"got {tuple(x0.shape)}."
            )
        return x0.detach().to(self.comm.device).clone()

    @property
    def iterate(self) -> torch.Tensor:
        """The node-local model the metrics look at (``self.x`` unless a method says else)."""
        return self.x

    def lr(self, k: int | None = None) -> float:
        """The step size at iteration k (default: the current one)."""
        if self.step_size is None:
            raise ValueError(f"{self.name} has no step size.")
        return self.step_size(self.k if k is None else k)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """The node-local (stochastic, if the problem says so) gradient at ``x``."""
        if self.oracle is None:
            raise ValueError(f"{self.name} needs a problem (or a gradient function) for gradients.")
        return self.oracle.grad(x)

    def _params(self) -> dict:
        p = {"n": self.comm.size}
        if self.step_size is not None:
            p["lr"] = self.step_size.constant if self.step_size.constant is not None \
                else repr(self.step_size)
        return p

    # ------------------------------------------------------------------ iterations
    def step(self) -> None:
        """One iteration: ``k -> k + 1``."""
        self._step()
        self.k += 1

    def _step(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self, steps: int, *, log_every: int | None = None, progress: bool | None = None,
            divergence: float = 1e8) -> History:
        """Take ``steps`` iterations, logging metrics every ``log_every`` (default: about 200
        rows per run) and at the end; returns ``self.history`` (runs continue each other)."""
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
            raise ValueError(f"steps must be a non-negative integer, got {steps!r}.")
        if log_every is None:
            log_every = max(1, int(steps) // 200)
        if isinstance(log_every, bool) or not isinstance(log_every, numbers.Integral) \
                or log_every < 1:
            raise ValueError(f"log_every must be a positive integer, got {log_every!r}.")
        self._divergence = float(divergence)
        if len(self.history) == 0:
            self._log()
        show = (steps >= 200) if progress is None else bool(progress)
        show = show and (self.comm.is_simulator or self.comm.rank == 0)
        bar = None
        if show:
            from tqdm.auto import tqdm

            bar = tqdm(total=int(steps), desc=self.name, leave=False)
        try:
            t = time.perf_counter()
            for i in range(int(steps)):
                self.step()
                if self.k % log_every == 0 or i == steps - 1:
                    self._wall += time.perf_counter() - t
                    self._log()
                    t = time.perf_counter()
                if bar is not None:
                    bar.update()
        finally:
            if bar is not None:
                bar.close()
        self.finish()
        return self.history

    def finish(self) -> None:
        """Complete any communication still in flight (a nonblocking allreduce of an overlap
        method), so that no request outlives the run; called at the end of :meth:`run`, it
        does not change the iterates. Nothing to do by default."""

    # ------------------------------------------------------------------ metrics
    def metrics(self) -> dict:
        """Global metrics of the current iterate (same values on every rank).

        Three collectives whatever the metrics: the mean iterate ``xbar``, the full gradient at
        ``xbar`` (when the oracle has one; it is then the same on every node, so its norm needs
        no further reduction), and one allreduce of the node-local scalars stacked together.
        """
        comm = self.comm
        traffic = comm.traffic  # the algorithm's own counts (the block below is not counted)
        counts = [traffic.messages - self._traffic0[0], traffic.bytes - self._traffic0[1]]
        with comm.untracked():
            x = self.iterate
            xbar = comm.allreduce(x, "mean")
            local = [_sq_norm(x - xbar, comm)]
            has_f = self.problem is not None and self.problem.f_star is not None
            if has_f:
                local.append(self.oracle.loss(xbar))
            g = None
            if self.oracle is not None and hasattr(self.oracle, "full_grad"):
                try:
                    g = comm.allreduce(self.oracle.full_grad(xbar), "mean")
                except NotImplementedError:
                    pass
            local += [torch.as_tensor(np.asarray(c, dtype=np.float64)) for c in counts]
            scalars = torch.stack([t.to(device=xbar.device, dtype=torch.float64)
                                   for t in local], dim=-1)
            means = comm.allreduce(scalars, "mean")
        means = (means[0] if comm.is_simulator else means).tolist()
        row = {"consensus_error": means[0]}
        if has_f:
            row["suboptimality"] = means[1] - float(self.problem.f_star)
        if g is not None:
            sq = _sq_norm(g, comm)
            row["grad_norm"] = math.sqrt(float(sq[0] if comm.is_simulator else sq))
        row["messages"], row["bytes"] = means[-2], means[-1]
        return row

    def _mean_over_nodes(self, value) -> float:
        """A per-node count (numpy array under SimComm, a number on a rank) averaged over
        nodes, as a float (the same on every rank)."""
        if self.comm.is_simulator:
            return float(sum(value) / len(value))
        with self.comm.untracked():
            t = torch.tensor(float(value), dtype=torch.float64, device=self.comm.device)
            return float(self.comm.allreduce(t, "mean"))

    def _log(self) -> None:
        row = self.metrics()
        self.history.append(iteration=self.k, wall_time=self._wall, **row)
        for metric in ("consensus_error", "suboptimality", "grad_norm"):
            value = row.get(metric)
            if value is None:
                continue
            start = max(abs(value), 1.0) if math.isfinite(value) else 1.0
            ref = self._ref.setdefault(metric, start)
            bound = getattr(self, "_divergence", 1e8) * ref
            if not math.isfinite(value) or value > bound:
                lr = None
                if self.step_size is not None:
                    lr = self.step_size.constant
                    lr = "schedule" if lr is None else lr
                raise DivergenceError(self.name, self.k, metric.replace("_", " "), value, lr,
                                      bound if math.isfinite(value) else None)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self._params().items())
        return f"<{type(self).__name__} {self.name}({params}) at k={self.k} on {self.comm!r}>"


def _copy_count(value):
    """A snapshot of a traffic count (a per-node numpy array under SimComm, a number on MPI)."""
    return value.copy() if hasattr(value, "copy") else value


def _sq_norm(t: torch.Tensor, comm) -> torch.Tensor:
    """Node-local ``||t_i||^2``: shape (n,) under SimComm, a scalar on a rank."""
    if comm.is_simulator:
        return t.reshape(t.shape[0], -1).abs().pow(2).sum(1)
    return t.abs().pow(2).sum()
