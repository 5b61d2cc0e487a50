"""Static families, weight rules and spanning trees against dense constructions written here.

The oracles below build W with explicit loops from each family's definition (row i = receiver)
and never call the code under test; rho is computed with numpy from the dense W.
"""

from __future__ import annotations

import itertools
import math

import networkx as nx
import numpy as np
import pytest

from declearn.errors import TopologyError
from declearn.topology import (
    DynamicTopology,
    Topology,
    TreeTopology,
    apply_weights,
    binary_tree,
    chain,
    complete,
    double_binary_trees,
    erdos_renyi,
    exponential,
    families,
    geometric,
    grid,
    hypercube,
    lazy,
    make,
    ring,
    spanning_tree,
    star,
)

NS = [1, 2, 3, 4, 5, 8, 16, 17, 33]


def rho_of(W: np.ndarray) -> float:
    n = W.shape[0]
    return float(np.linalg.norm(W - np.full((n, n), 1.0 / n), 2))


def metropolis_oracle(n: int, links) -> np.ndarray:
    """Metropolis-Hastings weights of an undirected graph, written out with loops."""
    nbrs = {i: set() for i in range(n)}
    for u, v in links:
        if u != v:
            nbrs[u].add(v)
            nbrs[v].add(u)
    W = np.zeros((n, n))
    for i in range(n):
        for j in nbrs[i]:
            W[i, j] = 1.0 / (1 + max(len(nbrs[i]), len(nbrs[j])))
        W[i, i] = 1.0 - sum(W[i, j] for j in nbrs[i])
    return W


def assert_valid(t: Topology, *, symmetric: bool, doubly: bool = True) -> None:
    W = t.W
    assert np.all(W >= 0)
    np.testing.assert_allclose(W.sum(axis=1), 1.0, atol=1e-12)
    if doubly:
        np.testing.assert_allclose(W.sum(axis=0), 1.0, atol=1e-12)
    assert np.allclose(W, W.T) == symmetric or t.n <= 2
    assert t.is_connected
    A = (W > 0) & ~np.eye(t.n, dtype=bool)
    np.testing.assert_array_equal(t.in_degrees, A.sum(axis=1))
    np.testing.assert_array_equal(t.out_degrees, A.sum(axis=0))


def assert_shifts_mix_like_W(t: Topology) -> None:
    """The circulant shortcut x_new = sum_s w * roll(x, s) equals the dense W @ x."""
    assert t.shifts is not None, f"{t.name} is circulant and should carry shifts"
    x = np.random.default_rng(1).standard_normal((t.n, 3))
    mixed = sum(w * np.roll(x, s, axis=0) for s, w in t.shifts.items())
    np.testing.assert_allclose(mixed, t.W @ x, atol=1e-12)


# ---------------------------------------------------------------------- ring
@pytest.mark.parametrize("n", NS)
def test_ring_matches_loops(n):
    W = np.zeros((n, n))
    if n == 1:
        W[0, 0] = 1.0
    elif n == 2:
        W[:] = 0.5
    else:
        for i in range(n):
            for j in (i - 1, i, i + 1):
                W[i, j % n] = 1.0 / 3.0
    t = ring(n)
    np.testing.assert_allclose(t.W, W, atol=1e-15)
    assert_valid(t, symmetric=True)
    assert_shifts_mix_like_W(t)
    if n >= 3:
        assert t.degree == 2
        assert rho_of(t.W) == pytest.approx(1 / 3 + 2 / 3 * math.cos(2 * math.pi / n), abs=1e-12)


# ---------------------------------------------------------------------- exponential
@pytest.mark.parametrize("n", NS + [6, 12, 31, 64])
def test_exponential_matches_offsets(n):
    tau = math.ceil(math.log2(n)) if n > 1 else 0
    W = np.zeros((n, n))
    for i in range(n):
        W[i, i] += 1.0 / (tau + 1)
        for k in range(tau):
            W[i, (i - 2 ** k) % n] += 1.0 / (tau + 1)  # i receives from i - 2^k
    t = exponential(n)
    np.testing.assert_allclose(t.W, W, atol=1e-15)
    assert_valid(t, symmetric=n <= 2 or np.allclose(W, W.T), doubly=True)
    assert_shifts_mix_like_W(t)
    if n > 1:
        assert set(t.in_degrees) == {tau} and set(t.out_degrees) == {tau}
        np.testing.assert_array_equal(t.out_neighbors(0), sorted({2 ** k % n for k in range(tau)}))


@pytest.mark.parametrize("n", [2, 4, 6, 8, 10, 12, 16, 20, 32, 64, 100])
def test_exponential_rho_even_n(n):
    tau = math.ceil(math.log2(n))
    assert rho_of(exponential(n).W) == pytest.approx(1 - 2 / (tau + 1), abs=1e-10)


@pytest.mark.parametrize("n, expected", [(17, 0.548), (31, 0.562), (33, 0.608)])
def test_exponential_rho_odd_n_below_even_formula(n, expected):
    tau = math.ceil(math.log2(n))
    r = rho_of(exponential(n).W)
    assert r < 1 - 2 / (tau + 1) - 0.05
    assert r == pytest.approx(expected, abs=1e-3)


# ---------------------------------------------------------------------- star, complete
@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("center", [0, "last"])
def test_star_matches_bluefog_weights(n, center):
    c = n - 1 if center == "last" else 0
    W = np.zeros((n, n))
    for i in range(n):
        if i == c:
            W[c, :] = 1.0 / n
        else:
            W[i, i], W[i, c] = 1.0 - 1.0 / n, 1.0 / n
    t = star(n, center=c)
    np.testing.assert_allclose(t.W, W, atol=1e-15)
    assert_valid(t, symmetric=True)
    assert t.degree == n - 1
    if n >= 3:
        assert rho_of(t.W) == pytest.approx(1 - 1 / n, abs=1e-12)


@pytest.mark.parametrize("n", NS)
def test_complete_is_exact_averaging(n):
    t = complete(n)
    np.testing.assert_allclose(t.W, np.full((n, n), 1.0 / n), atol=1e-15)
    assert_valid(t, symmetric=True)
    assert_shifts_mix_like_W(t)
    assert rho_of(t.W) < 1e-12
    assert t.degree == n - 1


# ---------------------------------------------------------------------- grid / torus
def grid_links(nrow, ncol, torus):
    links = set()
    for r, c in itertools.product(range(nrow), range(ncol)):
        i = r * ncol + c
        for dr, dc in ((0, 1), (1, 0)):
            rr, cc = r + dr, c + dc
            if torus:
                rr, cc = rr % nrow, cc % ncol
            if rr < nrow and cc < ncol and (rr, cc) != (r, c):
                links.add((i, rr * ncol + cc))
    return links


@pytest.mark.parametrize("n", NS + [6, 12])
@pytest.mark.parametrize("torus", [False, True])
def test_grid_matches_metropolis_mesh(n, torus):
    nrow = max(r for r in range(1, n + 1) if n % r == 0 and r * r <= n)
    t = grid(n, torus=torus)
    assert t.params["shape"] == (nrow, n // nrow)
    np.testing.assert_allclose(
        t.W, metropolis_oracle(n, grid_links(nrow, n // nrow, torus)), atol=1e-15
    )
    assert_valid(t, symmetric=True)
    assert t.degree <= 4


def test_grid_prime_n_is_a_path_and_shape_is_recorded():
    t = grid(17)
    assert t.params["shape"] == (1, 17)
    np.testing.assert_allclose(t.W, chain(17).W)
    np.testing.assert_allclose(grid(17, torus=True).W, ring(17).W, atol=1e-15)


@pytest.mark.parametrize("shape", [(3, 4), (4, 3), (2, 6), (1, 12), (12, 1)])
def test_grid_given_shape(shape):
    t = grid(12, shape=shape)
    np.testing.assert_allclose(t.W, metropolis_oracle(12, grid_links(*shape, False)))


@pytest.mark.parametrize("nrow, ncol", [(3, 3), (4, 4), (3, 5), (4, 8)])
def test_torus_rho_closed_form(nrow, ncol):
    # 4-regular torus, weights 1/5: eigenvalues (1 + 2cos(2 pi a/nrow) + 2cos(2 pi b/ncol)) / 5
    lam = [
        (1 + 2 * math.cos(2 * math.pi * a / nrow) + 2 * math.cos(2 * math.pi * b / ncol)) / 5
        for a in range(nrow) for b in range(ncol) if (a, b) != (0, 0)
    ]
    t = grid(nrow * ncol, shape=(nrow, ncol), torus=True)
    assert rho_of(t.W) == pytest.approx(max(abs(v) for v in lam), abs=1e-12)


def test_grid_2x3_is_bluefog_meshgrid():
    # BlueFog MeshGrid2DGraph(6) (symmetric, so the transpose does not matter here)
    M = np.array([
        [5 / 12, 1 / 4, 0, 1 / 3, 0, 0],
        [1 / 4, 1 / 4, 1 / 4, 0, 1 / 4, 0],
        [0, 1 / 4, 5 / 12, 0, 0, 1 / 3],
        [1 / 3, 0, 0, 5 / 12, 1 / 4, 0],
        [0, 1 / 4, 0, 1 / 4, 1 / 4, 1 / 4],
        [0, 0, 1 / 3, 0, 1 / 4, 5 / 12],
    ])
    np.testing.assert_allclose(grid(6).W, M, atol=1e-15)
    # MeshGrid2DGraph(4): the 2x2 mesh is a 4-cycle 0-1-3-2 with all weights 1/3
    W4 = np.zeros((4, 4))
    for u, v in ((0, 1), (1, 3), (3, 2), (2, 0)):
        W4[u, v] = W4[v, u] = 1 / 3
    np.testing.assert_allclose(grid(4).W, W4 + np.eye(4) / 3, atol=1e-15)


# ---------------------------------------------------------------------- hypercube
@pytest.mark.parametrize("n", [1, 2, 4, 8, 16, 32])
def test_hypercube_matches_bits(n):
    d = round(math.log2(n))
    W = np.zeros((n, n))
    for i in range(n):
        W[i, i] = 1.0 / (d + 1)
        for j in range(n):
            if bin(i ^ j).count("1") == 1:
                W[i, j] = 1.0 / (d + 1)
    t = hypercube(n)
    np.testing.assert_allclose(t.W, W, atol=1e-15)
    assert_valid(t, symmetric=True)
    if n >= 4:
        assert rho_of(t.W) == pytest.approx((d - 1) / (d + 1), abs=1e-12)


# ---------------------------------------------------------------------- random graphs
def test_erdos_renyi_is_metropolis_of_its_draw_and_seeded():
    t = erdos_renyi(60, p=0.15, seed=3)
    A = (t.W > 0) & ~np.eye(60, dtype=bool)
    links = list(zip(*np.nonzero(np.triu(A))))
    np.testing.assert_allclose(t.W, metropolis_oracle(60, links), atol=1e-15)
    assert_valid(t, symmetric=True)
    np.testing.assert_array_equal(erdos_renyi(60, p=0.15, seed=3).W, t.W)
    assert not np.array_equal(erdos_renyi(60, p=0.15, seed=4).W, t.W)
    # 1770 candidate links, p = 0.15: mean 265.5, sd 15; 5 sd is a wide band
    assert abs(len(links) - 265.5) < 5 * 15.0
    assert np.allclose(erdos_renyi(7, p=1.0).W, complete(7).W)


def test_erdos_renyi_uniform_rule_is_row_stochastic():
    t = erdos_renyi(30, p=0.3, seed=0, rule="uniform")
    deg = ((t.W > 0) & ~np.eye(30, dtype=bool)).sum(axis=1)
    np.testing.assert_allclose(np.diag(t.W), 1.0 / (deg + 1))
    assert t.is_row_stochastic


def test_geometric_links_points_within_radius():
    t = geometric(50, radius=0.3, seed=1)
    pos = t.recall("pos")
    dist = np.linalg.norm(pos[:, None, :] - pos[None, :, :], axis=-1)
    A = (dist <= 0.3) & ~np.eye(50, dtype=bool)
    np.testing.assert_array_equal((t.W > 0) & ~np.eye(50, dtype=bool), A)
    np.testing.assert_allclose(t.W, metropolis_oracle(50, zip(*np.nonzero(A))), atol=1e-15)
    assert_valid(t, symmetric=True)
    np.testing.assert_array_equal(geometric(50, radius=0.3, seed=1).W, t.W)


# ---------------------------------------------------------------------- weight rules
def star_links(n):
    return [(0, j) for j in range(1, n)]


def test_uniform_rule_biases_star_consensus_like_bluefog():
    t = apply_weights(4, star_links(4), "uniform")
    np.testing.assert_allclose(t.W.sum(axis=0), [1.75, 0.75, 0.75, 0.75])
    assert t.is_row_stochastic and not t.is_column_stochastic
    limit = np.linalg.matrix_power(t.W, 300)
    np.testing.assert_allclose(limit, np.tile([0.4, 0.2, 0.2, 0.2], (4, 1)), atol=1e-12)


def test_uniform_out_rule_is_column_stochastic_split_by_sender():
    edges = [(0, 1), (1, 2), (2, 0), (0, 2)]  # directed: u sends to v
    t = apply_weights(3, edges, "uniform_out", directed=True)
    W = np.zeros((3, 3))
    out = {0: [1, 2], 1: [2], 2: [0]}
    for u, vs in out.items():
        W[u, u] = 1 / (len(vs) + 1)
        for v in vs:
            W[v, u] = 1 / (len(vs) + 1)
    np.testing.assert_allclose(t.W, W)
    assert t.is_column_stochastic and not t.is_row_stochastic


def test_uniform_rule_on_directed_graph_averages_in_neighbors():
    edges = [(0, 1), (1, 2), (2, 0), (0, 2)]
    t = apply_weights(3, edges, "uniform", directed=True)
    W = np.array([[1 / 2, 0, 1 / 2], [1 / 2, 1 / 2, 0], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(t.W, W)


def test_max_degree_rule():
    n = 6
    links = [(0, 1), (0, 2), (0, 3), (3, 4), (4, 5)]  # d_max = 3 at node 0
    t = apply_weights(n, links, "max_degree")
    deg = np.zeros(n)
    W = np.zeros((n, n))
    for u, v in links:
        W[u, v] = W[v, u] = 1 / 4
        deg[u] += 1
        deg[v] += 1
    W[np.arange(n), np.arange(n)] = 1 - deg / 4
    np.testing.assert_allclose(t.W, W)
    assert_valid(t, symmetric=True)


def test_laplacian_rule_default_eps_is_best_constant_on_a_ring():
    n = 8
    links = [(i, (i + 1) % n) for i in range(n)]
    lam = sorted(2 - 2 * math.cos(2 * math.pi * k / n) for k in range(n))
    eps = 2 / (lam[1] + lam[-1])
    t = apply_weights(n, links, "laplacian")
    assert t.params["eps"] == pytest.approx(eps)
    L = 2 * np.eye(n)
    for u, v in links:
        L[u, v] = L[v, u] = -1
    np.testing.assert_allclose(t.W, np.eye(n) - eps * L, atol=1e-14)
    # the best constant beats every other admissible eps
    for other in (0.2, 0.3, 0.45, 0.5):
        assert rho_of(apply_weights(n, links, "laplacian", eps=other).W) >= rho_of(t.W) - 1e-12


def test_laplacian_default_eps_clipped_to_keep_weights_nonnegative():
    # star: eps* = 2/(1 + n) > 1/(n - 1) for n >= 4, so the default is lowered to 1/d_max
    t = apply_weights(8, star_links(8), "laplacian")
    assert t.params["eps"] == pytest.approx(1 / 7)
    assert t.W[0, 0] == pytest.approx(0.0, abs=1e-15) and np.all(t.W >= 0)


def test_adjacency_input_equals_edge_input():
    A = np.zeros((5, 5))
    links = [(0, 1), (1, 2), (2, 3), (3, 4), (1, 3)]
    for u, v in links:
        A[u, v] = A[v, u] = 1
    import scipy.sparse as sp
    import torch

    ref = apply_weights(5, links).W
    for adj in (A, sp.csr_matrix(A), torch.tensor(A)):
        np.testing.assert_allclose(apply_weights(5, adjacency=adj).W, ref)


def test_circulant_detection_gives_shifts():
    n = 9
    t = apply_weights(n, [(i, (i + 3) % n) for i in range(n)] + [(i, (i + 1) % n) for i in
                                                                  range(n)])
    assert_shifts_mix_like_W(t)
    assert apply_weights(4, star_links(4)).shifts is None


def test_lazy_static_and_circulant():
    for t in (ring(7), star(5), exponential(6), grid(6)):
        lz = lazy(t)
        np.testing.assert_allclose(lz.W, (np.eye(t.n) + t.W) / 2, atol=1e-15)
        np.testing.assert_allclose(t.lazy().W, lz.W)
        if t.shifts is not None:
            assert_shifts_mix_like_W(lz)
        assert np.linalg.eigvalsh((lz.W + lz.W.T) / 2).min() >= -1e-12 or not t.is_symmetric


class _Alternating(DynamicTopology):
    """ring at even k, star at odd k (written here to test the lazy wrapper)."""

    def __init__(self, n):
        super().__init__(n, name="alternating", period=2)

    def _step(self, k):
        return ring(self.n) if k % 2 == 0 else star(self.n)


def test_lazy_dynamic_wraps_every_step():
    dyn = _Alternating(6)
    lz = lazy(dyn)
    assert lz.is_dynamic and lz.period == 2
    for k in range(5):
        np.testing.assert_allclose(lz.at(k).W, (np.eye(6) + dyn.at(k).W) / 2)


# ---------------------------------------------------------------------- trees
def test_binary_tree_16_facts():
    t1, t2 = double_binary_trees(16)
    e1, e2 = set(t1.tree_edges), set(t2.tree_edges)
    assert (0, 1) in e1 and (7, 15) in e1 and len(e1) == len(e2) == 15
    assert e1 & e2 == {(5, 10)}
    assert len(e1 | e2) == 29
    assert t1.diameter == t2.diameter == 6
    assert max(t1.degree, t2.degree) == 3
    leaves1 = {i for i in range(16) if len(t1.tree_neighbors(i)) == 1}
    leaves2 = {i for i in range(16) if len(t2.tree_neighbors(i)) == 1}
    assert leaves1 == {0, *range(8, 16)} and leaves2 == {*range(0, 8), 15}
    # heap layout, written out: parent(w) = w // 2 for w >= 2, node 0 hangs from node 1
    for w in range(2, 16):
        assert t1.parent[w] == w // 2
        assert t2.parent[15 - w] == 15 - w // 2
    assert t1.parent[0] == 1 and t1.root == 1 and t1.parent[1] == -1


@pytest.mark.parametrize("n", NS)
def test_trees_are_metropolis_spanning_trees(n):
    for t in (chain(n), binary_tree(n), binary_tree(n, reverse=True)):
        assert len(t.tree_edges) == n - 1
        G = nx.Graph(t.tree_edges)
        G.add_nodes_from(range(n))
        assert nx.is_tree(G)
        np.testing.assert_allclose(t.W, metropolis_oracle(n, t.tree_edges), atol=1e-15)
        assert_valid(t, symmetric=True)
        assert t.diameter == (nx.diameter(G) if n > 1 else 0)
        assert t.parent[t.root] == -1
    assert chain(n).diameter == n - 1
    assert chain(n).tree_edges == [(i, i + 1) for i in range(n - 1)]


def test_tree_pair_split_merge_roundtrip():
    import torch

    pair = double_binary_trees(8)
    for x in (np.arange(14.0).reshape(2, 7), torch.arange(14.0).reshape(2, 7)):
        a, b = pair.split(x)
        assert a.shape[-1] == 4 and b.shape[-1] == 3
        assert (pair.merge(a, b) == x).all()
    u = pair.union()
    assert len({tuple(e) for e in pair.first.tree_edges} | set(pair.second.tree_edges)) == \
        (u.in_degrees.sum() // 2)


def test_spanning_tree_is_bfs_tree():
    G = nx.grid_2d_graph(4, 5)  # labels (r, c), sorted row-major
    labels = sorted(G.nodes)
    t = spanning_tree(G, root=(1, 2))
    assert len(t.tree_edges) == 19 and t.params["root"] == (1, 2)
    T = nx.Graph([(labels[u], labels[v]) for u, v in t.tree_edges])
    assert nx.is_tree(T) and set(T.nodes) == set(G.nodes)
    assert all(G.has_edge(u, v) for u, v in T.edges)
    dist = nx.single_source_shortest_path_length(G, (1, 2))
    assert [dist[v] for v in labels] == t.depth.tolist()
    np.testing.assert_allclose(t.W, metropolis_oracle(20, t.tree_edges), atol=1e-15)


def test_spanning_tree_of_a_topology():
    base = exponential(10)
    t = spanning_tree(base)
    assert t.root == 0 and len(t.tree_edges) == 9
    G = nx.Graph()
    G.add_edges_from((int(i), int(j)) for i, j in zip(*np.nonzero(base.W + base.W.T)) if i != j)
    dist = nx.single_source_shortest_path_length(G, 0)
    assert t.depth.tolist() == [dist[i] for i in range(10)]


# ---------------------------------------------------------------------- registry
def test_registry_builds_every_family_by_name():
    for name in ("ring", "grid", "star", "complete", "hypercube", "exponential", "chain",
                 "binary_tree", "erdos_renyi", "geometric"):
        assert name in families(dynamic=False)
    np.testing.assert_array_equal(make("ring", 8).W, ring(8).W)
    np.testing.assert_array_equal(make("grid", 12, shape=(3, 4), torus=True).W,
                                  grid(12, shape=(3, 4), torus=True).W)
    np.testing.assert_array_equal(make("erdos_renyi", 20, p=0.4, seed=2).W,
                                  erdos_renyi(20, p=0.4, seed=2).W)
    t = make("binary_tree", 16, reverse=True)
    assert t.params["reverse"] is True


@pytest.mark.parametrize("name, kw", [
    ("ring", {}), ("complete", {}), ("exponential", {}), ("hypercube", {}), ("star", {"center": 3}),
    ("grid", {"shape": (2, 6), "torus": True, "rule": "laplacian"}), ("chain", {}),
    ("binary_tree", {"reverse": True}), ("erdos_renyi", {"p": 0.5, "seed": 1}),
    ("geometric", {"radius": 0.6, "seed": 2, "rule": "max_degree"}),
])
def test_params_rebuild_the_topology(name, kw):
    t = make(name, 12 if name != "hypercube" else 16, **kw)
    assert t.name == name
    np.testing.assert_array_equal(make(t.name, t.n, **t.params).W, t.W)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("fn", [ring, grid, star, complete, exponential, hypercube, chain,
                                binary_tree])
@pytest.mark.parametrize("n, phrase", [(0, "at least 1"), (-3, "at least 1"),
                                       (2.5, "integer"), ("4", "integer"), (True, "integer")])
def test_bad_n(fn, n, phrase):
    with pytest.raises(TopologyError, match=phrase):
        fn(n)


@pytest.mark.parametrize(
    "call, phrase",
    [
        (lambda: make("rnig", 8), "Did you mean 'ring'"),
        (lambda: make("ring", 8, degree=3), "no parameter degree"),
        (lambda: erdos_renyi(40, p=0.01, seed=0), "Raise p .* or change seed"),
        (lambda: geometric(40, radius=0.05, seed=0), "Raise radius .* or change seed"),
        (lambda: erdos_renyi(10, p=1.5), "p must be a number >= 0 and <= 1"),
        (lambda: erdos_renyi(10, p=-0.1), "p must be a number >= 0 and <= 1"),
        (lambda: erdos_renyi(10, p="high"), "p must be a number"),
        (lambda: erdos_renyi(10, p=0.5, seed=None), "seed must be a non-negative integer"),
        (lambda: geometric(10, radius=0.0), "radius must be a number > 0"),
        (lambda: geometric(10, radius=-1), "radius must be a number > 0"),
        (lambda: grid(10, shape=(3, 4)), r"has 12 nodes but n = 10"),
        (lambda: grid(10, shape=(0, 10)), "two positive integers"),
        (lambda: grid(10, shape=5), "pair"),
        (lambda: grid(8, rule="metropolitan"), "Unknown weight rule"),
        (lambda: hypercube(12), "power of 2.*use n = 8 or 16"),
        (lambda: star(5, center=5), r"center must be a node index in 0..4"),
        (lambda: apply_weights(4, [(0, 1), (1, 2), (2, 3)], "laplacian", eps=0.8),
         r"eps <= 1/max_degree = 0.5"),
        (lambda: apply_weights(4, [(0, 1), (1, 2), (2, 3)], "laplacian", eps=-1),
         "positive number"),
        (lambda: apply_weights(4, [(0, 1), (1, 2)], "metropolis"), "not connected"),
        (lambda: apply_weights(3, [(0, 1), (1, 2)], "metropolis", directed=True),
         "needs an undirected graph"),
        (lambda: apply_weights(3, [(0, 1), (1, 3)]), r"lie in 0..2"),
        (lambda: apply_weights(3, [(0, 1.5)]), "integer node indices"),
        (lambda: apply_weights(3, [(0, 1, 2)]), r"\(u, v\) pairs"),
        (lambda: apply_weights(3, [(0, 1), (1, 2)], "gossip"), "Unknown weight rule"),
        (lambda: apply_weights(3, [(0, 1), (1, 2)], "uniform", eps=0.1), "eps is the step"),
        (lambda: apply_weights(3), "either as edges"),
        (lambda: apply_weights(3, adjacency=np.ones((2, 2))), "must be 3 x 3"),
        (lambda: Topology.from_matrix([[1.5, -0.5], [0.5, 0.5]]), "negative weight"),
        (lambda: lazy("ring"), "takes a Topology"),
        (lambda: spanning_tree(nx.Graph([(0, 1), (2, 3)])), "not connected"),
        (lambda: spanning_tree(nx.path_graph(3), root=7), "not a node"),
        (lambda: binary_tree(8, reverse="yes"), "True or False"),
        (lambda: TreeTopology.from_parents([-1, 0, 3, 2]), "no cycle"),
        (lambda: TreeTopology.from_parents([-1, 0, -1]), "exactly one root"),
    ],
)
def test_bad_input_raises_helpful_topology_error(call, phrase):
    with pytest.raises(TopologyError, match=phrase):
        call()


def test_every_family_has_a_whole_sentence_as_summary():
    from declearn.topology import family_info

    for name in families():
        text = family_info(name).summary
        assert text and "\n" not in text, name
        assert text.rstrip("`").endswith((".", ")")), f"{name}: summary cut mid-sentence: {text!r}"
