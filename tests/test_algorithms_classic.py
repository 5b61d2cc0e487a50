"""Consensus variants, DGD, gradient tracking, push-DIGing, exact diffusion, D2, EXTRA.

Checked against what theory promises (exact averaging in ceil(log2 n) rounds and not before;
DGD's constant-step bias, equal to the fixed point of its linear recursion solved densely here,
growing with the step size and exactly like b^2, smaller for ATC than AWC; a diminishing step
removing it; exact convergence of the bias-corrected
methods; push-sum's ratio against the biased limit of plain averaging, computed from the left
Perron vector), against dense numpy re-runs of each documented update rule, and under a real
``mpiexec -n 4`` (tests/mpi/algorithms_classic_checks.py).
"""

from __future__ import annotations

import importlib.util
import math
import re
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch

from declearn.algorithms import (
    CECA,
    D2,
    DGD,
    EXTRA,
    AverageConsensus,
    ExactDiffusion,
    GradientTracking,
    PushDIGing,
    PushSumConsensus,
    diminishing,
)
from declearn.comm import SimComm
from declearn.errors import TopologyError
from declearn.problems import LeastSquares
from declearn.topology import (
    ceca,
    exponential,
    grid,
    od_equidyn,
    one_peer_exponential,
    ring,
)

from mpi_helpers import needs_mpi, run_mpi

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location(
    "algorithms_classic_checks", HERE / "mpi" / "algorithms_classic_checks.py")
_shared = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_shared)  # builders only: that module imports mpi4py in main()
directed_graph = _shared.directed_graph
directed_one_peer = _shared.directed_one_peer


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _problem(n, d=5, m=20, **kw):
    """Heterogeneous least squares; ``L`` is its smoothness, step sizes are ``c / L``."""
    prob = LeastSquares(n, d=d, m=m, **kw)
    prob.L = prob.smoothness
    return prob


def _linear_parts(prob):
    """``grad f_i(x) = H_i x - c_i``: ``H`` (n, d, d) and ``c`` (n, d), in numpy, from the
    problem's raw data ``A_i``, ``b_i`` (independent of its oracles)."""
    A, b = prob.A.numpy(), prob.b.numpy()
    return (np.einsum("nmi,nmj->nij", A, A) / prob.m, np.einsum("nmi,nm->ni", A, b) / prob.m)


def _dist2(x, x_star):
    """``(1/n) sum_i ||x_i - x*||^2``."""
    return float(((x - x_star) ** 2).sum(-1).mean())


# ----------------------------------------------------------------- exact averaging
@pytest.mark.parametrize("n", [2, 4, 8, 16, 32, 64])
def test_one_peer_exponential_averages_exactly_in_log2_n_rounds(n):
    tau = int(math.log2(n))
    x0 = _randn(n, 3, seed=n)
    alg = AverageConsensus(SimComm(n), one_peer_exponential(n), x0)
    for r in range(tau):
        if r == tau - 1:
            assert (alg.x - x0.mean(0)).abs().max() > 1e-3, "exact one round early"
        alg.step()
    assert (alg.x - x0.mean(0)).abs().max() < 1e-12


def test_one_peer_exponential_is_not_exact_for_other_n():
    n = 12
    x0 = _randn(n, 2, seed=1)
    alg = AverageConsensus(SimComm(n), one_peer_exponential(n), x0)
    alg.run(4, progress=False)
    assert (alg.x - x0.mean(0)).abs().max() > 1e-3  # why CECA exists


@pytest.mark.parametrize("ports", [2, 1])
def test_ceca_averages_exactly_in_log2_n_rounds_for_every_n(ports):
    for n in range(2, 41):
        if ports == 1 and n % 2:
            continue
        tau = (n - 1).bit_length()
        x0 = _randn(n, 4, seed=n)
        comm = SimComm(n)
        alg = CECA(comm, x0, ports=ports)
        for r in range(tau):
            if r == tau - 1 and tau > 1:
                gap = float((alg.x - x0.mean(0)).abs().max())
                assert gap > 1e-4, f"n={n}: exact after {r} < tau = {tau} rounds"
            alg.step()
        err = float((alg.x - x0.mean(0)).abs().max())
        assert err < 1e-12, f"n={n}, ports={ports}: error {err:.2g} after tau = {tau} rounds"
        np.testing.assert_array_equal(comm.traffic.messages, np.full(n, tau))  # one per round
        alg.run(tau + 1, progress=False)  # the schedule repeats and keeps the average
        assert float((alg.x - x0.mean(0)).abs().max()) < 1e-12


def test_ceca_rounds_are_one_peer_patterns():
    for n in (7, 12, 33):
        topo = ceca(n)
        assert topo.period == (n - 1).bit_length()
        assert int("".join(map(str, topo.bits)), 2) == n - 1 and topo.bits[0] == 1
        for r in range(topo.period):
            W = topo.at(r).W
            assert np.allclose(W.sum(0), 1) and np.allclose(W.sum(1), 1)
            assert sorted(topo.peers[r]) == list(range(n))  # a permutation: one message in
            assert topo.at(r).degree == 1
        if n % 2 == 0:
            one = ceca(n, ports=1)
            for r in range(one.period):
                peer = one.peers[r]
                assert np.array_equal(peer[peer], np.arange(n))  # pairwise exchanges
                assert np.all(peer % 2 != np.arange(n) % 2)
    assert ceca(1).at(5).n == 1


def test_ceca_on_a_vector_per_node_and_scalars():
    n = 11
    x0 = _randn(n, seed=3)  # one scalar per node
    alg = CECA(SimComm(n), x0)
    alg.run(4, progress=False)
    assert torch.allclose(alg.x, x0.mean().expand(n), atol=1e-12)
    alg = CECA(SimComm(1), torch.ones(1, 2))
    alg.run(2, progress=False)
    assert torch.equal(alg.x, torch.ones(1, 2))


# ----------------------------------------------------------------- push-sum
def test_push_sum_reaches_the_mean_where_row_normalised_averaging_is_biased():
    n = 9
    x0 = _randn(n, 2, seed=4)
    mean = x0.mean(0)
    row = directed_graph(n, "uniform")  # receivers average what they hear: rows sum to 1
    assert row.is_row_stochastic and not row.is_column_stochastic
    # Plain averaging tends to pi^T x0, pi the left Perron vector of W (pi^T W = pi^T).
    vals, vecs = np.linalg.eig(row.W.T)
    pi = np.real(vecs[:, np.argmin(np.abs(vals - 1))])
    pi = pi / pi.sum()
    biased = torch.as_tensor(pi) @ x0
    assert (biased - mean).abs().max() > 1e-2, "the example must show a bias"
    with pytest.warns(UserWarning, match=r"pi\^T x0.*not the mean"):  # says so
        plain = AverageConsensus(SimComm(n), row, x0)
    plain.run(400, progress=False)
    assert torch.allclose(plain.x, biased.expand(n, 2), atol=1e-10)

    col = directed_graph(n, "uniform_out")
    alg = PushSumConsensus(SimComm(n), col, x0)
    alg.run(400, progress=False)
    assert torch.allclose(alg.iterate, mean.expand(n, 2), atol=1e-10)
    assert not torch.allclose(alg.x, mean.expand(n, 2), atol=1e-3)  # x alone is not the mean
    assert torch.allclose(alg.x.sum(0), x0.sum(0), atol=1e-12)  # mass is conserved
    assert alg.history.last["consensus_error"] < 1e-20


def test_push_sum_on_a_time_varying_directed_graph():
    n = 10
    topo = directed_one_peer(n)
    assert not topo.at(1).is_row_stochastic
    x0 = _randn(n, 3, seed=5)
    alg = PushSumConsensus(SimComm(n), topo, x0)
    alg.run(300, progress=False)
    assert torch.allclose(alg.iterate, x0.mean(0).expand(n, 3), atol=1e-10)
    assert alg.history.last["messages"] == 300  # one message per node per step


# ----------------------------------------------------------------- DGD's bias
def _dgd_fixed_point(prob, W, lr, variant):
    """The fixed point of constant-step DGD, from the dense linear system (g_i = H_i x - c_i)."""
    n, d = prob.n, prob.dim
    Wd = np.kron(W, np.eye(d))
    Hs, c = _linear_parts(prob)
    H = np.zeros((n * d, n * d))
    for i in range(n):
        H[i * d:(i + 1) * d, i * d:(i + 1) * d] = Hs[i]
    c = c.reshape(-1)
    eye = np.eye(n * d)
    if variant == "atc":  # X = W (X - lr (H X - c))
        lhs, rhs = eye - Wd + lr * Wd @ H, lr * Wd @ c
    elif variant == "awc":  # X = W X - lr (H X - c)
        lhs, rhs = eye - Wd + lr * H, lr * c
    else:  # X = phi - lr (H phi - c), phi = W X
        lhs, rhs = eye - (eye - lr * H) @ Wd, lr * c
    return np.linalg.solve(lhs, rhs).reshape(n, d)


@pytest.fixture(scope="module")
def hetero():
    return _problem(9, heterogeneity=3.0, seed=0)


def test_constant_step_dgd_stalls_at_its_fixed_point_and_the_bias_grows_with_lr(hetero):
    prob, topo = hetero, ring(9)
    plateaus = {}
    for variant in ("atc", "awc", "cta"):
        for f in (0.05, 0.15, 0.4):
            lr = f / prob.L
            alg = DGD(SimComm(9), prob, topo, lr=lr, variant=variant)
            alg.run(3000, progress=False)
            fixed = _dgd_fixed_point(prob, topo.W, lr, variant)
            np.testing.assert_allclose(alg.x.numpy(), fixed, atol=1e-8,
                                       err_msg=f"{variant} lr={f}/L")
            plateaus[variant, f] = _dist2(alg.x, prob.x_star)
        values = [plateaus[variant, f] for f in (0.05, 0.15, 0.4)]
        assert values[0] > 1e-4 and values[0] < values[1] < values[2], (variant, values)
    for f in (0.05, 0.15, 0.4):  # ATC's bias carries a rho^2 factor that AWC's lacks
        assert plateaus["atc", f] < plateaus["awc", f]


@pytest.mark.parametrize("variant", ["atc", "awc", "cta"])
def test_dgd_fixed_point_solves_the_linear_system_and_is_where_dgd_stops(hetero, variant):
    prob, topo = hetero, ring(9)
    lr = 0.3 / prob.L
    alg = DGD(SimComm(9), prob, topo, lr=lr, variant=variant)
    x_inf = alg.fixed_point()
    np.testing.assert_allclose(x_inf.numpy(), _dgd_fixed_point(prob, topo.W, lr, variant),
                               rtol=1e-10, atol=1e-12)
    assert float((x_inf - prob.x_star).abs().max()) > 1e-3  # x* is not DGD's fixed point
    alg.run(3000, progress=False, log_every=3000)
    assert float((alg.x - x_inf).abs().max()) < 1e-12


def test_dgd_fixed_point_refuses_what_it_cannot_solve(hetero):
    from declearn.algorithms import diminishing
    from declearn.problems import LogisticRegression

    with pytest.raises(ValueError, match="quadratic"):
        DGD(SimComm(8), LogisticRegression(8, seed=0), ring(8), lr=0.1).fixed_point()
    with pytest.raises(ValueError, match="static"):
        DGD(SimComm(8), _problem(8, heterogeneity=1.0, seed=0), one_peer_exponential(8),
            lr=0.1).fixed_point()
    with pytest.raises(ValueError, match="constant step"):
        DGD(SimComm(9), hetero, ring(9), lr=diminishing(0.1)).fixed_point()


def test_dgd_plateau_scales_with_the_heterogeneity(hetero):
    """The bias is linear in the gradients at the optimum, so the squared plateau scales
    exactly like b^2 = (1/n) sum_i ||grad f_i(x*)||^2 (same data, smaller spread)."""
    mild = _problem(9, heterogeneity=1.0, seed=0)
    ratio_b2 = hetero.heterogeneity / mild.heterogeneity
    assert ratio_b2 > 4
    lr = 0.2 / hetero.L
    plateaus = []
    for prob in (hetero, mild):
        alg = DGD(SimComm(9), prob, ring(9), lr=lr)
        alg.run(1500, progress=False)
        plateaus.append(_dist2(alg.x, prob.x_star))
    assert plateaus[0] / plateaus[1] == pytest.approx(ratio_b2, rel=1e-6)


@pytest.fixture(scope="module")
def dgd_at_half_over_L(hetero):
    dgd = DGD(SimComm(9), hetero, ring(9), lr=0.5 / hetero.L)
    dgd.run(3000, progress=False)
    return dgd


@pytest.mark.parametrize("make", [
    lambda p, t, lr: GradientTracking(SimComm(9), p, t, lr=lr, variant="atc"),
    lambda p, t, lr: GradientTracking(SimComm(9), p, t, lr=0.3 * lr, variant="diging"),
    lambda p, t, lr: ExactDiffusion(SimComm(9), p, t, lr=lr),
    lambda p, t, lr: D2(SimComm(9), p, t, lr=lr),
    lambda p, t, lr: EXTRA(SimComm(9), p, t, lr=lr),
], ids=["gt-atc", "gt-diging", "exact_diffusion", "d2", "extra"])
def test_bias_corrected_methods_converge_exactly_where_dgd_stalls(hetero, dgd_at_half_over_L,
                                                                  make):
    prob, topo = hetero, ring(9)  # ring(9): lambda_min = -0.29 > -1/3, so D2 applies
    alg = make(prob, topo, 0.5 / prob.L)
    alg.run(3000, progress=False)
    assert dgd_at_half_over_L.history.last["suboptimality"] > 1e-3
    assert alg.history.last["suboptimality"] < 1e-10
    assert (alg.x - prob.x_star).abs().max() < 1e-8  # every node, not only the average


def test_diminishing_step_dgd_converges_where_the_constant_step_stalls(hetero):
    prob, topo = hetero, ring(9)
    lr0 = 0.4 / prob.L
    const = DGD(SimComm(9), prob, topo, lr=lr0)
    const.run(8000, progress=False)
    dim = DGD(SimComm(9), prob, topo, lr=diminishing(lr0, power=0.5, offset=1.0))
    errs = []
    for _ in range(4):
        dim.run(2000, progress=False)
        errs.append(_dist2(dim.x, prob.x_star))
    assert all(b < a for a, b in pairwise(errs)), errs  # still improving
    assert errs[-1] < 0.1 * _dist2(const.x, prob.x_star)


def test_gradient_tracking_on_time_varying_topologies(hetero):
    prob = hetero
    for topo in (one_peer_exponential(9), od_equidyn(9, seed=1)):
        alg = GradientTracking(SimComm(9), prob, topo, lr=0.3 / prob.L)
        alg.run(1500, progress=False)
        assert alg.history.last["suboptimality"] < 1e-10, topo.name


def test_push_diging_converges_on_a_directed_one_peer_time_varying_graph(hetero):
    prob, topo = hetero, directed_one_peer(9)
    assert not topo.at(1).is_row_stochastic  # only the columns sum to 1
    alg = PushDIGing(SimComm(9), prob, topo, lr=0.1 / prob.L)
    alg.run(3000, progress=False)
    assert alg.history.last["suboptimality"] < 1e-10
    assert (alg.iterate - prob.x_star).abs().max() < 1e-8
    assert alg.history.last["messages"] == 3000


def test_push_diging_on_a_static_directed_graph(hetero):
    alg = PushDIGing(SimComm(9), hetero, directed_graph(9, "uniform_out"), lr=0.2 / hetero.L)
    alg.run(2000, progress=False)
    assert alg.history.last["suboptimality"] < 1e-10


# ----------------------------------------------------------------- dense re-runs of each rule
def _dense_run(name, prob, W, lr, steps, x0):
    """Each documented update, written with dense numpy matrices (row i = node i)."""
    H, c = _linear_parts(prob)

    def g(X):
        return np.einsum("nij,nj->ni", H, X) - c

    I = np.eye(len(W))
    Wb = (I + W) / 2
    x = x0.copy()
    if name == "atc":
        for _ in range(steps):
            x = W @ (x - lr * g(x))
    elif name == "awc":
        for _ in range(steps):
            x = W @ x - lr * g(x)
    elif name == "cta":
        for _ in range(steps):
            phi = W @ x
            x = phi - lr * g(phi)
    elif name in ("gt-atc", "gt-diging"):
        y, gx = g(x), g(x)
        for _ in range(steps):
            if name == "gt-atc":
                xn = W @ (x - lr * y)
                gn = g(xn)
                y = W @ (y + gn - gx)
            else:
                xn = W @ x - lr * y
                gn = g(xn)
                y = W @ y + gn - gx
            x, gx = xn, gn
    elif name in ("ed", "d2"):
        M = Wb if name == "ed" else W
        prev, gprev = x, None
        for k in range(steps):
            if k == 0:
                xn = M @ (x - lr * g(x))
            else:
                xn = M @ (2 * x - prev - lr * (g(x) - gprev))
            prev, gprev, x = x, g(x), xn
    elif name == "extra":
        prev = None
        for k in range(steps):
            if k == 0:
                xn = W @ x - lr * g(x)
            else:
                xn = (I + W) @ x - Wb @ prev - lr * (g(x) - g(prev))
            prev, x = x, xn
    elif name == "push_diging":
        u, v, y, gx = x.copy(), np.ones((len(W), 1)), g(x), g(x)
        for _ in range(steps):
            u, v, y_mixed = W @ (u - lr * y), W @ v, W @ y
            xn = u / v
            gn = g(xn)
            y, x, gx = y_mixed + gn - gx, xn, gn
    return x


@pytest.mark.parametrize("name", ["atc", "awc", "cta", "gt-atc", "gt-diging", "ed", "d2",
                                  "extra", "push_diging"])
def test_each_update_rule_matches_a_dense_rerun(name):
    n, steps = 7, 25
    prob = _problem(n, d=3, m=6, seed=11)
    topo = grid(n) if name != "push_diging" else directed_graph(n, "uniform_out")
    lr = 0.3 / prob.L
    x0 = _randn(n, 3, seed=12)
    comm = SimComm(n)
    alg = {
        "atc": lambda: DGD(comm, prob, topo, lr=lr, variant="atc", x0=x0),
        "awc": lambda: DGD(comm, prob, topo, lr=lr, variant="awc", x0=x0),
        "cta": lambda: DGD(comm, prob, topo, lr=lr, variant="cta", x0=x0),
        "gt-atc": lambda: GradientTracking(comm, prob, topo, lr=lr, x0=x0),
        "gt-diging": lambda: GradientTracking(comm, prob, topo, lr=lr, variant="diging", x0=x0),
        "ed": lambda: ExactDiffusion(comm, prob, topo, lr=lr, x0=x0),
        "d2": lambda: D2(comm, prob, topo, lr=lr, x0=x0),
        "extra": lambda: EXTRA(comm, prob, topo, lr=lr, x0=x0),
        "push_diging": lambda: PushDIGing(comm, prob, topo, lr=lr, x0=x0),
    }[name]()
    for _ in range(steps):
        alg.step()
    expect = _dense_run(name, prob, np.asarray(topo.W), lr, steps, x0.numpy())
    np.testing.assert_allclose(alg.iterate.numpy(), expect, rtol=0, atol=1e-12)


def test_diging_sends_one_stacked_message_and_atc_two():
    n, d = 6, 4
    prob = _problem(n, d=d, seed=2)
    for variant, per_step in (("diging", 1), ("atc", 2)):
        comm = SimComm(n)
        alg = GradientTracking(comm, prob, ring(n), lr=0.1 / prob.L, variant=variant)
        alg.run(10, progress=False)
        calls = comm.traffic.by_op["neighbor_allreduce"]["calls"]
        assert calls == 10 * per_step
        # same bytes either way: DIGing's message carries x and y together
        assert alg.history.last["bytes"] == 10 * 2 * 2 * d * 8


def test_stochastic_gradients_give_dsgd(hetero):
    noisy = _problem(9, sigma=0.5, seed=0)
    a = DGD(SimComm(9), noisy, ring(9), lr=0.1 / noisy.L)
    b = DGD(SimComm(9), hetero, ring(9), lr=0.1 / noisy.L)
    a.run(5, progress=False), b.run(5, progress=False)
    assert not torch.allclose(a.x, b.x) and a.oracle.calls == 5
    again = DGD(SimComm(9), noisy, ring(9), lr=0.1 / noisy.L)
    again.run(5, progress=False)
    assert torch.equal(a.x, again.x)  # seeded noise: reproducible


# ----------------------------------------------------------------- bad input
def test_bad_input_gets_clear_errors(hetero):
    prob, comm = hetero, SimComm(9)
    for bad in (0, -0.1):
        for cls in (DGD, GradientTracking, ExactDiffusion, D2, EXTRA, PushDIGing):
            topo = directed_graph(9, "uniform_out") if cls is PushDIGing else ring(9)
            with pytest.raises(ValueError, match="step size"):
                cls(comm, prob, topo, lr=bad)
    with pytest.raises(ValueError, match="step size"):
        DGD(comm, prob, ring(9), lr=None)
    with pytest.raises(TopologyError, match="symmetric"):
        ExactDiffusion(comm, prob, exponential(9), lr=0.1)
    with pytest.raises(TopologyError, match="symmetric"):
        EXTRA(comm, prob, exponential(9), lr=0.1)
    with pytest.raises(TopologyError, match=r"lambda_min.*-1/3"):
        D2(SimComm(8), _problem(8), ring(8), lr=0.1)  # ring(8): lambda_min = -1/3
    D2(SimComm(8), _problem(8), ring(8).lazy(), lr=0.1)  # the suggested fix works
    with pytest.raises(TopologyError, match="column-stochastic"):
        PushSumConsensus(comm, directed_graph(9, "uniform"), torch.zeros(9, 2))
    with pytest.raises(TopologyError, match="Columns of W must sum to 1"):
        PushDIGing(comm, prob, directed_graph(9, "uniform"), lr=0.1)
    with pytest.raises(TopologyError, match="even n"):
        CECA(comm, torch.zeros(9, 2), ports=1)
    with pytest.raises(TopologyError, match="ports"):
        CECA(comm, torch.zeros(9, 2), ports=3)
    with pytest.raises(ValueError, match="n=9"):
        DGD(SimComm(10), prob, ring(10), lr=0.1)
    with pytest.raises(TopologyError, match="n=10 nodes but the communicator has 9"):
        DGD(comm, prob, ring(10), lr=0.1)
    for cls in (ExactDiffusion, D2, EXTRA):
        with pytest.raises(TopologyError, match="GradientTracking"):
            cls(comm, prob, one_peer_exponential(9), lr=0.1)
    with pytest.raises(TopologyError, match=r"doubly stochastic.*PushDIGing"):
        GradientTracking(comm, prob, directed_graph(9, "uniform_out"), lr=0.1)
    with pytest.raises(TopologyError, match="doubly stochastic"):
        GradientTracking(comm, prob, directed_one_peer(9), lr=0.1)
    with pytest.raises(ValueError, match="variant"):
        DGD(comm, prob, ring(9), lr=0.1, variant="diffusion")
    with pytest.raises(ValueError, match="variant"):
        GradientTracking(comm, prob, ring(9), lr=0.1, variant="push")
    with pytest.raises(TopologyError, match="Expected a declearn Topology"):
        DGD(comm, prob, np.eye(9), lr=0.1)
    with pytest.raises(TopologyError, match="Expected a declearn Topology"):
        PushSumConsensus(comm, np.eye(9), torch.zeros(9, 2))
    with pytest.raises(ValueError, match="needs a problem"):
        DGD(comm, None, ring(9), lr=0.1)


# ----------------------------------------------------------------- MPI
@pytest.mark.mpi
@needs_mpi
def test_same_iterates_under_mpiexec_and_simcomm():
    out = run_mpi("algorithms_classic_checks.py", 4, timeout=120)
    lines = re.findall(r"CLASSIC-OK rank (\d+) of 4: (\d+) checks, (\d+) runs", out)
    assert sorted(int(r) for r, _, _ in lines) == [0, 1, 2, 3], out[-3000:]
    assert all(int(runs) >= 25 and int(c) >= 8 * int(runs) for _, c, runs in lines), out
