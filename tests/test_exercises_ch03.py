"""declearn.exercises.ch03: the right answer passes, typical wrong answers fail with a hint
(never the answer), and an unanswered exercise (None) says "not yet" without raising."""

import numpy as np
import pytest
import torch

from declearn.comm import SimComm
from declearn.exercises import Verdict, ch03
from declearn.problems import LeastSquares, RandomQuadratics
from declearn.topology import ring

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
