"""Compressed gossip: naive (Q1-G, Q2-G), CHOCO-Gossip and CHOCO-SGD.

Oracles: dense numpy re-runs of the paper's Algorithms 1 and 2 (``W @ X``, numpy compressors
written from their definitions, the random ones fed the seeded draws that tests/test_compress.py
checks against a pure-Python SplitMix64); plain gossip ``x <- x + gamma (W - I) x`` for the
identity compressor; the exact fixed point of CHOCO-SGD with exact gradients, solved densely;
closed forms of delta and beta on the ring and the complete graph for the paper's step; and
the behaviour the paper reports: CHOCO reaches the exact average linearly while naive
compressed gossip stalls (Q2-G) or drifts (Q1-G). The MPI run is
tests/mpi/choco_checks.py.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch

from declearn.algorithms.choco import (
    CHOCOSGD,
    CHOCOGossip,
    CompressedGossip,
    ConsensusStepWarning,
    choco_gamma,
    gossip_gamma_limit,
)
from declearn.comm import SimComm
from declearn.compress import QSGD, Identity, RandK, Sign, TopK
from declearn.compress.rng import uniform
from declearn.errors import TopologyError
from declearn.problems import LeastSquares
from declearn.topology import Topology, complete, one_peer_exponential, ring

from mpi_helpers import needs_mpi, run_mpi

N, D = 8, 100


def _x0(n=N, d=D, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _quiet(factory, *args, **kw):
    """Build with a gamma above the paper's guaranteed one (tuned, as the paper does)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConsensusStepWarning)
        return factory(*args, **kw)


# ----------------------------------------------------------------- numpy compressors
def _np_q(comp, X, step):
    """``Q(X)`` row by row from the definitions (numpy), random ones from the seeded draws."""
    n, d = X.shape
    if isinstance(comp, Identity):
        return X.copy()
    if isinstance(comp, Sign):
        return np.abs(X).sum(1, keepdims=True) / d * np.where(X >= 0, 1.0, -1.0)
    if isinstance(comp, QSGD):
        u = uniform(comp.seed, torch.arange(n), step, d).numpy()
        norm = np.linalg.norm(X, axis=1, keepdims=True)
        safe = np.where(norm > 0, norm, 1.0)
        tau = 1.0 if comp.unbiased else 1 + min(d / comp.s ** 2, math.sqrt(d) / comp.s)
        return np.sign(X) * norm * np.floor(comp.s * np.abs(X) / safe + u) / (comp.s * tau)
    k = comp.k(d)
    if isinstance(comp, TopK):
        keep = np.argsort(-np.abs(X), axis=1)[:, :k]
    else:
        keep = np.argsort(-uniform(comp.seed, torch.arange(n), step, d).numpy(), axis=1)[:, :k]
    Q = np.zeros_like(X)
    np.put_along_axis(Q, keep, np.take_along_axis(X, keep, 1), 1)
    return Q * (d / k if comp.unbiased else 1.0)


def _dense_choco(W, X0, comp, gamma, steps, grad=None, lr=0.0):
    """Algorithms 1 (grad None) and 2 of the paper, dense: x_hat^0 = 0,
    X^{1/2} = X - lr G(X); Q = Q(X^{1/2} - X_hat); X_hat += Q; X = X^{1/2} + gamma (W - I) X_hat."""
    X, Xh, out = X0.copy(), np.zeros_like(X0), []
    I = np.eye(len(W))
    for t in range(steps):
        half = X if grad is None else X - lr * grad(X)
        Xh = Xh + _np_q(comp, half - Xh, t)
        X = half + gamma * (W - I) @ Xh
        out.append(X)
    return out


# ----------------------------------------------------------------- identities and dense re-runs
def test_choco_with_the_identity_compressor_is_plain_gossip():
    comm, top, x0 = SimComm(N), ring(N), _x0()
    alg = _quiet(CHOCOGossip, comm, top, x0, compressor=Identity(), gamma=0.7)
    X, W = x0.numpy(), top.W
    for _ in range(25):
        alg.step()
        X = X + 0.7 * (W - np.eye(N)) @ X
        assert np.allclose(alg.x.numpy(), X, rtol=0, atol=1e-12)
    alg = _quiet(CHOCOGossip, comm, top, x0, compressor=TopK(D), gamma=0.7)  # k = d: same
    alg.run(25, progress=False)
    assert np.allclose(alg.x.numpy(), X, rtol=0, atol=1e-12)


COMPRESSORS = [(TopK(3), 0.05), (RandK(5, seed=4), 0.05), (Sign(), 0.3), (QSGD(4, seed=1), 0.4),
               (QSGD(16, unbiased=True, seed=2), 0.2)]


@pytest.mark.parametrize("comp,gamma", COMPRESSORS, ids=lambda c: repr(c))
def test_choco_gossip_equals_a_dense_rerun_of_algorithm_1(comp, gamma):
    top, x0 = ring(N), _x0(seed=1)
    if comp.omega(D) <= 0:
        comp = comp.contractive()
    alg = _quiet(CHOCOGossip, SimComm(N), top, x0, compressor=comp, gamma=gamma)
    for t, X in enumerate(_dense_choco(top.W, x0.numpy(), comp, gamma, 40)):
        alg.step()
        assert np.allclose(alg.x.numpy(), X, rtol=0, atol=1e-11), (comp, t)
        assert np.allclose(alg.s.numpy(), top.W @ alg.x_hat.numpy(), atol=1e-11)


def _least_squares(n=N, d=6, sigma=0.0):
    return LeastSquares(n, d=d, m=12, sigma=sigma, seed=3)


def _np_grad(prob):
    A, b, m = prob.A.numpy(), prob.b.numpy(), prob.m
    return lambda X: np.einsum("nmi,nm->ni", A, np.einsum("nmi,ni->nm", A, X) - b) / m


def test_choco_sgd_equals_a_dense_rerun_of_algorithm_2():
    prob, top = _least_squares(), ring(N)
    x0 = _x0(d=6, seed=2)
    alg = _quiet(CHOCOSGD, SimComm(N), prob, top, lr=0.02, compressor=TopK(2), gamma=0.1,
                 x0=x0)
    dense = _dense_choco(top.W, x0.numpy(), TopK(2), 0.1, 30, grad=_np_grad(prob), lr=0.02)
    for X in dense:
        alg.step()
        assert np.allclose(alg.x.numpy(), X, rtol=0, atol=1e-11)


def test_choco_sgd_reaches_the_exact_fixed_point_of_dgd_with_the_gamma_mixing_matrix():
    """With exact gradients and top-k messages, the fixed point has q = 0, so x_hat = x^{1/2}
    and x = W_g (x - lr g(x)), W_g = I + gamma (W - I): ATC-DGD's fixed point with W_g, solved
    densely, ``(I - W_g + lr W_g H) x = lr W_g c`` (g(x) = H x - c). The compression leaves
    no bias behind."""
    prob, top, lr, gamma = _least_squares(), ring(N), 0.05, 0.3
    alg = _quiet(CHOCOSGD, SimComm(N), prob, top, lr=lr, compressor=TopK(2), gamma=gamma)
    alg.run(4000, progress=False)
    A, b, m, d = prob.A.numpy(), prob.b.numpy(), prob.m, 6
    H = np.einsum("nmi,nmj->nij", A, A) / m
    c = np.einsum("nmi,nm->ni", A, b) / m
    Wg = np.kron(np.eye(N) + gamma * (top.W - np.eye(N)), np.eye(d))
    Hb = np.zeros((N * d, N * d))
    for i in range(N):
        Hb[i * d:(i + 1) * d, i * d:(i + 1) * d] = H[i]
    x_inf = np.linalg.solve(np.eye(N * d) - Wg + lr * Wg @ Hb, lr * Wg @ c.reshape(-1))
    assert np.abs(alg.x.numpy().reshape(-1) - x_inf).max() < 1e-9
    assert np.abs(x_inf.reshape(N, d) - prob.x_star.numpy()).max() > 1e-3  # DGD's own bias


def test_choco_sgd_with_identity_and_gamma_one_is_atc_dgd():
    prob, top = _least_squares(sigma=0.5), ring(N)
    alg = _quiet(CHOCOSGD, SimComm(N), prob, top, lr=0.03, compressor=Identity(), gamma=1.0)
    X, W = alg.x.numpy().copy(), top.W
    ref = _least_squares(sigma=0.5).on(SimComm(N))  # the same noise stream, independently
    for _ in range(20):
        alg.step()
        X = W @ (X - 0.03 * ref.grad(torch.from_numpy(X)).numpy())
        assert np.allclose(alg.x.numpy(), X, rtol=0, atol=1e-12)


# ----------------------------------------------------------------- the paper's behaviour
CONVERGENCE = [(TopK(ratio=0.01), 0.02, 3000), (Sign(), 0.3, 1000), (QSGD(4), 0.5, 400)]


@pytest.mark.parametrize("comp,gamma,steps", CONVERGENCE, ids=lambda c: repr(c))
def test_choco_reaches_the_exact_average_linearly_where_naive_gossip_stalls(comp, gamma, steps):
    comm, top, x0 = SimComm(N), ring(N), _x0(seed=4)
    xbar = x0.mean(0)
    e0 = float(((x0 - xbar) ** 2).sum(-1).mean())
    alg = _quiet(CHOCOGossip, comm, top, x0, compressor=comp, gamma=gamma)
    errs = []
    for _ in range(steps):
        alg.step()
        errs.append(float(((alg.x - xbar) ** 2).sum(-1).mean()) / e0)
    assert errs[-1] < 1e-8, (comp, errs[-1])
    reached = next(k for k, e in enumerate(errs) if e < 1e-8)
    assert errs[reached // 2] < 1e-3, errs[reached // 2]  # linear: halfway, about 1e-4
    assert torch.allclose(alg.x.mean(0), xbar, rtol=0, atol=1e-12)  # the average is kept
    for variant in ("q2", "q1"):
        naive = CompressedGossip(comm, top, x0, compressor=comp, gamma=min(1.0, 5 * gamma),
                                 variant=variant)
        naive.run(steps, progress=False)
        err = float(((naive.x - xbar) ** 2).sum(-1).mean()) / e0
        drift = float((naive.x.mean(0) - xbar).norm() / xbar.norm())
        if variant == "q2":  # keeps the average, stalls far from it
            assert err > 1e-3 and drift < 1e-12, (comp, err, drift)
        else:  # does not even keep the average
            assert drift > 1e-2, (comp, drift)


def test_traffic_counts_the_compressed_bytes():
    comm, top, x0 = SimComm(N), ring(N), _x0()
    ratios = {}
    for comp in (TopK(ratio=0.01), Sign(), QSGD(4), Identity()):
        comm.reset_traffic()
        alg = _quiet(CHOCOGossip, comm, top, x0, compressor=comp, gamma=0.05)
        alg.run(10, progress=False)
        sent = comm.traffic.bytes
        assert np.array_equal(sent, 10 * top.out_degrees * comp.bytes(D)), comp
        assert alg.history.params["message_bytes"] == comp.bytes(D)
        ratios[repr(comp)] = float(sent.sum()) / (10 * top.out_degrees.sum() * 8 * D)
        assert alg.history["bytes"][-1] == pytest.approx(float(sent.mean()))
    assert ratios == {"TopK(ratio=0.01)": 9 / 800, "sign": 21 / 800, "QSGD(s=4)": 58 / 800,
                      "identity": 1.0}


def test_several_dims_per_node_on_the_complete_graph():
    x0 = torch.randn(N, 3, 4, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    alg = _quiet(CHOCOGossip, SimComm(N), complete(N), x0, compressor=TopK(2), gamma=0.1)
    alg.run(300, progress=False)
    assert alg.x.shape == x0.shape
    assert float((alg.x - x0.mean(0)).abs().max()) < 1e-6


# ----------------------------------------------------------------- the consensus step
def test_the_papers_step_from_closed_forms_of_delta_and_beta():
    def paper(delta, beta, omega):
        return delta ** 2 * omega / (16 * delta + delta ** 2 + 4 * beta ** 2
                                     + 2 * delta * beta ** 2 - 8 * delta * omega)
    n = 10  # ring, weights 1/3: eigenvalues 1/3 + 2/3 cos(2 pi f / n); n even reaches -1/3
    delta, beta = 1 - (1 + 2 * math.cos(2 * math.pi / n)) / 3, 4 / 3
    assert choco_gamma(ring(n), 0.01) == pytest.approx(paper(delta, beta, 0.01), rel=1e-10)
    assert gossip_gamma_limit(ring(n)) == pytest.approx(1.5, rel=1e-12)
    assert choco_gamma(complete(6), 1.0) == pytest.approx(1 / 15, rel=1e-10)  # W = J: 1, 1
    alg = CHOCOGossip(SimComm(n), ring(n), _x0(n), compressor=Sign())  # gamma=None: gamma*
    assert alg.gamma == pytest.approx(paper(delta, beta, 1 / D), rel=1e-10)


def test_the_papers_step_is_slower_than_its_stated_rate_on_a_ring_of_25():
    """The module docstring's check: with exact messages CHOCO-Gossip at ``gamma*`` is gossip
    with step gamma*, so the slowest mode cos(2 pi i / n) shrinks by (1 - gamma* (1 - lambda_1))
    per step (lambda_1 = (1 + 2 cos(2 pi / n)) / 3, here also 1 - delta), and its squared error
    by 0.9999975 > 1 - delta^2 / 82 = 0.9999947 (the rate the authors state)."""
    n = 25
    gap = 1 - (1 + 2 * math.cos(2 * math.pi / n)) / 3
    mode = np.cos(2 * np.pi * np.arange(n) / n)[:, None] * np.ones((1, 3))
    alg = CHOCOGossip(SimComm(n), ring(n), torch.tensor(mode), compressor=Identity())
    assert ring(n).spectral_gap == pytest.approx(gap, rel=1e-9)
    per_step = (1 - alg.gamma * gap) ** 2
    assert per_step == pytest.approx(0.9999975, abs=5e-8)
    stated = 1 - gap ** 2 / 82
    assert stated == pytest.approx(0.9999947, abs=5e-8)
    assert per_step > stated
    for _ in range(3):
        before = float(((alg.x - alg.x.mean(0)) ** 2).sum())
        alg.step()
        after = float(((alg.x - alg.x.mean(0)) ** 2).sum())
        assert after / before == pytest.approx(per_step, rel=1e-12)


def test_gamma_above_the_papers_warns_and_beyond_two_over_beta_is_refused():
    comm, top, x0 = SimComm(N), ring(N), _x0()
    star = choco_gamma(top, 0.01)
    with pytest.warns(ConsensusStepWarning, match=r"gamma=0.02 is above gamma\*=.*Theorem 2"):
        CHOCOGossip(comm, top, x0, compressor=TopK(ratio=0.01), gamma=0.02)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CHOCOGossip(comm, top, x0, compressor=TopK(ratio=0.01), gamma=star)
        CompressedGossip(comm, top, x0, compressor=TopK(1), gamma=1.0)  # no theory: no warning
    msg = re.escape("converges only for gamma < 2 / ||I - W||_2 = 1.5. Use gamma=")
    with pytest.raises(ValueError, match=msg):
        CHOCOGossip(comm, top, x0, compressor=TopK(ratio=0.01), gamma=1.5)
    with pytest.raises(ValueError, match="must be > 0"):
        CHOCOGossip(comm, top, x0, compressor=Sign(), gamma=-0.1)


# ----------------------------------------------------------------- bad input
def test_bad_input_says_what_to_do():
    comm, x0 = SimComm(N), _x0()
    with pytest.raises(ValueError, match=r"needs a contractive compressor.*RandK\(k=5\)"):
        CHOCOGossip(comm, ring(N), x0, compressor=RandK(5, unbiased=True))
    with pytest.raises(TopologyError, match="needs the same W at every step"):
        CHOCOGossip(comm, one_peer_exponential(N), x0, compressor=Sign())
    with pytest.raises(TypeError, match=r"compressor must be a declearn\.compress\.Compressor"):
        CHOCOGossip(comm, ring(N), x0, compressor=lambda x: x)
    with pytest.raises(ValueError, match="variant must be one of"):
        CompressedGossip(comm, ring(N), x0, compressor=Sign(), variant="q3")
    with pytest.raises(ValueError, match=r"k=200 coordinates but a node's vector has only "
                                         r"d=100"):
        CHOCOGossip(comm, ring(N), x0, compressor=TopK(200))
    W = np.array(ring(N).W)
    W[0, [0, 1, N - 1]] = [0.8, 0.1, 0.1]  # rows sum to 1, column 0 does not
    with pytest.raises(TopologyError, match="doubly stochastic"):
        CHOCOGossip(comm, Topology.from_matrix(W), x0, compressor=Sign())
    with pytest.raises(TypeError, match="must be floating point"):
        CHOCOGossip(comm, ring(N), torch.zeros(N, 3, dtype=torch.int64), compressor=Sign())


class _HalfMessage(Sign):
    """A user's compressor whose decoder forgets the last coordinate."""

    def _decode(self, message, d, dtype):
        return super()._decode(message, d, dtype)[..., :-1]


def test_a_user_compressor_returning_the_wrong_shape_is_caught_before_the_first_step():
    with pytest.raises(ValueError, match=r"_HalfMessage._decode must return Q\(x\) as a "
                                         r"torch.float64 tensor of shape \(8, 100\)"):
        CHOCOGossip(SimComm(N), ring(N), _x0(), compressor=_HalfMessage())


def test_a_failed_step_leaves_the_state_of_iteration_k():
    comm, top, x0 = SimComm(N), ring(N), _x0()
    alg = _quiet(CHOCOGossip, comm, top, x0, compressor=RandK(3), gamma=0.05)
    twin = _quiet(CHOCOGossip, comm, top, x0, compressor=RandK(3), gamma=0.05)
    alg.run(5, progress=False)
    twin.run(5, progress=False)
    real = alg.exchange.compressor._encode
    alg.exchange.compressor._encode = lambda *a: (_ for _ in ()).throw(RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        alg.step()
    alg.exchange.compressor._encode = real
    alg.run(5, progress=False)
    twin.run(5, progress=False)
    assert torch.equal(alg.x, twin.x) and torch.equal(alg.r, twin.r)


# ----------------------------------------------------------------- MPI
@pytest.mark.mpi
@needs_mpi
def test_same_iterates_under_mpiexec_and_simcomm():
    out = run_mpi("choco_checks.py", 4, timeout=180)
    lines = re.findall(r"CHOCO-OK rank (\d+) of 4: (\d+) checks, (\d+) runs", out)
    assert sorted(int(r) for r, _, _ in lines) == [0, 1, 2, 3], out[-3000:]
    assert all(int(runs) >= 15 and int(c) >= 4 * int(runs) for _, c, runs in lines), out
