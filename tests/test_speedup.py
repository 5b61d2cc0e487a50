"""Linear speedup and transient iterations (declearn.algorithms.speedup), and the non-convex
regulariser of LogisticRegression (the EquiTopo problem).

Checked against: hand-made error curves with a known crossing (the definition of T);
exact and noisy power laws, with numpy's own polyfit covariance as the oracle of the
confidence interval and its coverage over 200 seeded data sets; the replicas' noise and
gradients against the problem's documented noise draw and a loop over replicas; a dense
numpy re-run of DSGD (``W(k) @ X`` after each local step) and parallel SGD with the same
noise, for static and random topologies; the Hessian at x* against its closed form; the
regulariser's value against ``R sum_j x_j^2 / (1 + x_j^2)`` and its gradient against autograd
and central differences; the theory: T grows with 1/(1 - rho) at fixed n, the complete graph
has none; bad input.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import t as student

from declearn.algorithms.speedup import (
    ErrorCurve,
    InverseTimeSchedule,
    Replicas,
    SpeedupCurves,
    error_curve,
    fit_exponent,
    hessian_at_optimum,
    parallel_sgd_curves,
    speedup_curves,
    transient_length,
    transient_table,
)
from declearn.comm import SimComm
from declearn.problems import LeastSquares, LogisticRegression, RandomQuadratics
from declearn.problems.base import Problem, _mix_seed
from declearn.topology import od_equidyn, ring


# ---------------------------------------------------------------------- the definition
def test_transient_is_the_known_crossing_of_one_plus_c_over_k():
    k = np.arange(1, 1001, dtype=float)
    parallel = 1.0 / k
    dsgd = (1.0 + 100.0 / k) / k  # ratio 1 + 100/k: <= 2 exactly from k = 100 on
    assert transient_length(dsgd, parallel, iterations=k) == 100
    assert transient_length(dsgd, parallel, iterations=k, factor=1.5) == 200
    # without iterations, T is the index: k = index + 1 here
    assert transient_length(dsgd, parallel) == 99


def test_tail_constant_reads_c_off_one_plus_c_over_k():
    k = np.arange(0, 2001, dtype=float)
    parallel = 1.0 / (k + 1)
    c = SpeedupCurves(ErrorCurve("dsgd", 4, k, (1 + 300.0 / np.maximum(k, 1)) * parallel,
                                 0 * k, 1, 0.0),
                      ErrorCurve("psgd", 4, k, parallel, 0 * k, 1, 0.0), "ring", 0.5)
    assert c.tail_constant() == pytest.approx(300.0, rel=1e-12)
    assert c.transient() == 300 and c.transient(1.5) == 600
    with pytest.raises(ValueError, match="start"):
        c.tail_constant(1.0)


def test_transient_from_the_start_never_and_after_the_last_excursion():
    p = np.ones(10)
    assert transient_length(1.5 * p, p) == 0  # within from the start
    assert transient_length(1.5 * p, p, iterations=np.arange(5, 15)) == 5
    d = 1.5 * p
    d[-1] = 2.5
    assert transient_length(d, p) == math.inf  # outside at the end: longer than the run
    d = 1.5 * p
    d[[2, 6]] = 3.0  # leaves the band twice: T is after the last excursion
    assert transient_length(d, p) == 7
    d = 1.5 * p
    d[4] = 0.4  # below parallel / 2 is outside too
    assert transient_length(d, p) == 5
    z = np.zeros(3)
    assert transient_length(z, z) == 0  # both at x*: equal
    assert transient_length(np.array([1.0, 1.0]), np.array([0.0, 1.0])) == 1  # x / 0: outside


@pytest.mark.parametrize("args, kwargs, match", [
    ((np.ones(3), np.ones(4)), {}, "same length"),
    ((np.ones((2, 2)), np.ones((2, 2))), {}, "1-D"),
    ((np.array([1.0, np.nan]), np.ones(2)), {}, "diverged"),
    ((np.array([1.0, -1.0]), np.ones(2)), {}, ">= 0"),
    ((np.ones(3), np.ones(3)), {"factor": 1.0}, "factor"),
    ((np.ones(3), np.ones(3)), {"iterations": [0, 2, 1]}, "increasing"),
])
def test_transient_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        transient_length(*args, **kwargs)


# ---------------------------------------------------------------------- exponents
def test_fit_exponent_recovers_an_exact_power_law():
    ns = np.array([4, 8, 16, 32, 64])
    fit = fit_exponent(ns, 3.0 * ns ** 2.5)
    assert fit.exponent == pytest.approx(2.5, abs=1e-12)
    assert fit.prefactor == pytest.approx(3.0, rel=1e-12)
    assert fit.residual < 1e-12 and fit.points == 5
    assert fit.ci[1] - fit.ci[0] < 1e-9
    np.testing.assert_allclose(fit.predict(ns), 3.0 * ns ** 2.5, rtol=1e-12)
    two = fit_exponent([4, 16], [2.0, 32.0])
    assert two.exponent == pytest.approx(2.0) and math.isnan(two.ci[0])


def test_fit_exponent_interval_matches_polyfit_and_covers_the_truth():
    rng = np.random.default_rng(7)
    ns = np.array([4, 6, 8, 12, 16, 24, 32, 64], dtype=float)
    covered = 0
    for trial in range(200):
        T = 2.0 * ns ** 3 * np.exp(0.2 * rng.standard_normal(ns.size))
        fit = fit_exponent(ns, T)
        (a, _), cov = np.polyfit(np.log(ns), np.log(T), 1, cov=True)
        half = student.ppf(0.975, ns.size - 2) * math.sqrt(cov[0, 0])
        if trial < 5:  # the same numbers from numpy's own fit
            assert fit.exponent == pytest.approx(a, rel=1e-10)
            assert fit.ci == pytest.approx((a - half, a + half), rel=1e-8)
        covered += fit.ci[0] <= 3.0 <= fit.ci[1]
    assert 180 <= covered <= 199  # 95 % nominal; binomial(200, 0.95) is within with p > 0.99


@pytest.mark.parametrize("ns, Ts, match", [
    ([4, 8, 16], [1.0, 0.0, 4.0], "entries \\[1\\]"),
    ([4, 8, 16], [1.0, 2.0, math.inf], "T = inf"),
    ([4, 4], [1.0, 2.0], "two distinct"),
    ([0, 4], [1.0, 2.0], "positive numbers"),
    ([4, 8], [1.0], "same length"),
])
def test_fit_exponent_bad_input(ns, Ts, match):
    with pytest.raises(ValueError, match=match):
        fit_exponent(ns, Ts)


# ---------------------------------------------------------------------- replicas
def test_replicas_noise_is_the_documented_draw_with_sigma_per_replica():
    n, S, d, sigma = 5, 7, 3, 0.8
    base = LeastSquares(n, d=d, m=6, sigma=sigma, seed=4)
    oracle = Replicas(base, S).on(SimComm(n))
    for call in range(3):
        gen = torch.Generator().manual_seed(_mix_seed(4, call))
        expect = torch.randn((n, S, d), generator=gen, dtype=torch.float64) * sigma / d ** 0.5
        # sigma sqrt(S) / sqrt(S d) against sigma / sqrt(d): equal up to rounding
        torch.testing.assert_close(oracle.noise(), expect, rtol=1e-14, atol=0)
    big = Replicas(base, 4000).on(SimComm(n)).noise()
    per_replica = big.pow(2).sum(-1)  # E = sigma^2 for every node and replica
    assert float(per_replica.mean()) == pytest.approx(sigma ** 2, rel=0.03)


@pytest.mark.parametrize("make", [
    lambda: LeastSquares(4, d=3, m=5, seed=1),
    lambda: RandomQuadratics(4, d=3, heterogeneity=1.0, seed=1),
    lambda: LogisticRegression(4, d=3, m=7, seed=1),
    lambda: LogisticRegression(4, d=3, m=7, split="identical", nonconvex_reg=0.3, seed=1),
])
def test_replicas_gradients_and_losses_are_the_problems_per_replica(make):
    base = make()
    rep = Replicas(base, 6)
    x = torch.randn((4, 6, 3), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    nodes = base.all_nodes
    expect = torch.stack([base._grad(x[:, r].contiguous(), nodes) for r in range(6)], 1)
    torch.testing.assert_close(rep._grad(x, nodes), expect, rtol=1e-13, atol=1e-13)
    loss = torch.stack([base._loss(x[:, r].contiguous(), nodes) for r in range(6)], 1).mean(1)
    torch.testing.assert_close(rep._loss(x, nodes), loss, rtol=1e-13, atol=1e-13)
    assert torch.equal(rep.x_star, base.x_star.expand(6, 3))
    assert rep.heterogeneity == base.heterogeneity


# ---------------------------------------------------------------------- runs vs numpy
def _dense_errors(problem, topology, steps, S, lr, x0):
    """DSGD-ATC (``topology``) or parallel SGD (None) in numpy with the problem's noise:
    ``X <- W(k) (X - lr(k) (g + noise))``; returns ``mean_r ||mean_i X[:, r] - x*||^2``."""
    n, d = problem.n, problem.dim
    H = problem._H.numpy()
    g_star, x_star = problem._g_star.numpy(), problem.x_star.numpy()
    X = np.broadcast_to(x0, (n, S, d)).copy()
    out = [float((((X.mean(0) - x_star) ** 2).sum(-1)).mean())]
    for k in range(steps):
        gen = torch.Generator().manual_seed(_mix_seed(problem.seed, k))
        xi = torch.randn((n, S, d), generator=gen, dtype=torch.float64).numpy()
        G = g_star[:, None, :] + np.einsum("nij,nsj->nsi", H, X - x_star) \
            + problem.sigma / math.sqrt(d) * xi
        half = X - lr(k) * G
        if topology is None:
            X = np.broadcast_to(half.mean(0), X.shape).copy()
        else:
            X = np.einsum("ij,jsd->isd", np.asarray(topology.at(k).W), half)
        out.append(float((((X.mean(0) - x_star) ** 2).sum(-1)).mean()))
    return np.array(out)


@pytest.mark.parametrize("topology", [ring(6), od_equidyn(6, seed=2), None])
def test_error_curves_equal_a_dense_numpy_rerun(topology):
    problem = RandomQuadratics(6, d=3, heterogeneity=2.0, sigma=0.7, mu=0.5, seed=5)
    lr = InverseTimeSchedule.for_problem(problem)
    for x0 in ("optimum", "initial"):
        curve = error_curve(problem, topology, steps=40, replicas=3, lr=lr, x0=x0)
        start = problem.x_star.numpy() if x0 == "optimum" else np.zeros(3)
        expect = _dense_errors(problem, topology, 40, 3, lr, start)
        np.testing.assert_allclose(curve.mean, expect, rtol=1e-10, atol=1e-14)
        assert curve.replicas == 3 and curve.iterations[-1] == 40 and curve.n == 6


def test_speedup_curves_share_the_noise_and_measure_T():
    problem = RandomQuadratics(8, d=3, heterogeneity=30.0, sigma=1.0, mu=0.5, seed=3)
    c = speedup_curves(problem, ring(8), steps=300, replicas=4)
    assert c.topology == "ring" and c.rho == pytest.approx(ring(8).rho)
    np.testing.assert_allclose(c.ratio, c.dsgd.mean / np.where(c.parallel.mean == 0, 1,
                                                               c.parallel.mean) +
                               (c.parallel.mean == 0))
    assert c.transient() == transient_length(c.dsgd.mean, c.parallel.mean)
    assert c.dsgd.mean[0] == 0 == c.parallel.mean[0]  # both start at x*
    # step 1 from x*: every node moves by its own gradient's mean, which is 0, plus the same
    # averaged noise, so both methods have the same averaged model
    assert c.dsgd.mean[1] == pytest.approx(c.parallel.mean[1], rel=1e-12)


def test_hessian_at_optimum_is_the_closed_form():
    ls = LeastSquares(5, d=4, m=6, seed=2)
    A = ls.A.numpy()
    expect = np.einsum("nmi,nmj->ij", A, A) / (5 * 6)
    np.testing.assert_allclose(hessian_at_optimum(ls), expect, rtol=1e-7, atol=1e-9)
    rq = RandomQuadratics(5, d=4, mu=0.5, seed=2)
    expect = rq._H.numpy().mean(0)
    np.testing.assert_allclose(hessian_at_optimum(rq), expect, rtol=1e-7, atol=1e-9)
    lr = InverseTimeSchedule.for_problem(rq, theta=3.0)
    assert lr.mu == pytest.approx(np.linalg.eigvalsh(expect)[0], rel=1e-7)
    assert lr(0) == pytest.approx(1.0 / rq.smoothness)  # k0 = theta L / mu
    assert lr(10) == pytest.approx(3.0 / (lr.mu * (10 + lr.k0)))


class _Flat(Problem):
    """f = 0: no strict minimum (and no noise unless asked)."""

    def __init__(self, sigma=0.0):
        super().__init__(3, 2, sigma=sigma)
        self.x_star = torch.zeros(2, dtype=torch.float64)

    def _loss(self, x, nodes):
        return x.sum(-1) * 0

    def _grad(self, x, nodes):
        return x * 0


def test_bad_input_says_what_to_do():
    with pytest.raises(ValueError, match="strict local"):
        InverseTimeSchedule.for_problem(_Flat())
    with pytest.raises(ValueError, match="theta must be > 1/2"):
        InverseTimeSchedule.for_problem(RandomQuadratics(3, d=2), theta=0.5)
    quiet = RandomQuadratics(3, d=2, sigma=0.0)
    with pytest.raises(ValueError, match="sigma > 0"):
        error_curve(quiet, None, steps=3)
    noisy = RandomQuadratics(3, d=2, sigma=1.0)
    with pytest.raises(ValueError, match="x0 must be"):
        error_curve(noisy, None, steps=3, x0="origin")
    with pytest.raises(ValueError, match="shape"):
        error_curve(noisy, None, steps=3, x0=torch.zeros(3))
    with pytest.raises(TypeError, match="Topology"):
        error_curve(noisy, "ring", steps=3)
    with pytest.raises(TypeError, match="Problem"):
        Replicas(lambda x: x, 3)
    with pytest.raises(ValueError, match="count"):
        Replicas(noisy, 0)
    with pytest.raises(ValueError, match="max_steps"):
        transient_table(lambda n: noisy, ["ring"], [3], steps=10, max_steps=5)


# ---------------------------------------------------------------------- theory
def test_transient_grows_with_one_over_spectral_gap_at_fixed_n():
    """ring(8), then (I + W)/2 twice: 1/(1 - rho) = 5.1, 10.2, 20.5 at n = 8. For a strongly
    convex problem with heterogeneous data T grows like (rho / (1 - rho))^2 (Pu et al.):
    x4 per level. Measured on this seed: 75, 214, 1270. We ask for strict growth at each
    level and x4 over two levels (the theory says x16): margins of 3x / 1.5x the spread we
    saw over four problem seeds at these settings."""
    rows = transient_table(
        lambda n: RandomQuadratics(n, d=4, heterogeneity=100.0, sigma=1.0, mu=0.5, seed=3),
        {"ring": ring, "lazy": lambda n: ring(n).lazy(),
         "lazy2": lambda n: ring(n).lazy().lazy()},
        [8], steps=200, max_steps=6400, replicas=8)
    T = [r["T"] for r in rows]
    gaps = [1 - r["rho"] for r in rows]
    assert gaps[0] > gaps[1] > gaps[2]
    assert all(math.isfinite(t) and t > 0 for t in T), T
    assert T[0] < T[1] < T[2] and T[2] >= 4 * T[0], T
    assert all(r["steps"] >= 4 * r["T"] for r in rows)  # each seen over a long tail


def test_complete_graph_has_no_transient_and_parallel_runs_once_per_n():
    rows = transient_table(
        lambda n: RandomQuadratics(n, d=3, heterogeneity=100.0, sigma=1.0, mu=0.5, seed=1),
        ["complete", "ring"], [6], steps=100, replicas=4)
    assert [r["topology"] for r in rows] == ["complete", "ring"]
    assert rows[0]["T"] == 0 and rows[0]["rho"] == pytest.approx(0, abs=1e-12)
    assert rows[1]["T"] > 0  # same problem and noise: only the topology differs


class _Shifted(Problem):
    """``f_i(x) = ||x - x*||^2 / 2 + b_i^T (x - x*)``, ``sum_i b_i = 0``: every node has the
    Hessian I, the nodes disagree by b_i (heterogeneity ``b^2 = mean ||b_i||^2``)."""

    def __init__(self, n, d=5, *, spread=3.0, sigma=1.0, seed=0):
        super().__init__(n, d, sigma=sigma, seed=seed)
        gen = torch.Generator().manual_seed(seed)
        b = torch.randn((n, d), generator=gen, dtype=torch.float64)
        self.b = spread * (b - b.mean(0))
        self.x_star = torch.randn(d, generator=gen, dtype=torch.float64)
        self.smoothness, self.strong_convexity = 1.0, 1.0

    def _grad(self, x, nodes):
        return x - self.x_star + self._rows(self.b, nodes)

    def _loss(self, x, nodes):
        e = x - self.x_star
        return 0.5 * e.pow(2).sum(-1) + (self._rows(self.b, nodes) * e).sum(-1)


def test_parallel_sgd_error_is_the_closed_form_recursion_and_speeds_up_linearly():
    """x_bar - x* follows e <- (1 - lr) e - lr xi_bar with E||xi_bar||^2 = sigma^2 / n, so
    v_(k+1) = (1 - lr_k)^2 v_k + lr_k^2 sigma^2 / n from v_0 = 0; with lr_k = 2 / (k + 2),
    n k v_k / sigma^2 -> theta^2 / (2 theta - 1) = 4/3 for every n."""
    steps, R = 400, 300
    curves = parallel_sgd_curves(lambda n: _Shifted(n, sigma=1.5), [4, 16], steps=steps,
                                 replicas=R)
    for n, c in curves.items():
        lr = InverseTimeSchedule.for_problem(_Shifted(n))
        assert (lr.mu, lr.k0) == pytest.approx((1.0, 2.0), rel=1e-8)
        v = np.zeros(steps + 1)
        for k in range(steps):
            v[k + 1] = (1 - lr(k)) ** 2 * v[k] + lr(k) ** 2 * 1.5 ** 2 / n
        checked = slice(10, None)  # 5 standard errors of a mean over 300 x 5 squared normals
        assert np.all(np.abs(c.mean[checked] - v[checked]) < 5 * c.sem[checked])
        exact = np.median((n * np.arange(steps + 1) * v)[steps // 2:]) / 1.5 ** 2
        assert exact == pytest.approx(4 / 3, rel=0.01)
        assert c.speedup_constant() / 1.5 ** 2 == pytest.approx(exact, rel=0.06)


def test_identical_curvature_means_no_transient_whatever_the_topology():
    """With every Hessian equal, mean_i grad f_i(x_i) = x_bar - x*: DSGD's averaged model is
    parallel SGD's exactly, however the nodes disagree (b_i) and however slowly W mixes."""
    problem = _Shifted(8, spread=5.0, seed=2)
    for topology in (ring(8), od_equidyn(8, seed=1)):
        c = speedup_curves(problem, topology, steps=200, replicas=4)
        np.testing.assert_allclose(c.dsgd.mean, c.parallel.mean, rtol=1e-9, atol=1e-15)
        assert c.transient() == 0


def test_table_over_seeds_averages_the_curves_of_each_draw():
    make = lambda n, seed: _Shifted(n, spread=2.0, sigma=1.0, seed=seed)
    rows = transient_table(make, ["ring"], [6], steps=60, replicas=3, seeds=[0, 4],
                           keep_curves=True)
    (row,) = rows
    lr = {s: InverseTimeSchedule.for_problem(make(6, s)) for s in (0, 4)}
    each = [error_curve(make(6, s), ring(6), steps=60, replicas=3, lr=lr[s]) for s in (0, 4)]
    psgd = [error_curve(make(6, s), None, steps=60, replicas=3, lr=lr[s]) for s in (0, 4)]
    np.testing.assert_allclose(row["curves"].dsgd.mean, (each[0].mean + each[1].mean) / 2,
                               rtol=1e-12)
    np.testing.assert_allclose(row["curves"].parallel.mean, (psgd[0].mean + psgd[1].mean) / 2,
                               rtol=1e-12)
    assert row["curves"].dsgd.replicas == 6 and row["steps"] == 60
    with pytest.raises(ValueError, match="seeds is empty"):
        transient_table(make, ["ring"], [6], steps=10, seeds=[])


# ---------------------------------------------------------------------- the regulariser
def test_nonconvex_regulariser_value_is_the_closed_form():
    R = 0.37
    plain = LogisticRegression(4, d=3, m=9, reg=0.05, seed=6)
    nc = LogisticRegression(4, d=3, m=9, reg=0.05, nonconvex_reg=R, seed=6)
    for seed in range(3):
        x = torch.randn(3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        x = 3 * x
        xs = x.numpy()
        closed = R * float((xs ** 2 / (1 + xs ** 2)).sum())
        assert nc.loss(x) - plain.loss(x) == pytest.approx(closed, rel=1e-12, abs=1e-14)


def test_nonconvex_regulariser_gradient_matches_autograd_and_differences():
    p = LogisticRegression(4, d=3, m=9, reg=0.0, nonconvex_reg=0.5, seed=6)
    nodes = p.all_nodes
    for seed in range(3):
        x = 2 * torch.randn((4, 3), generator=torch.Generator().manual_seed(seed),
                            dtype=torch.float64)
        xg = x.clone().requires_grad_(True)
        (auto,) = torch.autograd.grad(p._loss(xg, nodes).sum(), xg)
        torch.testing.assert_close(p._grad(x, nodes), auto, rtol=1e-12, atol=1e-13)
        h = 1e-6
        for j in range(3):
            e = torch.zeros(3, dtype=torch.float64)
            e[j] = h
            fd = (p._loss(x + e, nodes) - p._loss(x - e, nodes)) / (2 * h)
            torch.testing.assert_close(p._grad(x, nodes)[:, j], fd, rtol=1e-7, atol=1e-8)
    # the regulariser's own gradient: 2 R x / (1 + x^2)^2, elementwise
    x = torch.linspace(-3, 3, 13, dtype=torch.float64)
    only = LogisticRegression(2, d=13, m=3, reg=0.0, nonconvex_reg=0.5, seed=0)
    torch.testing.assert_close(only._regulariser_grad(x), x / (1 + x ** 2) ** 2,
                               rtol=1e-15, atol=0)


def test_teacher_scale_and_the_equitopo_problem():
    d, n, m = 4, 5, 8
    gen = torch.Generator().manual_seed(9)  # the documented draw order: A, w_c, v, u
    torch.randn((n, m, d), generator=gen, dtype=torch.float64)
    w_c = torch.randn(d, generator=gen, dtype=torch.float64)
    v = torch.randn((n, d), generator=gen, dtype=torch.float64)
    default = LogisticRegression(n, d=d, m=m, heterogeneity=0.5, seed=9)
    torch.testing.assert_close(default.teachers, w_c / d ** 0.5 + 0.5 * (v / d ** 0.5),
                               rtol=1e-15, atol=0)
    scaled = LogisticRegression(n, d=d, m=m, heterogeneity=0.5, teacher_scale=1.0, seed=9)
    torch.testing.assert_close(scaled.teachers, w_c + 0.5 * v, rtol=1e-15, atol=0)
    with pytest.raises(ValueError, match="teacher_scale"):
        LogisticRegression(n, d=d, m=m, teacher_scale=-1.0)

    small = LogisticRegression.equitopo(12, m=60, seed=2)
    assert (small.reg, small.nonconvex_reg, small.shape, small.m) == (0.0, 1e-3, (10,), 60)
    assert small.sigma == pytest.approx(1e-6 * math.sqrt(10))
    assert small.strong_convexity is None  # R / 2 outweighs reg = 0: non-convex
    assert float(small.gradient(small.x_star).norm()) < 1e-10
    default_args = LogisticRegression.equitopo.__func__.__defaults__ or ()
    kw = LogisticRegression.equitopo.__func__.__kwdefaults__
    assert default_args == (300,) and (kw["d"], kw["m"], kw["heterogeneity"]) == (10, 1000, 0.2)
