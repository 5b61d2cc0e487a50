r"""Checks for chapter 03, decentralized gradient descent.

* :func:`check_first_step` (03.1): the mean squared distance to x* after one AWC step from x*,
  ``(1/n) sum_i ||x_i^1 - x*||^2 = lr^2 b^2``;
* :func:`check_awc_step_bound` (03.2): the step size below which AWC-DGD is guaranteed stable,
  ``(1 + lambda_min(W)) / L``;
* :func:`check_lazy_ratio` (03.3): by how much AWC's plateau grows, in the small-step limit,
  when every node keeps a share ``1 - t`` of its own value, ``W_t = (1 - t) I + t W``: the
  exact factor ``1 / t^2``;
* :func:`check_dgd_step` (03.4, build it yourself): ``step(comm, W, x, grad, lr)`` returns one
  DGD-ATC iteration ``x <- W (x - lr grad(x))`` written with the communicator's primitives;
  the check runs it next to ``DGD(variant="atc")`` and names the first iteration where they
  differ. It works under SimComm and, called on every rank, under MPIComm.

Each check computes its expected value with numpy from the problem's data or in closed form,
never with declearn's DGD, and hints without giving the answer away. ``answer = None`` (the
notebook's starting value) gives a "not yet" verdict, never an error.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from declearn.exercises.base import Verdict, check_close
from declearn.exercises.build import (
    compare_iterates,
    path_with_chord,
    refuse_before_running,
    seeded_node_local,
)

__all__ = ["check_awc_step_bound", "check_dgd_step", "check_first_step", "check_lazy_ratio"]

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


def _near(value: float, target: float, rtol: float) -> bool:
    return math.isclose(value, target, rel_tol=rtol, abs_tol=1e-300)


# ---------------------------------------------------------------------------- exercise 1
def _optimum_gradients(problem) -> np.ndarray:
    """``grad f_i(x*)`` for every node, shape (n, d), from the least-squares data with numpy:
    x* from the stacked normal equations, then ``A_i^T (A_i x* - b_i) / m``."""
    if not all(hasattr(problem, a) for a in ("A", "b", "m", "n")):
        raise TypeError(f"this check needs a declearn LeastSquares problem, got {problem!r}.")
    A = np.asarray(problem.A, dtype=float)
    b = np.asarray(problem.b, dtype=float)
    A = np.broadcast_to(A, (problem.n,) + A.shape[1:])  # split="identical" stores one copy
    b = np.broadcast_to(b, (problem.n,) + b.shape[1:])
    d = A.shape[-1]
    x_star = np.linalg.lstsq(A.reshape(-1, d), b.reshape(-1), rcond=None)[0]
    return np.einsum("imd,im->id", A, A @ x_star - b) / problem.m


def _first_step_values(problem, topology, lr: float) -> tuple[float, float]:
    """``(awc, atc)``: ``(1/n) sum_i ||x_i^1 - x*||^2`` after one step from ``x_i^0 = x*``;
    AWC moves node i by ``-lr grad f_i(x*)``, ATC by ``-lr sum_j W_ij grad f_j(x*)``."""
    G = _optimum_gradients(problem)
    W = np.asarray(topology.W, dtype=float)
    msd = lambda D: float(np.mean(np.sum(D * D, axis=1)))
    return lr ** 2 * msd(G), lr ** 2 * msd(W @ G)


def check_first_step(answer, problem, topology, lr: float) -> Verdict:
    """Exercise 03.1: every node starts at x*; what is ``(1/n) sum_i ||x_i^1 - x*||^2`` after
    one AWC step ``x^1 = W x^0 - lr grad f(x^0)``? (rtol 1e-6; ``problem`` is LeastSquares)"""
    ex = "03.1"
    verdict = _missing(ex, answer)
    if verdict is not None:
        return verdict
    value, verdict = _number(ex, answer)
    if verdict is not None:
        return verdict
    expected, atc = _first_step_values(problem, topology, lr)
    n = problem.n
    if value < 0:
        return Verdict(False, ex, "a mean of squared norms cannot be negative.")
    hint = ("At x_i = x* for every node the mixing term changes nothing (each row of W sums "
            "to 1). What is left of the AWC update, and which property of the problem averages "
            "its squared norm over the nodes?")
    if _near(value, atc, 1e-6) and not _near(atc, expected, 1e-6):
        hint = ("That is the ATC value (the gradients are mixed before they land). In AWC the "
                "gradient step is not mixed: node i moves by its own gradient only.")
    elif value <= 1e-12 * expected:
        hint = ("x* is not a fixed point: the average gradient vanishes there, but each node "
                "steps along its own gradient.")
    elif _near(value, math.sqrt(expected), 1e-6):
        hint = "Close: the question asks for a mean of *squared* distances."
    elif lr > 0 and _near(value * lr, expected, 1e-6):
        hint = "Check the power of lr: the displacement is lr times a gradient, then squared."
    elif _near(value, n * expected, 1e-6):
        hint = "That is a sum over the nodes; the question asks for the mean (1/n) sum_i."
    elif _near(value, expected / n, 1e-6):
        hint = "Divided by n once too often: b^2 is already a mean over the nodes."
    return check_close(ex, value, expected, rtol=1e-6, hint=hint)


# ---------------------------------------------------------------------------- exercise 2
def _eigenvalues(topology) -> np.ndarray:
    """The eigenvalues of the (symmetric part of) W, ascending, from a dense numpy solve."""
    W = np.asarray(topology.W, dtype=float)
    return np.linalg.eigvalsh((W + W.T) / 2)


def _awc_step_bound(topology, L: float) -> float:
    """``(1 + lambda_min(W)) / L``."""
    return float((1.0 + _eigenvalues(topology)[0]) / L)


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
    lam = _eigenvalues(topology)
    expected = _awc_step_bound(topology, L)
    hint = ("For quadratics the AWC iteration multiplies the stacked iterates by W - lr H "
            "(H holds the node Hessians, with eigenvalues between mu and L). Stability needs every "
            "eigenvalue above -1: which eigenvalue of W and which curvature make the most "
            "negative pair?")
    if _near(value, 2.0 / L, 1e-3):
        hint = ("2/L is the bound of centralized gradient descent, and of ATC. In AWC the "
                "gradient step and the mixing act on the same iterate at once, so an eigenvalue "
                "of W enters the bound.")
    elif _near(value, expected * L, 1e-3):
        hint = "Right eigenvalue, but the bound is a step size: divide by L."
    elif _near(value, (1.0 - lam[0]) / L, 1e-3):
        hint = "Mind the sign: the most negative eigenvalue of W brings the bound down."
    elif len(lam) > 1 and _near(value, (1.0 + lam[-2]) / L, 1e-3):
        hint = ("That uses the second largest eigenvalue, which sets the mixing speed; "
                "stability is decided at the other end of the spectrum.")
    elif _near(value, 2.0 * expected, 1e-3) or _near(value, expected / 2.0, 1e-3):
        hint = "Right ingredients, wrong factor of 2: write the condition lambda - lr L > -1."
    return check_close(ex, value, expected, rtol=1e-3, hint=hint)


# ---------------------------------------------------------------------------- exercise 3
def _lazy_ratio(t: float) -> float:
    """The small-step limit of AWC's plateau on ``W_t`` over that on W: ``1 / t^2``, since
    ``I - W_t = t (I - W)`` scales the disagreement that sets the plateau by ``1 / t``."""
    return 1.0 / (t * t)


def check_lazy_ratio(answer, t: float = 0.5) -> Verdict:
    """Exercise 03.3: with ``W_t = (1 - t) I + t W``, how many times larger is AWC-DGD's
    plateau than with W, in the limit of small steps? The exact factor (rtol 1e-6)."""
    ex = "03.3"
    verdict = _missing(ex, answer)
    if verdict is not None:
        return verdict
    if isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0 < t <= 1:
        raise ValueError(f"t must be a number in (0, 1], got {t!r}.")
    value, verdict = _number(ex, answer)
    if verdict is not None:
        return verdict
    t = float(t)
    expected = _lazy_ratio(t)
    hint = ("Write the eigenvalues of W_t in terms of those of W: what happens to 1 - rho? "
            "Then use the exponent you measured for the plateau against 1 - rho.")
    if t < 1 and _near(value, 1.0 / t, 1e-6):
        hint = ("1 - rho shrinks by that factor, but the plateau is a squared distance: "
                "use the exponent of (1 - rho) in lr^2 b^2 / (1 - rho)^2.")
    elif t < 1 and (_near(value, t ** 2, 1e-6) or _near(value, t, 1e-6)):
        hint = ("Slower mixing makes the plateau larger, not smaller: the answer is a factor "
                "above 1.")
    elif t < 1 and _near(value, t ** -4, 1e-6):
        hint = "Squared once too often: the plateau E is already a squared distance."
    elif _near(value, expected, 0.05):
        hint = ("That looks like a ratio measured at a finite step. The question asks for the "
                "exact factor in the limit of small steps, which follows from the eigenvalues "
                "of W_t alone.")
    return check_close(ex, value, expected, rtol=1e-6, hint=hint)


# ---------------------------------------------------------------------------- exercise 4
#: Exercise 03.4: iterations compared, the problem's seed, the starting point's seed.
_BUILD_STEPS = 12
_BUILD_SEED = 3
_BUILD_X0_SEED = 30


def _build_graph(n: int):
    """The graph of exercise 03.4: a path ``0 - 1 - ... - n-1`` plus the chord ``1 - (n-1)``
    (for n >= 4), Metropolis weights, so the weights differ from node to node."""
    return path_with_chord(n, (1, n - 1), name="exercise_03_4")


def _build_problem(n: int):
    """Deterministic heterogeneous least squares (sigma = 0): no noise stream to share."""
    from declearn.problems import LeastSquares

    return LeastSquares(n, d=3, m=6, heterogeneity=1.0, sigma=0.0, seed=_BUILD_SEED)


def check_dgd_step(step, comm) -> Verdict:
    """``step(comm, W, x, grad, lr)``, one DGD-ATC iteration ``x <- W (x - lr grad(x))``,
    gives the same iterates as ``DGD(variant="atc")`` for :data:`_BUILD_STEPS` iterations on
    the Metropolis graph of ``comm.size`` nodes (a path plus a chord), on heterogeneous least
    squares (3 unknowns per node, no gradient noise), from seeded node-local starting points,
    with ``lr = 0.3 / L``. ``grad`` is the node-local gradient oracle (a separate one from the
    class's). Call it with a ``SimComm`` or, on every engine, with the engines' ``MPIComm``."""
    from declearn.algorithms import DGD

    ex = "03.4"
    refused = refuse_before_running(ex, step, comm, signature="dgd_step(comm, W, x, grad, lr)",
                                    returns="the new x", forbidden={"DGD"})
    if refused is not None:
        return refused
    topo, problem = _build_graph(comm.size), _build_problem(comm.size)
    lr = 0.3 / problem.smoothness
    x0 = seeded_node_local(comm, 3, _BUILD_X0_SEED)
    reference = DGD(comm, problem, topo, lr=lr, variant="atc", x0=x0)
    grad = problem.on(comm).grad  # the student's own oracle

    def iterates():
        x, k = x0.clone(), 0
        while True:
            x = step(comm, topo.at(k), x, grad, lr)
            yield x
            k += 1

    return compare_iterates(
        ex, comm, iterates(), reference, steps=_BUILD_STEPS, what="DGD(variant='atc')'s x",
        hint="ATC adapts, then combines: each node takes its gradient step at its current x, "
             "and the stepped values go through one round of gossip with W (self weight "
             "included; no exact average, no second round).")
