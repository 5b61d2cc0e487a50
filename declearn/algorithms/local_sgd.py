r"""The Local SGD family: local SGD steps, and every ``tau`` steps a synchronisation.

Each node runs ``x_i <- x_i - lr * g_i`` on its own data; after every ``tau``-th local step
it synchronises with the others through an allreduce. The methods differ only in that
synchronisation (``z``: an anchor model every node holds the same copy of, initially node
0's starting model; ``n``: number of nodes; ``lr``: the step size at the synchronisation):

* Local SGD (``gmf = 0``): ``x_i <- (1/n) sum_j x_j``.
* BMUF / SlowMo (block momentum ``gmf = beta > 0``): ``u_i <- beta u_i + (z - x_i) / lr``
  (``u = 0`` at first), ``z <- (1/n) sum_j (z - lr u_j)``, ``x_i <- z``. With ``beta = 0``
  this is plain averaging.
* EASGD (moving rate ``alpha``): ``x_i <- (1 - alpha) x_i + alpha z`` and, overlapped,
  ``z <- z + alpha sum_j (x_j - z)`` (pre-pull ``x``); the new centre is used at the next
  synchronisation. Stable when ``alpha (n + 1) < 2``.
* Overlap-Local-SGD (pull-back ``alpha``, anchor momentum ``gmf``): ``z`` <- the allreduce
  started at the previous synchronisation; ``x_i <- (1 - alpha) x_i + alpha z``; then start
  the allreduce of ``x_i`` (``gmf = 0``) or of ``z - lr u_i`` with
  ``u_i <- gmf u_i + (z - x_i) / lr`` (``gmf > 0``), to be used ``tau`` steps later.
* CoCoD-SGD: ``z`` <- the allreduce started at the previous synchronisation (the mean of
  the snapshots ``s``); ``x_i <- z + (x_i - s_i)``; ``s_i <- x_i``; start the allreduce of
  ``x_i``.

When the first synchronisation happens: after local steps ``tau, 2 tau, 3 tau, ...`` (the
clean "every tau steps"; the Overlap_Local_SGD code first syncs after ``tau + 1`` steps,
an off-by-one of its counter that we do not copy). So ``tau = 1`` is parallel SGD.

The overlap variants (EASGD's centre, Overlap-Local-SGD, CoCoD-SGD) start their allreduce
with ``comm.iallreduce`` and wait for it ``tau`` local steps later, so on MPI engines the
communication runs during the local steps. At the first synchronisation there is nothing
to wait for: ``z`` is the initial anchor (and CoCoD's snapshot is the starting model).

Every rule lives in one :class:`SyncRule` subclass used both by the :class:`Algorithm`
classes here (problem level) and by the torch optimizers of :mod:`declearn.optim` (deep
learning), so the two can never drift apart.
"""

from __future__ import annotations

import numbers

import torch

from declearn.algorithms.base import Algorithm

__all__ = [
    "LocalSGD", "EASGD", "OverlapLocalSGD", "CoCoDSGD", "LocalSteps",
    "SyncRule", "ModelAveraging", "BlockMomentum", "ElasticAveraging", "OverlapAveraging",
    "CoCoDAveraging", "check_period", "check_alpha", "check_gmf",
]


# ---------------------------------------------------------------------- parameter checks
def check_period(tau) -> int:
    """The communication period ``tau`` as an int >= 1, or a ValueError."""
    if isinstance(tau, bool) or not isinstance(tau, numbers.Integral) or tau < 1:
        raise ValueError(
            f"tau (local steps between synchronisations) must be an integer >= 1, got {tau!r}; "
            "tau = 1 synchronises after every step."
        )
    return int(tau)


def check_alpha(alpha, what: str = "alpha") -> float:
    """A coefficient strictly between 0 and 1, or a ValueError."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < float(alpha) < 1:
        raise ValueError(
            f"{what} must be a number strictly between 0 and 1, got {alpha!r} (0 never pulls "
            "the models together, 1 overwrites them)."
        )
    return float(alpha)


def check_gmf(gmf) -> float:
    """The global (block) momentum factor in [0, 1), or a ValueError."""
    if isinstance(gmf, bool) or not isinstance(gmf, numbers.Real) or not 0 <= float(gmf) < 1:
        raise ValueError(
            f"gmf (global momentum factor) must be in [0, 1), got {gmf!r}; 0 means plain "
            "averaging, typical values are 0.5 to 0.9."
        )
    return float(gmf)


# ---------------------------------------------------------------------- synchronisation rules
class SyncRule:
    """Counts local steps and, after every ``tau``-th, synchronises node-local models.

    ``rule.start(x)`` sets the anchor from the starting models (node 0's copy, broadcast,
    not counted as traffic); ``rule(x, lr)`` is called after every local step and returns
    the models to continue from (``x`` itself between synchronisations). Rules never modify
    their input in place, and what they hand to a nonblocking allreduce is theirs alone.
    """

    name = "sync"
    uses_anchor = True

    def __init__(self, comm, tau):
        from declearn.comm.base import Communicator

        if not isinstance(comm, Communicator):
            raise TypeError(
                f"comm must be a declearn Communicator (SimComm(n) or MPIComm()), got "
                f"{type(comm).__name__}."
            )
        self.comm = comm
        self.tau = check_period(tau)
        self.calls = 0
        self.z: torch.Tensor | None = None  # the anchor, set by start()

    def start(self, x: torch.Tensor) -> None:
        if self.uses_anchor:
            with self.comm.untracked():
                self.z = self.comm.broadcast(x, 0)

    def __call__(self, x: torch.Tensor, lr: float) -> torch.Tensor:
        self.calls += 1
        if self.calls % self.tau:
            return x
        if self.uses_anchor:
            self._anchor()  # raises unless start(x) set it
        return self._sync(x, float(lr))

    def _anchor(self) -> torch.Tensor:
        """The anchor ``z``; a RuntimeError before :meth:`start`."""
        if self.z is None:
            raise RuntimeError(f"{type(self).__name__}.start(x) must be called before stepping.")
        return self.z

    def _sync(self, x: torch.Tensor, lr: float) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def params(self) -> dict:
        return {"tau": self.tau}


class _Overlapped(SyncRule):
    """A rule whose allreduce is started at one synchronisation and awaited at the next."""

    def __init__(self, comm, tau):
        super().__init__(comm, tau)
        self.pending = None

    def _receive_anchor(self) -> torch.Tensor:
        if self.pending is not None:
            self.z = self.pending.wait()
            self.pending = None
        return self._anchor()

    def _launch(self, contribution: torch.Tensor) -> None:
        self.pending = self.comm.iallreduce(contribution, "mean")

    def __call__(self, x: torch.Tensor, lr: float) -> torch.Tensor:
        if self.pending is not None:
            self.pending.done()  # progress hook: MPI moves the allreduce only inside MPI calls
        return super().__call__(x, lr)

    def finish(self) -> None:
        """Wait for the allreduce still in flight (its result becomes the anchor)."""
        self._receive_anchor()


class ModelAveraging(SyncRule):
    """Local SGD: ``x_i <- (1/n) sum_j x_j``."""

    name = "averaging"
    uses_anchor = False

    def _sync(self, x, lr):
        return self.comm.allreduce(x, "mean")


class BlockMomentum(SyncRule):
    """BMUF / SlowMo: ``u_i <- gmf u_i + (z - x_i) / lr``; ``z <- mean_j(z - lr u_j)``;
    ``x_i <- z`` (``gmf = 0`` is plain averaging, up to rounding)."""

    name = "block_momentum"

    def __init__(self, comm, tau, gmf):
        super().__init__(comm, tau)
        self.gmf = check_gmf(gmf)
        self.u = None

    def _sync(self, x, lr):
        z = self._anchor()
        step = (z - x) / lr
        self.u = step if self.u is None else step.add_(self.u, alpha=self.gmf)
        self.z = z = self.comm.allreduce(z - lr * self.u, "mean")
        return z

    def params(self):
        return {**super().params(), "gmf": self.gmf}


class ElasticAveraging(_Overlapped):
    """EASGD: ``x_i <- (1 - alpha) x_i + alpha z``; the centre ``z <- z + alpha sum_j (x_j - z)``
    is computed by an allreduce of ``z + n alpha (x_i - z)`` that overlaps the next period."""

    name = "elastic_averaging"

    def __init__(self, comm, tau, alpha):
        super().__init__(comm, tau)
        self.alpha = check_alpha(alpha)
        n = comm.size
        if self.alpha * (n + 1) >= 2:
            raise ValueError(
                f"EASGD with alpha={self.alpha:g} on n={n} nodes is unstable: the mean model "
                f"and the centre swing with factor 1 - alpha (n + 1) = "
                f"{1 - self.alpha * (n + 1):.3g} per period (needs alpha < 2 / (n + 1) = "
                f"{2 / (n + 1):.3g}). The EASGD paper uses alpha = 0.9 / n."
            )

    def _sync(self, x, lr):
        z = self._receive_anchor()
        self._launch(torch.lerp(z, x, self.comm.size * self.alpha))
        return torch.lerp(x, z, self.alpha)

    def params(self):
        return {**super().params(), "alpha": self.alpha}


class OverlapAveraging(_Overlapped):
    """Overlap-Local-SGD: pull toward the anchor of one period ago, ``x_i <- (1 - alpha) x_i
    + alpha z``, then start the allreduce of the next anchor, ``mean_j x_j`` (gmf = 0) or
    ``mean_j (z - lr u_j)`` with ``u_j <- gmf u_j + (z - x_j) / lr`` (gmf > 0)."""

    name = "overlap_averaging"

    def __init__(self, comm, tau, alpha, gmf=0.0):
        super().__init__(comm, tau)
        self.alpha = check_alpha(alpha)
        self.gmf = check_gmf(gmf)
        self.u = None

    def _sync(self, x, lr):
        z = self._receive_anchor()
        x = torch.lerp(x, z, self.alpha)
        if self.gmf == 0:
            self._launch(x.clone())  # x goes back to the caller, the message must stay put
        else:
            step = (z - x) / lr
            self.u = step if self.u is None else step.add_(self.u, alpha=self.gmf)
            self._launch(z - lr * self.u)
        return x

    def params(self):
        return {**super().params(), "alpha": self.alpha, "gmf": self.gmf}


class CoCoDAveraging(_Overlapped):
    """CoCoD-SGD: ``x_i <- z + (x_i - s_i)`` with ``z`` the mean of the snapshots sent one
    period ago; then ``s_i <- x_i`` and start the allreduce of ``s_i``."""

    name = "cocod_averaging"

    def __init__(self, comm, tau):
        super().__init__(comm, tau)
        self.s = None

    def start(self, x):
        super().start(x)
        self.s = self.z

    def _sync(self, x, lr):
        z = self._receive_anchor()
        x = z + (x - self.s)
        self.s = x
        self._launch(x.clone())  # x goes back to the caller, the message must stay put
        return x


# ---------------------------------------------------------------------- algorithms
class LocalSteps(Algorithm):
    """``x_i <- x_i - lr * g_i``, then ``x <- rule(x, lr)``: any :class:`SyncRule` (built on
    the same ``comm``) turned into an algorithm; the named methods below are instances."""

    name = "local_steps"
    _assigns_new_tensors = True

    def __init__(self, comm, problem, rule: SyncRule, *, lr, x0=None):
        if not isinstance(rule, SyncRule):
            raise TypeError(f"rule must be a SyncRule, got {type(rule).__name__}.")
        if rule.comm is not comm:
            raise ValueError("The rule must be built on the same communicator as the algorithm.")
        self.rule = rule
        super().__init__(comm, problem, x0=x0, lr=lr)
        self.rule.start(self.x)

    def _params(self) -> dict:
        return {**super()._params(), **self.rule.params()}

    def _stateful_parts(self) -> tuple:
        return (*super()._stateful_parts(), self.rule)

    def _checks_in_place_updates(self) -> bool:
        own_rule = type(self.rule).__module__ == __name__  # rules of this module: audited
        return super()._checks_in_place_updates() or not own_rule

    def finish(self) -> None:
        """Wait for the rule's allreduce still in flight (overlap variants)."""
        if hasattr(self.rule, "finish"):
            self.rule.finish()

    def _step(self) -> None:
        lr = self.lr()
        self.x = self.rule(torch.add(self.x, self.grad(self.x), alpha=-lr), lr)


class LocalSGD(LocalSteps):
    r"""Local SGD with period ``tau``: ``x_i <- x_i - lr g_i``, and after every ``tau``-th
    step ``x_i <- (1/n) sum_j x_j``. With block momentum ``gmf > 0`` (BMUF / SlowMo):
    ``u_i <- gmf u_i + (z - x_i) / lr``, ``z <- (1/n) sum_j (z - lr u_j)``, ``x_i <- z``.
    ``tau = 1, gmf = 0`` is parallel SGD."""

    name = "local_sgd"

    def __init__(self, comm, problem, *, lr, tau, gmf: float = 0.0, x0=None):
        tau, gmf = check_period(tau), check_gmf(gmf)
        rule = ModelAveraging(comm, tau) if gmf == 0 else BlockMomentum(comm, tau, gmf)
        super().__init__(comm, problem, rule, lr=lr, x0=x0)


class EASGD(LocalSteps):
    r"""Elastic averaging SGD: local steps; every ``tau`` steps
    ``x_i <- (1 - alpha) x_i + alpha z`` and, overlapped with the next ``tau`` steps,
    ``z <- z + alpha sum_j (x_j - z)``. Needs ``alpha (n + 1) < 2``."""

    name = "easgd"

    def __init__(self, comm, problem, *, lr, tau, alpha, x0=None):
        rule = ElasticAveraging(comm, check_period(tau), check_alpha(alpha))
        super().__init__(comm, problem, rule, lr=lr, x0=x0)


class OverlapLocalSGD(LocalSteps):
    r"""Overlap-Local-SGD: local steps; every ``tau`` steps ``x_i <- (1 - alpha) x_i + alpha z``
    with ``z`` the anchor whose allreduce was started ``tau`` steps earlier, then start the
    next one (of ``x_i``; or, with anchor momentum ``gmf > 0``, of ``z - lr u_i`` where
    ``u_i <- gmf u_i + (z - x_i) / lr``)."""

    name = "overlap_local_sgd"

    def __init__(self, comm, problem, *, lr, tau, alpha, gmf: float = 0.0, x0=None):
        rule = OverlapAveraging(comm, check_period(tau), check_alpha(alpha), check_gmf(gmf))
        super().__init__(comm, problem, rule, lr=lr, x0=x0)


class CoCoDSGD(LocalSteps):
    r"""CoCoD-SGD: local steps; every ``tau`` steps ``x_i <- z + (x_i - s_i)``, where ``z`` is
    the mean of the snapshots ``s`` whose allreduce was started ``tau`` steps earlier, then
    ``s_i <- x_i`` and start its allreduce."""

    name = "cocod_sgd"

    def __init__(self, comm, problem, *, lr, tau, x0=None):
        super().__init__(comm, problem, CoCoDAveraging(comm, check_period(tau)), lr=lr, x0=x0)
