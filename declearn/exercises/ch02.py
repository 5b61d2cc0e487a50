r"""Checks for chapter 02, *Topologies and the spectral gap*.

Each check recomputes the right value here with a closed form or plain numpy (not with
declearn.topology, so a bug there cannot make a wrong answer look right) and answers with a
:class:`~declearn.exercises.Verdict`: a hint when the answer is wrong, "not yet" when it is
still ``None``.

* :func:`check_exact_sizes` (02.1): the n in 2..40 for which tau = ceil(log2 n) steps of the
  one-peer exponential graph average exactly (a set, accepted exactly).
* :func:`check_exponential_messages` (02.2): messages each node sends before the static
  exponential graph with n = 1000 is guaranteed to be within 1e-6 of the average: tau times
  the smallest whole number of steps with ``rho^k <= 1e-6`` (690), or tau times the whole
  number of steps the estimate ``ln(1/eps) / (1 - rho)`` asks for (760), which the exercise
  allows; each accepted exactly.
* :func:`check_best_eta` (02.3): the eta that makes OD-EquiDyn contract fastest in mean square
  for n = 10, ``n / (2 (n - 1))``, to within 1e-3 (what a sweep with step 1e-3 finds; every
  plausible wrong answer is at least 5e-3 away).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from declearn.exercises.base import Verdict, not_yet

__all__ = [
    "check_best_eta",
    "check_exact_sizes",
    "check_exponential_messages",
]

EX1 = "02.1 exact one-peer sizes"
EX2 = "02.2 messages of the exponential graph"
EX3 = "02.3 best eta for EquiDyn"

#: Exercise 02.1 looks at every n in this range (both ends included).
_EXACT_SIZES_RANGE = (2, 40)
#: Exercise 02.2: network size and target accuracy.
_MESSAGES_N = 1000
_MESSAGES_EPS = 1e-6
#: Exercise 02.3: network size, and how far from the minimiser an answer may be.
_ETA_N = 10
_ETA_ATOL = 1e-3


def _wrong(exercise: str, answer, hint: str) -> Verdict:
    """A "not yet" with a hint, and without the distance to the answer."""
    return Verdict(False, exercise, f"{answer!r} is not it. {hint}")


def _number(answer) -> float | None:
    """A float from a real number (not a bool, not a string), else None."""
    if isinstance(answer, bool) or not isinstance(answer, numbers.Real):
        return None
    answer = float(answer)
    return answer if math.isfinite(answer) else None


# ---------------------------------------------------------------------- 02.1
def _tau(n: int) -> int:
    """``ceil(log2 n)`` in integer arithmetic (1 for n = 2)."""
    return max(1, (n - 1).bit_length())


def _one_peer_product(n: int) -> np.ndarray:
    """``W(tau-1) ... W(0)`` with ``W(k) = (I + S^(2^k))/2``, S the cyclic shift (dense)."""
    eye = np.eye(n)
    prod = eye
    for k in range(_tau(n)):
        shift = np.roll(eye, (1 << k) % n, axis=0)  # (S^h x)_i = x_{i-h}
        prod = 0.5 * (eye + shift) @ prod
    return prod


def _exact_sizes(lo: int = _EXACT_SIZES_RANGE[0], hi: int = _EXACT_SIZES_RANGE[1]) -> set[int]:
    """The n in ``lo..hi`` whose one-peer exponential product of tau steps equals ``11^T/n``."""
    return {n for n in range(lo, hi + 1) if np.abs(_one_peer_product(n) - 1.0 / n).max() < 1e-12}


def check_exact_sizes(answer) -> Verdict:
    """Exercise 02.1: ``answer`` is the set (or list) of the n in 2..40 for which the product
    of tau = ceil(log2 n) consecutive one-peer exponential steps is exactly ``11^T/n``."""
    if answer is None:
        return not_yet(EX1, "a set of network sizes, e.g. {3, 5}")
    try:
        given = {int(v) for v in answer if float(v) == int(v)}
        whole = len(given) == len(set(answer)) and not isinstance(answer, (str, bytes))
    except (TypeError, ValueError):
        whole = False
    if not whole:
        return Verdict(False, EX1, "give a set (or list) of whole numbers, e.g. {3, 5}.")
    lo, hi = _EXACT_SIZES_RANGE
    outside = sorted(v for v in given if not lo <= v <= hi)
    if outside:
        return Verdict(False, EX1, f"only n from {lo} to {hi} are asked for; remove {outside}.")
    right = _exact_sizes()
    if given == right:
        return Verdict(True, EX1, f"{len(right)} sizes in {lo}..{hi}. What do they have "
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


# ---------------------------------------------------------------------- 02.2
def _exponential_rho(n: int) -> float:
    """``||W - J||_2`` of the static exponential graph, from the eigenvalues of its circulant
    matrix (weights 1/(tau+1) on the shifts 0 and 2^k, k < tau). W is normal, so its 2-norm
    on the complement of 1 is the largest |eigenvalue| other than lambda_0 = 1."""
    tau = _tau(n)
    c = np.zeros(n)
    c[0] = 1.0 / (tau + 1)
    for k in range(tau):
        c[(1 << k) % n] += 1.0 / (tau + 1)
    lam = np.fft.fft(c)
    return float(np.abs(lam[1:]).max())


def _steps(log_factor: float, eps: float) -> int:
    """``ceil(ln(1/eps) / log_factor)``: whole steps for a per-step decay ``exp(-log_factor)``."""
    return math.ceil(math.log(1.0 / eps) / log_factor)


def check_exponential_messages(answer) -> Verdict:
    """Exercise 02.2: the number of messages each node sends before the bound
    ``||x^k - xbar|| <= rho^k ||x^0 - xbar||`` of the static exponential graph with
    ``n = 1000`` guarantees a relative error of at most ``1e-6``: ``tau * ceil(ln(1/eps) /
    ln(1/rho))``. The estimate the exercise allows, ``tau * ceil(ln(1/eps) / (1 - rho))``, is
    accepted too; both exactly (a node sends whole messages, in whole steps)."""
    if answer is None:
        return not_yet(EX2, "a number of messages per node")
    got = _number(answer)
    if got is None:
        return Verdict(False, EX2, "give one number: messages per node, all steps together.")
    n, eps = _MESSAGES_N, _MESSAGES_EPS
    tau, rho = _tau(n), _exponential_rho(n)
    steps = _steps(math.log(1.0 / rho), eps)
    estimate = _steps(1.0 - rho, eps)
    if got == tau * steps:
        return Verdict(True, EX2, "tau messages per step, times the fewest whole steps with "
                                  "rho^k <= 1e-6.")
    if got == tau * estimate:
        return Verdict(True, EX2, "with the estimate ln(1/eps)/(1 - rho) steps (a few more "
                                  "than the exact ln(1/eps)/ln(1/rho)).")
    if got in (steps, estimate):
        hint = ("That looks like a number of steps; in each step every node sends one message "
                "to each out-neighbour: how many is that for n = 1000?")
    elif got != int(got):
        hint = ("A node sends whole messages in whole steps: round the number of steps up "
                "before multiplying.")
    elif got in ((tau - 1) * steps, (tau - 1) * estimate):
        hint = "Count the out-neighbours again: tau = ceil(log2 n), not floor(log2 n)."
    elif got in ((tau + 1) * steps, (tau + 1) * estimate):
        hint = "A node does not send a message to itself: count only its out-neighbours."
    elif got in (tau * _steps(2 * math.log(1.0 / rho), eps), tau * _steps(2 * (1 - rho), eps)):
        hint = ("That makes the squared error 1e-6; the bound is on the norm, so rho^k itself "
                "must reach 1e-6.")
    elif got == tau * (steps - 1):
        hint = "One step too few: rho^k is still above 1e-6 there (round up, not down)."
    elif got < 2 * tau:
        hint = ("That is about one step's worth; how many steps does rho^k <= 1e-6 take? "
                "(use rho = 1 - 2/(tau + 1) or topology.rho)")
    elif got > 100 * tau * steps:
        hint = ("Far too many: is your rho the exponential graph's (about 0.82 here), not the "
                "ring's?")
    else:
        hint = "Multiply the number of steps by the messages each node sends per step."
    return _wrong(EX2, answer, hint)


# ---------------------------------------------------------------------- 02.3
def _od_equidyn_mean_square(n: int, eta: float) -> float:
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


def _best_eta(n: int = _ETA_N) -> float:
    """The minimiser of ``(1 - eta)^2 + eta^2 (1 - 2/n)``: ``1 / (2 - 2/n) = n / (2 (n - 1))``."""
    return n / (2.0 * (n - 1))


def check_best_eta(answer) -> Verdict:
    """Exercise 02.3: the eta in (0, 1] that minimises OD-EquiDyn's mean-square contraction
    ``E||W(k) x||^2 / ||x||^2`` (worst x orthogonal to 1) for ``n = 10``, to within 1e-3."""
    if answer is None:
        return not_yet(EX3, "a number eta in (0, 1]")
    got = _number(answer)
    if got is None or not 0 < got <= 1:
        return Verdict(False, EX3, "eta is a number in (0, 1].")
    n = _ETA_N
    expected = _best_eta(n)
    if abs(got - expected) <= _ETA_ATOL:
        return Verdict(True, EX3, "the minimiser of (1 - eta)^2 + eta^2 (1 - 2/n) at n = 10.")
    near = lambda v: abs(got - v) <= _ETA_ATOL
    if near(0.5):
        hint = ("1/2 is the answer for very large n; at n = 10 the term (1 - 2/n) is far from "
                "1: minimise the exact expression.")
    elif near(1.0):
        hint = ("eta = 1 jumps fully to the peer's value and contracts only by 1 - 2/n: "
                "a smaller eta does better.")
    elif near(_best_eta(n - 1)) or near(_best_eta(n + 1)):
        hint = "That is the minimiser for another network size: use n = 10."
    elif near(0.53):
        hint = ("0.53 is what the paper's training scripts use; here the question is the "
                "exact minimiser for n = 10.")
    elif abs(got - expected) < 0.02:
        hint = ("Your sweep is too coarse: use a step of 1e-3 or finer, or set the derivative "
                "of the formula to zero.")
    else:
        hint = ("Sweep eta on a fine grid (step 1e-3) or differentiate the formula, and take "
                "the minimiser.")
    return _wrong(EX3, answer, hint)
