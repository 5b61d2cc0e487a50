"""Exercise checks of chapter 01 (average consensus): right answers pass, typical wrong ones
fail with a hint that does not give the answer away, ``None`` says "not yet"."""

from __future__ import annotations

import math

import numpy as np
import torch

from declearn.exercises import Verdict, ch01
from declearn.topology import apply_weights, rho, ring


def _not_yet(v: Verdict) -> bool:
    return isinstance(v, Verdict) and not v and "answer = None" in v.message


# ------------------------------------------------------------------ chapter 01
def test_ch01_rho():
    expected = float(np.linalg.norm(ch01.RHO_W - 0.25, 2))
    assert math.isclose(expected, 0.6, rel_tol=1e-12)
    assert math.isclose(expected, rho(ch01.RHO_W), rel_tol=1e-9)  # declearn agrees
    assert ch01.check_rho(0.6)
    assert ch01.check_rho(np.float64(0.6000001))
    assert ch01.check_rho(torch.tensor(0.6))
    assert _not_yet(ch01.check_rho(None))
    for wrong, word in [(0.2, "negative eigenvalues"), (1.0, "subtract"), (0.4, "spectral gap"),
                        (0.36, "squared"), (-0.6, "never negative"), (0.5, "2-norm")]:
        v = ch01.check_rho(wrong)
        assert not v and word in v.message, (wrong, v)
        assert "0.6" not in v.message.split("is not it:")[-1]  # the hint never tells rho


def test_ch01_rounds():
    r = ring(ch01.ROUNDS_N).rho  # declearn's rho, to cross-check the check's closed form
    k = math.ceil(math.log(ch01.ROUNDS_TARGET) / math.log(r))
    assert k == 266
    for ok in (k - 1, k, k + 1, float(k), np.int64(k)):
        assert ch01.check_rounds(ok), ok
    assert _not_yet(ch01.check_rounds(None))
    approx = math.log(1 / ch01.ROUNDS_TARGET) / (1 - r)
    for wrong, word in [(round(approx), "estimate"), (133, "squared"),
                        (round(math.log10(1e-6) / math.log(r)), "bases"), (100, "too few"),
                        (400, "too many")]:
        v = ch01.check_rounds(wrong)
        assert not v and word in v.message and "266" not in v.message, (wrong, v)


def test_ch01_doubly_stochastic_accepts_any_valid_matrix():
    metropolis = apply_weights(ch01.GRAPH_N, ch01.GRAPH_EDGES, "metropolis").W
    assert ch01.check_doubly_stochastic(metropolis)
    assert ch01.check_doubly_stochastic(metropolis.tolist())
    assert ch01.check_doubly_stochastic(torch.tensor(metropolis))
    lazy = (np.eye(ch01.GRAPH_N) + metropolis) / 2
    assert ch01.check_doubly_stochastic(lazy)
    assert _not_yet(ch01.check_doubly_stochastic(None))


def test_ch01_doubly_stochastic_names_what_is_wrong():
    n = ch01.GRAPH_N
    uniform = apply_weights(n, ch01.GRAPH_EDGES, "uniform").W  # rows sum to 1, columns do not
    cases = [
        (np.eye(n), "never mixes"),
        (uniform, "column"),
        (np.full((n, n), 1 / n), "not linked"),
        (np.eye(3), "5 x 5"),
        (np.eye(n) * 2, "row"),
    ]
    neg = apply_weights(n, ch01.GRAPH_EDGES, "metropolis").W.copy()
    neg[0, 0], neg[0, 1] = 1.25, -0.25
    neg[1, 1], neg[1, 0] = 0.75, -0.25
    cases.append((neg, "negative"))
    nan = np.eye(n)
    nan[0, 0] = np.nan
    cases.append((nan, "NaN"))
    for W, word in cases:
        v = ch01.check_doubly_stochastic(W)
        assert not v and word in v.message, (word, v)
    assert not ch01.check_doubly_stochastic("W")
