"""declearn.exercises.ch03: the right answer passes, plausible wrong answers (each computed
here with numpy) are refused with a hint (never the answer), and an unanswered exercise (None)
says "not yet" without raising. The checks' expected values are independent of declearn's DGD;
here they are also compared with DGD itself, so a bug on either side shows."""

import math

import numpy as np
import pytest
import torch

from declearn.algorithms import DGD
from declearn.comm import SimComm
from declearn.exercises import Verdict, ch03
from declearn.problems import LeastSquares, RandomQuadratics
from declearn.topology import Topology, ring

N = 16


@pytest.fixture(scope="module")
def problem():
    return LeastSquares(N, d=10, m=20, heterogeneity=1.0, seed=0)


def _not_yet(v):
    assert isinstance(v, Verdict) and not v
    assert "answer" in v.message


def _numpy_data(problem):
    """H_i, grad f_i(x*) and x* from the least-squares data, with numpy only."""
    A, b = problem.A.numpy(), problem.b.numpy()
    x_star = np.linalg.lstsq(A.reshape(-1, A.shape[-1]), b.reshape(-1), rcond=None)[0]
    H = np.einsum("imd,ime->ide", A, A) / problem.m
    G = np.einsum("imd,im->id", A, A @ x_star - b) / problem.m
    return H, G, x_star


def _numpy_plateau(problem, W, lr, variant="awc"):
    """(1/n) sum_i ||x_i^inf - x*||^2 of DGD: the fixed point from one dense solve of
    (I - W + lr H) e = -lr G (AWC) or (I - W + lr W H) e = -lr W G (ATC), e = x - x*."""
    H, G, _ = _numpy_data(problem)
    n, d = G.shape
    K, I = np.kron(W, np.eye(d)), np.eye(n * d)
    Hb = np.zeros((n * d, n * d))
    for i in range(n):
        Hb[i * d:(i + 1) * d, i * d:(i + 1) * d] = H[i]
    if variant == "awc":
        e = np.linalg.solve(I - K + lr * Hb, -lr * G.reshape(-1))
    else:
        e = np.linalg.solve(I - K + lr * K @ Hb, -lr * K @ G.reshape(-1))
    return float(np.mean(np.sum(e.reshape(n, d) ** 2, axis=1)))


def test_ch03_public_names():
    assert set(ch03.__all__) == {"check_awc_step_bound", "check_dgd_step", "check_first_step",
                                 "check_lazy_ratio"}


# ------------------------------------------------------------------------------- 03.1
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


def test_ch03_first_step_refuses_plausible_wrong_answers(problem):
    topo, lr = ring(N), 0.1 / problem.smoothness
    _, G, _ = _numpy_data(problem)
    W = np.asarray(topo.W)
    b2 = float(np.mean(np.sum(G**2, axis=1)))
    right = lr**2 * b2
    assert ch03.check_first_step(right, problem, topo, lr)
    assert ch03.check_first_step(right * (1 + 5e-7), problem, topo, lr)
    wrong = {
        "ATC: gradients mixed": lr**2 * float(np.mean(np.sum((W @ G) ** 2, axis=1))),
        "x* taken for a fixed point": 0.0,
        "the squared norm of the mean gradient": lr**2 * float(np.sum(G.mean(0) ** 2)),
        "plain norm": math.sqrt(right),
        "lr not squared": lr * b2,
        "sum over nodes": N * right,
        "divided by n again": right / N,
        "lr^2 b (plain norm of the gradients)": lr**2 * math.sqrt(b2),
        "off by 1e-5": right * (1 + 1e-5),
    }
    for label, value in wrong.items():
        v = ch03.check_first_step(value, problem, topo, lr)
        assert not v, label
        assert f"{right:.4g}" not in v.message, label  # the hint never gives the value


def test_ch03_first_step_value_is_what_dgd_does(problem):
    # the check's numpy value against declearn's DGD (one AWC step from x*): equal to round-off
    lr = 0.05 / problem.smoothness
    alg = DGD(SimComm(N), problem, ring(N), lr=lr, variant="awc",
              x0=problem.x_star.expand(N, -1).clone())
    alg.step()
    simulated = float((alg.x - problem.x_star).pow(2).sum(-1).mean())
    assert simulated == pytest.approx(lr**2 * problem.heterogeneity, rel=1e-9)
    _, G, _ = _numpy_data(problem)
    assert simulated == pytest.approx(lr**2 * float(np.mean(np.sum(G**2, 1))), rel=1e-9)
    # ATC mixes the zero-mean gradients: at most rho^2 times that
    W = np.asarray(ring(N).W)
    atc = lr**2 * float(np.mean(np.sum((W @ G) ** 2, axis=1)))
    assert atc <= ring(N).rho ** 2 * simulated * (1 + 1e-9)


def test_ch03_first_step_needs_least_squares():
    quad = RandomQuadratics(N, d=10, heterogeneity=1.0, seed=0)
    with pytest.raises(TypeError, match="LeastSquares"):
        ch03.check_first_step(1.0, quad, ring(N), 0.1)


# ------------------------------------------------------------------------------- 03.2
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


def test_ch03_awc_step_bound_refuses_plausible_wrong_answers():
    topo, L = ring(N), 3.0
    lam = np.linalg.eigvalsh(np.asarray(topo.W))
    right = (1 + lam[0]) / L
    assert ch03.check_awc_step_bound(right, topo, L)
    assert ch03.check_awc_step_bound(0.6667 / L, topo, L)  # rounded to 4 digits
    wrong = {
        "ATC's and centralized GD's 2/L": 2 / L,
        "1/L": 1 / L,
        "|lambda_min| with the wrong sign": (1 - lam[0]) / L,
        "second largest eigenvalue": (1 + lam[-2]) / L,
        "twice the bound": 2 * right,
        "half the bound": right / 2,
        "times L instead of over L": (1 + lam[0]) * L,
        "no division by L": 1 + lam[0],
        "lambda_min itself": lam[0],
        "with mu = 1/4 instead of L": (1 + lam[0]) / 0.25,
    }
    for label, value in wrong.items():
        assert not ch03.check_awc_step_bound(value, topo, L), label


# ------------------------------------------------------------------------------- 03.3
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


def test_ch03_lazy_ratio_refuses_plausible_wrong_answers(problem):
    W = np.asarray(ring(N).W)
    W_half = 0.5 * np.eye(N) + 0.5 * W
    lr = 1e-4 / problem.smoothness  # the chapter's sweep: a finite step, not the limit
    measured = _numpy_plateau(problem, W_half, lr) / _numpy_plateau(problem, W, lr)
    assert 3.9 < measured < 4.0 and measured != pytest.approx(4.0, rel=1e-6)
    wrong = {"1/t": 2.0, "t": 0.5, "t^2": 0.25, "1/t^4": 16.0, "1/t^3": 8.0,
             "a ratio at a finite step": measured, "rounded measurement": 3.99}
    for label, value in wrong.items():
        v = ch03.check_lazy_ratio(value, t=0.5)
        assert not v, label
    assert "finite step" in ch03.check_lazy_ratio(measured, t=0.5).message
    assert ch03.check_lazy_ratio(16.0, t=0.25)
    assert not ch03.check_lazy_ratio(4.0, t=0.25)


def test_ch03_lazy_ratio_is_the_small_step_limit(problem):
    # the exact fixed points (numpy solve) approach 1/t^2 as lr -> 0, for AWC, and declearn's
    # DGD.fixed_point gives the same plateaus
    W = np.asarray(ring(N).W)
    for t in (0.25, 0.5):
        W_t = (1 - t) * np.eye(N) + t * W
        ratios = [_numpy_plateau(problem, W_t, c / problem.smoothness)
                  / _numpy_plateau(problem, W, c / problem.smoothness) for c in (1e-3, 1e-5, 1e-7)]
        gaps = [abs(r - 1 / t**2) for r in ratios]
        assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-5 / t**2
    lr = 1e-4 / problem.smoothness
    lazy = Topology.from_matrix(0.5 * np.eye(N) + 0.5 * W, name="lazy ring")
    for topo, M in ((ring(N), W), (lazy, 0.5 * np.eye(N) + 0.5 * W)):
        x = DGD(SimComm(N), problem, topo, lr=lr, variant="awc").fixed_point()
        e = float((x - problem.x_star).pow(2).sum(-1).mean())
        assert e == pytest.approx(_numpy_plateau(problem, M, lr), rel=1e-8)


# ------------------------------------------------------------------------------- 03.4
def test_ch03_build_check_topology_weights_differ_by_node():
    for n in (3, 4, 5, 7):
        W = np.asarray(ch03._build_graph(n).W)
        assert np.allclose(W.sum(0), 1) and np.allclose(W.sum(1), 1)
        assert len({round(w, 12) for w in np.diag(W)}) > 1  # self weights differ by node
