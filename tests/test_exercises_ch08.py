"""declearn.exercises.ch08: the right answers pass, plausible wrong answers (each computed here
independently) are refused with a hint (and never the answer), ``None`` says "not yet"; and the
values the check computes on its own agree with what declearn's communicators count."""

from __future__ import annotations

import inspect
from fractions import Fraction

import numpy as np
import pytest
import torch

from declearn.algorithms import EASGD, CHOCOGossip, LocalSGD
from declearn.comm import SimComm
from declearn.compress import Sign, TopK
from declearn.exercises import Verdict, ch08
from declearn.problems.base import as_problem
from declearn.topology import ring

JUNK = ["three", [1, 2], {"a": 1}, float("nan"), True, -1]

# The questions' data, written out (an independent copy of the settings the checks use).
N, D, STEPS, TAU = 16, 10, 600, 4             # 8.1
STEP_S, TAU2, DELAY = 0.006, 5, 0.045          # 8.2
N_EASGD = 16                                   # 8.3
D_MSG, RATIO = 2000, 0.01                      # 8.4

MODEL = D * 8                                  # bytes of a float64 model
ROUNDS = STEPS // TAU
BYTES = ROUNDS * Fraction(2 * (N - 1), N) * MODEL          # exact: 22500
TIMES = (TAU2 * STEP_S + DELAY, max(TAU2 * STEP_S, DELAY))  # (0.075, 0.045)
ALPHA = Fraction(2, N_EASGD + 1)                            # exact: 2/17
K_MSG = 20                                                  # 1% of 2000 coordinates
MESSAGE = (K_MSG * (8 + 2), 8 + D_MSG // 8)                 # int16 indices; 250 sign bytes


def _not_yet(verdict) -> bool:
    return isinstance(verdict, Verdict) and not verdict and "replace `answer = None`" in \
        verdict.message


def test_ch08_settings_are_the_questions():
    assert ch08.BYTES_SETTING == {"n": N, "d": D, "steps": STEPS, "tau": TAU}
    assert ch08.ROUND_SETTING == {"step_seconds": STEP_S, "tau": TAU2, "delay": DELAY}
    assert ch08.EASGD_N == N_EASGD
    assert ch08.MESSAGE_SETTING == {"d": D_MSG, "ratio": RATIO}
    assert BYTES == 22500 and np.allclose(TIMES, (0.075, 0.045)) and MESSAGE == (200, 258)


def test_ch08_public_names_are_checks_and_question_data():
    assert set(ch08.__all__) == {"BYTES_SETTING", "EASGD_N", "MESSAGE_SETTING", "ROUND_SETTING",
                                 "check_bytes", "check_easgd_alpha", "check_message_bytes",
                                 "check_round_times"}
    own = [name for name, obj in vars(ch08).items() if not name.startswith("_")
           and inspect.isfunction(obj) and obj.__module__ == ch08.__name__]
    assert sorted(own) == ["check_bytes", "check_easgd_alpha", "check_message_bytes",
                           "check_round_times"]


# ---------------------------------------------------------------------- right answers
def test_ch08_right_answers_pass():
    for right in (22500, 22500.0, np.int64(22500), float(BYTES)):
        assert ch08.check_bytes(right), right
    for right in ((0.075, 0.045), [0.075, 0.045], TIMES, np.array(TIMES),
                  (5 * 0.006 + 0.045, 0.045)):
        assert ch08.check_round_times(right), right
    for right in (2 / 17, float(ALPHA), np.float64(2) / 17):
        assert ch08.check_easgd_alpha(right), right
    for right in ((200, 258), [200, 258], (200.0, 258.0), np.array(MESSAGE), (np.int64(200), 258)):
        assert ch08.check_message_bytes(right), right
    verdict = ch08.check_bytes(22500)
    assert "correct" in str(verdict) and "declearn" not in verdict.message


@pytest.mark.parametrize("check", [ch08.check_bytes, ch08.check_round_times,
                                   ch08.check_easgd_alpha, ch08.check_message_bytes])
def test_ch08_none_is_not_yet_and_junk_is_refused(check):
    assert _not_yet(check(None))
    for junk in JUNK:
        verdict = check(junk)
        assert isinstance(verdict, Verdict) and not verdict


# ---------------------------------------------------------------------- 08.1
BYTES_WRONG = [
    (ROUNDS * MODEL, "ring allreduce"),                          # the model once per round
    (ROUNDS * 2 * MODEL, "large-n limit"),                       # 2 models: the large-n formula
    (ROUNDS * Fraction(N - 1, N) * MODEL, "reduce-scatter"),     # half of a ring allreduce
    (STEPS * Fraction(2 * (N - 1), N) * MODEL, "tau = 1"),       # one allreduce per step
    ((ROUNDS - 1) * Fraction(2 * (N - 1), N) * MODEL, "One round short"),   # off by one round
    ((ROUNDS + 1) * Fraction(2 * (N - 1), N) * MODEL, "One round too many"),
    (BYTES / 8, "8 bytes"),                                      # numbers, not bytes
    (BYTES * N, "all nodes"),                                    # every node together
    (ROUNDS * 2 * (N - 1) * MODEL, "all nodes"),                 # whole models per message
    (BYTES + 1, "Count the synchronisations"),                   # off by one byte
    (BYTES * Fraction(1001, 1000), "Count the synchronisations"),  # within 0.1 %
    (1000, "Count the synchronisations"),
]


@pytest.mark.parametrize("answer, hint", BYTES_WRONG)
def test_ch08_bytes_wrong_answers_are_refused_with_hints(answer, hint):
    verdict = ch08.check_bytes(float(answer))
    assert not verdict and hint in verdict.message, verdict
    assert "22500" not in verdict.message and "22 500" not in verdict.message


# ---------------------------------------------------------------------- 08.2
ROUND_WRONG = [
    ((0.045, 0.075), "swapped"),
    ((75, 45), "milliseconds"),
    ((0.045, 0.045), "add up"),                   # Local SGD also hides the delay
    ((0.075, 0.030), "cannot hide more"),         # overlap = the compute alone
    ((0.075, 0.075), "longer of the two"),        # overlap waits like Local SGD
    ((0.075, 0.015), "time spent waiting"),       # overlap = delta - tau s
    ((0.0751, 0.0449), "Close"),                  # the old 1 % band accepted this
    ((0.075 * 1.001, 0.045), "Close"),
    ((4 * 0.006 + 0.045, 0.045), "add up"),       # off by one step: (tau - 1) s + delta
]


@pytest.mark.parametrize("answer, hint", ROUND_WRONG)
def test_ch08_round_times_wrong_answers_are_refused_with_hints(answer, hint):
    verdict = ch08.check_round_times(answer)
    assert not verdict and hint in verdict.message, verdict
    assert "0.045" not in verdict.message and "0.075" not in verdict.message


# ---------------------------------------------------------------------- 08.3
EASGD_WRONG = [
    (0.9 / 16, "the chapter runs"),               # the value the chapter uses
    (2 / 16, "second eigenvalue"),                # 2/n: the centre's move only
    (1 / 16, "second eigenvalue"),
    (2 / 15, "n alpha"),                          # 2/(n - 1)
    (1 / 17, "fastest agreement"),                # the swing factor 0, not -1
    (0.5, "Too large"),
    (0.05, "2 x 2 linear map"),
    (0.1176, "not exact"),                        # rounded to 4 digits
    (2 / 17 * (1 + 1e-4), "not exact"),
    (2 / 17 * (1 - 1e-4), "not exact"),
]


@pytest.mark.parametrize("answer, hint", EASGD_WRONG)
def test_ch08_easgd_wrong_answers_are_refused_with_hints(answer, hint):
    verdict = ch08.check_easgd_alpha(answer)
    assert not verdict and hint in verdict.message, verdict
    assert "0.117" not in verdict.message and "2/17" not in verdict.message


# ---------------------------------------------------------------------- 08.4
MESSAGE_WRONG = [
    ((258, 200), "swapped"),
    ((K_MSG * 8, 258), "*which* coordinates"),            # values without their indices
    ((K_MSG * 9, 258), "uint8"),                          # one-byte indices: d > 256
    ((K_MSG * 12, 258), "int32"),
    ((K_MSG * 16, 258), "int64"),
    ((D_MSG * 8, 258), "uncompressed"),
    ((400, 258), "one message per neighbor"),             # both ring neighbors
    ((201, 258), "count the coordinates"),
    ((200, D_MSG // 8), "scale"),                         # bits without the scale
    ((200, D_MSG // 8 + 4), "float64"),                   # a float32 scale
    ((200, D_MSG), "8 to a byte"),                        # one byte per sign
    ((200, D_MSG + 8), "8 to a byte"),
    ((200, 516), "one message per neighbor"),
    ((200, 259), "one scale, then one bit"),
    ((K_MSG * 8, D_MSG // 8), "*which* coordinates"),     # both wrong: both hinted
    ((200, 258.5), "one scale, then one bit"),
    ((200, 258, 1), "pair of numbers"),
    ((200, "258"), "pair of numbers"),
    ((200, float("nan")), "pair of numbers"),
]


@pytest.mark.parametrize("answer, hint", MESSAGE_WRONG)
def test_ch08_message_bytes_wrong_answers_are_refused_with_hints(answer, hint):
    verdict = ch08.check_message_bytes(answer)
    assert not verdict and hint in verdict.message, verdict
    assert "200" not in verdict.message and "258" not in verdict.message


def test_ch08_message_bytes_both_wrong_hints_both():
    verdict = ch08.check_message_bytes((K_MSG * 8, D_MSG // 8))
    assert "Top-1%" in verdict.message and "Sign" in verdict.message


# ---------------------------------------------------------------------- the questions' values
def test_ch08_bytes_are_what_comm_traffic_counts():
    s = ch08.BYTES_SETTING
    comm = SimComm(s["n"])
    zero_grad = as_problem(lambda x: torch.zeros_like(x))
    x0 = torch.zeros(s["n"], s["d"], dtype=torch.float64)
    LocalSGD(comm, zero_grad, lr=0.1, tau=s["tau"], x0=x0).run(s["steps"], progress=False)
    np.testing.assert_allclose(comm.traffic.bytes, ch08._local_sgd_bytes(**s))
    np.testing.assert_allclose(comm.traffic.bytes, float(BYTES))


def test_ch08_round_times_model():
    assert ch08._round_times(0.01, 4, 0.0) == (0.04, 0.04)
    assert ch08._round_times(0.01, 4, 0.1) == pytest.approx((0.14, 0.1))
    assert ch08._round_times(0.01, 4, 0.03) == pytest.approx((0.07, 0.04))


@pytest.mark.parametrize("n", [2, 4, 16, 100])
def test_ch08_largest_alpha_is_2_over_n_plus_1_and_easgd_agrees(n):
    alpha = ch08._easgd_largest_alpha(n)
    assert alpha == pytest.approx(2 / (n + 1), rel=1e-9)
    # numpy: the 2 x 2 map's second eigenvalue is 1 - (n + 1) alpha, -1 at the bound
    M = lambda a: np.array([[1 - a, a], [n * a, 1 - n * a]])
    assert np.sort(np.linalg.eigvals(M(2 / (n + 1))).real)[0] == pytest.approx(-1.0)
    problem = as_problem(lambda x: torch.zeros_like(x))
    x0 = torch.zeros(n, 3, dtype=torch.float64)
    EASGD(SimComm(n), problem, lr=0.1, tau=2, alpha=0.99 * alpha, x0=x0)  # accepted
    with pytest.raises(ValueError, match="unstable"):
        EASGD(SimComm(n), problem, lr=0.1, tau=2, alpha=min(1.01 * alpha, 0.999), x0=x0)


@pytest.mark.parametrize("d", [10, 100, 256, 257, 2000, 32768, 32769, 100_000])
def test_ch08_message_bytes_are_what_declearn_sends(d):
    """The check's own count (numpy's integer limits, plain arithmetic) against the library's
    sizes, against the uint8 messages compress() really builds, and against comm.traffic after
    one CHOCO-Gossip step on a ring (every node sends its message to its two neighbors)."""
    top, sign = ch08._message_bytes(d, RATIO)
    x = torch.randn(3, d, generator=torch.Generator().manual_seed(d), dtype=torch.float64)
    for comp, expected in ((TopK(ratio=RATIO), top), (Sign(), sign)):
        assert comp.bytes(d) == expected, (comp, d)
        message = comp.compress(x)
        assert message.dtype == torch.uint8 and tuple(message.shape) == (3, expected)
        comm = SimComm(3)
        alg = CHOCOGossip(comm, ring(3), x, compressor=comp, gamma=1e-9)
        alg.step()
        np.testing.assert_array_equal(comm.traffic.bytes, 2 * expected)


def test_ch08_index_bytes_follow_the_integer_limits():
    assert [ch08._index_bytes(d) for d in (1, 256, 257, 2 ** 15, 2 ** 15 + 1, 2 ** 31,
                                           2 ** 31 + 1)] == [1, 1, 2, 2, 4, 4, 8]
    assert ch08._message_bytes(50, 0.001) == (1 * 9, 8 + 7)     # k never below 1
