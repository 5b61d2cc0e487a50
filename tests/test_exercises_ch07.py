"""declearn.exercises.ch07: the right answers pass, typical wrong answers fail with a hint (and
never the answer), ``None`` says "not yet"; and the values the check computes on its own agree
with what declearn's communicators count."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from declearn.algorithms import EASGD, LocalSGD
from declearn.comm import SimComm
from declearn.exercises import Verdict, ch07
from declearn.problems.base import as_problem

JUNK = ["three", [1, 2], {"a": 1}, float("nan"), True, -1]


def _not_yet(verdict) -> bool:
    return isinstance(verdict, Verdict) and not verdict and "replace `answer = None`" in \
        verdict.message


# ---------------------------------------------------------------------- chapter 07
def test_ch07_right_answers_pass():
    assert ch07.check_bytes(22500)
    assert ch07.check_bytes(22500.0)
    assert ch07.check_round_times((0.075, 0.045))
    assert ch07.check_round_times([0.0751, 0.0449])
    assert ch07.check_easgd_alpha(2 / 17)


@pytest.mark.parametrize("check", [ch07.check_bytes, ch07.check_round_times,
                                   ch07.check_easgd_alpha])
def test_ch07_none_is_not_yet_and_junk_is_refused(check):
    assert _not_yet(check(None))
    for junk in JUNK:
        verdict = check(junk)
        assert isinstance(verdict, Verdict) and not verdict


@pytest.mark.parametrize("answer, hint", [
    (150 * 80, "ring allreduce"),         # the model once per round
    (90000, "tau = 1"),                   # one allreduce per step
    (22500 / 8, "8 bytes"),               # numbers, not bytes
    (22500 * 16, "all nodes"),            # every node together
    (1000, "Count the synchronisations"),
])
def test_ch07_bytes_wrong_answers_get_hints_not_the_answer(answer, hint):
    verdict = ch07.check_bytes(answer)
    assert not verdict and hint in verdict.message and "22500" not in verdict.message


@pytest.mark.parametrize("answer, hint", [
    ((0.045, 0.075), "swapped"),
    ((75, 45), "milliseconds"),
    ((0.045, 0.045), "add up"),
    ((0.075, 0.030), "cannot hide more"),
    ((0.075, 0.075), "longer of the two"),
])
def test_ch07_round_times_wrong_answers_get_hints(answer, hint):
    verdict = ch07.check_round_times(answer)
    assert not verdict and hint in verdict.message and "0.045" not in verdict.message


@pytest.mark.parametrize("answer, hint", [
    (0.9 / 16, "recommended"), (2 / 16, "second eigenvalue"), (1 / 16, "second eigenvalue"),
    (1 / 17, "fastest agreement"), (0.5, "Too large"), (0.05, "2 x 2 linear map"),
])
def test_ch07_easgd_wrong_answers_get_hints_not_the_answer(answer, hint):
    verdict = ch07.check_easgd_alpha(answer)
    assert not verdict and hint in verdict.message
    assert "0.117" not in verdict.message and "2/17" not in verdict.message


def test_ch07_bytes_are_what_comm_traffic_counts():
    s = ch07.BYTES_SETTING
    comm = SimComm(s["n"])
    zero_grad = as_problem(lambda x: torch.zeros_like(x))
    x0 = torch.zeros(s["n"], s["d"], dtype=torch.float64)
    LocalSGD(comm, zero_grad, lr=0.1, tau=s["tau"], x0=x0).run(s["steps"], progress=False)
    np.testing.assert_allclose(comm.traffic.bytes, ch07.local_sgd_bytes(**s))


def test_ch07_round_times_model():
    assert ch07.round_times(0.01, 4, 0.0) == (0.04, 0.04)
    assert ch07.round_times(0.01, 4, 0.1) == pytest.approx((0.14, 0.1))
    assert ch07.round_times(0.01, 4, 0.03) == pytest.approx((0.07, 0.04))


@pytest.mark.parametrize("n", [2, 4, 16, 100])
def test_ch07_largest_alpha_is_2_over_n_plus_1_and_easgd_agrees(n):
    alpha = ch07.easgd_largest_alpha(n)
    assert alpha == pytest.approx(2 / (n + 1), rel=1e-6)
    problem = as_problem(lambda x: torch.zeros_like(x))
    x0 = torch.zeros(n, 3, dtype=torch.float64)
    EASGD(SimComm(n), problem, lr=0.1, tau=2, alpha=0.99 * alpha, x0=x0)  # accepted
    with pytest.raises(ValueError, match="unstable"):
        EASGD(SimComm(n), problem, lr=0.1, tau=2, alpha=min(1.01 * alpha, 0.999), x0=x0)
