r"""Checks for chapter 09, asynchrony and stragglers.

Each check works the right value out itself, from first principles and without declearn's
algorithms, and answers with a :class:`~declearn.exercises.base.Verdict` (a hint when the
answer is wrong, "not yet" while it is None). Every question has one exact answer:

* :func:`check_first_slow_step`: synchronous neighbor averaging on a ring of n ranks, rank
  ``straggler`` sleeps at every step. A rank waits for its neighbors' messages of the same
  step, so the delay travels one hop per step: the first slow step of rank r (counting from
  1) is its hop distance to the straggler (1 for the straggler itself), computed here by a
  breadth-first search on the ring. A whole number, accepted exactly.
* :func:`check_gossip_exchanges`: randomized pairwise gossip on a ring of n nodes (Boyd et
  al. 2006); the smallest whole number of exchanges k with ``lambda_2(E[W])^k <= eps``, with
  ``E[W]`` built here from its definition. A whole number, accepted exactly.
* :func:`check_solo_speedup`: eager-SGD's solo allreduce with staleness S, one straggler
  per step drawn uniformly from n ranks, delays much longer than a normal step. A window of
  S steps ends with a synchronous round that waits for the rank with the most delays in the
  window, so the speedup over a synchronous allreduce is ``S / E[max_i N_i]`` where
  ``(N_1, ..., N_n)`` is multinomial(S; 1/n, ..., 1/n); the expectation is computed exactly
  here by summing over every way of splitting S steps among n ranks. The exercise also allows
  one sampling estimate, spelled out in :data:`SOLO_ESTIMATE`; it is accepted as that exact
  formula (same generator, seed and sample size), not as a band around the answer.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from declearn.exercises.base import Verdict, is_number, not_yet

__all__ = [
    "SOLO_ESTIMATE",
    "check_first_slow_step",
    "check_gossip_exchanges",
    "check_solo_speedup",
]

#: Exercise 09.3: the sampling estimate the exercise allows, spelled out: ``S`` divided by the
#: mean of ``np.random.default_rng(seed).multinomial(S, [1 / n] * n, size=size).max(1)``.
SOLO_ESTIMATE = {"seed": 0, "size": 200_000}

_RTOL = 1e-9  # float round-off only


def _same(a: float, b: float, rtol: float = _RTOL) -> bool:
    return math.isclose(a, b, rel_tol=rtol, abs_tol=1e-12)


def _whole(answer) -> int | None:
    """``answer`` as an int if it is a whole number (3 or 3.0), else None."""
    if not is_number(answer) or float(answer) != math.floor(answer):
        return None
    return int(answer)


# ---------------------------------------------------------------------- exercise 1
def _ring_distance(n: int, source: int, target: int) -> int:
    """Hop distance from ``source`` to ``target`` on a ring of n nodes (breadth-first)."""
    dist = {source: 0}
    queue = deque([source])
    while queue:
        i = queue.popleft()
        for j in ((i - 1) % n, (i + 1) % n):
            if j not in dist:
                dist[j] = dist[i] + 1
                queue.append(j)
    return dist[target]


def check_first_slow_step(answer, *, n: int = 8, straggler: int = 0, rank: int = 5) -> Verdict:
    """Exercise 09.1: at which step (counting from 1) does ``rank`` take its first slow step
    when ``straggler`` sleeps at every step of synchronous neighbor averaging on a ring of
    ``n`` ranks? One whole number."""
    ex = "09.1 first slow step"
    if answer is None:
        return not_yet(ex, "a step number (an integer, the first step is 1)")
    a = _whole(answer)
    if a is None:
        return Verdict(False, ex, f"expected a whole step number, got {answer!r}.")
    hops = _ring_distance(n, straggler, rank)
    right = max(hops, 1)
    if a == right:
        return Verdict(True, ex, "the delay travels one hop per step, so a rank h hops "
                                 "away first waits at step h.")
    if a == right - 1:
        hint = ("One step too early: count steps from 1. A direct neighbor of the straggler "
                "already waits during step 1.")
    elif a == right + 1:
        hint = "One step too late: a direct neighbor of the straggler waits during step 1."
    elif a == n - hops and hops != n - hops:
        hint = "The delay goes both ways around the ring: it arrives by the shorter way."
    elif a == 1:
        hint = ("At step 1 only the straggler's neighbors wait for it. Rank "
                f"{rank} waits for its own neighbors, who are fast at step 1 and slow later.")
    else:
        hint = ("Each rank waits only for its neighbors' messages of the same step; follow "
                "the delay one hop at a time from the straggler.")
    return Verdict(False, ex, f"{a} is not it. {hint}")


# ---------------------------------------------------------------------- exercise 3
def _compositions(total: int, parts: int):
    """Every tuple of ``parts`` non-negative integers summing to ``total``."""
    if parts == 1:
        yield (total,)
        return
    for first in range(total + 1):
        for rest in _compositions(total - first, parts - 1):
            yield (first,) + rest


def _expected_max_count(n: int, steps: int) -> float:
    """``E[max_i N_i]`` for ``(N_1..N_n)`` multinomial(steps; 1/n each): the expected number
    of delays of the unluckiest of n ranks when each of ``steps`` steps delays one rank drawn
    uniformly. Exact (a sum over compositions; fine for the chapter's sizes)."""
    if n == 1:
        return float(steps)
    log_norm = math.lgamma(steps + 1) - steps * math.log(n)
    total = 0.0
    for counts in _compositions(steps, n):
        log_p = log_norm - sum(math.lgamma(c + 1) for c in counts)
        total += max(counts) * math.exp(log_p)
    return total


def _solo_speedup(n: int, staleness: int, step: float = 0.0, delay: float = 1.0) -> float:
    """Wall time of a synchronous allreduce over solo's, per window of ``staleness`` steps:
    ``S (c + d) / (S c + d E[max_i N_i])`` with one random straggler per step."""
    S = staleness
    return S * (step + delay) / (S * step + delay * _expected_max_count(n, S))


def _solo_estimate(n: int, staleness: int, seed: int, size: int) -> float:
    """The exercise's sampling estimate of ``S / E[max_i N_i]``, exactly as spelled out."""
    counts = np.random.default_rng(seed).multinomial(staleness, [1 / n] * n, size=size)
    return staleness / counts.max(1).mean()


def check_solo_speedup(answer, *, n: int = 8, staleness: int = 8) -> Verdict:
    """Exercise 09.3: the speedup of solo over a synchronous allreduce, one random straggler
    per step among ``n`` ranks, staleness ``S``, delays much longer than a step (c -> 0).
    Accepted: the exact value, or the sampling estimate of :data:`SOLO_ESTIMATE` (that
    formula exactly), each up to float round-off."""
    ex = "09.3 solo speedup"
    if answer is None:
        return not_yet(ex, "a speedup (a number such as 1.5)")
    if not is_number(answer):
        return Verdict(False, ex, f"expected a number, got {answer!r}.")
    S = staleness
    want = _solo_speedup(n, S)
    estimate = _solo_estimate(n, S, **SOLO_ESTIMATE)
    a = float(answer)
    if _same(a, want) or _same(a, estimate):
        return Verdict(True, ex, "S over the expected largest number of delays one rank "
                                 "collects in a window.")
    counts = np.random.default_rng(SOLO_ESTIMATE["seed"]).multinomial(
        S, [1 / n] * n, size=SOLO_ESTIMATE["size"]).max(1)
    e_max = _expected_max_count(n, S)
    if _same(a, S, 1e-6):
        hint = ("That assumes nobody ever waits. Every S-th round is synchronous: it waits "
                "for the rank that collected the most delays in the window.")
    elif _same(a, 1.0, 1e-6):
        hint = ("1 is the answer for a persistent straggler (the same rank every step). "
                "Here the straggler changes every step.")
    elif _same(a, e_max, 1e-3):
        hint = "That is the expected largest count itself; the speedup is S divided by it."
    elif _same(a, float((S / counts).mean()), 1e-6):
        hint = ("Average the largest count first, then divide: times add up over windows, "
                "so the mean of S / max is not the speedup.")
    elif n != 4 and _same(a, _solo_speedup(4, S), 1e-3):
        hint = f"That is the value for the 4 ranks of the engines; the question asks n = {n}."
    elif any(_same(a, _solo_speedup(n, S, 0.01, d), 1e-3) for d in (0.1, 1.0)):
        hint = ("That is the formula with a finite delay d (a simulator run); the question "
                "takes c -> 0, i.e. d much longer than a normal step.")
    elif a < 1:
        hint = "Solo never makes a step slower in this model: the speedup is at least 1."
    elif abs(a - want) <= 0.02 * want:
        hint = ("Close. Either compute E[max_i N_i] exactly, or use the estimate the exercise "
                "spells out (its generator, seed and sample size), not another sample.")
    else:
        hint = ("Per window of S steps: synchronous pays S d (c -> 0); solo pays d times the "
                "largest count of delays of one rank. Estimate its mean with "
                "rng.multinomial(S, [1/n] * n, size=...).")
    return Verdict(False, ex, f"{a:g} is not it. {hint}")


# ---------------------------------------------------------------------- exercise 2
def _ring_expected_exchange(n: int) -> np.ndarray:
    """``E[W] = I - D/(2n) + (P + P^T)/(2n)`` on a ring: node i wakes with probability 1/n
    and picks each of its two neighbors with probability 1/2 (``D = diag_i sum_j (P_ij +
    P_ji)``)."""
    P = np.zeros((n, n))
    for i in range(n):
        neighbors = {(i - 1) % n, (i + 1) % n} - {i}
        for j in neighbors:
            P[i, j] = 1.0 / len(neighbors)
    S = P + P.T
    return np.eye(n) - np.diag(S.sum(1)) / (2 * n) + S / (2 * n)


def _lambda2(n: int) -> float:
    return float(np.sort(np.linalg.eigvalsh(_ring_expected_exchange(n)))[-2])


def _gossip_exchanges(n: int, eps: float) -> int:
    """The smallest whole k with ``lambda_2(E[W])^k <= eps`` on a ring of n nodes."""
    k = math.ceil(math.log(1 / eps) / math.log(1 / _lambda2(n)))
    return k - 1 if _lambda2(n) ** (k - 1) <= eps else k  # guard against round-off


def check_gossip_exchanges(answer, *, n: int = 8, eps: float = 1e-6) -> Verdict:
    """Exercise 09.2: the smallest whole number of exchanges k (all nodes together) with
    Boyd's bound ``lambda_2(E[W])^k`` on the expected squared consensus error at most
    ``eps``, on a ring of ``n`` nodes. One whole number."""
    ex = "09.2 gossip exchanges"
    if answer is None:
        return not_yet(ex, "a number of exchanges")
    if not is_number(answer):
        return Verdict(False, ex, f"expected a number, got {answer!r}.")
    want = _gossip_exchanges(n, eps)
    a = float(answer)
    if _whole(answer) == want:
        return Verdict(True, ex, "the smallest k with lambda_2(E[W])^k below the target.")
    lam2 = _lambda2(n)
    real = math.log(1 / eps) / math.log(1 / lam2)
    rho = (1 + 2 * math.cos(2 * math.pi / n)) / 3  # the synchronous ring, weights 1/3
    lam2_no_half = 1 - 2 * (1 - lam2)  # E[W] without the 1/2 of the pairwise average
    near = lambda v, tol=0.01: abs(a - v) <= tol * abs(v) or abs(a - math.ceil(v)) < 0.5
    if _same(a, real, 1e-6):
        hint = ("That solves lambda_2^k = eps over the reals; the question asks for the "
                "smallest whole number of exchanges that reaches the target.")
    elif a == want - 1:
        hint = "One too few: lambda_2^k is still above the target there."
    elif a == want + 1:
        hint = "One too many: the target is already reached one exchange earlier."
    elif near(real / n) or near(want / n):
        hint = "That is clock ticks per node; the bound counts exchanges of all nodes."
    elif near(math.log(1 / eps) / (1 - lam2)):
        hint = "Close, but 1 - lambda_2 only approximates ln(1/lambda_2); use the logarithm."
    elif near(2 * real):
        hint = ("The bound is on the squared error, so lambda_2^k itself must reach the "
                "target, not its square root.")
    elif near(math.log(1 / eps) / math.log(1 / lam2_no_half)):
        hint = ("Check E[W]: an exchange replaces two values by their average, so W_ij = I - "
                "(e_i - e_j)(e_i - e_j)^T / 2, and E[W] has 1/(2n), not 1/n.")
    elif near(math.log10(1 / eps) / math.log(1 / lam2)) or \
            near(math.log(1 / eps) / math.log10(1 / lam2)):
        hint = "Mixed logarithm bases: use the same base on both sides."
    elif near(math.log(1 / eps) / math.log(1 / rho)) or \
            near(math.log(1 / eps) / (2 * math.log(1 / rho))):
        hint = ("That uses rho of the synchronous mixing matrix. One gossip exchange has its "
                "own expected matrix E[W]; its second largest eigenvalue sets the rate.")
    elif a < 0:
        hint = "A count of exchanges is positive: watch the signs of the logarithms."
    else:
        hint = ("Find the smallest whole k with lambda_2^k <= eps, with lambda_2 the second "
                "largest eigenvalue of E[W] = I - D/(2n) + (P + P^T)/(2n).")
    return Verdict(False, ex, f"{a:g} is not it. {hint}")
