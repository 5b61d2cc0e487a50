r"""Checks for chapter 08, asynchrony and stragglers.

Each check works the right value out itself, from first principles and without declearn's
algorithms, and answers with a :class:`~declearn.exercises.base.Verdict` (a hint when the
answer is wrong, "not yet" while it is None):

* :func:`check_first_slow_step`: synchronous neighbor averaging on a ring of n ranks, rank
  ``straggler`` sleeps at every step. A rank waits for its neighbors' messages of the same
  step, so the delay travels one hop per step: the first slow step of rank r (counting from
  1) is its hop distance to the straggler (1 for the straggler itself), computed here by a
  breadth-first search on the ring.
* :func:`check_gossip_exchanges`: randomized pairwise gossip on a ring of n nodes (Boyd et
  al. 2006); the number of exchanges k after which the bound ``lambda_2(E[W])^k`` falls to
  ``eps``, with ``E[W]`` built here from its definition.
* :func:`check_solo_speedup`: eager-SGD's solo allreduce with staleness S, one straggler
  per step drawn uniformly from n ranks, delays much longer than a normal step. A window of
  S steps ends with a synchronous round that waits for the rank with the most delays in the
  window, so the speedup over a synchronous allreduce is ``S / E[max_i N_i]`` where
  ``(N_1, ..., N_n)`` is multinomial(S; 1/n, ..., 1/n); the expectation is computed exactly
  here by summing over every way of splitting S steps among n ranks.
"""

from __future__ import annotations

import math
import numbers
from collections import deque

import numpy as np

from declearn.exercises.base import Verdict, check_close

__all__ = [
    "check_first_slow_step",
    "check_gossip_exchanges",
    "check_solo_speedup",
    "expected_max_count",
    "gossip_exchanges",
    "ring_distance",
    "solo_speedup",
]


def _not_yet(exercise: str, what: str) -> Verdict:
    return Verdict(False, exercise, f"no answer yet: replace None with {what}.")


def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _near(a: float, b: float, rtol: float) -> bool:
    return abs(a - b) <= rtol * abs(b)


# ---------------------------------------------------------------------- exercise 1
def ring_distance(n: int, source: int, target: int) -> int:
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
    """Exercise 1: at which step (counting from 1) does ``rank`` take its first slow step
    when ``straggler`` sleeps at every step of synchronous neighbor averaging on a ring of
    ``n`` ranks?"""
    ex = "ch08 ex1: first slow step"
    if answer is None:
        return _not_yet(ex, "a step number (an integer, the first step is 1)")
    if not _is_number(answer) or float(answer) != int(answer):
        return Verdict(False, ex, f"expected a whole step number, got {answer!r}.")
    a = int(answer)
    hops = ring_distance(n, straggler, rank)
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


def expected_max_count(n: int, steps: int) -> float:
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


def solo_speedup(n: int, staleness: int, step: float = 0.0, delay: float = 1.0) -> float:
    """Wall time of a synchronous allreduce over solo's, per window of ``staleness`` steps:
    ``S (c + d) / (S c + d E[max_i N_i])`` with one random straggler per step."""
    S = staleness
    return S * (step + delay) / (S * step + delay * expected_max_count(n, S))


def check_solo_speedup(answer, *, n: int = 8, staleness: int = 8) -> Verdict:
    """Exercise 3: the speedup of solo over a synchronous allreduce, one random straggler
    per step among ``n`` ranks, staleness ``S``, delays much longer than a step (c -> 0).
    Accepted within 2% (a Monte Carlo estimate is fine)."""
    ex = "ch08 ex3: solo speedup"
    if answer is None:
        return _not_yet(ex, "a speedup (a number such as 1.5)")
    if not _is_number(answer) or not math.isfinite(answer):
        return Verdict(False, ex, f"expected a number, got {answer!r}.")
    want = solo_speedup(n, staleness)
    a = float(answer)
    if _near(a, want, 0.02):
        return check_close(ex, a, want, rtol=0.02)
    S = staleness
    if _near(a, S, 0.02):
        hint = ("That assumes nobody ever waits. Every S-th round is synchronous: it waits "
                "for the rank that collected the most delays in the window.")
    elif _near(a, 1.0, 0.02):
        hint = ("1 is the answer for a persistent straggler (the same rank every step). "
                "Here the straggler changes every step.")
    elif _near(a, n, 0.02):
        hint = ("The speedup is S divided by the expected largest number of delays that any "
                "one rank collects in a window of S steps.")
    elif n != 4 and _near(a, solo_speedup(4, staleness), 0.02):
        hint = f"That is the value for the 4 ranks of the engines; the question asks n = {n}."
    elif a < 1:
        hint = "Solo never makes a step slower in this model: the speedup is at least 1."
    else:
        hint = ("Per window of S steps: synchronous pays S d (c -> 0); solo pays d times the "
                "largest count of delays of one rank. Estimate its mean with "
                "rng.multinomial(S, [1/n] * n, size=...).")
    return Verdict(False, ex, f"{a:g} is not it. {hint}")


# ---------------------------------------------------------------------- exercise 2
def _ring_expected_exchange(n: int) -> np.ndarray:
    """``E[W] = I - D/(2n) + (P + P^T)/(2n)`` on a ring: node i wakes with probability 1/n
    and picks each of its two neighbors with probability 1/2."""
    P = np.zeros((n, n))
    for i in range(n):
        for j in {(i - 1) % n, (i + 1) % n} - {i}:
            P[i, j] = 1.0 / len({(i - 1) % n, (i + 1) % n} - {i})
    S = P + P.T
    return np.eye(n) - np.diag(S.sum(1)) / (2 * n) + S / (2 * n)


def gossip_exchanges(n: int, eps: float) -> float:
    """``ln(1/eps) / ln(1/lambda_2(E[W]))`` for pairwise gossip on a ring of n nodes."""
    lam2 = np.sort(np.linalg.eigvalsh(_ring_expected_exchange(n)))[-2]
    return math.log(1 / eps) / math.log(1 / lam2)


def check_gossip_exchanges(answer, *, n: int = 8, eps: float = 1e-6) -> Verdict:
    """Exercise 2: the number of exchanges (all nodes together) after which Boyd's bound
    ``lambda_2(E[W])^k`` on the expected squared consensus error falls below ``eps``, on a
    ring of ``n`` nodes. The real-valued solution or its ceiling are accepted (0.5%)."""
    ex = "ch08 ex2: gossip exchanges"
    if answer is None:
        return _not_yet(ex, "a number of exchanges")
    if not _is_number(answer) or not math.isfinite(answer):
        return Verdict(False, ex, f"expected a number, got {answer!r}.")
    want = gossip_exchanges(n, eps)
    a = float(answer)
    if _near(a, want, 0.005) or _near(a, math.ceil(want), 0.005):
        return check_close(ex, a, want, rtol=0.006)
    lam2 = np.sort(np.linalg.eigvalsh(_ring_expected_exchange(n)))[-2]
    W_sync = np.eye(n) / 3  # the synchronous ring, Metropolis weights 1/3
    for i in range(n):
        for j in ((i - 1) % n, (i + 1) % n):
            W_sync[i, j] = 1 / 3
    rho = np.linalg.norm(W_sync - 1 / n, 2)
    if _near(a, want / n, 0.02) or _near(a, math.ceil(want) / n, 0.02):
        hint = "That is clock ticks per node; the bound counts exchanges of all nodes."
    elif _near(a, math.log(1 / eps) / (1 - lam2), 0.01):
        hint = "Close, but 1 - lambda_2 only approximates ln(1/lambda_2); use the logarithm."
    elif _near(a, math.log(1 / eps) / math.log(1 / rho), 0.02) or \
            _near(a, math.log(1 / eps) / (2 * math.log(1 / rho)), 0.02):
        hint = ("That uses rho of the synchronous mixing matrix. One gossip exchange has its "
                "own expected matrix E[W]; its second largest eigenvalue sets the rate.")
    elif a < 0:
        hint = "A count of exchanges is positive: watch the signs of the logarithms."
    else:
        hint = ("Solve lambda_2^k = eps for k, with lambda_2 the second largest eigenvalue of "
                "E[W] = I - D/(2n) + (P + P^T)/(2n).")
    return Verdict(False, ex, f"{a:g} is not it. {hint}")
