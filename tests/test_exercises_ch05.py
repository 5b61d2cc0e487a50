"""The exercise checks of chapter 05 (directed and time-varying graphs).

For every check: the right answer passes, typical wrong answers fail with a hint that does
not contain the answer, and ``None`` (what the notebook ships) gives "not yet" without
raising. The values the checks compute with plain numpy are also compared with what declearn
computes (consensus runs), so the two cannot drift apart silently.
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
