"""declearn.exercises.ch03 and ch04: the right answer passes, typical wrong answers fail with a
hint (never the answer), and an unanswered exercise (None) says "not yet" without raising."""

import numpy as np
import pytest
import torch

from declearn.comm import SimComm
from declearn.exercises import Verdict, ch03, ch04
from declearn.problems import LeastSquares, RandomQuadratics
from declearn.topology import Topology, ring

N = 16


@pytest.fixture(scope="module")
def problem():
    return LeastSquares(N, d=10, m=20, heterogeneity=1.0, seed=0)


def _not_yet(v):
    assert isinstance(v, Verdict) and not v
    assert "answer" in v.message


# ------------------------------------------------------------------------------- chapter 03
def test_ch03_first_step(problem):
    topo, lr = ring(N), 0.1 / problem.smoothness
    right = lr**2 * problem.heterogeneity
    assert ch03.check_first_step(right, problem, topo, lr)
    assert ch03.check_first_step(torch.tensor(right), problem, topo, lr)
    G = problem.on(SimComm(N)).full_grad(
        problem.x_star.expand(N, -1).clone())
    atc = lr**2 * float((torch.tensor(topo.W) @ G).pow(2).sum(1).mean())
    wrong = ch03.check_first_step(atc, problem, topo, lr)
    assert not wrong and "ATC" in wrong.message
    assert "squared" in ch03.check_first_step(np.sqrt(right), problem, topo, lr).message
    assert "power of lr" in ch03.check_first_step(lr * problem.heterogeneity, problem, topo,
                                                  lr).message
    assert not ch03.check_first_step(-1.0, problem, topo, lr)
    assert "one number" in ch03.check_first_step([1.0, 2.0], problem, topo, lr).message
    assert not ch03.check_first_step("lr**2", problem, topo, lr)
    _not_yet(ch03.check_first_step(None, problem, topo, lr))


def test_ch03_first_step_value_matches_theory(problem):
    # AWC from x*: exactly lr^2 b^2 (the check's own computation is a simulator run)
    lr = 0.05 / problem.smoothness
    value = ch03.first_step_value(problem, ring(N), lr, "awc")
    assert value == pytest.approx(lr**2 * problem.heterogeneity, rel=1e-9)
    # ATC mixes the zero-mean gradients: at most rho^2 times that
    atc = ch03.first_step_value(problem, ring(N), lr, "atc")
    assert atc <= ring(N).rho ** 2 * value * (1 + 1e-9)


def test_ch03_awc_step_bound():
    topo = ring(N)  # even n: lambda_min = -1/3
    quad = RandomQuadratics(N, d=10, heterogeneity=1.0, mu=0.5, L=1.0, r0=10.0, seed=0)
    L = quad.smoothness
    right = (1 + np.linalg.eigvalsh(topo.W)[0]) / L
    assert right == pytest.approx(2 / 3 / L)
    assert ch03.check_awc_step_bound(right, topo, L)
    assert "ATC" in ch03.check_awc_step_bound(2 / L, topo, L).message
    lazy = ring(N).lazy()  # (I + W)/2: lambda_min = 1/3, so the bound is (4/3)/L
    assert ch03.check_awc_step_bound(4 / 3 / L, lazy, L)
    assert not ch03.check_awc_step_bound(right, lazy, L)
    assert "divide by L" in ch03.check_awc_step_bound(right * L, topo, 2 * L).message
    assert not ch03.check_awc_step_bound(0.5, topo, L)
    _not_yet(ch03.check_awc_step_bound(None, topo, L))


def test_ch03_lazy_ratio():
    assert ch03.check_lazy_ratio(4.0, t=0.5)
    assert ch03.check_lazy_ratio(4, t=0.5)
    two = ch03.check_lazy_ratio(2.0, t=0.5)
    assert not two and "squared" in two.message
    assert "larger" in ch03.check_lazy_ratio(0.25, t=0.5).message
    assert not ch03.check_lazy_ratio(9.0, t=0.5)
    _not_yet(ch03.check_lazy_ratio(None))
    with pytest.raises(ValueError, match="t must be"):
        ch03.check_lazy_ratio(4.0, t=0.0)


def test_ch03_lazy_ratio_is_one_over_t_squared():
    assert ch03.lazy_ratio_value(0.25) == pytest.approx(16.0, rel=0.03)


# ------------------------------------------------------------------------------- chapter 04
def test_ch04_messages():
    topo = ring(N)
    assert ch04.check_messages((4, 2), topo)
    assert ch04.check_messages([4.0, 2.0], topo)
    swapped = ch04.check_messages((2, 4), topo)
    assert not swapped and "Swapped" in swapped.message
    calls = ch04.check_messages((2, 1), topo)
    assert not calls and "out-neighbour" in calls.message
    assert "do not cost the same" in ch04.check_messages((2, 2), topo).message
    assert "pair" in ch04.check_messages(4, topo).message
    assert "pair" in ch04.check_messages((4, 2, 1), topo).message
    _not_yet(ch04.check_messages(None, topo))


def test_ch04_messages_other_degree():
    # the check counts, it does not assume a ring: the 4x4 torus has 4 neighbours
    from declearn.topology import grid

    assert ch04.check_messages((8, 4), grid(N, torus=True))


def test_ch04_ed_as_d2():
    topo = ring(N)
    assert ch04.check_ed_as_d2((np.eye(N) + topo.W) / 2, topo)
    assert ch04.check_ed_as_d2(torch.from_numpy((np.eye(N) + topo.W) / 2), topo)
    w = ch04.check_ed_as_d2(topo.W, topo)
    assert not w and "W itself" in w.message
    refused = ch04.check_ed_as_d2(np.eye(N), topo)  # disconnected
    assert not refused and "refuses" in refused.message
    drift = ch04.check_ed_as_d2(0.3 * np.eye(N) + 0.7 * topo.W, topo)
    assert not drift and "drifts" in drift.message
    assert "shape" in ch04.check_ed_as_d2(np.eye(3), topo).message
    assert not ch04.check_ed_as_d2("W", topo)
    _not_yet(ch04.check_ed_as_d2(None, topo))


def test_ch04_d2_threshold_and_self_weight():
    assert ch04.d2_threshold() == pytest.approx(-1 / 3, abs=1e-9)
    assert ch04.d2_root_modulus(-1 / 3) == pytest.approx(1.0)
    assert ch04.d2_root_modulus(0.5) == pytest.approx(np.sqrt(0.5))
    assert ch04.check_d2_self_weight(1 / 3)
    assert ch04.check_d2_self_weight(0.3334)
    lam = ch04.check_d2_self_weight(-1 / 3)
    assert not lam and "eigenvalue threshold" in lam.message
    assert "lazy" in ch04.check_d2_self_weight(0.5).message
    assert not ch04.check_d2_self_weight(0.25)
    assert not ch04.check_d2_self_weight([0.1, 0.2])
    _not_yet(ch04.check_d2_self_weight(None))


def test_ch04_d2_condition_matches_declearn():
    # the rings of exercise 04.3: declearn's D2 accepts s just above 1/3 and refuses s = 1/3
    from declearn.algorithms import D2
    from declearn.comm import SimComm
    from declearn.errors import TopologyError

    p = LeastSquares(N, d=4, m=8, seed=1)
    ring_s = lambda s: Topology.from_circulant(N, {0: s, 1: (1 - s) / 2, -1: (1 - s) / 2})
    D2(SimComm(N), p, ring_s(0.34), lr=0.1 / p.smoothness)
    with pytest.raises(TopologyError, match="-1/3"):
        D2(SimComm(N), p, ring_s(1 / 3), lr=0.1 / p.smoothness)
