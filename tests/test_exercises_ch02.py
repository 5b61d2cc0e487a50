"""The exercise checks of chapter 02 (topologies).

For every check: the right answer passes, typical wrong answers fail with a hint that does
not contain the answer, and ``None`` (what the notebook ships) gives "not yet" without
raising. The values the checks compute with plain numpy are also compared with what declearn
computes, so the two cannot drift apart silently.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from declearn.exercises import Verdict, ch02, ch05
from declearn.topology import (
    exponential,
    mean_square_contraction,
    od_equidyn,
    one_peer_exponential,
    product,
)

CHECKS = [
    ch02.check_exact_sizes, ch02.check_exponential_messages, ch02.check_best_eta,
    ch05.check_biased_limit, ch05.check_push_sum_matrix, ch05.check_weight_limit,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__module__[-4:] + "." + c.__name__)
def test_none_is_not_yet(check):
    verdict = check(None)
    assert isinstance(verdict, Verdict) and not verdict
    assert "not yet" in str(verdict) and "answer = None" in verdict.message


def _fails_with_hint(verdict: Verdict, *, not_containing=()) -> None:
    assert isinstance(verdict, Verdict) and not verdict, verdict
    assert len(verdict.message) > 20, verdict
    for text in not_containing:
        assert text not in verdict.message, f"the hint gives the answer away: {verdict}"


CHECKS = [
    ch02.check_exact_sizes, ch02.check_exponential_messages, ch02.check_best_eta,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__module__[-4:] + "." + c.__name__)
def test_none_is_not_yet(check):
    verdict = check(None)
    assert isinstance(verdict, Verdict) and not verdict
    assert "not yet" in str(verdict) and "answer = None" in verdict.message


def _fails_with_hint(verdict: Verdict, *, not_containing=()) -> None:
    assert isinstance(verdict, Verdict) and not verdict, verdict
    assert len(verdict.message) > 20, verdict
    for text in not_containing:
        assert text not in verdict.message, f"the hint gives the answer away: {verdict}"


# ------------------------------------------------------------------------- chapter 02
def test_ch02_exact_sizes_agree_with_declearn():
    lo, hi = ch02.EXACT_SIZES_RANGE
    ours = {n for n in range(lo, hi + 1)
            if np.abs(product(one_peer_exponential(n)) - 1.0 / n).max() < 1e-12}
    assert ch02.exact_sizes() == ours == {2, 4, 8, 16, 32}


def test_ch02_exact_sizes_check():
    assert ch02.check_exact_sizes({2, 4, 8, 16, 32})
    assert ch02.check_exact_sizes([32, 16, 8, 4, 2])  # any iterable, any order
    assert ch02.check_exact_sizes(np.array([2, 4, 8, 16, 32]))
    _fails_with_hint(ch02.check_exact_sizes({4, 8, 16, 32}))  # forgot n = 2
    _fails_with_hint(ch02.check_exact_sizes({2, 4, 6, 8, 16, 32}))  # an even, non-power n
    _fails_with_hint(ch02.check_exact_sizes(set(range(2, 41))))
    assert "remove" in ch02.check_exact_sizes({2, 4, 64}).message
    assert not ch02.check_exact_sizes(3.5)  # not iterable: a verdict, no exception


def test_ch02_messages_agree_with_declearn():
    n, eps = ch02.MESSAGES_N, ch02.MESSAGES_EPS
    topo = exponential(n)
    assert math.isclose(ch02._exponential_rho(n), topo.rho, rel_tol=1e-12)
    steps = math.ceil(math.log(1 / eps) / math.log(1 / topo.rho))
    assert ch02.exponential_messages() == topo.degree * steps == 690


def test_ch02_messages_check():
    assert ch02.check_exponential_messages(690)
    assert ch02.check_exponential_messages(690.0)
    n, eps = ch02.MESSAGES_N, ch02.MESSAGES_EPS
    rho = exponential(n).rho
    # the 1/(1 - rho) estimate is accepted too
    assert ch02.check_exponential_messages(10 * math.log(1 / eps) / (1 - rho))
    steps_only = ch02.check_exponential_messages(69)
    _fails_with_hint(steps_only, not_containing=("690",))
    assert "number of steps" in steps_only.message
    _fails_with_hint(ch02.check_exponential_messages(10), not_containing=("690",))
    ring_like = ch02.check_exponential_messages(2e6)
    _fails_with_hint(ring_like, not_containing=("690",))
    assert "too large" in ring_like.message
    assert not ch02.check_exponential_messages("690")
    assert not ch02.check_exponential_messages(True)


def test_ch02_best_eta_agrees_with_declearn():
    n = ch02.ETA_N
    eta = ch02.best_eta()
    assert math.isclose(eta, n / (2 * (n - 1)), rel_tol=1e-6)  # from the closed form
    for e in (0.3, 0.5, eta, 0.8, 1.0):
        ours = ch02.od_equidyn_mean_square(n, e)
        assert math.isclose(ours, mean_square_contraction(od_equidyn(n, eta=e)), rel_tol=1e-9)
    grid = np.linspace(0.05, 1.0, 96)
    assert all(ch02.od_equidyn_mean_square(n, e) >= ch02.od_equidyn_mean_square(n, eta) - 1e-12
               for e in grid)


def test_ch02_best_eta_check():
    assert ch02.check_best_eta(10 / 18)
    assert ch02.check_best_eta(0.56)  # a sweep with step 0.01
    half = ch02.check_best_eta(0.5)
    _fails_with_hint(half, not_containing=("0.55", "10/18", "5/9"))
    assert "large n" in half.message
    _fails_with_hint(ch02.check_best_eta(1.0), not_containing=("0.55",))
    assert not ch02.check_best_eta(1.5)
    assert not ch02.check_best_eta(0)
