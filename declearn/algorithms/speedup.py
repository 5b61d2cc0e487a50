r"""Linear speedup and transient iterations, measured: DSGD against parallel SGD.

Parallel SGD (:class:`~declearn.algorithms.ParallelSGD`, an exact allreduce of the n gradients)
averages n noises per step, so its error falls like ``sigma^2 / n``: *linear speedup*. DSGD
(:class:`~declearn.algorithms.DGD` on a noisy problem) only averages with neighbors; its
averaged model ``x_bar^k = (1/n) sum_i x_i^k`` pays for the disagreement of the nodes, but
that extra error shrinks faster than the noise term, so DSGD joins parallel SGD after a
*transient stage* whose length depends on n and on the topology's rate ``rho``.

**What we measure.** Both methods run from the same ``x^0``, with the same step sizes
``lr(k)`` and *the same gradient noise* (the problem's noise of call c is seeded by
``(seed, c)`` and both methods make one call per step), on ``R`` replicas at once
(:class:`Replicas`: replica r is a run with its own noise stream). With
``e_A(k) = (1/R) sum_r ||x_bar_r^k - x*||^2`` for method A,

    T = min{ k : 1/factor <= e_DSGD(j) / e_PSGD(j) <= factor  for every recorded j >= k },

``factor = 2`` by default (:func:`transient_length`). ``T = 0``: DSGD is within the factor
from the start; ``T = inf``: it is not within the factor at the end of the run (the transient
is longer than the run). Common noise makes the ratio far less noisy than either error.
Late in a heterogeneous run the ratio falls like ``1 + C/k``
(:meth:`SpeedupCurves.tail_constant`), so a crossing there is well defined (T ~ C) and an
error ``eps`` in the ratio moves T by about ``eps T``. Starting at x* the ratio first rises
to a bump (k ~ k0 + 1/(1 - rho)) while parallel SGD's error is still small; when the bump
tops out near the factor, T jumps between its edges: read such T (tens of iterations) as
"short", not as a number to fit.

**What makes T on a concrete problem.** ``x_bar`` moves by ``-lr (1/n) sum_i grad
f_i(x_i)``; the disagreement enters through ``(1/n) sum_i (H_i - H_bar)(x_i - x_bar)``
(``H_i`` node i's Hessian). With equal Hessians it vanishes and DSGD's averaged model *is*
parallel SGD's, whatever the data and W (tests/test_speedup.py checks it). With curvature
correlated with a node's pull at x* the leak is systematic and T grows with n; with
independent curvature and minimisers (``RandomQuadratics``, ``LeastSquares``) it is a sum of
n terms of random sign and T follows the draw of the data more than n. What the leak sees of
W is ``x_i - x_bar``, which keeps a node's own gradient with weight ``W[i, i] - 1/n`` for
``~1/(1 - rho)`` steps: one-peer graphs (self weight 1/2) leak more per step than the static
exponential graph (1/(tau + 1)), whatever their rho.

**Step sizes.** A constant step leaves both methods on plateaus (``~ lr sigma^2 / n`` and a
larger one for DSGD), so the ratio tends to a constant and T would be 0 or inf depending on
lr. We use, by default, the strongly convex schedule ``lr(k) = theta / (mu (k + k0))``
(:class:`InverseTimeSchedule`), with ``mu`` the smallest eigenvalue of the Hessian at ``x*``
and ``k0`` such that ``lr(0) = 1 / L``: the form analysed by Pu, Olshevsky & Paschalidis
(IEEE TAC 2022, "A sharp estimate on the transient time of distributed stochastic gradient
descent"), as we recall it: only their abstract was read, not their constants. Their abstract
(quoted, the Greek rho spelled out): "Our main contribution is to characterize the transient
time needed for DSGD to approach the asymptotic convergence rate, which we show behaves as
K_T=O(n/(1-rho_w)^2), where 1-rho_w denotes the spectral gap of the mixing matrix." That
order is for strongly convex smooth f_i with heterogeneous data.

**How this differs from the issue's table.** The orders O(n^7) (ring), O(n^5) (torus),
Õ(n^3) (exponential, one-peer exponential, EquiDyn) come from
``T = O(n^3 rho^4 / (1 - rho)^2)`` (:func:`declearn.topology.transient_iterations`), which
equates DSGD's extra term ``rho^(2/3) sigma^(2/3) / (T^(2/3) (1 - rho)^(1/3))`` with parallel
SGD's ``sigma / sqrt(n T)`` in the bound of Koloskova et al. (ICML 2020) on
``(1/T) sum_k E||grad f(x_bar^k)||^2`` for *non-convex* f, iid data, and a constant step
tuned to the horizon T. Those are worst-case upper bounds over a function class; on one
concrete smooth problem near a strict minimum the measured T follows the local, strongly
convex behaviour instead, and for small n the factor ``rho^4`` (0.012 for a ring of 4, 0.8
for a ring of 16) dominates the growth, so a fitted exponent (:func:`fit_exponent`) over
n = 4..64 is a *local* slope, not the asymptotic order. Compare it with the local slope of
the formula over the same n.

Everything runs in one :class:`~declearn.comm.SimComm` (all nodes, all replicas, one tensor
of shape ``(n, R, *shape)``), with the library's ``DGD`` and ``ParallelSGD``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import vmap

from declearn.algorithms.dgd import DGD
from declearn.algorithms.parallel import ParallelSGD
from declearn.algorithms.transient import (
    ExponentFit,
    _ratio,
    _tail_median,
    fit_exponent,
    transient_length,
)
from declearn.problems.base import Problem, check_count, check_real
from declearn.topology.base import DynamicTopology, Topology

__all__ = [
    "Replicas", "InverseTimeSchedule", "hessian_at_optimum",
    "ErrorCurve", "SpeedupCurves", "error_curve", "speedup_curves", "parallel_sgd_curves",
    "transient_length", "ExponentFit", "fit_exponent", "transient_table",
]


# ---------------------------------------------------------------------- replicas
class Replicas(Problem):
    r"""``count`` independent noise streams of one problem in a single run.

    The state of a node is ``(count, *problem.shape)``: replica r holds its own copy
    ``x[r]`` and gets ``grad f_i(x[r]) + sigma / sqrt(d) * xi_r`` with ``xi_r`` standard
    normal, independent across replicas, nodes and calls: statistically, replica r is a run
    with its own noise seed. (The base class draws the noise of shape ``(n, count, *shape)``
    with scale ``sigma' / sqrt(count * d)``; ``sigma' = sigma sqrt(count)`` keeps each
    replica's ``E||noise||^2 = sigma^2``.) The exact gradients are the problem's own,
    batched over replicas with ``torch.func.vmap`` (no loop). ``x_star`` is the problem's,
    repeated; losses are averaged over replicas.
    """

    name = "replicas"

    def __init__(self, problem: Problem, count: int):
        if not isinstance(problem, Problem):
            raise TypeError(f"Replicas needs a declearn Problem (LeastSquares, "
                            f"LogisticRegression, ...), got {type(problem).__name__}.")
        count = check_count(count, "count (the number of replicas)")
        super().__init__(problem.n, (count,) + problem.shape,
                         sigma=problem.sigma * math.sqrt(count), seed=problem.seed)
        self.problem, self.count = problem, count
        self.name = f"{problem.name} x {count} replicas"
        if problem.x_star is not None:
            self.x_star = problem.x_star.expand(self.shape)
        self.f_star = problem.f_star
        self.smoothness, self.strong_convexity = problem.smoothness, problem.strong_convexity

    def initial_point(self) -> torch.Tensor:
        return self.problem.initial_point().expand(self.shape).clone()

    def _grad(self, x: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        return vmap(lambda xr: self.problem._grad(xr, nodes), in_dims=1, out_dims=1)(x)

    def _loss(self, x: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        per_replica = vmap(lambda xr: self.problem._loss(xr, nodes), in_dims=1, out_dims=1)(x)
        return per_replica.mean(1)

    @property
    def heterogeneity(self) -> float:
        return self.problem.heterogeneity

    @property
    def target(self) -> torch.Tensor:
        """``x_star`` (every replica's), or a ValueError when the problem does not know it."""
        if self.x_star is None:
            raise ValueError(f"{self.problem.name} does not know x*: the error "
                             "||x_bar - x*||^2 cannot be measured. Use LeastSquares, "
                             "LogisticRegression or RandomQuadratics.")
        return self.x_star


# ---------------------------------------------------------------------- step sizes
def hessian_at_optimum(problem: Problem, *, h: float | None = None) -> np.ndarray:
    """The Hessian of ``f`` at ``problem.x_star`` (dim x dim, symmetric), by central
    differences of the exact gradient: column j is ``(grad f(x* + h e_j) - grad f(x* - h e_j))
    / (2h)``, symmetrised. Exact to round-off for quadratics; ``2 dim`` gradient calls."""
    if not isinstance(problem, Problem) or problem.x_star is None:
        raise ValueError("hessian_at_optimum needs a declearn Problem that knows x_star.")
    d = problem.dim
    if d > 2000:
        raise ValueError(f"dim = {d} is too large for a dense Hessian; pass the step size "
                         "lr= yourself.")
    x = problem.x_star.reshape(-1).to(torch.float64)
    h = 1e-5 * max(1.0, float(x.abs().max())) if h is None else check_real(h, "h", strict=True)
    H = np.empty((d, d))
    for j in range(d):  # dim gradient pairs: the Hessian is small by construction
        e = torch.zeros(d, dtype=torch.float64)
        e[j] = h
        plus = problem.gradient((x + e).reshape(problem.shape)).reshape(-1)
        minus = problem.gradient((x - e).reshape(problem.shape)).reshape(-1)
        H[:, j] = ((plus - minus) / (2 * h)).numpy()
    return (H + H.T) / 2


@dataclass(frozen=True)
class InverseTimeSchedule:
    """``lr(k) = theta / (mu (k + k0))``: the step size of SGD on a mu-strongly convex f with
    an O(1/k) error (``theta > 1/2``; ``theta = 2`` by default, as in Pu et al.'s analysis
    of DSGD). ``k0 = theta L / mu`` makes ``lr(0) = 1 / L``."""

    theta: float
    mu: float
    k0: float

    def __post_init__(self):
        check_real(self.theta, "theta", strict=True)
        check_real(self.mu, "mu (strong convexity)", strict=True)
        check_real(self.k0, "k0 (offset)")

    def __call__(self, k: int) -> float:
        return self.theta / (self.mu * (k + self.k0))

    @property
    def __name__(self) -> str:
        return f"{self.theta:g}/({self.mu:.3g} (k + {self.k0:.3g}))"

    @classmethod
    def for_problem(cls, problem: Problem, *, theta: float = 2.0) -> InverseTimeSchedule:
        """mu = the smallest eigenvalue of the Hessian at x* (:func:`hessian_at_optimum`);
        L = ``problem.smoothness`` (every f_i is L-smooth) or else the largest eigenvalue."""
        theta = check_real(theta, "theta", strict=True)
        if theta <= 0.5:
            raise ValueError(f"theta must be > 1/2 for the O(1/k) rate of SGD, got {theta}.")
        eig = np.linalg.eigvalsh(hessian_at_optimum(problem))
        mu = float(eig[0])
        if not mu > 1e-12 * max(1.0, abs(float(eig[-1]))):
            raise ValueError(
                f"The Hessian at x* has smallest eigenvalue {mu:.3g}: x* is not a strict local "
                "minimum, so theta/(mu (k + k0)) is undefined. Add regularisation (reg > 0) or "
                "pass lr= yourself.")
        L = problem.smoothness if problem.smoothness else float(eig[-1])
        return cls(theta, mu, theta * max(L, mu) / mu)


# ---------------------------------------------------------------------- error curves
@dataclass
class ErrorCurve:
    """``mean[k] = (1/R) sum_r ||x_bar_r^k - x*||^2`` for k = 0..steps (``sem``: its standard
    error over the R replicas), for one method on one problem; ``seconds`` of simulation."""

    method: str
    n: int
    iterations: np.ndarray
    mean: np.ndarray
    sem: np.ndarray
    replicas: int
    seconds: float

    def speedup_constant(self, start: float = 0.5) -> float:
        """The median of ``n k mean[k]`` over the last ``1 - start`` of the run. Parallel SGD
        with ``lr ~ 1/k`` has ``E||x_bar^k - x*||^2 ~ c sigma^2 / (n k)``: with linear
        speedup this is the same number for every n (for ``f_i = ||x - x*||^2 / 2 + b_i^T x``,
        ``theta = 2``, ``x0 = x*``: ``c = theta^2 / (2 theta - 1) = 4/3``)."""
        return _tail_median(self.n * self.iterations * self.mean, self.iterations, start)


def parallel_sgd_curves(make_problem: Callable[[int], Problem], ns, *, steps: int,
                        replicas: int = 32, theta: float = 2.0,
                        x0="optimum") -> dict[int, ErrorCurve]:
    """Parallel SGD's error curve for every n (``make_problem(n)``, lr
    :meth:`InverseTimeSchedule.for_problem` with ``theta``): the linear-speedup picture,
    ``mean[k] ~ c sigma^2 / (n k)`` (see ``ErrorCurve.speedup_constant``)."""
    out = {}
    for n in _as_ints(ns):
        problem = make_problem(n)
        lr = InverseTimeSchedule.for_problem(problem, theta=theta)
        out[n] = error_curve(problem, None, steps=steps, replicas=replicas, lr=lr, x0=x0)
    return out


class _ErrorRun:
    """A running algorithm on a :class:`Replicas` problem and its recorded errors."""

    def __init__(self, alg, method: str, x_star: torch.Tensor):
        self.alg, self.method, self.x_star = alg, method, x_star
        self.chunks = [self._errors().unsqueeze(0)]
        self.seconds = 0.0

    def _errors(self) -> torch.Tensor:
        """``||x_bar_r - x*||^2`` per replica, shape (R,)."""
        err = self.alg.x.mean(0) - self.x_star
        return err.reshape(err.shape[0], -1).pow(2).sum(-1)

    @property
    def k(self) -> int:
        return self.alg.k

    def advance_to(self, k: int) -> None:
        steps = k - self.alg.k
        if steps <= 0:
            return
        out = torch.empty((steps, self.x_star.shape[0]), dtype=torch.float64)
        with _one_thread():
            t = time.perf_counter()
            for j in range(steps):
                self.alg.step()
                out[j] = self._errors()
            self.seconds += time.perf_counter() - t
        self.chunks.append(out)

    def curve(self, upto: int | None = None) -> ErrorCurve:
        e = torch.cat(self.chunks).numpy()
        e = e if upto is None else e[:upto + 1]
        R = e.shape[1]
        sem = e.std(1, ddof=1) / math.sqrt(R) if R > 1 else np.full(len(e), np.nan)
        return ErrorCurve(self.method, self.alg.comm.size, np.arange(len(e)), e.mean(1), sem,
                          R, self.seconds)


@contextlib.contextmanager
def _one_thread():
    """Run torch on one CPU thread, then restore: the tensors here are small (n x R x d), and
    on a loaded 2-core machine two threads made DSGD 8x slower (4 s against 31-42 s for the
    same runs in tests/test_speedup.py), with the same results."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _start(problem: Replicas, x0) -> torch.Tensor:
    shape = (problem.n,) + problem.shape
    if isinstance(x0, str):
        if x0 == "optimum":
            return problem.target.expand(shape).clone()
        if x0 == "initial":
            return problem.initial_point().expand(shape).clone()
        raise ValueError(f"x0 must be 'optimum', 'initial' or a tensor of the problem's "
                         f"shape, got {x0!r}.")
    x0 = torch.as_tensor(x0, dtype=torch.float64)
    base = problem.problem.shape
    if tuple(x0.shape) != base:
        raise ValueError(f"x0 must have the problem's shape {base} (every node and replica "
                         f"starts there), got {tuple(x0.shape)}.")
    return x0.expand(shape).clone()


def _replicas(problem: Problem, replicas: int) -> Replicas:
    if not isinstance(problem, Problem):
        raise TypeError(f"Expected a declearn Problem, got {type(problem).__name__}.")
    if problem.x_star is None:
        raise ValueError(f"{problem.name} does not know x*: the error ||x_bar - x*||^2 cannot "
                         "be measured. Use LeastSquares, LogisticRegression or "
                         "RandomQuadratics.")
    if not problem.sigma > 0:
        raise ValueError(f"{problem.name} has no gradient noise (sigma = 0): both methods are "
                         "then deterministic and there is no linear speedup to measure. Build "
                         "it with sigma > 0.")
    return Replicas(problem, replicas)


def _new_run(problem: Problem, topology, *, replicas: int, lr, x0, variant: str) -> _ErrorRun:
    from declearn.comm import SimComm

    rep = _replicas(problem, replicas)
    if lr is None:
        lr = InverseTimeSchedule.for_problem(problem)
    comm, start, x_star = SimComm(problem.n), _start(rep, x0), rep.target
    if topology is None:
        return _ErrorRun(ParallelSGD(comm, rep, lr=lr, x0=start), "parallel SGD", x_star)
    if not isinstance(topology, (Topology, DynamicTopology)):
        raise TypeError(f"topology must be a declearn Topology (or None for parallel SGD), "
                        f"got {type(topology).__name__}.")
    alg = DGD(comm, rep, topology, lr=lr, x0=start, variant=variant)
    return _ErrorRun(alg, f"DSGD ({topology.name})", x_star)


def error_curve(problem: Problem, topology=None, *, steps: int, replicas: int = 32,
                lr=None, x0="optimum", variant: str = "atc") -> ErrorCurve:
    """The averaged model's error of parallel SGD (``topology=None``) or of DSGD over
    ``topology`` (``DGD(variant=...)``) on ``problem`` (which needs ``x_star`` and
    ``sigma > 0``), for k = 0..steps, mean over ``replicas`` noise streams.

    ``lr``: a number or a schedule ``lr(k)``; default :meth:`InverseTimeSchedule.for_problem`.
    ``x0``: ``"optimum"`` (default: every node at x*, so the error is the noise's and the
    network's alone, the part the transient is about), ``"initial"`` (the problem's initial
    point) or a point of the problem's shape. E.g. linear speedup: ``n * k * mean[k]`` of
    parallel SGD tends to the same constant for every n."""
    run = _new_run(problem, topology, replicas=replicas, lr=lr, x0=x0, variant=variant)
    run.advance_to(check_count(steps, "steps"))
    return run.curve()


@dataclass
class SpeedupCurves:
    """DSGD's and parallel SGD's error curves on the same problem, steps and noise."""

    dsgd: ErrorCurve
    parallel: ErrorCurve
    topology: str
    rho: float

    @property
    def iterations(self) -> np.ndarray:
        return self.dsgd.iterations

    @property
    def ratio(self) -> np.ndarray:
        """``e_DSGD(k) / e_PSGD(k)`` (1 where both are 0)."""
        return _ratio(self.dsgd.mean, self.parallel.mean)

    def transient(self, factor: float = 2.0) -> float:
        """:func:`transient_length` of these curves."""
        return transient_length(self.dsgd.mean, self.parallel.mean, factor=factor)

    def tail_constant(self, start: float = 0.5) -> float:
        """The median of ``(ratio(k) - 1) k`` over the last ``1 - start`` of the run: the C of
        ``ratio ~ 1 + C/k``, how the ratio decays late in a heterogeneous strongly convex
        run with ``lr ~ 1/k``, where the asymptotic curve crosses the factor at
        ``T ~ C / (factor - 1)``. A diagnostic that does not depend on the early bump, not
        the definition of T; near 0 (or negative) when DSGD has joined parallel SGD."""
        k = self.iterations
        return _tail_median((self.ratio - 1.0) * k, k, start)

    def plot(self, ax=None, *, factor: float = 2.0):
        """Both curves on log-log axes, the transient marked; returns the axes."""
        import matplotlib.pyplot as plt

        ax = plt.gca() if ax is None else ax
        k = self.iterations[1:]
        ax.loglog(k, self.parallel.mean[1:], label=f"parallel SGD (n={self.parallel.n})")
        ax.loglog(k, self.dsgd.mean[1:], label=f"DSGD, {self.topology} (rho={self.rho:.3f})")
        T = self.transient(factor)
        if 0 < T < math.inf:
            ax.axvline(T, color="grey", ls=":", label=f"transient T = {T}")
        ax.set_xlabel("iteration k")
        ax.set_ylabel(r"$E\|\bar x^k - x^*\|^2$")
        ax.legend()
        return ax


def speedup_curves(problem: Problem, topology, *, steps: int, replicas: int = 32, lr=None,
                   x0="optimum", variant: str = "atc") -> SpeedupCurves:
    """DSGD over ``topology`` and parallel SGD on ``problem``, same steps and noise (see
    :func:`error_curve` for the arguments); ``.transient()`` measures T."""
    if lr is None:
        lr = InverseTimeSchedule.for_problem(problem)
    curves = [error_curve(problem, t, steps=steps, replicas=replicas, lr=lr, x0=x0,
                          variant=variant) for t in (topology, None)]
    return SpeedupCurves(curves[0], curves[1], topology.name, float(topology.rho))


# ---------------------------------------------------------------------- tables
def transient_table(make_problem: Callable[..., Problem], topologies, ns, *, steps: int,
                    max_steps: int | None = None, margin: float = 4.0, factor: float = 2.0,
                    replicas: int = 32, seeds: Iterable[int] | None = None,
                    theta: float = 2.0, x0="optimum", variant: str = "atc",
                    keep_curves: bool = False) -> list[dict]:
    """Measured T for every topology and n: one row per pair.

    ``make_problem(n)`` builds the problem at n nodes (``make_problem(n, seed)`` for each
    of ``seeds`` when given: the curves are then averaged over those data draws too, each
    with ``replicas`` noise streams, and T is read off the averages); ``topologies`` maps a
    name to ``build(n) -> Topology`` (or is a list of family names for
    :func:`declearn.topology.make`); ``ns`` is a list of n for every topology, or a dict
    name -> list. Each run starts with ``steps`` iterations and doubles (up to
    ``max_steps``, default ``steps``) until ``T`` is finite and the run is ``margin`` times
    longer than T, so "stays within the factor" is seen over a long tail. Parallel SGD runs
    once per n (and seed) and serves every topology (same noise). Row keys: ``topology, n,
    rho, T, steps, seconds`` (DSGD's simulation time for that row), ``parallel_seconds``
    (parallel SGD's so far at that n), ``peak`` (the largest ratio e_DSGD / e_PSGD), ``C``
    (:meth:`SpeedupCurves.tail_constant`) and, with ``keep_curves=True``, ``curves``
    (:class:`SpeedupCurves`, to plot or to read T at another factor).
    """
    from declearn.topology import make

    if not isinstance(topologies, Mapping):
        names = list(topologies)
        topologies = {name: (lambda n, name=name: make(name, n)) for name in names}
    per = ns if isinstance(ns, Mapping) else {name: list(ns) for name in topologies}
    steps = check_count(steps, "steps")
    max_steps = steps if max_steps is None else check_count(max_steps, "max_steps")
    if max_steps < steps:
        raise ValueError(f"max_steps ({max_steps}) must be >= steps ({steps}).")
    check_real(margin, "margin", minimum=1.0)
    draws: list[int | None] = [None] if seeds is None else \
        [check_count(s, "seed", 0) for s in seeds]
    if not draws:
        raise ValueError("seeds is empty: pass None (one problem per n) or some seeds.")
    parallel: dict[int, list[tuple[_ErrorRun, Problem, InverseTimeSchedule]]] = {}
    rows = []
    for name, build in topologies.items():
        for n in _as_ints(per.get(name, ())):
            if n not in parallel:
                parallel[n] = []
                for seed in draws:
                    problem = make_problem(n) if seed is None else make_problem(n, seed)
                    lr = InverseTimeSchedule.for_problem(problem, theta=theta)
                    psgd = _new_run(problem, None, replicas=replicas, lr=lr, x0=x0,
                                    variant=variant)
                    parallel[n].append((psgd, problem, lr))
            topology = build(n)
            pairs = [(_new_run(problem, topology, replicas=replicas, lr=lr, x0=x0,
                               variant=variant), psgd) for psgd, problem, lr in parallel[n]]
            length = steps
            while True:
                for run, psgd in pairs:
                    run.advance_to(length)
                    psgd.advance_to(length)
                curves = SpeedupCurves(_pooled([r.curve() for r, _ in pairs]),
                                       _pooled([p.curve(length) for _, p in pairs]),
                                       topology.name, float(topology.rho))
                T = curves.transient(factor)
                if (math.isfinite(T) and length >= margin * T) or length >= max_steps:
                    break
                length = min(2 * length, max_steps)
            row = {"topology": name, "n": n, "rho": curves.rho, "T": T, "steps": length,
                   "seconds": sum(r.seconds for r, _ in pairs),
                   "parallel_seconds": sum(p.seconds for p, _, _ in parallel[n]),
                   "peak": float(curves.ratio.max()), "C": curves.tail_constant()}
            if keep_curves:
                row["curves"] = curves
            rows.append(row)
    return rows


def _pooled(curves: list[ErrorCurve]) -> ErrorCurve:
    """The average of curves from independent draws (same length and replicas each)."""
    if len(curves) == 1:
        return curves[0]
    first = curves[0]
    mean = np.mean([c.mean for c in curves], axis=0)
    sem = np.sqrt(np.sum([c.sem ** 2 for c in curves], axis=0)) / len(curves)
    return ErrorCurve(first.method, first.n, first.iterations, mean, sem,
                      sum(c.replicas for c in curves), sum(c.seconds for c in curves))


def _as_ints(values: Iterable) -> list[int]:
    return [check_count(v, "n (number of nodes)") for v in values]
