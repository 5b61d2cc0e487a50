"""The exercise checks of chapter 06 (directed and time-varying graphs).

For every check: ``None`` (what the notebook ships) gives "not yet" without raising, the right
answer passes, and a list of plausible wrong answers, each computed here with numpy from the
exercise's graph, is refused with a hint that does not contain the answer. The values the
checks compute are also compared with what declearn does (its weight rules and consensus
runs), so the two cannot drift apart silently. Exercise 06.4 (push-sum built from the
primitives) is tested by tests/test_exercises_build.py with tests/build_steps_ch06.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from declearn.algorithms import AverageConsensus, PushSumConsensus
from declearn.comm import SimComm
from declearn.exercises import Verdict, ch06
from declearn.topology import apply_weights

CHECKS = [ch06.check_biased_limit, ch06.check_push_sum_matrix, ch06.check_weight_limit,
          lambda answer: ch06.check_push_sum_step(answer, SimComm(4))]


def test_public_names_are_checks_and_data():
    assert set(ch06.__all__) == {"EDGES", "N", "X0", "check_biased_limit",
                                 "check_push_sum_matrix", "check_push_sum_step",
                                 "check_weight_limit"}
    for name in ("biased_limit", "weight_limit", "receiver_matrix", "sender_matrix"):
        assert not hasattr(ch06, name), f"ch06.{name} computes an answer: make it private"


@pytest.mark.parametrize("check", CHECKS[:3], ids=lambda c: c.__name__)
def test_none_is_not_yet(check):
    verdict = check(None)
    assert isinstance(verdict, Verdict) and not verdict
    assert "not yet" in str(verdict) and "answer = None" in verdict.message


def _fails_with_hint(verdict: Verdict, *, not_containing=()) -> None:
    assert isinstance(verdict, Verdict) and not verdict, verdict
    assert len(verdict.message) > 20, verdict
    for text in not_containing:
        assert text not in verdict.message, f"the hint gives the answer away: {verdict}"


# --------------------------------------------- the exercise graph, rebuilt here with numpy
def _M() -> np.ndarray:
    """Adjacency plus self loops, row = receiver."""
    M = np.eye(ch06.N)
    for u, v in ch06.EDGES:
        M[v, u] = 1.0
    return M


def _W() -> np.ndarray:
    return _M() / _M().sum(1, keepdims=True)


def _A() -> np.ndarray:
    return _M() / _M().sum(0, keepdims=True)


def _power(M: np.ndarray, x: np.ndarray, steps: int = 500) -> np.ndarray:
    for _ in range(steps):
        x = M @ x
    return x


X0 = np.array(ch06.X0)
PI = _power(_W().T, np.full(ch06.N, 1 / ch06.N))   # left Perron vector of W, sums to 1
LIMIT = _power(_W(), X0)[0]                        # where x <- W x goes: 12/5
W_LIMIT = _power(_A(), np.ones(ch06.N))            # where w <- A w goes: (4, 6, 4, 6)/5


def test_independent_values_are_the_fractions_of_the_solutions():
    assert pytest.approx(12 / 5, rel=1e-12) == LIMIT
    assert pytest.approx(np.array([2, 3, 2, 3]) / 10, rel=1e-12) == PI
    assert pytest.approx(np.array([4, 6, 4, 6]) / 5, rel=1e-12) == W_LIMIT


def test_ch06_matrices_agree_with_declearn_rules():
    assert np.allclose(ch06._receiver_matrix(), _W())
    assert np.allclose(ch06._sender_matrix(), _A())
    assert np.allclose(ch06._receiver_matrix(), _declearn_weights("uniform").W)
    assert np.allclose(ch06._sender_matrix(), _declearn_weights("uniform_out").W)


def _declearn_weights(rule: str):
    return apply_weights(ch06.N, list(ch06.EDGES), rule, directed=True)


def test_ch06_limits_agree_with_declearn_runs():
    comm = SimComm(ch06.N)
    x0 = torch.tensor(ch06.X0, dtype=torch.float64)[:, None]
    with pytest.warns(UserWarning, match="rows summing to 1 but not columns"):
        plain = AverageConsensus(comm, _declearn_weights("uniform"), x0)
    plain.run(400, progress=False)
    assert torch.allclose(plain.x, torch.full_like(plain.x, ch06._biased_limit()), atol=1e-10)
    assert not math.isclose(ch06._biased_limit(), float(np.mean(ch06.X0)), rel_tol=1e-3)
    push = PushSumConsensus(comm, _declearn_weights("uniform_out"), x0)
    push.run(400, progress=False)
    assert np.allclose(push.w.reshape(-1).numpy(), ch06._weight_limit(), atol=1e-10)
    assert torch.allclose(push.iterate, torch.full_like(push.x, float(np.mean(ch06.X0))))


# ---------------------------------------------------------------------- 06.1
def test_ch06_biased_limit_check():
    right = ch06._biased_limit()
    assert ch06.check_biased_limit(right)
    assert ch06.check_biased_limit(2.4)
    assert ch06.check_biased_limit(12 / 5)
    assert ch06.check_biased_limit(np.array([right]))
    assert ch06.check_biased_limit(torch.tensor(right))
    mean = ch06.check_biased_limit(float(np.mean(ch06.X0)))
    _fails_with_hint(mean, not_containing=(f"{right:.3f}",))
    assert "mean" in mean.message
    _fails_with_hint(ch06.check_biased_limit(4.0), not_containing=(f"{right:.3f}",))
    assert not ch06.check_biased_limit([1.0, 2.0])
    assert not ch06.check_biased_limit("three")


def _wrong_biased_limits() -> dict:
    unit = PI / np.linalg.norm(PI)                  # numpy's eig returns unit vectors
    in_deg = _M().sum(1)                           # 1 + in-degree of each node
    return {
        "the mean of X0": X0.mean(),
        "pi of unit length": unit @ X0,
        "pi of unit length, other sign": -unit @ X0,
        "right eigenvector of W (all ones), normalised": np.full(4, 0.25) @ X0,
        "weights by in-degree + 1": (in_deg / in_deg.sum()) @ X0 * 1.25,
        "the first node's value over its in-degree + 1": X0[0] / in_deg[0],
        "a few steps only (x <- W x, 5 times)": _power(_W(), X0, 5)[0],
        "rounded to 2 significant digits, off": 2.5,
        "pi_0 itself": PI[0],
        "12 pi_1": 12 * PI[1],
        "the sum of X0": X0.sum(),
    }


@pytest.mark.parametrize("label", list(_wrong_biased_limits()))
def test_ch06_biased_limit_refuses(label):
    value = _wrong_biased_limits()[label]
    assert not math.isclose(value, LIMIT, rel_tol=1e-12), f"{label} is not a wrong answer"
    _fails_with_hint(ch06.check_biased_limit(value), not_containing=("2.4 ", "12/5", "0.2,"))


def test_ch06_biased_limit_hints_name_the_slip():
    unit = PI / np.linalg.norm(PI)
    assert "length 1" in ch06.check_biased_limit(unit @ X0).message
    assert "left" in ch06.check_biased_limit(X0.mean()).message


# ---------------------------------------------------------------------- 06.2
def test_ch06_push_sum_matrix_check():
    A = ch06._sender_matrix()
    assert ch06.check_push_sum_matrix(A)
    assert ch06.check_push_sum_matrix(torch.tensor(A))
    assert ch06.check_push_sum_matrix(A.tolist())
    assert ch06.check_push_sum_matrix(_A())
    assert ch06.check_push_sum_matrix(torch.tensor(_A(), dtype=torch.float32))
    assert "transpose" in ch06.check_push_sum_matrix(A.T).message
    assert "plain averaging" in ch06.check_push_sum_matrix(ch06._receiver_matrix()).message
    _fails_with_hint(ch06.check_push_sum_matrix(np.full((4, 4), 0.25)))  # columns sum to 1
    _fails_with_hint(ch06.check_push_sum_matrix(np.eye(4) * 2))
    assert "4 x 4" in ch06.check_push_sum_matrix(np.eye(3)).message


def _wrong_push_sum_matrices() -> dict:
    adj = _M() - np.eye(4)
    return {
        "transpose": _A().T,
        "receivers average (rows sum to 1)": _W(),
        "no self share": adj / adj.sum(0, keepdims=True),
        "everyone gets 1/4": np.full((4, 4), 0.25),
        "shares rounded to 0.33 and 0.5": np.round(_A(), 2),
        "the adjacency without weights": _M(),
        "identity": np.eye(4),
        "the transpose of plain averaging": _W().T,
        "a doubly stochastic guess (lazy 4-cycle)":
            0.5 * np.eye(4) + 0.5 * np.roll(np.eye(4), 1, 0),
    }


@pytest.mark.parametrize("label", list(_wrong_push_sum_matrices()))
def test_ch06_push_sum_matrix_refuses(label):
    M = _wrong_push_sum_matrices()[label]
    assert not np.allclose(M, _A(), atol=1e-12), f"{label} is not a wrong answer"
    _fails_with_hint(ch06.check_push_sum_matrix(M))


def test_ch06_push_sum_matrix_hints_name_the_slip():
    adj = _M() - np.eye(4)
    assert "keeps a share for itself" in ch06.check_push_sum_matrix(
        adj / adj.sum(0, keepdims=True)).message
    assert "exact fractions" in ch06.check_push_sum_matrix(np.round(_A(), 2)).message


# ---------------------------------------------------------------------- 06.3
def test_ch06_weight_limit_check():
    limit = ch06._weight_limit()
    assert math.isclose(limit.sum(), ch06.N)
    assert ch06.check_weight_limit(limit)
    assert ch06.check_weight_limit(list(limit))
    assert ch06.check_weight_limit([0.8, 1.2, 0.8, 1.2])
    assert ch06.check_weight_limit(torch.tensor([0.8, 1.2, 0.8, 1.2]))  # float32
    assert ch06.check_weight_limit(torch.tensor(limit)[:, None])  # shape (n, 1), as push.w
    ones = ch06.check_weight_limit([1, 1, 1, 1])
    _fails_with_hint(ones, not_containing=(f"{limit[0]:.3f}",))
    assert "rows" in ones.message
    assert "scale" in ch06.check_weight_limit(limit / ch06.N).message
    assert "sum to 4" in ch06.check_weight_limit([1, 1, 1, 2]).message
    assert "eigenvector" in ch06.check_weight_limit(limit[::-1]).message
    assert "4 numbers" in ch06.check_weight_limit([1, 2]).message


def _wrong_weight_limits() -> dict:
    p = W_LIMIT / ch06.N
    out_deg = _M().sum(0) - 1
    return {
        "w stays at 1": np.ones(4),
        "p, not n p": p,
        "p of unit length": p / np.linalg.norm(p),
        "p of unit length, other sign": -p / np.linalg.norm(p),
        "reversed": W_LIMIT[::-1],
        "out-degrees scaled to total 4": 4 * out_deg / out_deg.sum(),
        "where A^T w goes (the left eigenvector)": _power(_A().T, np.ones(4)),
        "a few steps only (w <- A w, 3 times)": _power(_A(), np.ones(4), 3),
        "rounded to one decimal, off": np.array([0.8, 1.2, 0.8, 1.3]),
        "the limit of x, not of w": _power(_A(), X0),
    }


@pytest.mark.parametrize("label", list(_wrong_weight_limits()))
def test_ch06_weight_limit_refuses(label):
    w = _wrong_weight_limits()[label]
    assert not np.allclose(w, W_LIMIT, atol=1e-12), f"{label} is not a wrong answer"
    _fails_with_hint(ch06.check_weight_limit(w), not_containing=("0.8, 1.2", "[4, 6, 4, 6]"))


def test_ch06_weight_limit_hints_name_the_slip():
    p = W_LIMIT / ch06.N
    assert "length 1" in ch06.check_weight_limit(p / np.linalg.norm(p)).message
    assert "right" in ch06.check_weight_limit(np.ones(4)).message


# ---------------------------------------------------------------------- 06.4 (entry checks)
def test_ch06_push_sum_step_not_yet_and_small_networks():
    assert not ch06.check_push_sum_step(None, SimComm(4))
    assert "function" in ch06.check_push_sum_step(42, SimComm(4)).message
    right = lambda comm, A, x, w: (comm.neighbor_allreduce(x, A, weighted_by="sender"),
                                   comm.neighbor_allreduce(w, A, weighted_by="sender"))
    assert "3 or more" in ch06.check_push_sum_step(right, SimComm(2)).message
    for n in (3, 5, 16):
        assert ch06.check_push_sum_step(right, SimComm(n)), n


def test_ch06_push_sum_step_refuses_the_library_class():
    def uses_the_class(comm, A, x, w):
        return PushSumConsensus(comm, A, x).x, w

    assert "PushSumConsensus" in ch06.check_push_sum_step(uses_the_class, SimComm(4)).message


@pytest.mark.parametrize("n", [3, 4, 7])
def test_ch06_build_graph_is_column_but_not_row_stochastic(n):
    """Receiver weights must fail on the exercise's graph, for every n the check accepts."""
    W = ch06._build_graph(n).W
    assert np.allclose(W.sum(0), 1.0)
    assert not np.any(np.isclose(W.sum(1), 1.0))
