r"""networkx in and out, and BlueFog's graphs.

Edge direction, everywhere in declearn: **an edge u -> v means u sends to v**, so it carries
the weight ``W[v, u]`` (row = receiver). An undirected edge is both directions.

- :func:`from_networkx` numbers the nodes 0..n-1 in sorted order and applies a weight rule, or
  reads the ``'weight'`` attributes (``rule="given"``).
- :func:`to_networkx` gives a DiGraph with edge ``j -> i`` weighted ``W[i, j]`` and a self loop
  weighted ``W[i, i]``.
- BlueFog builds the same kind of DiGraph (edge = sender -> receiver) but reads it as a matrix
  with **row = sender**: ``nx.to_numpy_array(G)[src, dst] = W[dst, src]``, i.e. BlueFog's
  matrix is our ``W`` **transposed**. :func:`to_bluefog` / :func:`from_bluefog` convert.

A :class:`DynamicTopology` has no single graph: convert one step, ``topo.at(k)``.
"""

from __future__ import annotations

import numpy as np

from declearn.errors import TopologyError
from declearn.topology.base import Topology
from declearn.topology.stochastic import STOCHASTIC_ATOL
from declearn.topology.weights import RULES, _build, apply_weights, old_rule_keyword

__all__ = ["from_networkx", "to_networkx", "to_bluefog", "from_bluefog"]


@old_rule_keyword
def from_networkx(graph, *, rule: str = "metropolis", eps: float | None = None) -> Topology:
    """Topology of a networkx ``Graph`` or ``DiGraph``; node k is the k-th node in sorted order.

    ``rule`` is a weight rule of :data:`declearn.topology.weights.RULES` (``"metropolis"``,
    ``"uniform"``, ``"uniform_out"``, ``"max_degree"``, ``"laplacian"`` with step ``eps``),
    which ignores edge attributes and self loops, or ``"given"``: each edge ``u -> v`` gives
    ``W[v, u] = data["weight"]`` (both directions for an undirected graph) and a self loop
    gives ``W[u, u]``; a node without a self loop has ``W[u, u] = 0``. Given weights must make W
    row-stochastic (receiver weights) or column-stochastic (sender weights, push-sum).
    A graph that is not (strongly) connected raises. (``weights=`` is the deprecated old name
    of ``rule=``.)
    """
    return _convert(graph, rule, eps, default_name="networkx")


def _convert(graph, rule, eps, *, default_name: str) -> Topology:
    _check_graph(graph)
    if rule != "given" and rule not in RULES:
        raise TopologyError(
            f"Unknown weight rule {rule!r}; choose 'given' (edge attribute 'weight') or one of "
            f"{', '.join(map(repr, RULES))}."
        )
    labels = _sorted_nodes(graph)
    n = len(labels)
    if n == 0:
        raise TopologyError("The graph has no nodes; a topology needs at least one.")
    index = {v: k for k, v in enumerate(labels)}
    name = graph.graph.get("name") or default_name
    directed = graph.is_directed()
    if rule != "given":
        edges = np.asarray([(index[u], index[v]) for u, v in graph.edges()], dtype=np.int64)
        return apply_weights(
            n, edges.reshape(-1, 2), rule, eps=eps, directed=directed, name=name,
        )
    if eps is not None:
        raise TopologyError("eps is the step of rule='laplacian'; rule='given' takes none.")
    rows, cols, vals = [], [], []
    for u, v, data in graph.edges(data=True):
        if "weight" not in data:
            raise TopologyError(
                f"Edge ({u!r}, {v!r}) has no 'weight' attribute, which rule='given' reads. "
                "Set it on every edge (and on self loops), or choose a weight rule such as "
                "rule='metropolis'."
            )
        i, j, w = index[u], index[v], float(data["weight"])
        rows.append(j)
        cols.append(i)
        vals.append(w)
        if not directed and i != j:
            rows.append(i)
            cols.append(j)
            vals.append(w)
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    vals = np.asarray(vals, dtype=np.float64)
    check = _stochastic_kind(n, rows, cols, vals, name)
    topo = _build(n, rows, cols, vals, name=name, params={"rule": "given"}, stochastic=check)
    topo._check(stochastic=None, allow_disconnected=False)
    return topo


def to_networkx(topology: Topology):
    """``nx.DiGraph`` over nodes 0..n-1: edge ``j -> i`` (j sends to i) with ``weight = W[i, j]``,
    and a self loop ``i -> i`` with ``weight = W[i, i]`` where it is nonzero."""
    import networkx as nx

    topology = _check_topology(topology)
    G = nx.DiGraph(name=topology.name)
    G.add_nodes_from(range(topology.n))
    G.add_weighted_edges_from(
        zip(topology.indices.tolist(), topology.rows.tolist(), topology.data.tolist())
    )
    return G


def to_bluefog(topology: Topology):
    """A DiGraph for ``bluefog.torch.set_topology(G, is_weighted=True)``.

    It is the graph of :func:`to_networkx` (edge sender -> receiver, self loops for self
    weights), which BlueFog reads **row = sender**: ``nx.to_numpy_array(G)`` is ``W.T``,
    and BlueFog's ``GetRecvWeights(G, i)`` returns ``(W[i, i], {j: W[i, j]})``.
    """
    return to_networkx(topology)


def from_bluefog(graph, *, is_weighted: bool = True) -> Topology:
    """Topology of a BlueFog graph (``topology_util.ExponentialTwoGraph(8)``, ...).

    BlueFog's matrix ``M = nx.to_numpy_array(graph)`` has row = sender, so ``W = M.T``. Nodes
    must be the ranks 0..n-1. ``is_weighted=True`` reads the edge weights (as BlueFog does with
    ``set_topology(G, is_weighted=True)``); ``is_weighted=False`` uses BlueFog's unweighted
    combine, ``1/(in-degree + 1)`` on self and each in-neighbor (row-stochastic only).
    """
    _check_graph(graph)
    if not isinstance(is_weighted, (bool, np.bool_)):
        raise TopologyError(f"is_weighted must be True or False, got {is_weighted!r}.")
    nodes = set(graph.nodes)
    if nodes != set(range(len(nodes))):
        raise TopologyError(
            "A BlueFog graph's nodes must be the ranks 0..n-1; relabel it with "
            "nx.convert_node_labels_to_integers(G), or use from_networkx for other labels."
        )
    return _convert(graph, "given" if is_weighted else "uniform", None, default_name="bluefog")


# ---------------------------------------------------------------------- helpers
def _sorted_nodes(graph) -> list:
    """Node labels in sorted order (insertion order if the labels cannot be compared)."""
    try:
        return sorted(graph.nodes)
    except TypeError:
        return list(graph.nodes)


def _check_graph(graph) -> None:
    if isinstance(graph, Topology) or getattr(graph, "is_dynamic", False):
        raise TopologyError("This is already a declearn topology; no conversion is needed.")
    if not (hasattr(graph, "is_directed") and hasattr(graph, "edges")):
        raise TopologyError(f"Expected a networkx graph, got {type(graph).__name__}.")
    if graph.is_multigraph():
        raise TopologyError(
            "Multigraphs are not supported (parallel edges have no single weight); convert "
            "with nx.Graph(G) or nx.DiGraph(G) first."
        )


def _check_topology(topology) -> Topology:
    if getattr(topology, "is_dynamic", False):
        raise TopologyError(
            f"{topology.name} is a DynamicTopology: it has one graph per iteration. Convert "
            "one step, e.g. to_networkx(topo.at(k))."
        )
    if not isinstance(topology, Topology):
        raise TopologyError(f"Expected a declearn Topology, got {type(topology).__name__}.")
    return topology


def _stochastic_kind(n, rows, cols, vals, name) -> str:
    """'row' if the given W is row-stochastic, else 'column' if column-stochastic."""
    row_sums = np.bincount(rows, weights=vals, minlength=n)
    col_sums = np.bincount(cols, weights=vals, minlength=n)
    if np.allclose(row_sums, 1.0, rtol=0.0, atol=STOCHASTIC_ATOL):
        return "row"
    if np.allclose(col_sums, 1.0, rtol=0.0, atol=STOCHASTIC_ATOL):
        return "column"
    i = int(np.argmax(np.abs(row_sums - 1.0)))
    raise TopologyError(
        f"The 'weight' attributes of {name} make neither the rows nor the columns of W sum to "
        f"1 (row {i}, i.e. what node {i} receives, sums to {row_sums[i]:.6g}). Normalise them; "
        "self loops carry the self weights (a node without one has W[i, i] = 0)."
    )
