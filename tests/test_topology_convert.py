"""networkx and BlueFog conversion, checked against BlueFog's own matrices (row = sender).

The matrices below are BlueFog's topology_util outputs as listed in shared/reference/bluefog.md
section 3.2 (``nx.to_numpy_array`` of its DiGraphs), so ours must be their transposes.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from declearn.errors import TopologyError
from declearn.topology import (
    DynamicTopology,
    binary_tree,
    exponential,
    from_bluefog,
    from_networkx,
    geometric,
    grid,
    ring,
    star,
    to_bluefog,
    to_networkx,
)

Q = 0.25
BLUEFOG_EXP2_6 = np.array([  # ExponentialTwoGraph(6), row = sender
    [Q, Q, Q, 0, Q, 0],
    [0, Q, Q, Q, 0, Q],
    [Q, 0, Q, Q, Q, 0],
    [0, Q, 0, Q, Q, Q],
    [Q, 0, Q, 0, Q, Q],
    [Q, Q, 0, Q, 0, Q],
])
BLUEFOG_MESH_6 = np.array([  # MeshGrid2DGraph(6), 2 x 3
    [5 / 12, 1 / 4, 0, 1 / 3, 0, 0],
    [1 / 4, 1 / 4, 1 / 4, 0, 1 / 4, 0],
    [0, 1 / 4, 5 / 12, 0, 0, 1 / 3],
    [1 / 3, 0, 0, 5 / 12, 1 / 4, 0],
    [0, 1 / 4, 0, 1 / 4, 1 / 4, 1 / 4],
    [0, 0, 1 / 3, 0, 1 / 4, 5 / 12],
])
BLUEFOG_STAR_4 = np.array([
    [0.25, 0.25, 0.25, 0.25], [0.25, 0.75, 0, 0], [0.25, 0, 0.75, 0], [0.25, 0, 0, 0.75],
])


def bluefog_graph(M: np.ndarray) -> nx.DiGraph:
    """How BlueFog builds its graphs: edge i -> j (i sends to j) carries M[i, j]."""
    return nx.from_numpy_array(M, create_using=nx.DiGraph)


def rho_of(W):
    n = W.shape[0]
    return float(np.linalg.norm(W - 1.0 / n, 2))


# ---------------------------------------------------------------------- BlueFog cross-checks
@pytest.mark.parametrize(
    "M, ours", [(BLUEFOG_EXP2_6, exponential(6)), (BLUEFOG_MESH_6, grid(6)),
                (BLUEFOG_STAR_4, star(4))],
    ids=["ExponentialTwoGraph(6)", "MeshGrid2DGraph(6)", "StarGraph(4)"],
)
def test_bluefog_matrices_are_our_W_transposed(M, ours):
    np.testing.assert_allclose(ours.W, M.T, atol=1e-15)
    np.testing.assert_allclose(from_bluefog(bluefog_graph(M)).W, ours.W, atol=1e-15)
    np.testing.assert_allclose(nx.to_numpy_array(to_bluefog(ours)), M, atol=1e-15)


def test_bluefog_recv_and_send_weights():
    t = exponential(6)
    # GetRecvWeights(ExponentialTwoGraph(6), 0) = (0.25, {2: .25, 4: .25, 5: .25})
    assert t.self_weight(0) == 0.25 and t.in_weights(0) == {2: 0.25, 4: 0.25, 5: 0.25}
    # GetSendWeights(ExponentialTwoGraph(6), 0) = (0.25, {1: .25, 2: .25, 4: .25})
    assert t.out_neighbors(0).tolist() == [1, 2, 4]
    e12 = exponential(12)  # succ(0) = [0,1,2,4,8], pred(0) = [0,4,8,10,11], 60 edges with loops
    assert e12.out_neighbors(0).tolist() == [1, 2, 4, 8]
    assert e12.in_neighbors(0).tolist() == [4, 8, 10, 11]
    assert set(e12.data) == {0.2} and to_bluefog(e12).number_of_edges() == 60
    assert exponential(8).in_weights(0) == {4: 0.25, 6: 0.25, 7: 0.25}
    assert exponential(16).out_neighbors(0).tolist() == [1, 2, 4, 8]
    G = to_bluefog(star(4))  # GetRecvWeights(StarGraph(4), 2) = (0.75, {0: 0.25})
    assert G[2][2]["weight"] == 0.75 and {u: G[u][2]["weight"] for u in G.predecessors(2)
                                          if u != 2} == {0: 0.25}
    # RingGraph(5): row 0 of BlueFog's matrix = what node 0 sends = column 0 of our W
    np.testing.assert_allclose(nx.to_numpy_array(to_bluefog(ring(5)))[0],
                               [1 / 3, 1 / 3, 0, 0, 1 / 3])


@pytest.mark.parametrize(
    "n, exp2, ring_, mesh, star_",
    [(4, 0.3333, 0.3333, 0.3333, 0.75), (8, 0.5, 0.8047, 0.8536, 0.875),
     (16, 0.6, 0.9493, 0.8686, 0.9375), (32, 0.6667, 0.9872, 0.9658, 0.9688)],
)
def test_bluefog_rho_table(n, exp2, ring_, mesh, star_):
    for topo, expected in ((exponential(n), exp2), (ring(n), ring_), (grid(n), mesh),
                           (star(n), star_)):
        assert rho_of(topo.W) == pytest.approx(expected, abs=6e-5)


@pytest.mark.parametrize("n, expected", [(5, 0.25), (6, 0.5), (7, 0.3536), (10, 0.6),
                                         (12, 0.6), (64, 0.7143)])
def test_bluefog_exp2_rho_other_n(n, expected):
    assert rho_of(exponential(n).W) == pytest.approx(expected, abs=6e-5)


def test_from_bluefog_unweighted_is_biased_uniform_combine():
    # BlueFog's unweighted combine 1/(indeg+1): StarGraph(4) consensus -> [.4, .2, .2, .2]
    t = from_bluefog(bluefog_graph(BLUEFOG_STAR_4), is_weighted=False)
    assert t.is_row_stochastic and not t.is_column_stochastic
    lim = np.linalg.matrix_power(t.W, 400)[0]
    np.testing.assert_allclose(lim, [0.4, 0.2, 0.2, 0.2], atol=1e-12)
    t = from_bluefog(bluefog_graph(BLUEFOG_MESH_6), is_weighted=False)
    lim = np.linalg.matrix_power(t.W, 400)[0]
    np.testing.assert_allclose(lim, [0.15, 0.2, 0.15, 0.15, 0.2, 0.15], atol=1e-12)
    t = from_bluefog(bluefog_graph(BLUEFOG_EXP2_6), is_weighted=False)
    np.testing.assert_allclose(np.linalg.matrix_power(t.W, 400)[0], 1 / 6, atol=1e-12)


# ---------------------------------------------------------------------- networkx
def test_to_networkx_edges_go_sender_to_receiver():
    t = exponential(5)
    G = to_networkx(t)
    assert list(G.nodes) == list(range(5))
    W = t.W
    for i in range(5):
        for j in range(5):
            if W[i, j] > 0:
                assert G[j][i]["weight"] == W[i, j]  # j sends to i
            else:
                assert not G.has_edge(j, i)
    assert G.number_of_edges() == np.count_nonzero(W)
    np.testing.assert_allclose(nx.to_numpy_array(G), W.T)


@pytest.mark.parametrize("make", [lambda: ring(7), lambda: exponential(9), lambda: grid(12),
                                  lambda: binary_tree(10), lambda: geometric(20, radius=0.5)])
def test_roundtrip_given_weights(make):
    t = make()
    back = from_networkx(to_networkx(t), rule="given")
    np.testing.assert_allclose(back.W, t.W, atol=1e-15)
    assert (back.shifts is None) == (t.shifts is None)


@pytest.mark.parametrize("n", [3, 4, 5, 8, 17])
def test_cycle_graph_with_metropolis_is_the_ring(n):
    t = from_networkx(nx.cycle_graph(n))
    np.testing.assert_allclose(t.W, ring(n).W, atol=1e-15)
    assert t.shifts is not None


def test_nodes_relabelled_in_sorted_order():
    G = nx.Graph([("c", "b"), ("b", "a")])  # path a - b - c: degrees 1, 2, 1
    t = from_networkx(G)
    expected = np.array([[2 / 3, 1 / 3, 0], [1 / 3, 1 / 3, 1 / 3], [0, 1 / 3, 2 / 3]])
    np.testing.assert_allclose(t.W, expected)


def test_given_weights_directed_and_undirected():
    D = nx.DiGraph()
    D.add_weighted_edges_from([(0, 1, 0.5), (1, 0, 0.25), (0, 0, 0.5), (1, 1, 0.75)])
    t = from_networkx(D, rule="given")
    np.testing.assert_allclose(t.W, [[0.5, 0.25], [0.5, 0.75]])  # W[v, u] for u -> v
    assert t.is_row_stochastic is False and t.is_column_stochastic  # sender weights accepted
    U = nx.Graph()
    U.add_weighted_edges_from([(0, 1, 0.3), (0, 0, 0.7), (1, 1, 0.7)])
    np.testing.assert_allclose(from_networkx(U, rule="given").W, [[0.7, 0.3], [0.3, 0.7]])


def test_rules_on_directed_graphs():
    D = nx.DiGraph([(0, 1), (1, 2), (2, 0), (0, 2)])
    t = from_networkx(D, rule="uniform")
    np.testing.assert_allclose(t.W, [[1 / 2, 0, 1 / 2], [1 / 2, 1 / 2, 0], [1 / 3, 1 / 3, 1 / 3]])
    assert from_networkx(D, rule="uniform_out").is_column_stochastic
    S = nx.DiGraph([(0, 1), (1, 0), (1, 2), (2, 1)])  # symmetric digraph = undirected path
    np.testing.assert_allclose(from_networkx(S).W, from_networkx(nx.path_graph(3)).W)


def test_laplacian_eps_passes_through():
    t = from_networkx(nx.cycle_graph(6), rule="laplacian", eps=0.25)
    L = nx.laplacian_matrix(nx.cycle_graph(6)).toarray()
    np.testing.assert_allclose(t.W, np.eye(6) - 0.25 * L)


class _Steps(DynamicTopology):
    def __init__(self):
        super().__init__(4, name="steps", period=2)

    def _step(self, k):
        return ring(4)


@pytest.mark.parametrize(
    "call, phrase",
    [
        (lambda: to_networkx(_Steps()), r"topo.at\(k\)"),
        (lambda: to_bluefog(_Steps()), r"topo.at\(k\)"),
        (lambda: to_networkx(np.eye(3)), "Expected a declearn Topology"),
        (lambda: from_networkx(nx.Graph([(0, 1), (2, 3)])), "not connected"),
        (lambda: from_networkx(nx.DiGraph([(0, 1), (1, 2)]), rule="uniform"), "not connected"),
        (lambda: from_networkx(nx.DiGraph([(0, 1), (1, 2), (2, 0), (0, 2)])),
         "needs an undirected graph"),
        (lambda: from_networkx(nx.path_graph(3), rule="given"), "no 'weight' attribute"),
        (lambda: from_networkx(nx.Graph([(0, 1, {"weight": 0.4})]), rule="given"),
         "neither the rows nor the columns"),
        (lambda: from_networkx(nx.Graph([(0, 1, {"weight": -0.5}), (0, 0, {"weight": 1.5}),
                                         (1, 1, {"weight": 1.5})]), rule="given"),
         "negative weight"),
        (lambda: from_networkx(nx.path_graph(3), rule="best"), "Unknown weight rule"),
        (lambda: from_networkx(nx.path_graph(3), rule="metropolis", eps=0.1),
         "eps is the step"),
        (lambda: from_networkx(nx.Graph()), "no nodes"),
        (lambda: from_networkx(nx.MultiGraph([(0, 1), (0, 1)])), "Multigraphs"),
        (lambda: from_networkx(ring(4)), "already a declearn topology"),
        (lambda: from_networkx([(0, 1)]), "Expected a networkx graph"),
        (lambda: from_bluefog(nx.relabel_nodes(bluefog_graph(BLUEFOG_STAR_4), {0: 9})),
         "ranks 0..n-1"),
        (lambda: from_bluefog(bluefog_graph(BLUEFOG_STAR_4), is_weighted="yes"), "True or False"),
    ],
)
def test_bad_conversions_raise(call, phrase):
    with pytest.raises(TopologyError, match=phrase):
        call()
