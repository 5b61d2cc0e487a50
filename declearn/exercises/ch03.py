r"""Checks for chapter 03, decentralized gradient descent.

Each check recomputes the right value with declearn itself (a short simulator run or an
eigenvalue), compares the student's ``answer`` with it, and hints without giving it away.
``answer = None`` (the notebook's starting value) gives a "not yet" verdict, never an error.

* :func:`check_first_step`: the mean squared distance to x* after one AWC step from x*;
* :func:`check_awc_step_bound`: the step size below which AWC-DGD is guaranteed stable,
  ``(1 + lambda_min(W)) / L``;
* :func:`check_lazy_ratio`: by how much AWC's plateau grows when every node keeps a share
  ``1 - t`` of its own value, ``W_t = (1 - t) I + t W``.
"""

from __future__ import annotations

import numbers

import numpy as np

from declearn.exercises.base import Verdict, check_close

__all__ = ["check_first_step", "check_awc_step_bound", "check_lazy_ratio"]

_MISSING = "write your answer in the cell (answer = ...), then run the check again."


def _missing(exercise: str, answer) -> Verdict | None:
    """A "not yet" verdict when the student has not answered, or answered with text."""
    if answer is None or answer is Ellipsis:
        return Verdict(False, exercise, _MISSING)
    if isinstance(answer, (str, bytes, bool)):
        return Verdict(False, exercise, "the answer is a number (a float), not "
                       f"{type(answer).__name__}.")
    return None


def _number(exercise: str, answer):
    """``(float, None)``, or ``(None, Verdict)`` when the answer is not one finite number."""
    try:
        value = np.asarray(answer.detach().cpu() if hasattr(answer, "detach") else answer,
                           dtype=float)
    except (TypeError, ValueError):
        return None, Verdict(False, exercise, f"expected a number, got {type(answer).__name__}.")
    if value.size != 1:
        return None, Verdict(False, exercise, f"expected one number, got an array of shape "
                             f"{value.shape}: reduce it (a mean over nodes?).")
    value = float(value.reshape(()))
    if not np.isfinite(value):
        return None, Verdict(False, exercise, "the answer is NaN or infinite.")
    return value, None


def _msd(x, x_star) -> float:
    """``(1/n) sum_i ||x_i - x*||^2`` for node-local ``x`` of shape (n, d)."""
    return float((x - x_star).pow(2).sum(-1).mean())


# ---------------------------------------------------------------------------- exercise 1
def first_step_value(problem, topology, lr: float, variant: str = "awc") -> float:
    """``(1/n) sum_i ||x_i^1 - x*||^2`` after one DGD step from ``x_i^0 = x*``, by running
    declearn's DGD for one step in the simulator."""
    from declearn.algorithms import DGD
    from declearn.comm import SimComm

    n = problem.n
    x0 = problem.x_star.expand((n,) + tuple(problem.x_star.shape)).clone()
    alg = DGD(SimComm(n), problem, topology, lr=lr, variant=variant, x0=x0)
    alg.step()
    return _msd(alg.x, problem.x_star)


def check_first_step(answer, problem, topology, lr: float) -> Verdict:
    """Exercise 03.1: every node starts at x*; what is ``(1/n) sum_i ||x_i^1 - x*||^2`` after
    one AWC step ``x^1 = W x^0 - lr grad f(x^0)``? (rtol 1e-6)"""
    ex = "03.1"
    verdict = _missing(ex, answer)
    if verdict is not None:
        return verdict
    value, verdict = _number(ex, answer)
    if verdict is not None:
        return verdict
    expected = first_step_value(problem, topology, lr, "awc")
    if value < 0:
        return Verdict(False, ex, "a mean of squared norms cannot be negative.")
    atc = first_step_value(problem, topology, lr, "atc")
    hint = ("At x_i = x* for every node the mixing term changes nothing (each row of W sums "
            "to 1). What is left of the AWC update, and which property of the problem averages "
            "its squared norm over the nodes?")
    if np.isclose(value, atc, rtol=1e-6) and not np.isclose(atc, expected, rtol=1e-6):
        hint = ("That is the ATC value (the gradients are mixed before they land). In AWC the "
                "gradient step is not mixed: node i moves by its own gradient only.")
    elif expected > 0 and np.isclose(value, np.sqrt(expected), rtol=1e-6):
        hint = "Close: the question asks for a mean of *squared* distances."
    elif lr > 0 and np.isclose(value * lr, expected, rtol=1e-6):
        hint = "Check the power of lr: the displacement is lr times a gradient, then squared."
    return check_close(ex, value, expected, rtol=1e-6, hint=hint)


# ---------------------------------------------------------------------------- exercise 2
def awc_step_bound(topology, L: float) -> float:
    """``(1 + lambda_min(W)) / L``, with lambda_min from a dense eigensolve of W
    (symmetric W)."""
    W = np.asarray(topology.W, dtype=float)
    return float((1.0 + np.linalg.eigvalsh((W + W.T) / 2)[0]) / L)


def check_awc_step_bound(answer, topology, L: float) -> Verdict:
    """Exercise 03.2: the largest step size for which AWC-DGD is guaranteed stable on
    ``topology`` for L-smooth f_i: ``(1 + lambda_min(W)) / L`` (rtol 1e-3)."""
    ex = "03.2"
    verdict = _missing(ex, answer)
    if verdict is not None:
        return verdict
    value, verdict = _number(ex, answer)
    if verdict is not None:
        return verdict
    expected = awc_step_bound(topology, L)
    hint = ("For quadratics the AWC iteration multiplies the stacked iterates by W - lr H "
            "(H holds the node Hessians, with eigenvalues between mu and L). Stability needs every "
            "eigenvalue above -1: which eigenvalue of W and which curvature make the most "
            "negative pair?")
    if np.isclose(value, 2.0 / L, rtol=1e-3):
        hint = ("2/L is the bound of centralized gradient descent, and of ATC. In AWC the "
                "gradient step and the mixing act on the same iterate at once, so an eigenvalue "
                "of W enters the bound.")
    elif np.isclose(value, expected * L, rtol=1e-3):
        hint = "Right eigenvalue, but the bound is a step size: divide by L."
    return check_close(ex, value, expected, rtol=1e-3, hint=hint)


# ---------------------------------------------------------------------------- exercise 3
def lazy_ratio_value(t: float = 0.5, n: int = 16, lr_L: float = 1e-4, steps: int = 1500,
                     seed: int = 0) -> float:
    """AWC plateau on ``W_t = (1 - t) I + t W`` divided by the plateau on W (the ring over n
    nodes, heterogeneous least squares, a small step ``lr_L / L``, runs started at x*)."""
    from declearn.algorithms import DGD
    from declearn.comm import SimComm
    from declearn.problems import LeastSquares
    from declearn.topology import Topology, ring

    problem = LeastSquares(n, d=10, m=20, heterogeneity=1.0, seed=seed)
    base = ring(n)
    lazy = Topology.from_matrix((1.0 - t) * np.eye(n) + t * base.W, name=f"lazy ring t={t:g}")
    x0 = problem.x_star.expand(n, -1).clone()
    plateaus = []
    for topo in (lazy, base):
        alg = DGD(SimComm(n), problem, topo, lr=lr_L / problem.smoothness, variant="awc", x0=x0)
        alg.run(steps, log_every=steps, progress=False)
        plateaus.append(_msd(alg.x, problem.x_star))
    return plateaus[0] / plateaus[1]


def check_lazy_ratio(answer, t: float = 0.5) -> Verdict:
    """Exercise 03.3: with ``W_t = (1 - t) I + t W``, how many times larger is AWC-DGD's
    plateau (small step) than with W? Checked against a simulator run (rtol 3%)."""
    ex = "03.3"
    verdict = _missing(ex, answer)
    if verdict is not None:
        return verdict
    if isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0 < t <= 1:
        raise ValueError(f"t must be a number in (0, 1], got {t!r}.")
    value, verdict = _number(ex, answer)
    if verdict is not None:
        return verdict
    expected = lazy_ratio_value(float(t))
    hint = ("Write the eigenvalues of W_t in terms of those of W: what happens to 1 - rho? "
            "Then use the exponent you measured for the plateau against 1 - rho.")
    if np.isclose(value, 1.0 / t, rtol=0.03):
        hint = ("1 - rho shrinks by that factor, but the plateau is a squared distance: "
                "use the exponent of (1 - rho) in lr^2 b^2 / (1 - rho)^2.")
    elif np.isclose(value, t ** 2, rtol=0.03) or np.isclose(value, t, rtol=0.03):
        hint = ("Slower mixing makes the plateau larger, not smaller: the answer is a factor "
                "above 1.")
    return check_close(ex, value, expected, rtol=0.03, hint=hint)
