r"""Checks for chapter 02, *Topologies and the spectral gap*.

Each check recomputes the right value here with plain numpy (not with declearn.topology, so a
bug there cannot make a wrong answer look right) and answers with a
:class:`~declearn.exercises.Verdict`: a hint when the answer is wrong, "not yet" when it is
still ``None``.

* :func:`check_exact_sizes` (2.1): the n in 2..40 for which tau = ceil(log2 n) steps of the
  one-peer exponential graph average exactly.
* :func:`check_exponential_messages` (2.2): messages each node sends before the static
  exponential graph with n = 1000 is guaranteed to be within 1e-6 of the average.
* :func:`check_best_eta` (2.3): the eta that makes OD-EquiDyn contract fastest (mean square)
  for n = 10.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from declearn.exercises.base import Verdict, not_yet

__all__ = [
    "ETA_N",
    "EXACT_SIZES_RANGE",
    "MESSAGES_EPS",
    "MESSAGES_N",
    "check_best_eta",
    "check_exact_sizes",
    "check_exponential_messages",
]

EX1 = "2.1 exact one-peer sizes"
EX2 = "2.2 messages of the exponential graph"
EX3 = "2.3 best eta for EquiDyn"

#: Exercise 2.1 looks at every n in this range (both ends included).
EXACT_SIZES_RANGE = (2, 40)
#: Exercise 2.2: network size and target accuracy.
MESSAGES_N = 1000
MESSAGES_EPS = 1e-6
#: Exercise 2.3: network size.
ETA_N = 10


def _close(exercise: str, answer: float, expected: float, rtol: float, hint: str) -> Verdict:
    """Right within ``rtol``; when wrong, say too small or too large and give the hint, but
    not by how much (that would give the answer away)."""
    if math.isclose(answer, expected, rel_tol=rtol):
        return Verdict(True, exercise, "matches declearn's own computation.")
    side = "too small" if answer < expected else "too large"
    return Verdict(False, exercise, f"{side} (tolerance {rtol:.0%}). {hint}")


# ---------------------------------------------------------------------- 2.1
def _one_peer_product(n: int) -> np.ndarray:
    """``W(tau-1) ... W(0)`` with ``W(k) = (I + S^(2^k))/2``, S the cyclic shift (dense)."""
    tau = max(1, (n - 1).bit_length())
    eye = np.eye(n)
    prod = eye
    for k in range(tau):
        shift = np.roll(eye, (1 << k) % n, axis=0)  # (S^h x)_i = x_{i-h}
        prod = 0.5 * (eye + shift) @ prod
    return prod


def exact_sizes(lo: int = EXACT_SIZES_RANGE[0], hi: int = EXACT_SIZES_RANGE[1]) -> set[int]:
    """The n in ``lo..hi`` whose one-peer exponential product of tau steps equals ``11^T/n``."""
    return {n for n in range(lo, hi + 1) if np.abs(_one_peer_product(n) - 1.0 / n).max() < 1e-12}


def check_exact_sizes(answer) -> Verdict:
    """Exercise 2.1: ``answer`` is the set (or list) of the n in 2..40 for which the product
    of tau = ceil(log2 n) consecutive one-peer exponential steps is exactly ``11^T/n``."""
    if answer is None:
        return not_yet(EX1, "a set of network sizes, e.g. {3, 5}")
    try:
        given = {int(v) for v in answer}
    except (TypeError, ValueError):
        return Verdict(False, EX1, "give a set (or list) of whole numbers, e.g. {3, 5}.")
    lo, hi = EXACT_SIZES_RANGE
    outside = sorted(v for v in given if not lo <= v <= hi)
    if outside:
        return Verdict(False, EX1, f"only n from {lo} to {hi} are asked for; remove {outside}.")
    right = exact_sizes()
    if given == right:
        return Verdict(True, EX1, f"right: {len(right)} sizes in {lo}..{hi}. What do they have "
                                  "in common, and why can no other n work?")
    extra, missing = given - right, right - given
    hints = []
    if extra:
        verb = "does" if len(extra) == 1 else "do"
        hints.append(f"{len(extra)} of your sizes {verb} not average exactly: compare the product "
                     "with 11^T/n entry by entry (tolerance ~1e-12); a small rho is not the "
                     "same as exact")
    if missing:
        verb = "size is" if len(missing) == 1 else "sizes are"
        hints.append(f"{len(missing)} exact {verb} missing: did you test every n from "
                     f"{lo} to {hi}, with tau = ceil(log2 n) steps?")
    return Verdict(False, EX1, "; ".join(hints) + ".")


# ---------------------------------------------------------------------- 2.2
def _exponential_rho(n: int) -> float:
    """``||W - J||_2`` of the static exponential graph, from the eigenvalues of its circulant
    matrix (weights 1/(tau+1) on the shifts 0 and 2^k, k < tau)."""
    tau = (n - 1).bit_length()
    c = np.zeros(n)
    c[0] = 1.0 / (tau + 1)
    for k in range(tau):
        c[(1 << k) % n] += 1.0 / (tau + 1)
    lam = np.fft.fft(c)
    return float(np.abs(lam[1:]).max())


def exponential_messages(n: int = MESSAGES_N, eps: float = MESSAGES_EPS) -> int:
    """Messages per node of the static exponential graph until ``rho^k <= eps``:
    ``tau * ceil(ln(1/eps) / ln(1/rho))`` (tau messages per step)."""
    tau = (n - 1).bit_length()
    steps = math.ceil(math.log(1.0 / eps) / math.log(1.0 / _exponential_rho(n)))
    return tau * steps


def check_exponential_messages(answer) -> Verdict:
    """Exercise 2.2: the number of messages each node sends before the bound
    ``||x^k - xbar|| <= rho^k ||x^0 - xbar||`` of the static exponential graph with
    ``n = 1000`` guarantees a relative error of at most ``1e-6``. Estimates from
    ``ln(1/eps) / (1 - rho)`` are accepted too (within 12 %)."""
    if answer is None:
        return not_yet(EX2, "a number of messages per node")
    if isinstance(answer, bool) or not isinstance(answer, numbers.Real):
        return Verdict(False, EX2, "give one number: messages per node, all steps together.")
    n, eps = MESSAGES_N, MESSAGES_EPS
    expected = exponential_messages(n, eps)
    tau = (n - 1).bit_length()
    steps = expected // tau
    hint = "Multiply the number of steps by the messages each node sends per step."
    if math.isclose(answer, steps, rel_tol=0.12):
        hint = ("That looks like a number of steps; in each step every node sends one message "
                "to each out-neighbour: how many is that for n = 1000?")
    elif answer < 2 * tau:
        hint = ("That is about one step's worth; how many steps does rho^k <= 1e-6 take? "
                "(use rho = 1 - 2/(tau + 1) or topology.rho)")
    elif answer > 100 * expected:
        hint = ("Far too many: is your rho the exponential graph's (about 0.82 here), not the "
                "ring's?")
    return _close(EX2, float(answer), expected, 0.12, hint)


# ---------------------------------------------------------------------- 2.3
def od_equidyn_mean_square(n: int, eta: float) -> float:
    """``max_{x orthogonal to 1} E||W x||^2 / ||x||^2`` for OD-EquiDyn with u uniform on
    1..n-1, computed densely: ``E[W^T W]`` averaged over the n - 1 basis matrices."""
    eye = np.eye(n)
    G = np.zeros((n, n))
    for u in range(1, n):
        A = eye / n + (n - 1) / n * np.roll(eye, -u, axis=0)  # A[i, i+u] = (n-1)/n
        W = (1.0 - eta) * eye + eta * A
        G += W.T @ W
    G /= n - 1
    P = eye - 1.0 / n
    return float(np.linalg.eigvalsh(P @ G @ P)[-1])


def best_eta(n: int = ETA_N) -> float:
    """The eta in (0, 1] minimising :func:`od_equidyn_mean_square` (golden-section search;
    the function is a convex quadratic in eta)."""
    lo, hi = 1e-6, 1.0
    g = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(80):
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        if od_equidyn_mean_square(n, a) <= od_equidyn_mean_square(n, b):
            hi = b
        else:
            lo = a
    return 0.5 * (lo + hi)


def check_best_eta(answer) -> Verdict:
    """Exercise 2.3: the eta in (0, 1] that minimises OD-EquiDyn's mean-square contraction
    ``E||W(k) x||^2 / ||x||^2`` (worst x orthogonal to 1) for ``n = 10`` (within 2 %)."""
    if answer is None:
        return not_yet(EX3, "a number eta in (0, 1]")
    if isinstance(answer, bool) or not isinstance(answer, numbers.Real) or not 0 < answer <= 1:
        return Verdict(False, EX3, "eta is a number in (0, 1].")
    expected = best_eta(ETA_N)
    hint = "Sweep eta on a fine grid (or differentiate the formula) and take the minimiser."
    if math.isclose(answer, 0.5, rel_tol=1e-3):
        hint = ("1/2 is the answer for very large n; at n = 10 the term (1 - 2/n) is far from "
                "1: minimise the exact expression.")
    elif math.isclose(answer, 1.0, rel_tol=1e-3):
        hint = ("eta = 1 jumps fully to the peer's value and contracts only by 1 - 2/n: "
                "a smaller eta does better.")
    return _close(EX3, float(answer), expected, 0.02, hint)
