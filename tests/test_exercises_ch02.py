"""The exercise checks of chapter 02 (topologies).

For every check: the right answer passes, a written-out list of plausible wrong answers
(each computed here, independently of the check) is refused with a hint that does not contain
the answer, and ``None`` (what the notebook ships) gives "not yet" without raising. The values
the checks compute with plain numpy are also compared with what declearn computes, so the two
cannot drift apart silently.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from declearn.exercises import Verdict, ch02
from declearn.topology import (
    exponential,
    mean_square_contraction,
    od_equidyn,
    one_peer_exponential,
    product,
)

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


def test_ch02_public_names_are_the_checks():
    assert set(ch02.__all__) == {"check_best_eta", "check_exact_sizes",
                                 "check_exponential_messages"}


# ------------------------------------------------------------------------- 02.1
def test_ch02_exact_sizes_agree_with_declearn():
    ours = {n for n in range(2, 41)
            if np.abs(product(one_peer_exponential(n)) - 1.0 / n).max() < 1e-12}
    assert ch02._exact_sizes() == ours == {2, 4, 8, 16, 32}


def test_ch02_exact_sizes_check():
    assert ch02.check_exact_sizes({2, 4, 8, 16, 32})
    assert ch02.check_exact_sizes([32, 16, 8, 4, 2])  # any iterable, any order
    assert ch02.check_exact_sizes(np.array([2, 4, 8, 16, 32]))
    _fails_with_hint(ch02.check_exact_sizes({4, 8, 16, 32}))  # forgot n = 2
    _fails_with_hint(ch02.check_exact_sizes({2, 4, 6, 8, 16, 32}))  # an even, non-power n
    _fails_with_hint(ch02.check_exact_sizes(set(range(2, 41))))
    assert "remove" in ch02.check_exact_sizes({2, 4, 64}).message
    assert not ch02.check_exact_sizes(3.5)  # not iterable: a verdict, no exception


def test_ch02_exact_sizes_refuses_plausible_wrong_answers():
    powers = {2 ** k for k in range(1, 6)}
    wrong = {
        "powers of 2 from 4": powers - {2},
        "powers of 2 with 1": powers | {1},
        "powers of 2 up to 16": powers - {32},
        "powers of 2 and 64": powers | {64},
        "every even n": set(range(2, 41, 2)),
        "one more than the powers": {p + 1 for p in powers},
        "n with rho <= 0.5 (a small rate, not exact)": {n for n in range(2, 41)
                                             if one_peer_exponential(n).rho <= 0.5 + 1e-9},
        "fractional sizes": [2.5, 4, 8, 16, 32],
        "a string": "2, 4, 8, 16, 32",
    }
    for label, value in wrong.items():
        assert not ch02.check_exact_sizes(value), label


# ------------------------------------------------------------------------- 02.2
def test_ch02_messages_agree_with_declearn():
    topo = exponential(1000)
    assert math.isclose(ch02._exponential_rho(1000), topo.rho, rel_tol=1e-12)
    assert math.isclose(topo.rho, 1 - 2 / 11, rel_tol=1e-12)  # Ying et al., even n
    steps = math.ceil(math.log(1e6) / math.log(1 / topo.rho))
    assert topo.degree * steps == 690


def test_ch02_messages_check():
    assert ch02.check_exponential_messages(690)
    assert ch02.check_exponential_messages(690.0)
    assert ch02.check_exponential_messages(np.int64(690))
    rho = exponential(1000).rho
    # the 1/(1 - rho) estimate the exercise allows: its own whole number of steps, times tau
    assert ch02.check_exponential_messages(10 * math.ceil(math.log(1e6) / (1 - rho)))
    steps_only = ch02.check_exponential_messages(69)
    _fails_with_hint(steps_only, not_containing=("690",))
    assert "number of steps" in steps_only.message
    _fails_with_hint(ch02.check_exponential_messages(10), not_containing=("690",))
    ring_like = ch02.check_exponential_messages(2e6)
    _fails_with_hint(ring_like, not_containing=("690",))
    assert "Far too many" in ring_like.message
    assert not ch02.check_exponential_messages("690")
    assert not ch02.check_exponential_messages(True)


def test_ch02_messages_refuses_plausible_wrong_answers():
    n, eps = 1000, 1e-6
    tau = math.ceil(math.log2(n))                                   # 10
    rho = 1 - 2 / (tau + 1)                                         # 9/11 (n even)
    exact = math.log(1 / eps) / math.log(1 / rho)                   # 68.85 steps
    estimate = math.log(1 / eps) / (1 - rho)                        # 75.98 steps
    wrong = {
        "steps, not messages": math.ceil(exact),
        "estimated steps, not messages": math.ceil(estimate),
        "floor(log2 n) messages per step (the 12 % band let it pass)": 9 * math.ceil(exact),
        "floor(log2 n) with the estimate": 9 * math.ceil(estimate),
        "tau + 1 messages per step (self counted)": 11 * math.ceil(exact),
        "tau + 1 with the estimate": 11 * math.ceil(estimate),
        "steps not rounded up": tau * exact,
        "estimate not rounded up": tau * estimate,
        "one step too few": tau * math.floor(exact),
        "squared error to 1e-6": tau * math.ceil(exact / 2),
        "estimate for the squared error": tau * math.ceil(estimate / 2),
        "rho of tau = 9": tau * math.ceil(math.log(1 / eps) / math.log(1 / (1 - 2 / 10))),
        "log10 on one side": tau * math.ceil(math.log10(1 / eps) / math.log(1 / rho)),
        "CECA's count": tau,
        "one more step": tau * (math.ceil(exact) + 1),
    }
    for label, value in wrong.items():
        v = ch02.check_exponential_messages(value)
        _fails_with_hint(v, not_containing=("690",))
        assert "760" not in v.message, (label, v)


# ------------------------------------------------------------------------- 02.3
def test_ch02_best_eta_agrees_with_declearn():
    n = 10
    eta = ch02._best_eta(n)
    assert math.isclose(eta, 5 / 9, rel_tol=1e-12)
    for e in (0.3, 0.5, eta, 0.8, 1.0):
        dense = ch02._od_equidyn_mean_square(n, e)
        assert math.isclose(dense, (1 - e) ** 2 + e ** 2 * (1 - 2 / n), rel_tol=1e-9)
        assert math.isclose(dense, mean_square_contraction(od_equidyn(n, eta=e)), rel_tol=1e-9)
    grid = np.linspace(0.05, 1.0, 96)
    assert all(ch02._od_equidyn_mean_square(n, e) >= ch02._od_equidyn_mean_square(n, eta) - 1e-12
               for e in grid)


def test_ch02_best_eta_check():
    assert ch02.check_best_eta(10 / 18)
    assert ch02.check_best_eta(0.556)  # the solution's sweep, step 1e-3
    etas = np.linspace(0.01, 1, 991)
    sweep = etas[np.argmin([(1 - e) ** 2 + e ** 2 * (1 - 2 / 10) for e in etas])]
    assert ch02.check_best_eta(float(sweep))
    half = ch02.check_best_eta(0.5)
    _fails_with_hint(half, not_containing=("0.55", "10/18", "5/9"))
    assert "large n" in half.message
    _fails_with_hint(ch02.check_best_eta(1.0), not_containing=("0.55",))
    coarse = ch02.check_best_eta(0.56)  # a sweep with step 0.01 is too coarse now
    _fails_with_hint(coarse, not_containing=("0.55", "5/9"))
    assert "coarse" in coarse.message
    assert not ch02.check_best_eta(1.5)
    assert not ch02.check_best_eta(0)


def test_ch02_best_eta_refuses_plausible_wrong_answers():
    n = 10
    wrong = {
        "large-n value": 0.5,
        "the paper's training scripts": 0.53,
        "eta = 1": 1.0,
        "minimiser for n = 11": (n + 1) / (2 * n),
        "minimiser for n = 9": (n - 1) / (2 * (n - 2)),
        "1 / (2 - 1/n)": 1 / (2 - 1 / n),
        "1 / (1 + (1 - 2/n)^2)": 1 / (1 + (1 - 2 / n) ** 2),
        "the minimal contraction instead of eta": (1 - 5 / 9) ** 2 + (5 / 9) ** 2 * (1 - 2 / n),
        "sweep with step 0.01": 0.56,
        "sweep with step 0.05": 0.55,
    }
    for label, value in wrong.items():
        v = ch02.check_best_eta(value)
        _fails_with_hint(v, not_containing=("0.5556", "5/9", "10/18"))
        assert "correct" not in str(v), label
