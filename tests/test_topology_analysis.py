"""Spectral analysis against dense oracles and closed forms."""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest

from declearn.errors import TopologyError
from declearn.topology import (
    Topology,
    circulant_spectrum,
    mean_square_contraction,
    mixing_time,
    od_equidyn,
    one_peer_exponential,
    ou_equidyn,
    product,
    rho,
    sequence,
    summary,
    transient_iterations,
)
from declearn.topology.equitopo import equistatic_indices


def dense_rho(W):
    n = W.shape[0]
    return float(np.linalg.norm(W - 1.0 / n, 2))


def ring(n):
    return Topology.from_circulant(n, {0: 1 / 3, 1: 1 / 3, -1: 1 / 3})


def exponential(n):
    """Static exponential graph, built here: i receives from i - 2^j, weights 1/(tau + 1)."""
    tau = math.ceil(math.log2(n))
    return Topology.from_circulant(n, {0: 1 / (tau + 1), **{2**j: 1 / (tau + 1)
                                                             for j in range(tau)}})


def random_circulant(n, offsets, seed, symmetric):
    rng = np.random.default_rng(seed)
    w = rng.random(len(offsets) + 1)
    shifts = {0: w[0]}
    for o, x in zip(offsets, w[1:]):
        shifts[o] = shifts.get(o, 0.0) + x
        if symmetric:
            shifts[-o] = shifts.get(-o, 0.0) + x
    total = sum(shifts.values())
    return Topology.from_circulant(n, {s: x / total for s, x in shifts.items()})


def relabelled(topo, seed):
    """Same graph under a random node relabelling, stored without circulant shifts."""
    perm = np.random.default_rng(seed).permutation(topo.n)
    return Topology.from_coo(topo.n, perm[topo.rows], perm[topo.indices], topo.data)


def metropolis(A):
    n = A.shape[0]
    deg = A.sum(axis=1)
    W = np.zeros((n, n))
    i, j = np.nonzero(A)
    W[i, j] = 1.0 / (1.0 + np.maximum(deg[i], deg[j]))
    W[np.arange(n), np.arange(n)] = 1.0 - W.sum(axis=1)
    return W


# ---------------------------------------------------------------------- rho: fast paths
@pytest.mark.parametrize("n", [3, 7, 50, 300])
def test_rho_circulant_matches_dense(n):
    for topo in (ring(n), exponential(n), random_circulant(n, [1, 4, n // 3], n, False),
                 random_circulant(n, [1, 2, 5], n + 1, True)):
        assert topo.shifts is not None
        assert rho(topo) == pytest.approx(dense_rho(topo.W), abs=1e-9)


def test_rho_circulant_not_stochastic_matches_dense():
    for shifts in ({0: 0.5, 1: 0.2, 5: 0.2}, {0: 0.2, 1: 0.1, 2: 0.1}):  # rows sum to 0.9, 0.4
        topo = Topology.from_circulant(12, shifts)
        assert rho(topo) == pytest.approx(dense_rho(topo.W), abs=1e-12)


@pytest.mark.parametrize("n", [10, 120, 300])
def test_rho_symmetric_matches_dense(n):
    rng = np.random.default_rng(n)
    A = np.triu(rng.random((n, n)) < 0.1, 1)
    A = A | A.T
    A[np.arange(n - 1), np.arange(1, n)] = A[np.arange(1, n), np.arange(n - 1)] = True  # path
    topo = Topology.from_matrix(metropolis(A.astype(float)))
    assert topo.is_symmetric and topo.shifts is None
    assert rho(topo) == pytest.approx(dense_rho(topo.W), abs=1e-9)


@pytest.mark.parametrize("n", [10, 150])
def test_rho_general_matches_dense(n):
    rng = np.random.default_rng(n)
    W = rng.random((n, n)) * (rng.random((n, n)) < 0.2) + np.eye(n)
    W /= W.sum(axis=1, keepdims=True)
    topo = Topology.from_matrix(W, allow_disconnected=True)
    assert not topo.is_symmetric
    assert rho(topo) == pytest.approx(dense_rho(topo.W), abs=1e-9)


def test_rho_large_symmetric_uses_lanczos_and_matches_spectrum():
    # n > 2048 and no shifts: the Lanczos path. Oracle: the FFT spectrum of the same graph
    # before relabelling (relabelling does not change the spectrum).
    base = random_circulant(2100, [1, 2, 5, 17], 0, True)
    topo = relabelled(base, 1)
    assert topo.shifts is None and topo.is_symmetric
    expected = np.abs(circulant_spectrum(base)[1:]).max()
    assert rho(topo) == pytest.approx(expected, abs=1e-9)


def test_rho_large_general_uses_svds_and_matches_spectrum():
    base = random_circulant(1100, [1, 3, -7], 0, False)
    topo = relabelled(base, 2)
    assert topo.shifts is None and not topo.is_symmetric
    expected = np.abs(circulant_spectrum(base)[1:]).max()  # circulant = normal: |lambda| = sigma
    assert rho(topo) == pytest.approx(expected, abs=1e-9)


def test_rho_large_circulant_closed_forms():
    # Dense would need n x n matrices (34 GB at n = 2^16): only the FFT path can answer.
    for n in (4096, 2**16):
        tau = int(math.log2(n))
        assert rho(exponential(n)) == pytest.approx(1 - 2 / (tau + 1), abs=1e-12)
    n = 2**16
    assert rho(ring(n)) == pytest.approx(1 / 3 + 2 / 3 * math.cos(2 * math.pi / n), abs=1e-12)


# ---------------------------------------------------------------------- rho: closed forms
@pytest.mark.parametrize("n", [3, 4, 5, 8, 16, 33, 100])
def test_ring_closed_form(n):
    assert rho(ring(n)) == pytest.approx(1 / 3 + 2 / 3 * math.cos(2 * math.pi / n), abs=1e-12)


@pytest.mark.parametrize("n", [4, 6, 8, 10, 12, 16, 20, 32, 64, 100])
def test_exponential_closed_form_even_n(n):
    tau = math.ceil(math.log2(n))
    assert rho(exponential(n)) == pytest.approx(1 - 2 / (tau + 1), abs=1e-12)


def test_bluefog_cross_check_values():
    # bluefog.md 3.2: ExpTwo n=5 -> 0.25, n=7 -> 0.3536, n=64 -> 0.7143; Star(8) -> 0.875.
    assert rho(exponential(5)) == pytest.approx(0.25, abs=1e-4)
    assert rho(exponential(7)) == pytest.approx(0.3536, abs=1e-4)
    assert rho(exponential(64)) == pytest.approx(0.7143, abs=1e-4)
    n = 8
    W = np.eye(n) * (1 - 1 / n)
    W[0, :] = 1 / n
    W[:, 0] = 1 / n
    assert rho(Topology.from_matrix(W)) == pytest.approx(1 - 1 / n, abs=1e-12)


def test_rho_of_a_matrix_and_bad_input():
    assert rho(np.full((4, 4), 0.25)) == pytest.approx(0.0, abs=1e-15)
    assert rho(Topology.from_circulant(1, {0: 1.0})) == 0.0
    with pytest.raises(TopologyError, match="square matrix"):
        rho("ring")


def test_topology_rho_property_uses_analysis():
    topo = ring(9)
    assert topo.rho == pytest.approx(1 / 3 + 2 / 3 * math.cos(2 * math.pi / 9), abs=1e-12)
    assert topo.spectral_gap == pytest.approx(1 - topo.rho)


# ---------------------------------------------------------------------- dynamic rho, product
def test_periodic_rho_is_per_step_rate_of_one_period():
    for n in (8, 16, 64):
        assert rho(one_peer_exponential(n)) == 0.0
    for n in (6, 10, 12):
        topo = one_peer_exponential(n)
        P = np.eye(n)
        for k in range(topo.period):
            P = topo.at(k).W @ P
        assert rho(topo) == pytest.approx(dense_rho(P) ** (1 / topo.period), abs=1e-9)
        assert 0 < rho(topo) < 1


def test_periodic_rho_non_circulant_steps_dense_path():
    n = 10
    rng = np.random.default_rng(0)
    steps = []
    for _ in range(3):
        W = rng.random((n, n)) * (rng.random((n, n)) < 0.3) + np.eye(n)
        steps.append(Topology.from_matrix(W / W.sum(axis=1, keepdims=True),
                                          allow_disconnected=True))
    seq = sequence(steps)
    P = steps[2].W @ steps[1].W @ steps[0].W
    assert rho(seq) == pytest.approx(dense_rho(P) ** (1 / 3), abs=1e-9)
    np.testing.assert_allclose(product(seq), P, atol=1e-14)
    np.testing.assert_allclose(product(seq, start=1, length=4),
                               steps[1].W @ steps[0].W @ steps[2].W @ steps[1].W, atol=1e-14)


def test_large_periodic_non_circulant_paths_match_spectrum():
    # n > 2048 steps without shifts: svds on the period operator, Lanczos on the mean Gram.
    n = 2100
    perm = np.random.default_rng(0).permutation(n)
    steps = [Topology.from_circulant(n, {0: 0.5, h: 0.5}) for h in (1, 2, 4, 8)]
    plain = sequence(steps)
    relabelled_seq = sequence(
        [Topology.from_coo(n, perm[t.rows], perm[t.indices], t.data) for t in steps]
    )
    lam = np.prod([circulant_spectrum(t) for t in steps], axis=0)
    assert rho(relabelled_seq) == pytest.approx(np.abs(lam[1:]).max() ** 0.25, abs=1e-9)
    msc = np.mean([np.abs(circulant_spectrum(t)) ** 2 for t in steps], axis=0)[1:].max()
    assert mean_square_contraction(relabelled_seq) == pytest.approx(msc, abs=1e-9)
    assert mean_square_contraction(plain) == pytest.approx(msc, abs=1e-12)


def test_product_static_and_random():
    topo = ring(6)
    np.testing.assert_allclose(product(topo), topo.W)
    np.testing.assert_allclose(product(topo, length=3), topo.W @ topo.W @ topo.W, atol=1e-15)
    np.testing.assert_array_equal(product(topo, length=0), np.eye(6))
    od = od_equidyn(7)
    with pytest.raises(TopologyError, match="length="):
        product(od)
    np.testing.assert_allclose(product(od, start=2, length=2), od.at(3).W @ od.at(2).W)
    with pytest.raises(TopologyError):
        product(od, start=-1, length=2)


# ---------------------------------------------------------------------- mean square
def msc_oracle(mats, probs):
    n = mats[0].shape[0]
    G = sum(p * W.T @ W for W, p in zip(mats, probs))
    P = np.eye(n) - 1.0 / n
    return float(np.linalg.eigvalsh(P @ G @ P)[-1])


@pytest.mark.parametrize("n", [17, 64])
@pytest.mark.parametrize("eta", [0.5, 1.0, 0.25])
def test_od_equidyn_complete_closed_form(n, eta):
    expected = (1 - eta) ** 2 + eta**2 * (1 - 2 / n)
    topo = od_equidyn(n, eta=eta)
    assert mean_square_contraction(topo) == pytest.approx(expected, abs=1e-12)
    assert rho(topo) == pytest.approx(math.sqrt(expected), abs=1e-12)


def test_od_equidyn_with_M_matches_enumeration():
    n, M, eta = 13, 5, 0.5
    topo = od_equidyn(n, eta=eta, M=M, seed=4)
    us = equistatic_indices(n, M=M, seed=4)
    mats = []
    for u in us:  # enumerate the support by hand, repetitions included
        A = np.eye(n) / n
        A[np.arange(n), (np.arange(n) + u) % n] += (n - 1) / n
        mats.append((1 - eta) * np.eye(n) + eta * A)
    expected = msc_oracle(mats, np.full(M, 1.0 / M))
    assert mean_square_contraction(topo) == pytest.approx(expected, abs=1e-12)


def greedy_ou_matrix(n, eta, u, s):
    W, free = np.eye(n), np.ones(n, dtype=bool)
    for t in range(n):
        i = (s + t) % n
        j = (i + u) % n
        if free[i] and free[j]:
            free[i] = free[j] = False
            W[i, i] = W[j, j] = 1 - eta + eta / n
            W[i, j] = W[j, i] = eta * (n - 1) / n
    return W


@pytest.mark.parametrize("n,M,eta", [(7, None, 0.5), (10, None, 1.0), (12, None, 0.3),
                                     (11, 4, 0.5)])
def test_ou_equidyn_matches_enumeration(n, M, eta):
    topo = ou_equidyn(n, eta=eta, M=M, seed=5)
    us = range(1, n) if M is None else equistatic_indices(n, M=M, seed=5)
    mats = [greedy_ou_matrix(n, eta, int(u), s) for u in us for s in range(n)]
    expected = msc_oracle(mats, np.full(len(mats), 1.0 / len(mats)))
    assert mean_square_contraction(topo) == pytest.approx(expected, abs=1e-12)


def test_ou_equidyn_reference_values():
    # algorithms.md C.2: OU-EquiDyn-Complete, eta = 0.5 -> 0.54..0.57, eta = 1 -> 0.89..0.97.
    for n in (16, 32, 64):
        assert 0.53 < mean_square_contraction(ou_equidyn(n, eta=0.5)) < 0.58
        assert 0.88 < mean_square_contraction(ou_equidyn(n, eta=1.0)) < 0.98


def test_monte_carlo_agrees_with_exact():
    for topo in (od_equidyn(17, seed=3), ou_equidyn(16, seed=3)):
        exact = mean_square_contraction(topo)
        assert mean_square_contraction(topo, samples=3000) == pytest.approx(exact, abs=0.03)
    with pytest.raises(TopologyError, match="samples"):
        mean_square_contraction(od_equidyn(5), samples=0)


def test_mean_square_contraction_static_and_periodic():
    topo = ring(9)
    assert mean_square_contraction(topo) == pytest.approx(rho(topo) ** 2, abs=1e-12)
    W = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.2, 0.0, 0.6]])  # rows not all 1
    t = Topology.from_matrix(W, stochastic=None)
    assert mean_square_contraction(t) == pytest.approx(msc_oracle([W], [1.0]), abs=1e-12)
    seq = one_peer_exponential(6)
    mats = [seq.at(k).W for k in range(3)]
    assert mean_square_contraction(seq) == pytest.approx(msc_oracle(mats, [1 / 3] * 3),
                                                         abs=1e-12)


# ---------------------------------------------------------------------- rates
def test_mixing_time_values():
    topo = ring(8)
    r = 1 / 3 + 2 / 3 * math.cos(2 * math.pi / 8)
    assert mixing_time(topo) == math.ceil(math.log(100) / math.log(1 / r))
    assert r ** mixing_time(topo) <= 1e-2 < r ** (mixing_time(topo) - 1)
    complete = Topology.from_circulant(5, {s: 0.2 for s in range(5)})
    assert mixing_time(complete) == 1
    assert mixing_time(one_peer_exponential(16)) == 4
    assert mixing_time(Topology.from_matrix(np.eye(4), allow_disconnected=True)) == math.inf
    od = od_equidyn(50)
    assert mixing_time(od, eps=1e-3) == math.ceil(math.log(1e3) / -math.log(rho(od)))
    for eps in (0, 1, -0.5, 2, "x"):
        with pytest.raises(TopologyError, match="eps"):
            mixing_time(topo, eps)


def test_rates_monotone_in_rho():
    topos = [ring(n) for n in range(4, 40, 3)]
    rhos = [rho(t) for t in topos]
    assert rhos == sorted(rhos)
    times = [mixing_time(t) for t in topos]
    assert times == sorted(times) and times[-1] > times[0]
    grid = np.linspace(0.0, 0.99, 40)
    for setting in ("iid", "heterogeneous"):
        vals = [transient_iterations(float(r), n=32, setting=setting) for r in grid]
        assert all(a < b for a, b in pairwise(vals[1:]))
        assert vals[0] == 0.0


def test_transient_iterations_values():
    assert transient_iterations(0.5, n=10) == pytest.approx(0.5**4 * 1000 / 0.25)
    assert transient_iterations(0.5, n=10, setting="heterogeneous") == pytest.approx(
        0.5**4 * 1000 / 0.0625
    )
    topo = ring(12)
    r = rho(topo)
    assert transient_iterations(topo) == pytest.approx(r**4 * 12**3 / (1 - r) ** 2)
    assert transient_iterations(1.0, n=4) == math.inf
    with pytest.raises(TopologyError, match="setting"):
        transient_iterations(topo, setting="noniid")
    with pytest.raises(TopologyError, match="n="):
        transient_iterations(0.5)


# ---------------------------------------------------------------------- summary
def test_summary():
    s = summary(ring(8))
    assert s["n"] == 8 and s["degree"] == 2 and s["dynamic"] is False
    assert s["rho"] == pytest.approx(1 / 3 + 2 / 3 * math.cos(math.pi / 4))
    assert s["spectral_gap"] == pytest.approx(1 - s["rho"])
    assert (s["stochasticity"], s["symmetric"], s["connected"]) == ("doubly", True, True)
    assert summary(exponential(8))["symmetric"] is False
    d = summary(one_peer_exponential(8))
    assert (d["period"], d["degree"], d["rho"], d["mixing_time"]) == (3, 1, 0.0, 3)
    assert d["connected"] is True and d["stochasticity"] == "doubly"
    W = np.array([[1.0, 0.0], [0.5, 0.5]])
    s2 = summary(Topology.from_matrix(W, allow_disconnected=True))
    assert s2["stochasticity"] == "row" and s2["connected"] is False


# ---------------------------------------------------------------------- stationary distribution
def _left_perron(W: np.ndarray) -> np.ndarray:
    """numpy's left eigenvector of W for the eigenvalue closest to 1, scaled to sum 1."""
    vals, vecs = np.linalg.eig(W.T)
    v = np.real(vecs[:, np.argmin(np.abs(vals - 1.0))])
    return v / v.sum()


def test_stationary_distribution_is_numpys_left_eigenvector():
    from declearn.topology import apply_weights, stationary_distribution

    rng = np.random.default_rng(3)
    n = 12
    edges = [(j, (j + 1) % n) for j in range(n)] + [(0, 5), (0, 7), (3, 9), (8, 2), (8, 4)]
    topo = apply_weights(n, edges, "uniform", directed=True)  # row-stochastic only
    pi = stationary_distribution(topo)
    np.testing.assert_allclose(pi, _left_perron(topo.W), rtol=1e-10, atol=1e-13)
    assert pi.sum() == pytest.approx(1.0) and np.all(pi > 0)
    assert np.ptp(pi) > 1e-3  # not uniform: the case where plain averaging is biased
    # Any row-stochastic matrix with positive entries, given as an array.
    W = rng.random((7, 7))
    W /= W.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(stationary_distribution(W), _left_perron(W), rtol=1e-10)
    # Doubly stochastic: uniform.
    np.testing.assert_allclose(stationary_distribution(ring(9)), np.full(9, 1 / 9), rtol=1e-12)


def test_stationary_distribution_refuses_what_has_none():
    from declearn.topology import stationary_distribution

    with pytest.raises(TopologyError, match="row-stochastic"):
        stationary_distribution(np.array([[0.5, 0.6], [0.5, 0.5]]))
    two_islands = np.kron(np.eye(2), np.full((2, 2), 0.5))
    with pytest.raises(TopologyError, match="strongly connected"):
        stationary_distribution(two_islands)
    with pytest.raises(TopologyError, match="square"):
        stationary_distribution(np.ones((2, 3)) / 3)
    with pytest.raises(TopologyError, match=r"\.at\(k\)"):
        stationary_distribution(one_peer_exponential(8))
