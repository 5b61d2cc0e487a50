"""declearn.problems against independent computations: autograd of losses written here from
the raw data, per-node loops, dense solvers, the closed forms each docstring promises, and a
real ``mpiexec -n 2`` (tests/mpi/problems_checks.py)."""

from __future__ import annotations

import math
import re
from itertools import pairwise

import numpy as np
import pytest
import torch

from declearn.comm import SimComm
from declearn.problems import (
    PARTITION_METHODS,
    LeastSquares,
    LogisticRegression,
    RandomQuadratics,
    TwoTypeQuadratics,
    label_histogram,
    partition,
)

from mpi_helpers import needs_mpi, run_mpi

F64 = torch.float64


# ------------------------------------------------------------ losses written from the raw data
def ls_losses(p: LeastSquares, X: torch.Tensor) -> torch.Tensor:
    A, b = p.A.expand(p.n, -1, -1), p.b.expand(p.n, -1)
    return torch.stack([(A[i] @ X[i] - b[i]).square().sum() / (2 * p.m) for i in range(p.n)])


def logistic_losses(p: LogisticRegression, X: torch.Tensor) -> torch.Tensor:
    A = p.A.expand(p.n, -1, -1)
    y, w = p.y.expand(p.n, -1), p.weights.expand(p.n, -1)
    out = []
    for i in range(p.n):
        data = (w[i] * torch.log1p(torch.exp(-y[i] * (A[i] @ X[i])))).sum()
        reg = p.reg / 2 * X[i].square().sum()
        nonconvex = p.nonconvex_reg * (X[i] ** 2 / (1 + X[i] ** 2)).sum()
        out.append(data + reg + nonconvex)
    return torch.stack(out)


def quad_losses(p: RandomQuadratics, X: torch.Tensor) -> torch.Tensor:
    return torch.stack([0.5 * (p.A[i] @ X[i] - p.b[i]).square().sum() for i in range(p.n)])


def two_type_losses(p: TwoTypeQuadratics, X: torch.Tensor) -> torch.Tensor:
    a = p.curvature
    c = p.x_star - p._g_star / a[:, None]  # f_i = a_i/2 ||x - c_i||^2
    return torch.stack([0.5 * a[i] * (X[i] - c[i]).square().sum() for i in range(p.n)])


CASES = {
    "ls": (lambda: LeastSquares(6, d=5, m=8, heterogeneity=1.5, seed=1), ls_losses),
    "ls_wide": (lambda: LeastSquares(6, d=9, m=4, heterogeneity=1.0, seed=2), ls_losses),
    "ls_identical": (lambda: LeastSquares(6, d=4, m=7, split="identical", seed=3), ls_losses),
    "logistic": (lambda: LogisticRegression(6, d=5, m=12, heterogeneity=2.0, seed=4),
                 logistic_losses),
    "logistic_nonconvex": (lambda: LogisticRegression(5, d=4, m=10, reg=1e-3,
                                                      nonconvex_reg=0.2, seed=5),
                           logistic_losses),
    "logistic_identical": (lambda: LogisticRegression(4, d=3, m=9, split="identical", seed=6),
                           logistic_losses),
    "quadratics": (lambda: RandomQuadratics(7, d=6, heterogeneity=2.0, mu=0.4, r0=3.0,
                                            seed=7), quad_losses),
    "two_type": (lambda: TwoTypeQuadratics(7, d=4, zeta=2.0, kappa=0.4, sigma=0.0, seed=8),
                 two_type_losses),
}


def _points(p, scale=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return p.x_star + scale * torch.randn((p.n,) + p.shape, generator=gen, dtype=F64)


def _gradient_of(losses, p, X):
    X = X.clone().requires_grad_(True)
    losses(p, X).sum().backward()
    return X.grad


@pytest.mark.parametrize("case", CASES)
def test_oracle_matches_autograd_of_the_raw_loss(case):
    build, losses = CASES[case]
    p = build()
    oracle = p.on(SimComm(p.n))
    for scale in (0.0, 0.3, 3.0):
        X = _points(p, scale, seed=int(10 * scale))
        # rtol: log1p(exp(t)) written here loses a few digits at large margins
        torch.testing.assert_close(oracle.loss(X), losses(p, X).detach(), rtol=1e-10,
                                   atol=1e-12)
        torch.testing.assert_close(oracle.grad(X), _gradient_of(losses, p, X), rtol=1e-10,
                                   atol=1e-12)
        # and the problem's own loss differentiates to its own gradient
        Xg = X.clone().requires_grad_(True)
        p._loss(Xg, p.all_nodes).sum().backward()
        torch.testing.assert_close(oracle.grad(X), Xg.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_batched_oracle_equals_a_loop_over_single_nodes(case):
    build, losses = CASES[case]
    p = build()
    X = _points(p, 1.0, seed=3)
    batched_g, batched_f = p._grad(X, p.all_nodes), p._loss(X, p.all_nodes)
    for i in range(p.n):  # the gather path (as a rank sees it) and the raw formula
        one = torch.tensor([i])
        torch.testing.assert_close(p._grad(X[i:i + 1], one)[0], batched_g[i], rtol=1e-13,
                                   atol=1e-14)
        torch.testing.assert_close(p._loss(X[i:i + 1], one)[0], batched_f[i], rtol=1e-13,
                                   atol=1e-14)
        Xi = X.clone().requires_grad_(True)
        losses(p, Xi)[i].backward()
        torch.testing.assert_close(Xi.grad[i], batched_g[i], rtol=1e-10, atol=1e-12)
    perm = torch.randperm(p.n, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(p._grad(X[perm], perm), batched_g[perm], rtol=0, atol=0)


@pytest.mark.parametrize("case", CASES)
def test_x_star_is_stationary_and_f_star_is_its_value(case):
    build, losses = CASES[case]
    p = build()
    X = p.x_star.expand((p.n,) + p.shape)
    full = _gradient_of(losses, p, X).mean(0)  # the raw data's gradient of f at x*
    assert full.norm() < 1e-9
    assert p.gradient(p.x_star).norm() < 1e-9
    assert p.f_star == pytest.approx(float(losses(p, X).mean()), rel=1e-12, abs=1e-14)
    assert p.x_star.dtype == F64 and p.x_star.shape == p.shape
    # smoothness bounds the curvature along random directions at random points
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        x = p.x_star + torch.randn(p.shape, generator=gen, dtype=F64)
        v = torch.randn((p.n,) + p.shape, generator=gen, dtype=F64) * 1e-4
        xs = x.expand_as(v)
        dg = p._grad(xs + v, p.all_nodes) - p._grad(xs, p.all_nodes)
        assert (dg.norm(dim=-1) <= p.smoothness * v.norm(dim=-1) * (1 + 1e-6)).all()


def test_logistic_newton_finishes_where_f_cannot_resolve_its_decrease():
    # this draw stalled at ||grad f|| = 1.3e-11: the line search on f saw no decrease
    p = LogisticRegression(32, d=5, m=50, heterogeneity=3.0, reg=0.1, seed=0)
    X = p.x_star.expand((p.n,) + p.shape)
    assert _gradient_of(logistic_losses, p, X).mean(0).norm() < 1e-12


def test_least_squares_x_star_matches_a_dense_solver():
    p = LeastSquares(5, d=7, m=6, heterogeneity=2.0, noise=0.5, seed=8)
    A, b = p.A.reshape(-1, 7).numpy(), p.b.reshape(-1).numpy()
    ref = np.linalg.lstsq(A, b, rcond=None)[0]
    np.testing.assert_allclose(p.x_star.numpy(), ref, rtol=1e-11, atol=1e-12)
    H = A.T @ A / A.shape[0]
    assert p.strong_convexity == pytest.approx(np.linalg.eigvalsh(H)[0], rel=1e-10)


def test_gradient_descent_on_the_oracle_reaches_x_star():
    """Dynamics as an independent check of x*: centralised GD with step 1/L converges to it."""
    for p in (LeastSquares(8, d=6, m=10, seed=9),
              RandomQuadratics(8, d=6, mu=0.5, heterogeneity=1.0, r0=5.0, seed=9),
              LogisticRegression(8, d=4, m=20, reg=0.1, seed=9)):
        oracle = p.on(SimComm(p.n))
        x = oracle.x0()
        for _ in range(600):
            x = x - oracle.grad(x).mean(0) / p.smoothness
        assert (x[0] - p.x_star).norm() < 1e-8, p
        assert float(oracle.loss(x).mean()) - p.f_star < 1e-14


# ----------------------------------------------------------------------- heterogeneity b^2
def _b2(p, losses) -> float:
    X = p.x_star.expand((p.n,) + p.shape)
    return float(_gradient_of(losses, p, X).square().sum(-1).mean())


def test_least_squares_heterogeneity_knob():
    b2 = {h: LeastSquares(8, heterogeneity=h, noise=0.3, seed=2).heterogeneity
          for h in (0.0, 0.5, 1.0, 2.0)}
    assert b2[0.0] < 1e-20  # noise does not move the minimisers: all at the centre
    assert b2[0.5] < b2[1.0] < b2[2.0]
    assert b2[2.0] == pytest.approx(4 * b2[1.0], rel=1e-9)  # b^2 = knob^2 * const
    assert b2[1.0] == pytest.approx(4 * b2[0.5], rel=1e-9)
    p = LeastSquares(8, heterogeneity=1.0, noise=0.3, seed=2)
    assert p.heterogeneity == pytest.approx(_b2(p, ls_losses), rel=1e-10)
    # each node's own minimiser solves its own data, and they spread by the knob
    own = torch.linalg.lstsq(p.A, p.b.unsqueeze(-1)).solution.squeeze(-1)
    torch.testing.assert_close(own, p.minimisers, rtol=1e-10, atol=1e-10)
    zero = LeastSquares(8, heterogeneity=0.0, noise=0.3, seed=2)
    own = torch.linalg.lstsq(zero.A, zero.b.unsqueeze(-1)).solution.squeeze(-1)
    torch.testing.assert_close(own, zero.x_star.expand(8, -1), rtol=1e-10, atol=1e-10)
    assert zero.f_star > 0.01  # the noise is there, as unexplained residual
    assert LeastSquares(8, split="identical", seed=2).heterogeneity < 1e-20


def test_logistic_heterogeneity_grows_with_the_knob():
    b2 = [LogisticRegression(8, heterogeneity=h, seed=3).heterogeneity for h in (0, 1, 3, 10)]
    assert all(a < b for a, b in pairwise(b2)), b2
    assert b2[-1] > 2 * b2[0]
    assert LogisticRegression(8, split="identical", seed=3).heterogeneity < 1e-20
    p = LogisticRegression(8, heterogeneity=1.0, seed=3)
    assert p.heterogeneity == pytest.approx(_b2(p, logistic_losses), rel=1e-10)


# ----------------------------------------------------------------------- random quadratics
@pytest.mark.parametrize("zeta2", [0.0, 0.01, 1.0, 10.0])
@pytest.mark.parametrize("mu", [None, 0.5])
def test_random_quadratics_hit_zeta2_and_r0(zeta2, mu):
    p = RandomQuadratics(16, d=10, heterogeneity=zeta2, mu=mu, r0=10.0, seed=4)
    A, b = p.A.numpy(), p.b.numpy()
    x_star = np.linalg.lstsq(A.reshape(-1, 10), b.reshape(-1), rcond=None)[0]  # independent
    np.testing.assert_allclose(p.x_star.numpy(), x_star, rtol=1e-11, atol=1e-11)
    grads = np.einsum("nji,nj->ni", A, np.einsum("nij,j->ni", A, x_star) - b)
    assert np.mean((grads ** 2).sum(1)) == pytest.approx(zeta2, rel=1e-10, abs=1e-20)
    assert p.heterogeneity == pytest.approx(zeta2, rel=1e-10, abs=1e-20)
    assert float((p.on(SimComm(16)).x0()[0] - p.x_star).norm()) == pytest.approx(10.0,
                                                                                  rel=1e-12)
    if zeta2 == 0:  # every node's own minimiser is x*
        own = np.linalg.solve(A, b[..., None])[..., 0]
        np.testing.assert_allclose(own, np.broadcast_to(x_star, own.shape), atol=1e-9)


@pytest.mark.parametrize("n", [6, 7])
def test_two_type_quadratics_pull_apart_by_kind(n):
    p = TwoTypeQuadratics(n, d=3, zeta=2.0, kappa=0.4, seed=1)
    signs = p.signs.numpy()
    assert sorted(signs.tolist()) == [-1.0] * (n // 2) + [0.0] * (n % 2) + [1.0] * (n // 2)
    assert np.allclose(p.curvature.numpy(), 1 + 0.4 * signs)
    G = p._g_star.numpy()
    assert np.allclose(np.linalg.norm(G, axis=1), 2.0 * np.abs(signs))
    assert np.allclose(G[signs > 0], G[signs > 0][0])
    assert np.allclose(G[signs < 0], -G[signs > 0][0])
    assert p.heterogeneity == pytest.approx(4.0 * (n - n % 2) / n)
    assert (p.smoothness, p.strong_convexity) == (1.4, 1.0)


def test_random_quadratics_spectrum():
    mu, L, d = 0.3, 2.0, 8
    p = RandomQuadratics(12, d=d, mu=mu, L=L, seed=5)
    sv = np.linalg.svd(p.A.numpy(), compute_uv=False)  # singular values of every A_i
    np.testing.assert_allclose(np.sort(sv, axis=1),
                               np.broadcast_to(np.linspace(mu, L, d), (12, d)), rtol=1e-12)
    hess = np.einsum("nki,nkj->ij", p.A.numpy(), p.A.numpy()) / 12  # Hessian of f
    ev = np.linalg.eigvalsh(hess)
    assert mu ** 2 - 1e-12 <= ev[0] and ev[-1] <= L ** 2 + 1e-12
    assert p.smoothness == L ** 2 and p.strong_convexity == pytest.approx(mu ** 2)
    q = RandomQuadratics(12, d=d, L=L, seed=5)  # mu=None: spectral norm L, random bottom
    np.testing.assert_allclose(np.linalg.norm(q.A.numpy(), ord=2, axis=(1, 2)), L, rtol=1e-12)
    ev = np.linalg.eigvalsh(np.einsum("nki,nkj->ij", q.A.numpy(), q.A.numpy()) / 12)
    assert q.strong_convexity == pytest.approx(ev[0], rel=1e-9)


def test_problems_are_deterministic_in_the_seed():
    for make in (lambda s: LeastSquares(4, seed=s), lambda s: LogisticRegression(4, seed=s),
                 lambda s: RandomQuadratics(4, seed=s)):
        a, b, c = make(3), make(3), make(4)
        assert torch.equal(a.x_star, b.x_star) and a.f_star == b.f_star
        assert not torch.equal(a.x_star, c.x_star)


# ----------------------------------------------------------------------- noise
def test_noise_has_the_advertised_variance_and_is_seeded():
    n, d, sigma, calls = 64, 10, 0.7, 200
    p = RandomQuadratics(n, d=d, sigma=sigma, seed=6)
    oracle = p.on(SimComm(n))
    x = oracle.x0()
    exact = oracle.full_grad(x)
    noise = torch.stack([oracle.grad(x) - exact for _ in range(calls)])  # (calls, n, d)
    sq = noise.square().sum(-1)
    # E||xi||^2 = sigma^2; the mean of 12800 draws has relative std sqrt(2 / (d * 12800))
    assert float(sq.mean()) == pytest.approx(sigma ** 2, rel=5 * math.sqrt(2 / (d * n * calls)))
    assert float(noise.mean(dim=(0, 1)).abs().max()) < 5 * sigma / math.sqrt(d * n * calls)
    per_coord = noise.reshape(-1, d).var(0)  # isotropic: sigma^2 / d in every coordinate
    assert float((per_coord / (sigma ** 2 / d) - 1).abs().max()) < 0.1
    again = p.on(SimComm(n))  # same (seed, call): the same noise
    torch.testing.assert_close(again.grad(x) - exact, noise[0], rtol=0, atol=1e-15)
    other = RandomQuadratics(n, d=d, sigma=sigma, seed=7).on(SimComm(n))
    assert not torch.allclose(other.grad(x) - other.full_grad(x), noise[0])
    assert oracle.calls == calls
    assert torch.equal(p.on(SimComm(n)).full_grad(x), exact)  # full_grad never draws


def test_float32_oracles_follow_the_input_dtype():
    for p in (LeastSquares(5, seed=1), LogisticRegression(5, seed=1),
              RandomQuadratics(5, seed=1, sigma=0.1)):
        oracle = p.on(SimComm(5))
        X = _points(p, 1.0)
        g32 = oracle.full_grad(X.float())
        assert g32.dtype == torch.float32
        torch.testing.assert_close(g32.double(), oracle.full_grad(X), rtol=1e-4, atol=1e-5)
        assert oracle.grad(X.float()).dtype == torch.float32


@pytest.mark.gpu
def test_oracles_on_a_gpu_simulator_equal_the_cpu_ones():
    for p in (LeastSquares(6, seed=1, sigma=0.2), LeastSquares(6, d=30, m=8, seed=1),
              LogisticRegression(6, seed=1, nonconvex_reg=0.1), RandomQuadratics(6, seed=1)):
        cpu, gpu = p.on(SimComm(6)), p.on(SimComm(6, device="cuda"))
        for dtype, tol in ((F64, 1e-12), (torch.float32, 1e-5)):
            X = _points(p, 1.0).to(dtype)
            torch.testing.assert_close(gpu.grad(X.cuda()).cpu(), cpu.grad(X), rtol=tol,
                                       atol=tol)
            torch.testing.assert_close(gpu.loss(X.cuda()).cpu(), cpu.loss(X), rtol=tol,
                                       atol=tol)


def test_simulator_hot_path_reads_data_without_copies():
    p = LeastSquares(6, seed=1)
    data = p._data_like(torch.zeros(1, dtype=F64))
    assert p._rows(data["H"], p.all_nodes) is data["H"]
    assert p._data_like(torch.zeros(1, dtype=F64)) is data  # converted once, then cached
    shared = LeastSquares(6, split="identical", seed=1)
    assert shared._data()["H"].shape[0] == 1  # identical data stored once


# ----------------------------------------------------------------------- real data
def _toy_data(N=300, d=5, seed=0, labels=(0, 1)):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, d))
    y = np.where(X @ rng.normal(size=d) + 0.5 * rng.normal(size=N) > 0, labels[1], labels[0])
    return X, y


@pytest.mark.parametrize("method", PARTITION_METHODS)
def test_from_data_averages_each_node_over_its_own_samples(method):
    X, y = _toy_data(labels=(3, 8))
    n, reg = 7, 0.05
    p = LogisticRegression.from_data(X, y, n, partition=method, alpha=0.5, balanced=False,
                                     reg=reg, seed=2)
    parts = partition(y, n, method=method, alpha=0.5, balanced=False, seed=2)
    gen = torch.Generator().manual_seed(0)
    Z = torch.randn(n, 5, generator=gen, dtype=F64)
    want = []
    for i, idx in enumerate(parts):  # the loss written from X, y and the parts alone
        a = torch.as_tensor(X[idx])
        s = torch.as_tensor(np.where(y[idx] == 8, 1.0, -1.0))
        want.append(torch.log1p(torch.exp(-s * (a @ Z[i]))).mean() + reg / 2 * Z[i] @ Z[i])
    torch.testing.assert_close(p.on(SimComm(n)).loss(Z), torch.stack(want), rtol=1e-12,
                               atol=1e-12)
    assert p.gradient(p.x_star).norm() < 1e-9
    assert list(p.classes) == [3, 8]


# ----------------------------------------------------------------------- partitions
def _labels(N=6000, C=10, seed=0):
    return np.random.default_rng(seed).integers(0, C, size=N)


@pytest.mark.parametrize("method", PARTITION_METHODS)
@pytest.mark.parametrize("balanced", [True, False])
def test_partitions_cover_every_index_once(method, balanced):
    labels = _labels(N=1003)
    parts = partition(labels, 10, method=method, alpha=0.3, balanced=balanced, seed=1)
    assert len(parts) == 10
    allidx = np.concatenate(parts)
    assert np.array_equal(np.sort(allidx), np.arange(1003))
    sizes = np.array([len(q) for q in parts])
    if balanced or method != "dirichlet":
        assert sizes.max() - sizes.min() <= 1
    else:
        assert sizes.max() - sizes.min() > 1 and sizes.min() >= 1
    again = partition(labels, 10, method=method, alpha=0.3, balanced=balanced, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    hist = label_histogram(labels, parts)
    for i, idx in enumerate(parts):  # against counting by hand
        assert list(hist[i]) == [int((labels[idx] == c).sum()) for c in range(10)]


def _mean_entropy(labels, parts) -> float:
    hist = label_histogram(labels, parts).astype(float)
    prob = hist / hist.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(prob > 0, prob * np.log(prob), 0.0).sum(1)
    return float(ent.mean())


def test_dirichlet_skew_decreases_with_alpha():
    labels = _labels()
    ent = {a: np.mean([_mean_entropy(labels, partition(labels, 10, method="dirichlet",
                                                      alpha=a, seed=s)) for s in range(3)])
           for a in (0.01, 0.1, 1.0, 100.0)}
    iid = _mean_entropy(labels, partition(labels, 10, method="iid"))
    srt = _mean_entropy(labels, partition(labels, 10, method="sorted"))
    assert ent[0.01] < ent[0.1] < ent[1.0] < ent[100.0], ent
    assert ent[100.0] == pytest.approx(iid, abs=0.05) and iid == pytest.approx(math.log(10),
                                                                                abs=0.01)
    assert ent[0.01] < 0.6 and srt < 0.25  # near one label per node
    blocks = partition(labels, 10, method="sorted")  # contiguous label ranges, in order
    assert all(labels[a].max() <= labels[b].min() for a, b in pairwise(blocks))


# ----------------------------------------------------------------------- bad input
@pytest.mark.parametrize("make, error, match", [
    (lambda: LeastSquares(4, d=0), ValueError, "d"),
    (lambda: LeastSquares(4, m=2.5), TypeError, "m"),
    (lambda: LeastSquares(4, heterogeneity=-1), ValueError, "heterogeneity"),
    (lambda: LeastSquares(4, split="random"), ValueError, "split"),
    (lambda: LeastSquares(4, noise=float("nan")), ValueError, "noise"),
    (lambda: LeastSquares(4, d=10, m=5, split="identical"), ValueError, "m >= d"),
    (lambda: LeastSquares(2, d=30, m=5), ValueError, "more samples"),
    (lambda: LeastSquares(4, sigma=-0.1), ValueError, "sigma"),
    (lambda: LeastSquares(0), ValueError, "at least 1"),
    (lambda: LogisticRegression(4, reg=-1.0), ValueError, "reg"),
    (lambda: LogisticRegression(4, nonconvex_reg="a"), TypeError, "nonconvex_reg"),
    (lambda: LogisticRegression(4, m=2, reg=0.0, heterogeneity=0.0, seed=1), ValueError,
     "reg > 0"),
    (lambda: RandomQuadratics(4, mu=2.0, L=1.0), ValueError, "at most L"),
    (lambda: RandomQuadratics(4, mu=0.0), ValueError, "mu"),
    (lambda: RandomQuadratics(4, L=0.0), ValueError, "L"),
    (lambda: RandomQuadratics(4, r0=-1.0), ValueError, "r0"),
    (lambda: RandomQuadratics(1, heterogeneity=1.0), ValueError, "single node"),
    (lambda: TwoTypeQuadratics(4, kappa=1.0), ValueError, "kappa"),
    (lambda: TwoTypeQuadratics(4, d=0), ValueError, "d"),
    (lambda: LogisticRegression.from_data(*_toy_data(), 4, partition="random"), ValueError,
     "method"),
    (lambda: LogisticRegression.from_data(np.ones((5, 2)), [0, 1, 2, 0, 1], 2), ValueError,
     "two classes"),
    (lambda: LogisticRegression.from_data(np.ones((5, 2)), [0, 1], 2), ValueError,
     "one label per row"),
    (lambda: partition([0, 1, 1], 5), ValueError, "fewer nodes"),
    (lambda: partition(_labels(), 4, method="dirichlet", alpha=0.0), ValueError, "alpha"),
    (lambda: partition(np.repeat([0, 1], 50), 8, method="dirichlet", alpha=0.01,
                       balanced=False, max_tries=5), ValueError, "balanced=True"),
])
def test_bad_input_gets_a_clear_error(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_oracle_rejects_wrong_communicator_and_shape():
    p = LeastSquares(4)
    with pytest.raises(ValueError, match="n=4"):
        p.on(SimComm(3))
    with pytest.raises(ValueError, match=r"\(4, 10\)"):
        p.on(SimComm(4)).grad(torch.zeros(4, 9, dtype=F64))


# ----------------------------------------------------------------------- real MPI ranks
@pytest.mark.mpi
@needs_mpi
def test_oracles_under_mpiexec_equal_the_simulator_rows():
    out = run_mpi("problems_checks.py", 2, timeout=90)
    lines = re.findall(r"PROBLEMS-OK rank (\d+) of 2: (\d+) checks", out)
    assert sorted(r for r, _ in lines) == ["0", "1"], out[-3000:]
    assert all(int(c) > 250 for _, c in lines), out[-3000:]
