r"""Checks for chapter 04, linear speedup and transient iterations.

* :func:`check_speedup_error` (04.1): parallel SGD on the chapter's problem with
  ``lr(k) = theta / (k + theta L)``, started at x*: ``E||x_bar^k - x*||^2`` at a given
  iteration, from the exact recursion ``v_(k+1) = (1 - lr_k)^2 v_k + lr_k^2 sigma^2 / n``
  (rtol 3 %; asymptotically ``theta^2 / (2 theta - 1) sigma^2 / (n k)``);
* :func:`check_factor_ratio` (04.2): on ring(12), by what factor the transient grows when
  "within a factor 2 of parallel SGD" becomes "within a factor 1.25" (rtol 10 %);
* :func:`check_shorter_transient` (04.3): at n = 16, which graph has the shorter transient,
  the static exponential graph or the one-peer exponential graph.

**The independent oracle.** The chapter's problem is ``TwoTypeQuadratics``: node i has
curvature ``a_i = 1 + kappa s_i`` and gradient ``zeta s_i u`` at x* (``s_i = +-1``, ``u`` a
unit vector), gradient noise of variance ``sigma^2 / d`` per coordinate. Everything is linear,
so DSGD-ATC from x*, ``x^(k+1) = W_k (x^k - lr_k (grad f(x^k) + xi^k))``, has an error
``e = x - x*`` whose first two moments follow exactly (node by node, along ``u`` for the
mean and per coordinate for the covariance):

    m^(k+1) = W_k (D_k m^k - lr_k zeta s),            D_k = diag(1 - lr_k a_i),
    S^(k+1) = W_k D_k S^k D_k W_k^T + lr_k^2 sigma^2 / d  W_k W_k^T,
    E||x_bar^k - x*||^2 = (1^T m^k / n)^2 + d 1^T S^k 1 / n^2.

That is the error of infinitely many noise replicas, with dense numpy matrices W built here
from the graphs' definitions (never declearn's DGD, ``speedup`` or topology code); parallel
SGD is the same with ``W = 11^T / n``. Averaged over the node placements of data seeds 0..7,
T is read off with the chapter's definition (the first k after which the ratio of the two
errors stays within the factor). tests/test_exercises_ch04.py compares these curves with
declearn's simulated ones. ``answer = None`` gives "not yet", never an error; hints do not
give the answer away.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from declearn.exercises.base import Verdict, check_close, check_true, is_number

__all__ = ["check_factor_ratio", "check_shorter_transient", "check_speedup_error"]

#: The chapter's heterogeneous problem: TwoTypeQuadratics(n, d=5, zeta=3, kappa=0.5, sigma=1).
ZETA, KAPPA, SIGMA, DIM, THETA = 3.0, 0.5, 1.0, 5, 2.0
SEEDS = tuple(range(8))
_MISSING = "write your answer in the cell (answer = ...), then run the check again."


def _missing(exercise: str, answer, what: str) -> Verdict | None:
    if answer is None or answer is Ellipsis:
        return Verdict(False, exercise, _MISSING)
    if what == "number" and isinstance(answer, (bool, str, bytes)):
        return Verdict(False, exercise, f"the answer is one number (a float), got "
                       f"{type(answer).__name__}.")
    if what == "number" and not is_number(answer):
        try:
            answer = float(np.asarray(answer, dtype=float).reshape(()))
        except (TypeError, ValueError):
            return Verdict(False, exercise, f"the answer is one number (a float), got "
                           f"{type(answer).__name__}.")
        if not math.isfinite(answer):
            return Verdict(False, exercise, "the answer is NaN or infinite.")
    return None


def _float(answer) -> float:
    return float(np.asarray(answer, dtype=float).reshape(()))


# ---------------------------------------------------------------------- graphs, by definition
def _circulant(n: int, hops, weight: float) -> np.ndarray:
    """Row i (the receiver) takes ``weight`` from itself and from ``i - h`` for every hop."""
    W = np.eye(n) * weight
    rows = np.arange(n)
    for h in hops:
        W[rows, (rows - h) % n] += weight
    return W


def ring_matrix(n: int) -> np.ndarray:
    """The ring with weights 1/3 (self and both neighbors)."""
    return _circulant(n, (1, n - 1), 1.0 / 3.0)


def exponential_matrix(n: int) -> np.ndarray:
    """Static exponential graph: i receives from ``i - 2^j``, j < tau = ceil(log2 n), and
    keeps its own value, all with weight ``1 / (tau + 1)``."""
    tau = max(1, (n - 1).bit_length())
    return _circulant(n, [2 ** j % n for j in range(tau)], 1.0 / (tau + 1))


def one_peer_exponential_matrices(n: int) -> list[np.ndarray]:
    """One-peer exponential graph: at step k node i averages itself with ``i - 2^(k mod tau)``
    (weights 1/2); the list holds the tau matrices of one period."""
    tau = max(1, (n - 1).bit_length())
    return [_circulant(n, [2 ** j % n], 0.5) for j in range(tau)]


# ---------------------------------------------------------------------- the oracle
def _node_types(n: int, seeds) -> np.ndarray:
    """``s_i`` for each seed, shape (seeds, n): the node placement of the chapter's problem."""
    from declearn.problems import TwoTypeQuadratics  # the data only, not an algorithm

    return np.stack([np.asarray(TwoTypeQuadratics(n, seed=s).signs, dtype=float)
                     for s in seeds])


def expected_errors(mixing, n: int, steps: int, *, seeds=SEEDS, theta: float = THETA):
    """``(e_dsgd, e_parallel)``, arrays of length ``steps + 1``: the exact
    ``E||x_bar^k - x*||^2`` of DSGD-ATC (mixing ``mixing[k % len(mixing)]``, a list of dense
    n x n matrices) and of parallel SGD on the chapter's problem from x*, ``lr(k) = theta /
    (k + theta (1 + kappa))``, averaged over the node placements of ``seeds`` (see the
    module docstring)."""
    if n % 2:
        raise ValueError(f"n must be even (then the mean curvature is 1), got {n}.")
    s = _node_types(n, seeds)
    a = 1.0 + KAPPA * s
    m = np.zeros_like(s)
    S = np.zeros((len(s), n, n))
    v = 0.0
    noise = SIGMA ** 2 / DIM  # per coordinate
    e_dsgd, e_par = np.zeros(steps + 1), np.zeros(steps + 1)
    WWt = [W @ W.T for W in mixing]
    for k in range(steps):
        lr = theta / (k + theta * (1.0 + KAPPA))
        W, D = mixing[k % len(mixing)], 1.0 - lr * a
        m = (D * m - lr * ZETA * s) @ W.T
        S = W @ (D[:, :, None] * S * D[:, None, :]) @ W.T + lr * lr * noise * WWt[k % len(WWt)]
        v = (1.0 - lr) ** 2 * v + lr * lr * SIGMA ** 2 / n
        e_dsgd[k + 1] = np.mean(m.mean(1) ** 2 + DIM * S.sum((1, 2)) / n ** 2)
        e_par[k + 1] = v
    return e_dsgd, e_par


def first_within(e_dsgd: np.ndarray, e_parallel: np.ndarray, factor: float) -> float:
    """The first k after which ``1/factor <= e_dsgd / e_parallel <= factor`` holds for good
    (k = 0 is within: both errors are 0 at x*); ``inf`` if not within at the end."""
    r = np.ones_like(e_dsgd)
    r[1:] = e_dsgd[1:] / e_parallel[1:]
    out = np.flatnonzero((r < 1.0 / factor) | (r > factor))
    if out.size == 0:
        return 0
    return math.inf if out[-1] == r.size - 1 else int(out[-1] + 1)


def parallel_error(n: int, k: int, *, theta: float, sigma: float = SIGMA,
                   smoothness: float = 1.0 + KAPPA) -> float:
    """``E||x_bar^k - x*||^2`` of parallel SGD from x* on a problem whose mean Hessian is the
    identity: ``v_(j+1) = (1 - lr_j)^2 v_j + lr_j^2 sigma^2 / n``, ``lr_j = theta / (j + theta
    L)``."""
    v = 0.0
    for j in range(k):
        lr = theta / (j + theta * smoothness)
        v = (1.0 - lr) ** 2 * v + lr * lr * sigma ** 2 / n
    return v


# ---------------------------------------------------------------------- exercise 1
def check_speedup_error(answer, *, n: int = 32, k: int = 5000, theta: float = 3.0) -> Verdict:
    """Exercise 04.1: parallel SGD on ``TwoTypeQuadratics(n, sigma=1)`` from x*, with
    ``lr(k) = theta / (k + theta L)``: what is ``E||x_bar^k - x*||^2``? (rtol 3 %)"""
    ex = "04.1"
    verdict = _missing(ex, answer, "number")
    if verdict is not None:
        return verdict
    value = _float(answer)
    if value <= 0:
        return Verdict(False, ex, "an expected squared distance is positive.")
    expected = parallel_error(n, k, theta=theta)
    c = theta ** 2 / (2 * theta - 1)
    hint = ("Put v_k = c sigma^2 / (n k) into v_(k+1) = (1 - lr_k)^2 v_k + lr_k^2 sigma^2 / n "
            "and keep the terms of order 1/k^2: that fixes c as a function of theta.")
    if math.isclose(value * n, expected, rel_tol=0.05) or \
            math.isclose(value / n, expected, rel_tol=0.05):
        hint = "Check how the error depends on n: how many noises does one step average?"
    elif math.isclose(value, 4 / 3 * expected / c, rel_tol=0.03):
        hint = ("That is the constant of theta = 2 (the chapter's plot); this exercise uses "
                f"theta = {theta:g}.")
    elif math.isclose(value, expected / c, rel_tol=0.03):
        hint = ("sigma^2 / (n k) has the right scaling, but the constant is not 1: the step "
                "lr_k = theta / k lets each noise in with weight theta.")
    return check_close(ex, value, expected, rtol=0.03, hint=hint)


# ---------------------------------------------------------------------- exercise 2
@functools.lru_cache(maxsize=4)
def _ring_transients(n: int = 12, factors=(2.0, 1.25), steps: int = 9000) -> dict:
    """T at each factor; past T(1.25) the exact ratio only decreases, so 9000 steps (1.6 T)
    see the last crossing (the test checks it against 24000)."""
    e_dsgd, e_par = expected_errors([ring_matrix(n)], n, steps)
    return {f: first_within(e_dsgd, e_par, f) for f in factors}


def check_factor_ratio(answer) -> Verdict:
    """Exercise 04.2: on ring(12), T at factor 1.25 divided by T at factor 2 (rtol 10 %)."""
    ex = "04.2"
    verdict = _missing(ex, answer, "number")
    if verdict is not None:
        return verdict
    value = _float(answer)
    T = _ring_transients()
    if not all(0 < t < math.inf for t in T.values()):  # the oracle's own sanity
        raise RuntimeError(f"the reference run did not see both crossings: {T}")
    expected = T[1.25] / T[2.0]
    hint = ("Late in the run the ratio e_DSGD / e_PSGD behaves like 1 + C/k. Where does that "
            "curve cross 2, and where 1.25?")
    if value < 1:
        hint = "A tighter band is left later, not earlier: the ratio is larger than 1."
    elif math.isclose(value, 2 / 1.25, rel_tol=0.05) or math.isclose(value, (2 / 1.25) ** 2,
                                                                        rel_tol=0.05):
        hint = ("The factors themselves are not what matters: how far above 1 the ratio may be "
                "is. Write 1 + C/k = factor and solve for k.")
    return check_close(ex, value, expected, rtol=0.10, hint=hint)


# ---------------------------------------------------------------------- exercise 3
_GRAPHS = ("exponential", "one_peer_exponential")


@functools.lru_cache(maxsize=4)
def _graph_transients(n: int = 16, steps: int = 2000) -> dict:
    mixings = {"exponential": [exponential_matrix(n)],
               "one_peer_exponential": one_peer_exponential_matrices(n)}
    out = {}
    for name, mixing in mixings.items():
        e_dsgd, e_par = expected_errors(mixing, n, steps)
        out[name] = first_within(e_dsgd, e_par, 2.0)
    return out


def check_shorter_transient(answer) -> Verdict:
    """Exercise 04.3: at n = 16, ``"exponential"`` or ``"one_peer_exponential"``: which one
    has the shorter transient on the chapter's heterogeneous problem?"""
    ex = "04.3"
    if answer is None or answer is Ellipsis:
        return Verdict(False, ex, _MISSING)
    if not isinstance(answer, str) or answer.strip().lower() not in _GRAPHS:
        return Verdict(False, ex, f"answer with one of the names {', '.join(map(repr, _GRAPHS))}"
                       f", got {answer!r}.")
    choice = answer.strip().lower()
    T = _graph_transients()
    best = min(T, key=T.get)
    other = next(g for g in _GRAPHS if g != best)
    if not T[other] >= 2 * T[best]:  # the oracle's own sanity: the answer must be clear-cut
        raise RuntimeError(f"the reference transients are too close to call: {T}")
    return check_true(
        ex, choice == best,
        right=(f"{best} is the shorter one (T = {T[best]} against {T[other]} for {other}, "
               "exact expected errors over 8 node placements)."),
        wrong=("Not that one. A smaller rho is not the whole story: the leak into the averaged "
               "model goes through how much of its own gradient a node keeps (W_ii - 1/n), "
               "step after step."))
