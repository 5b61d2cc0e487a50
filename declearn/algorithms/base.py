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

*Failures.* A step is a transaction: :meth:`~Algorithm.step` keeps the state of iteration k
(the instance's attributes, by reference, and those of its stateful parts: the oracle's
position in the noise stream, a sync rule, relay buffers) and puts it back if ``_step()``
raises, so a failed step leaves iteration k intact on its rank. It also keeps the state before
the last completed step, so :meth:`~Algorithm.roll_back` can undo one step. Keeping states by
reference costs nothing because no ``_step`` modifies a state tensor in place (it assigns new
tensors); a subclass that does is caught by the tensors' version counters and told so.

Under MPI one rank can fail while its neighbors complete the step (DGD on ``ring(4)`` whose
gradient raises on rank 1 in step 3 leaves the ranks at iterations 3, 3, 3, 4). Every step
runs inside ``comm.at_iteration(k)``, so MPIComm stamps its messages with k and the next step
of ranks at different iterations raises :class:`~declearn.errors.IterationMismatchError`
instead of mixing iterates of two iterations. :meth:`~Algorithm.recover`, called on every rank,
resyncs the communicator, agrees on the iterations (one allgather), rolls the ranks one step
ahead back to ``k_min``, the last iteration every rank completed, trims the history rows past
it and returns it; the run then goes on exactly as an uninterrupted one (the oracle's noise
included: call c of the oracle draws the noise seeded by ``(seed, c)``, and the call count is
part of the state).
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable
from typing import cast

import numpy as np
import torch

from declearn.algorithms.history import History
from declearn.algorithms.snapshot import Snapshot
from declearn.errors import DivergenceError, IterationMismatchError
from declearn.problems.base import as_problem

__all__ = ["Algorithm", "StepSize", "check_divergence", "check_step_size", "check_steps",
           "diminishing"]


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
        self._undo: Snapshot | None = None  # the state before the last completed step
        self._unrestorable: str | None = None  # why the state is lost, after a failed step

    # ------------------------------------------------------------------ state
    def _initial_x(self, x0) -> torch.Tensor:
        if x0 is None:
            if self.oracle is None:
                raise ValueError(f"{self.name} needs x0, the node-local starting values.")
            return self.oracle.x0()
        if not isinstance(x0, torch.Tensor):
            x0 = torch.as_tensor(x0, dtype=torch.float64)
        lead = self.comm.node_dims
        if tuple(x0.shape[:len(lead)]) != lead:
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
        p: dict[str, object] = {"n": self.comm.size}
        if self.step_size is not None:
            p["lr"] = self.step_size.constant if self.step_size.constant is not None \
                else repr(self.step_size)
        return p

    # ------------------------------------------------------------------ iterations
    def step(self) -> None:
        """One iteration: ``k -> k + 1``, all or nothing: if it raises, the state is that of
        iteration k again (see the module docstring, *Failures*)."""
        if self._unrestorable is not None:
            raise RuntimeError(self._unrestorable)
        before = Snapshot(self)
        comm = self.comm
        outer, comm.iteration = comm.iteration, self.k  # comm.at_iteration(k), inlined
        try:
            self._step()
        except BaseException as exc:
            self._after_failed_step(before, exc)
            raise
        finally:
            comm.iteration = outer
        self._undo = before
        self.k += 1

    def _step(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _stateful_parts(self) -> tuple:
        """Objects besides the algorithm whose attributes are part of its state (restored
        with it); a subclass that keeps state in a helper object adds it here. Attributes an
        object lists in ``_scratch`` (buffers overwritten at every step) are left out."""
        return () if self.oracle is None else (self.oracle,)

    #: Why this algorithm cannot undo a step (None: it can).
    _cannot_roll_back: str | None = None
    #: Whether snapshots record tensor versions: set on the instance by its first snapshot.
    _check_versions: bool

    #: Set (in its own body) by each class of declearn whose ``_step`` is known to assign new
    #: tensors only (tests/test_algorithm_recovery.py checks it); for a ``_step`` defined
    #: anywhere else every step also records the tensors' version counters, to catch an
    #: in-place update. Not inherited: a subclass that overrides ``_step`` is checked.
    _assigns_new_tensors = False

    def _checks_in_place_updates(self) -> bool:
        """Whether the snapshots of this algorithm record version counters (see above)."""
        owner = next(c for c in type(self).__mro__ if "_step" in c.__dict__)
        return not owner.__dict__.get("_assigns_new_tensors", False)

    def _after_failed_step(self, before: Snapshot, exc: BaseException) -> None:
        k = self.k
        problem = before.modified_in_place()
        if problem is not None:
            self._unrestorable = (
                f"{self.name}: the failed step {k} -> {k + 1} modified {problem} in place, so "
                f"the state of iteration {k} is lost and the state is neither k nor k + 1. "
                "A _step() must assign new tensors (self.x = self.x - lr * g), never update "
                "them in place (self.x.sub_(...)). Build the algorithm again."
            )
            note = self._unrestorable
        else:
            before.restore()
            note = f"declearn: the step {k} -> {k + 1} of {self.name} failed; the state is " \
                   f"that of iteration {k} again."
            if not self.comm.is_simulator:
                note += (" Other ranks may have finished the step: call alg.recover() on "
                         "every rank (from a notebook: %px alg.recover()) before going on.")
        if hasattr(exc, "add_note"):
            exc.add_note(note)

    def roll_back(self) -> int:
        """Undo the last completed step (one level: the state before it is kept, no earlier
        one); returns the iteration now current. History rows past it are dropped. Under MPI
        every rank must agree on what to undo: use :meth:`recover`."""
        reason = self._roll_back_problem()
        if reason is not None:
            raise RuntimeError(reason)
        cast(Snapshot, self._undo).restore()  # not None: _roll_back_problem() said so
        self._undo = None
        self.history.drop_after(self.k)
        return self.k

    def _roll_back_problem(self) -> str | None:
        """Why :meth:`roll_back` cannot undo a step now, or None."""
        if self._unrestorable is not None:
            return self._unrestorable
        if self._cannot_roll_back is not None:
            return f"{type(self).__name__} cannot roll back: {self._cannot_roll_back}"
        if self._undo is None:
            return (f"{self.name} at k={self.k} has no completed step to undo: it keeps the "
                    "state before the last step only (one step), and none was taken since "
                    "it was built or last rolled back.")
        problem = self._undo.modified_in_place()
        if problem is not None:
            return (f"{self.name} cannot roll back: its last step modified {problem} of "
                    f"iteration {self.k - 1} in place. A _step() must assign new tensors "
                    "(self.x = self.x - lr * g), never update them in place.")
        return None

    def recover(self, timeout: float | None = None) -> int:
        """After a failure, bring every rank back to the last iteration all of them completed,
        and return it. **Every rank** must call it (from a notebook: ``%px alg.recover()``).

        Resyncs the communicator (MPIComm; nothing to do under SimComm), gathers every rank's
        iteration (one allgather), rolls the ranks that are one step ahead back to the
        smallest one, ``k_min``, and drops the history rows past ``k_min``. The run then goes
        on as an uninterrupted one would. Raises IterationMismatchError on every rank if
        some rank is more than one step ahead or cannot undo its step (only one step is
        kept), saying which; the ranks are then left as they were.
        """
        comm = self.comm
        if comm.is_simulator:  # one process: its nodes are always at the same iteration
            if self._unrestorable is not None:
                raise RuntimeError(self._unrestorable)
            return self.k
        comm.resync(timeout=timeout)
        undo_problem = self._roll_back_problem()
        mine = torch.tensor([self.k, undo_problem is None, self._unrestorable is None],
                            dtype=torch.int64)
        with comm.untracked(), comm.at_iteration(None):
            table = comm.allgather(mine, timeout=timeout).reshape(-1, 3).tolist()
        ks = {r: int(row[0]) for r, row in enumerate(table)}
        target = min(ks.values())
        broken = [r for r, row in enumerate(table) if not row[2]]
        too_far = [r for r, k in ks.items() if k > target + 1]
        stuck = [r for r, row in enumerate(table) if ks[r] == target + 1 and not row[1]]
        if broken or too_far or stuck:
            why = []
            if too_far:
                why.append(f"{_ranks(too_far)} more than one step ahead of iteration "
                           f"{target} (only the state before the last step is kept)")
            if stuck:
                why.append(f"{_ranks(stuck)} one step ahead but cannot undo it"
                           + (f" ({undo_problem})" if comm.rank in stuck else ""))
            if broken:
                why.append(f"{_ranks(broken)} lost {'its' if len(broken) == 1 else 'their'} "
                           "state in a failed step")
            raise IterationMismatchError(
                f"{self.name}.recover(): the ranks are at iterations "
                f"{', '.join(f'{r}: {k}' for r, k in ks.items())} and cannot be brought back "
                f"to a common one: {'; '.join(why)}. Build the algorithm again on every rank "
                "(or reload a checkpoint).", ks)
        if self.k > target:
            cast(Snapshot, self._undo).restore()  # one step ahead and not stuck: it has one
            self._undo = None
        self.history.drop_after(target)
        return target

    def run(self, steps: int, *, log_every: int | None = None, progress: bool | None = None,
            divergence: float = 1e8) -> History:
        """Take ``steps`` iterations, logging metrics every ``log_every`` (default: about 200
        rows per run) and at the end; returns ``self.history`` (runs continue each other).
        Stops with DivergenceError when a logged metric is NaN/inf or grows past
        ``divergence`` (a number > 1; ``math.inf``: NaN/inf only) times its first value."""
        check_steps(steps)
        if log_every is None:
            log_every = max(1, int(steps) // 200)
        if isinstance(log_every, bool) or not isinstance(log_every, numbers.Integral) \
                or log_every < 1:
            raise ValueError(f"log_every must be a positive integer, got {log_every!r}.")
        self._divergence = check_divergence(divergence)
        if len(self.history) == 0:
            self._log()
        bar = self._progress_bar(steps, progress)
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

    def _progress_bar(self, steps: int | None, progress: bool | None, per_step: int = 1):
        """A tqdm bar of ``steps * per_step`` updates (no total when ``steps`` is None), or
        None: shown when ``progress`` says so (default: for 200 steps or more) and this
        process :attr:`~declearn.comm.Communicator.reports` for the run."""
        show = (steps is not None and steps >= 200) if progress is None else bool(progress)
        if not (show and self.comm.reports):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=None if steps is None else int(steps) * per_step, desc=self.name,
                    leave=False)

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
        oracle = self.oracle  # None exactly when the problem is
        f_star = None if oracle is None or self.problem is None else self.problem.f_star
        with comm.untracked():
            x = self.iterate
            xbar = comm.allreduce(x, "mean")
            local = [_sq_norm(x - xbar, comm)]
            if f_star is not None and oracle is not None:
                local.append(oracle.loss(xbar))
            g = None
            if oracle is not None and hasattr(oracle, "full_grad"):
                try:
                    g = comm.allreduce(oracle.full_grad(xbar), "mean")
                except NotImplementedError:
                    pass
            local += [torch.as_tensor(np.asarray(c, dtype=np.float64)) for c in counts]
            scalars = torch.stack([t.to(device=xbar.device, dtype=torch.float64)
                                   for t in local], dim=-1)
            means = comm.allreduce(scalars, "mean")
        means = comm.one_node(means).tolist()
        row = {"consensus_error": means[0]}
        if f_star is not None:
            row["suboptimality"] = means[1] - float(f_star)
        if g is not None:
            sq = _sq_norm(g, comm)
            row["grad_norm"] = math.sqrt(float(comm.one_node(sq)))
        row["messages"], row["bytes"] = means[-2], means[-1]
        return row

    def _mean_over_nodes(self, value) -> float:
        """A per-node count (numpy array under SimComm, a number on a rank) averaged over
        nodes, as a float (the same on every rank)."""
        comm = self.comm
        with comm.untracked():
            t = torch.as_tensor(np.asarray(value, dtype=np.float64), device=comm.device)
            return float(comm.one_node(comm.allreduce(t, "mean")))

    def _log(self) -> None:
        with self.comm.at_iteration(self.k):
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
                lr: float | str | None = None
                if self.step_size is not None:
                    constant = self.step_size.constant
                    lr = "schedule" if constant is None else constant
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
    return t.reshape(comm.node_dims + (-1,)).abs().pow(2).sum(-1)


def check_steps(steps, what: str = "steps") -> int:
    """``steps`` as an int >= 0, or a ValueError."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {steps!r}.")
    return int(steps)


def check_divergence(divergence) -> float:
    """The divergence factor of :meth:`Algorithm.run` as a float > 1, or a ValueError."""
    if isinstance(divergence, bool) or not isinstance(divergence, numbers.Real) \
            or not float(divergence) > 1:
        raise ValueError(
            f"divergence must be a number > 1, got {divergence!r}: run() stops when a metric "
            "grows past divergence times its first value (default 1e8; math.inf stops only "
            "on NaN or inf)."
        )
    return float(divergence)


def _ranks(ranks) -> str:
    """"rank 3 is" or "ranks 1, 3 are"."""
    if len(ranks) == 1:
        return f"rank {ranks[0]} is"
    return f"ranks {', '.join(str(r) for r in ranks)} are"
