"""The exercise checks of chapters 02 (topologies) and 05 (directed and time-varying graphs).

For every check: the right answer passes, typical wrong answers fail with a hint that does
not contain the answer, and ``None`` (what the notebook ships) gives "not yet" without
raising. The values the checks compute with plain numpy are also compared with what declearn
computes (topologies, consensus runs), so the two cannot drift apart silently.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from declearn.algorithms import AverageConsensus, PushSumConsensus
from declearn.comm import SimComm
from declearn.exercises import Verdict, ch02, ch05
from declearn.topology import (
    apply_weights,
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


# ------------------------------------------------------------------------- chapter 05
def _declearn_weights(rule: str):
    return apply_weights(ch05.N, list(ch05.EDGES), rule, directed=True)


def test_ch05_matrices_agree_with_declearn_rules():
    assert np.allclose(ch05.receiver_matrix(), _declearn_weights("uniform").W)
    assert np.allclose(ch05.sender_matrix(), _declearn_weights("uniform_out").W)


def test_ch05_limits_agree_with_declearn_runs():
    comm = SimComm(ch05.N)
    x0 = torch.tensor(ch05.X0, dtype=torch.float64)[:, None]
    plain = AverageConsensus(comm, _declearn_weights("uniform"), x0)
    plain.run(400, progress=False)
    assert torch.allclose(plain.x, torch.full_like(plain.x, ch05.biased_limit()), atol=1e-10)
    assert not math.isclose(ch05.biased_limit(), float(np.mean(ch05.X0)), rel_tol=1e-3)
    push = PushSumConsensus(comm, _declearn_weights("uniform_out"), x0)
    push.run(400, progress=False)
    assert np.allclose(push.w.reshape(-1).numpy(), ch05.weight_limit(), atol=1e-10)
    assert torch.allclose(push.iterate, torch.full_like(push.x, float(np.mean(ch05.X0))))


def test_ch05_biased_limit_check():
    right = ch05.biased_limit()
    assert ch05.check_biased_limit(right)
    assert ch05.check_biased_limit(np.array([right]))
    assert ch05.check_biased_limit(torch.tensor(right))
    mean = ch05.check_biased_limit(float(np.mean(ch05.X0)))
    _fails_with_hint(mean, not_containing=(f"{right:.3f}",))
    assert "mean" in mean.message
    _fails_with_hint(ch05.check_biased_limit(4.0), not_containing=(f"{right:.3f}",))
    assert not ch05.check_biased_limit([1.0, 2.0])
    assert not ch05.check_biased_limit("three")


def test_ch05_push_sum_matrix_check():
    A = ch05.sender_matrix()
    assert ch05.check_push_sum_matrix(A)
    assert ch05.check_push_sum_matrix(torch.tensor(A))
    assert ch05.check_push_sum_matrix(A.tolist())
    assert "transpose" in ch05.check_push_sum_matrix(A.T).message
    assert "plain averaging" in ch05.check_push_sum_matrix(ch05.receiver_matrix()).message
    _fails_with_hint(ch05.check_push_sum_matrix(np.full((4, 4), 0.25)))  # columns sum to 1
    _fails_with_hint(ch05.check_push_sum_matrix(np.eye(4) * 2))
    assert "4 x 4" in ch05.check_push_sum_matrix(np.eye(3)).message


def test_ch05_weight_limit_check():
    limit = ch05.weight_limit()
    assert math.isclose(limit.sum(), ch05.N)
    assert ch05.check_weight_limit(limit)
    assert ch05.check_weight_limit(list(limit))
    assert ch05.check_weight_limit(torch.tensor(limit)[:, None])  # shape (n, 1), as push.w
    ones = ch05.check_weight_limit([1, 1, 1, 1])
    _fails_with_hint(ones, not_containing=(f"{limit[0]:.3f}",))
    assert "rows" in ones.message
    assert "scale" in ch05.check_weight_limit(limit / ch05.N).message
    assert "sum to 4" in ch05.check_weight_limit([1, 1, 1, 2]).message
    assert "eigenvector" in ch05.check_weight_limit(limit[::-1]).message
    assert "4 numbers" in ch05.check_weight_limit([1, 2]).message
