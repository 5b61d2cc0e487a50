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
N_GRAPH = 5  # exercise 01.1's graph: 5 nodes, links ch01.GRAPH_EDGES


def test_ch01_public_names_are_checks_and_the_data_students_get():
    assert set(ch01.__all__) == {"check_consensus_step", "check_doubly_stochastic", "check_rho",
                                 "check_rounds", "GRAPH_EDGES", "RHO_W"}


def test_ch01_rho():
    expected = float(np.linalg.norm(ch01.RHO_W - 0.25, 2))
    assert math.isclose(expected, 0.6, rel_tol=1e-12)
    assert math.isclose(expected, rho(ch01.RHO_W), rel_tol=1e-9)  # declearn agrees
    assert ch01.check_rho(0.6)
    assert ch01.check_rho(np.float64(0.6000001))
    assert ch01.check_rho(torch.tensor(0.6))
    assert _not_yet(ch01.check_rho(None))
    for wrong, word in [(0.2, "negative eigenvalues"), (1.0, "subtract"), (0.4, "spectral gap"),
                        (0.36, "squared"), (-0.6, "never negative"), (0.5, "2-norm"),
                        (math.sqrt(0.6), "square root")]:
        v = ch01.check_rho(wrong)
        assert not v and word in v.message, (wrong, v)
        assert "0.6" not in v.message.split("is not it:")[-1]  # the hint never tells rho


def test_ch01_rho_refuses_plausible_wrong_answers():
    W = ch01.RHO_W
    eig = np.linalg.eigvalsh(W)                       # 1, 0.2, 0.2, -0.6
    wrong = {
        "largest eigenvalue, 1 kept": eig.max(),
        "largest eigenvalue below 1": np.sort(eig)[-2],
        "rho squared": np.linalg.norm(W - 0.25, 2) ** 2,
        "spectral gap": 1 - np.linalg.norm(W - 0.25, 2),
        "norm of W itself": np.linalg.norm(W, 2),
        "Frobenius norm": np.linalg.norm(W - 0.25),
        "rounded to one digit too few": 0.61,
    }
    for label, value in wrong.items():
        assert not ch01.check_rho(float(value)), label


def test_ch01_rounds():
    r = ring(16).rho  # declearn's rho, to cross-check the check's closed form
    k = math.ceil(math.log(1e-6) / math.log(r))
    assert k == 266 and r ** k <= 1e-6 < r ** (k - 1)
    for ok in (k, float(k), np.int64(k), torch.tensor(k)):
        assert ch01.check_rounds(ok), ok
    assert _not_yet(ch01.check_rounds(None))
    approx = math.log(1 / 1e-6) / (1 - r)
    for wrong, word in [(round(approx), "estimate"), (133, "squared"),
                        (round(math.log10(1e-6) / math.log(r)), "bases"), (100, "too few"),
                        (400, "too many"), (k - 1, "too few"), (k + 1, "not the smallest"),
                        (math.log(1e-6) / math.log(r), "whole number")]:
        v = ch01.check_rounds(wrong)
        assert not v and word in v.message and "266" not in v.message, (wrong, v)


def test_ch01_rounds_refuses_plausible_wrong_answers():
    r = 1 / 3 + 2 / 3 * math.cos(2 * math.pi / 16)
    exact = math.log(1e-6) / math.log(r)               # 265.2...
    wrong = {
        "off by one, below (int() instead of ceil)": math.floor(exact),
        "off by one, above": math.ceil(exact) + 1,
        "real-valued k": exact,
        "estimate ln(1/eps)/(1 - rho), rounded up": math.ceil(math.log(1e6) / (1 - r)),
        "estimate, rounded down": math.floor(math.log(1e6) / (1 - r)),
        "squared error": math.ceil(exact / 2),
        "log10 on one side": math.ceil(math.log10(1e-6) / math.log(r)),
        "log10 on the other side": math.ceil(math.log(1e-6) / math.log10(r)),
        "rho = 1/3, the most negative eigenvalue": math.ceil(math.log(1e-6) / math.log(1 / 3)),
        "rho = cos(2 pi/16)": math.ceil(math.log(1e-6) / math.log(math.cos(2 * math.pi / 16))),
        "ring on 15 nodes": math.ceil(math.log(1e-6) / math.log(1 / 3 + 2 / 3 * math.cos(
            2 * math.pi / 15))),
        "ring on 17 nodes": math.ceil(math.log(1e-6) / math.log(1 / 3 + 2 / 3 * math.cos(
            2 * math.pi / 17))),
    }
    for label, value in wrong.items():
        assert not ch01.check_rounds(value), (label, value)


def test_ch01_doubly_stochastic_accepts_any_valid_matrix():
    metropolis = apply_weights(N_GRAPH, ch01.GRAPH_EDGES, "metropolis").W
    assert ch01.check_doubly_stochastic(metropolis)
    assert ch01.check_doubly_stochastic(metropolis.tolist())
    assert ch01.check_doubly_stochastic(torch.tensor(metropolis))
    lazy = (np.eye(N_GRAPH) + metropolis) / 2
    assert ch01.check_doubly_stochastic(lazy)
    assert _not_yet(ch01.check_doubly_stochastic(None))


def test_ch01_doubly_stochastic_accepts_a_nonsymmetric_convergent_matrix():
    # a circulation around the triangle 1 -> 2 -> 3 -> 1 added to the Metropolis weights keeps
    # rows and columns summing to 1; Xiao & Boyd's condition is the spectral radius of W - J
    W = apply_weights(N_GRAPH, ch01.GRAPH_EDGES, "metropolis").W.copy()
    for i, j in [(2, 1), (3, 2), (1, 3)]:
        W[i, j] += 0.05
        W[j, i] -= 0.05
    assert not np.allclose(W, W.T) and W.min() >= 0
    assert np.abs(np.linalg.eigvals(W - 1 / N_GRAPH)).max() < 1
    assert ch01.check_doubly_stochastic(W)


def test_ch01_doubly_stochastic_names_what_is_wrong():
    n = N_GRAPH
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
    # doubly stochastic on the graph but not convergent: nodes 3 and 4 swap values, nodes
    # 0..2 keep theirs (a disconnected, periodic W)
    swap = np.eye(n)
    swap[3:, 3:] = [[0, 1], [1, 0]]
    cases.append((swap, "never mixes"))
    for W, word in cases:
        v = ch01.check_doubly_stochastic(W)
        assert not v and word in v.message, (word, v)
    assert not ch01.check_doubly_stochastic("W")
