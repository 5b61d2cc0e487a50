"""Errors raised by declearn.

Every error says what went wrong and what to do about it. They derive from the builtin
exception a user would expect (ValueError for bad input, TimeoutError for a deadline), so
``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "DeclearnError",
    "TopologyError",
    "CommError",
    "CollectiveTimeoutError",
    "CollectiveMismatchError",
    "IterationMismatchError",
    "CommunicatorOutOfSyncError",
    "ClusterError",
    "DivergenceError",
]


class DeclearnError(Exception):
    """Base class of every error declearn raises on purpose."""


class TopologyError(DeclearnError, ValueError):
    """A topology cannot be built or used as asked (bad n, weights, shape, parameters)."""


class CommError(DeclearnError):
    """A communication operation failed."""


class CollectiveTimeoutError(CommError, TimeoutError):
    """A blocking communication did not complete before its deadline.

    Attributes
    ----------
    op : str
        Name of the operation, e.g. ``"allreduce"``.
    missing : tuple[int, ...]
        Ranks this rank was still waiting for when the deadline passed.
    timeout : float
        The deadline in seconds.
    rank : int
        The rank that raised.
    """

    def __init__(self, op: str, missing, timeout: float, rank: int, hint: str = ""):
        self.op = op
        self.missing = tuple(int(r) for r in missing)
        self.timeout = float(timeout)
        self.rank = int(rank)
        if self.missing:
            who = ", ".join(str(r) for r in self.missing)
            plural = "s" if len(self.missing) != 1 else ""
            what = f"rank{plural} {who} did not arrive"
        else:
            what = "every rank it waited for had arrived, but the operation did not finish"
        msg = (
            f"{op} timed out after {self.timeout:g} s on rank {self.rank}: {what}. Every rank "
            "must call the same collective operations in the same order (look for an "
            "`if rank == ...:` around a collective)."
        )
        if hint:
            msg += " " + hint
        super().__init__(msg)

    def __reduce__(self):
        return (type(self), (self.op, self.missing, self.timeout, self.rank))


class CollectiveMismatchError(CommError, ValueError):
    """Ranks called the same collective with tensors of different shapes or dtypes,
    or called different collectives at the same point."""


class IterationMismatchError(CollectiveMismatchError):
    """Ranks paired operations made at different iterations of an algorithm (see
    ``Communicator.iteration``): some rank is ahead of the others.

    Attributes
    ----------
    iterations : dict[int, int | None]
        The iteration each rank this rank heard from was at (None: outside any iteration).
    """

    def __init__(self, message: str, iterations=None):
        self.iterations = dict(iterations or {})
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (str(self), self.iterations))


class CommunicatorOutOfSyncError(CommError, RuntimeError):
    """A communicator was used after a timed-out collective left the ranks out of step."""


class ClusterError(DeclearnError, RuntimeError):
    """A cluster of engines could not be started, reached or stopped."""


class DivergenceError(DeclearnError, FloatingPointError):
    """An algorithm's iterates blew up (NaN, inf, or growth past a bound).

    Attributes: ``algorithm`` (its name), ``iteration``, ``metric`` and ``value`` (what blew
    up), ``lr`` (the step size, if it has one).
    """

    def __init__(self, algorithm: str, iteration: int, metric: str, value: float, lr=None,
                 bound: float | None = None):
        self.algorithm, self.iteration = algorithm, int(iteration)
        self.metric, self.value, self.lr, self.bound = metric, float(value), lr, bound
        what = f"{metric} = {value:.3g}" + (f" (past the bound {bound:.3g})" if bound else "")
        msg = f"{algorithm} diverged at iteration {self.iteration}: {what}."
        if self.iteration == 0:  # no step taken yet: the step size plays no part
            msg = (
                f"{algorithm}: {what} at the starting point x0 (iteration 0, before any step), "
                "so no step size can fix it. Look for NaN or inf in x0, in the problem's data, "
                "or in what the gradient function returns at x0."
            )
        elif isinstance(lr, (int, float)):
            msg += f" Try a smaller step size: lr={lr:g} now, e.g. lr={lr / 2:g}."
        elif lr is not None:
            msg += " Try a smaller step size."
        super().__init__(msg)

    def __reduce__(self):
        return (type(self), (self.algorithm, self.iteration, self.metric, self.value, self.lr,
                             self.bound))
