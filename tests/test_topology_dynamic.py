"""Dynamic topologies and EquiTopo against dense matrices built here from their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from declearn.errors import TopologyError
from declearn.topology import (
    DynamicTopology,
    Topology,
    d_equistatic,
    equistatic_indices,
    equitopo_basis,
    make,
    od_equidyn,
    one_peer,
    one_peer_exponential,
    ou_equidyn,
    ou_matching,
    product,
    sequence,
    u_equistatic,
)


def J(n):
    return np.full((n, n), 1.0 / n)


def dense_product(topo, start, length):
    out = np.eye(topo.n)
    for k in range(start, start + length):
        out = topo.at(k).W @ out
    return out


def assert_doubly_stochastic(W):
    np.testing.assert_allclose(W.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(W.sum(axis=0), 1.0, atol=1e-12)
    assert W.min() >= 0.0


def hypercube_matrix(n):
    d = n.bit_length() - 1
    W = np.eye(n) / (d + 1)
    for i in range(n):
        for b in range(d):
            W[i, i ^ (1 << b)] = 1.0 / (d + 1)
    return W


# ---------------------------------------------------------------------- one-peer exponential
@pytest.mark.parametrize("n", [2, 4, 8, 16, 64])
def test_one_peer_exponential_exact_averaging_for_powers_of_two(n):
    topo = one_peer_exponential(n)
    tau = int(math.log2(n))
    assert topo.period == tau
    for start in range(2 * tau):  # any tau consecutive steps, across period boundaries
        np.testing.assert_allclose(dense_product(topo, start, tau), J(n), rtol=0, atol=1e-12)
    np.testing.assert_allclose(product(topo, start=1), dense_product(topo, 1, tau), atol=1e-15)


@pytest.mark.parametrize("n", [6, 10, 12])
def test_one_peer_exponential_not_exact_otherwise(n):
    topo = one_peer_exponential(n)
    tau = math.ceil(math.log2(n))
    assert topo.period == tau
    for start in range(tau):
        assert np.abs(dense_product(topo, start, tau) - J(n)).max() > 1e-3


@pytest.mark.parametrize("n", [1, 2, 5, 6, 8, 12])
def test_one_peer_exponential_steps_match_definition(n):
    topo = one_peer_exponential(n)
    tau = max(1, math.ceil(math.log2(n))) if n > 1 else 1
    for k in range(2 * tau):
        expected = 0.5 * np.eye(n)
        hop = 2 ** (k % tau)
        for i in range(n):
            expected[i, (i - hop) % n] += 0.5  # i receives from i - 2^(k mod tau)
        if n == 1:
            expected = np.eye(1)
        np.testing.assert_allclose(topo.at(k).W, expected, atol=1e-15)
        assert_doubly_stochastic(topo.at(k).W)
        assert topo.at(k).shifts is not None  # circulant fast path for the simulator


def test_one_peer_exponential_bluefog_cross_check():
    # bluefog.md 3.2: GetDynamicOnePeerSendRecvRanks(ExponentialTwoGraph(8), r) send ranks.
    topo = one_peer_exponential(8)
    assert [int(topo.targets[k % 3][0]) for k in range(4)] == [1, 2, 4, 1]
    assert [int(topo.targets[k][3]) for k in range(3)] == [4, 5, 7]
    ring5 = Topology.from_circulant(5, {0: 1 / 3, 1: 1 / 3, -1: 1 / 3})
    assert [int(one_peer(ring5).targets[k % 2][0]) for k in range(3)] == [1, 4, 1]


# ---------------------------------------------------------------------- one_peer(base)
def expected_one_peer_steps(n, out_offsets):
    """Step k: node j sends to j + o_k (o sorted ascending), weights 1/2."""
    steps = []
    for o in sorted(out_offsets):
        W = 0.5 * np.eye(n)
        for j in range(n):
            W[(j + o) % n, j] += 0.5
        steps.append(W)
    return steps


@pytest.mark.parametrize("circulant", [True, False])
def test_one_peer_of_regular_circulant_graph(circulant):
    n = 9
    shifts = {0: 0.4, 1: 0.2, 3: 0.2, -2: 0.2}  # i receives from i-1, i-3, i+2
    base = Topology.from_circulant(n, shifts)
    if not circulant:  # same graph without the shifts: the generic path
        base = Topology.from_matrix(base.W)
    topo = one_peer(base)
    expected = expected_one_peer_steps(n, [1, 3, 7])  # j sends to j+1, j+3, j-2 = j+7
    assert topo.period == 3
    for k in range(7):
        np.testing.assert_allclose(topo.at(k).W, expected[k % 3], atol=1e-15)
        assert topo.at(k).degree == 1


def test_one_peer_of_exponential_equals_one_peer_exponential():
    for n in (5, 8, 12):
        tau = math.ceil(math.log2(n))
        base = Topology.from_circulant(n, {0: 1.0, **{2**j: 1.0 for j in range(tau)}})
        a, b = one_peer(base), one_peer_exponential(n)
        assert a.period == b.period == tau
        for k in range(tau):
            np.testing.assert_array_equal(a.at(k).W, b.at(k).W)


def test_one_peer_rejects_non_regular_graphs():
    n = 8
    W = np.eye(n) * (1 - 1 / n)
    W[0, :] = 1 / n
    W[:, 0] = 1 / n
    star = Topology.from_matrix(W, name="star")
    with pytest.raises(TopologyError, match="regular"):
        one_peer(star)


def test_one_peer_rejects_regular_graphs_with_unbalanced_steps():
    cube = Topology.from_matrix(hypercube_matrix(8), name="hypercube")
    with pytest.raises(TopologyError, match=r"not doubly stochastic.*step 0"):
        one_peer(cube)


def test_one_peer_bad_inputs():
    with pytest.raises(TopologyError, match="static Topology"):
        one_peer(one_peer_exponential(8))
    with pytest.raises(TopologyError):
        one_peer(np.eye(3))


def test_one_peer_families_by_name():
    a = make("one_peer_exponential", 8)
    assert isinstance(a, DynamicTopology) and a.period == 3
    b = make("one_peer", 5, base="ring")
    np.testing.assert_allclose(b.at(1).W, expected_one_peer_steps(5, [1, 4])[1])


# ---------------------------------------------------------------------- sequence
def test_sequence_cycles_through_topologies():
    n = 4
    ts = [Topology.from_circulant(n, {0: 0.5, s: 0.5}) for s in (1, 2, 3)]
    seq = sequence(ts)
    assert seq.period == 3 and seq.n == n
    for k in range(9):
        assert seq.at(k) is ts[k % 3]
    assert sequence(*ts).period == 3
    np.testing.assert_allclose(product(seq), ts[2].W @ ts[1].W @ ts[0].W)


def test_sequence_bad_inputs():
    with pytest.raises(TopologyError, match="at least one"):
        sequence([])
    with pytest.raises(TopologyError, match="same n"):
        sequence(Topology.from_circulant(3, {0: 1.0}), Topology.from_circulant(4, {0: 1.0}))
    with pytest.raises(TopologyError, match="not a static Topology"):
        sequence([one_peer_exponential(4)])


# ---------------------------------------------------------------------- EquiTopo basis
@pytest.mark.parametrize("n", [2, 5, 8, 17])
def test_equitopo_basis_is_unbiased_and_doubly_stochastic(n):
    mean = np.zeros((n, n))
    for u in range(1, n):
        A = equitopo_basis(n, u).W
        expected = np.eye(n) / n
        for i in range(n):
            expected[i, (i + u) % n] += (n - 1) / n  # node i receives from i + u
        np.testing.assert_allclose(A, expected, atol=1e-15)
        assert_doubly_stochastic(A)
        mean += A / (n - 1)
    np.testing.assert_allclose(mean, J(n), atol=1e-14)


def test_equitopo_basis_bad_index():
    for u in (0, 5, -1, 1.5):
        with pytest.raises(TopologyError, match=r"1\.\.4"):
            equitopo_basis(5, u)


# ---------------------------------------------------------------------- EquiStatic
def basis_mean(n, us):
    W = np.zeros((n, n))
    for u in us:
        W += equitopo_basis(n, int(u)).W
    return W / len(us)


@pytest.mark.parametrize("n,M", [(17, 4), (17, 10), (30, 7)])
def test_equistatic_matches_definition(n, M):
    us = equistatic_indices(n, M=M, seed=3)
    assert us.size == M and us.min() >= 1 and us.max() <= n - 1
    D = d_equistatic(n, M=M, seed=3).W
    U = u_equistatic(n, M=M, seed=3).W
    np.testing.assert_allclose(D, basis_mean(n, us), atol=1e-14)
    np.testing.assert_allclose(U, (D + D.T) / 2, atol=1e-14)
    assert_doubly_stochastic(D)
    assert_doubly_stochastic(U)
    np.testing.assert_array_equal(U, U.T)
    assert d_equistatic(n, M=M, seed=3).degree <= M
    assert u_equistatic(n, M=M, seed=3).degree <= 2 * M


def test_equistatic_default_M_meets_its_bound():
    n, eps, p = 64, 0.5, 0.1
    D, U = d_equistatic(n), u_equistatic(n)
    assert D.params["M"] == int(8 * math.log(2 * n / p) / (3 * eps**2))
    for W in (D.W, U.W):
        assert np.linalg.norm(W - J(n), 2) < eps
    assert np.linalg.norm(d_equistatic(n, eps=0.9).W - J(n), 2) < 0.9


def test_equistatic_bad_parameters():
    for kw in ({"M": 0}, {"M": 2.5}, {"eps": 0}, {"eps": 1.5}, {"p": 1.0}, {"p": 0}, {"seed": -1}):
        with pytest.raises(TopologyError):
            d_equistatic(8, **kw)


# ---------------------------------------------------------------------- OD-EquiDyn
def test_od_equidyn_is_a_pure_function_of_seed_and_k():
    a, b, c = od_equidyn(13, seed=7), od_equidyn(13, seed=7), od_equidyn(13, seed=8)
    ks = list(range(40))
    Wa = [a.at(k).W for k in reversed(ks)][::-1]  # a is queried in the opposite order
    Wb = [b.at(k).W for k in ks]
    for x, y in zip(Wa, Wb):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(a.at(k).W, c.at(k).W) for k in ks)
    assert a.period is None and a.degree == 1


@pytest.mark.parametrize("M", [None, 5])
def test_od_equidyn_steps_match_definition(M):
    n, eta = 11, 0.3
    topo = od_equidyn(n, eta=eta, M=M, seed=2)
    allowed = set(range(1, n)) if M is None else set(equistatic_indices(n, M=M, seed=2).tolist())
    seen = set()
    for k in range(60):
        u = topo.u_at(k)
        assert u in allowed
        seen.add(u)
        expected = (1 - eta) * np.eye(n) + eta * equitopo_basis(n, u).W
        np.testing.assert_allclose(topo.at(k).W, expected, atol=1e-15)
        assert_doubly_stochastic(topo.at(k).W)
    assert len(seen) > 3  # it does move


@pytest.mark.parametrize("eta", [0, -0.1, 1.01, 2, True, "0.5", None])
def test_equidyn_eta_range(eta):
    for fam in (od_equidyn, ou_equidyn):
        with pytest.raises(TopologyError, match=r"\(0, 1\]"):
            fam(8, eta=eta)


def test_equidyn_eta_one_is_allowed():
    assert_doubly_stochastic(od_equidyn(8, eta=1.0).at(3).W)
    assert_doubly_stochastic(ou_equidyn(8, eta=1.0).at(3).W)


# ---------------------------------------------------------------------- OU-EquiDyn
def greedy_matching(n, u, s):
    """The scan of the paper: i = s, s+1, ... pairs with i + u when both are free."""
    free = np.ones(n, dtype=bool)
    pairs = []
    for t in range(n):
        i = (s + t) % n
        j = (i + u) % n
        if free[i] and free[j]:
            free[i] = free[j] = False
            pairs.append((i, j))
    return pairs


def ou_matrix(n, eta, u, s):
    W = np.eye(n)
    keep, give = 1 - eta + eta / n, eta * (n - 1) / n
    for i, j in greedy_matching(n, u, s):
        W[i, i] = W[j, j] = keep
        W[i, j] = W[j, i] = give
    return W


@pytest.mark.parametrize("n", [2, 3, 4, 7, 10, 12])
def test_ou_matching_closed_form_equals_greedy_scan(n):
    for u in range(1, n):
        for s in range(n):
            expected = np.zeros(n, dtype=bool)
            for i, _ in greedy_matching(n, u, s):
                expected[i] = True
            np.testing.assert_array_equal(ou_matching(n, u, s), expected)


@pytest.mark.parametrize("n,M", [(9, None), (16, None), (17, 4)])
def test_ou_equidyn_steps(n, M):
    eta = 0.6
    topo = ou_equidyn(n, eta=eta, M=M, seed=1)
    for k in range(40):
        W = topo.at(k).W
        u, s = topo.draw_at(k)
        np.testing.assert_allclose(W, ou_matrix(n, eta, u, s), atol=1e-15)
        np.testing.assert_array_equal(W, W.T)
        assert_doubly_stochastic(W)
        assert np.count_nonzero(W - np.diag(np.diag(W)), axis=1).max() <= 1  # one partner
    b = ou_equidyn(n, eta=eta, M=M, seed=1)
    np.testing.assert_array_equal(b.at(17).W, topo.at(17).W)


def test_equidyn_single_node():
    for fam in (od_equidyn, ou_equidyn):
        np.testing.assert_array_equal(fam(1).at(5).W, np.eye(1))
    np.testing.assert_array_equal(d_equistatic(1).W, np.eye(1))
