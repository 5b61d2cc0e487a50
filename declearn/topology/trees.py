r"""Spanning trees, for RelaySum/RelaySGD (messages relayed along the unique tree paths).

A tree is an undirected graph with n - 1 links and one path between any two nodes. Each tree
here is a :class:`TreeTopology`: a :class:`Topology` (Metropolis weights by default, so it can
also be used for gossip) that also exposes its tree:

- ``root`` and ``parent`` (``parent[root] = -1``), ``depth`` (hops from the root),
- ``tree_edges``: the n - 1 links as sorted pairs ``(u, v)`` with ``u < v``,
- ``children(i)``, ``tree_neighbors(i)``, ``height`` and ``diameter`` (the longest path in hops,
  i.e. the largest delay of a relayed message).

Families: :func:`chain`, :func:`binary_tree` (RelaySGD's heap layout), :func:`double_binary_trees`
(a :class:`TreePair`) and :func:`spanning_tree` (BFS tree of any connected graph).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from declearn.errors import TopologyError
from declearn.topology.base import Topology, check_n
from declearn.topology.registry import family
from declearn.topology.weights import RULES, apply_weights, old_rule_keyword

__all__ = [
    "TreeTopology", "TreePair", "chain", "binary_tree", "double_binary_trees", "spanning_tree",
]


class TreeTopology(Topology):
    """A :class:`Topology` whose graph is a spanning tree, with the tree's structure attached."""

    root: int
    parent: np.ndarray
    depth: np.ndarray

    @classmethod
    @old_rule_keyword
    def from_parents(
        cls, parent, *, rule: str = "metropolis", name: str = "tree", params: dict | None = None
    ) -> TreeTopology:
        """Tree with ``parent[i]`` the parent of node i and ``-1`` at the (single) root, with
        the weight rule ``rule`` (one of :data:`~declearn.topology.weights.RULES`)."""
        parent = np.array(parent, dtype=np.int64).ravel()
        n = check_n(parent.size)
        _check_rule(rule)
        roots = np.nonzero(parent < 0)[0]
        if roots.size != 1:
            raise TopologyError(f"A tree needs exactly one root (parent -1), found {roots.size}.")
        if np.any(parent >= n):
            raise TopologyError(f"Parents must be node indices in 0..{n - 1} (or -1 at the root).")
        child = np.nonzero(parent >= 0)[0]
        base = apply_weights(
            n, np.stack([child, parent[child]], axis=1), rule, name=name,
            params={**(params or {}), "rule": rule},
            hint="The parent array must describe a tree (no cycle).",
        )
        tree = cls(n, base.indptr, base.indices, base.data, name=base.name, params=base.params,
                   shifts=base.shifts)
        tree.root = int(roots[0])
        tree.parent = parent
        tree.parent.flags.writeable = False
        tree.depth = _hops_from(n, child, parent[child], tree.root)
        tree.depth.flags.writeable = False
        return tree

    @property
    def tree_edges(self) -> list[tuple[int, int]]:
        """The n - 1 tree links as pairs ``(u, v)``, ``u < v``, sorted."""
        child = np.nonzero(self.parent >= 0)[0]
        u, v = np.minimum(child, self.parent[child]), np.maximum(child, self.parent[child])
        order = np.lexsort((v, u))
        return [(int(a), int(b)) for a, b in zip(u[order], v[order])]

    def children(self, i: int) -> np.ndarray:
        """Children of node i, ascending."""
        return np.nonzero(self.parent == self._node(i))[0]

    def tree_neighbors(self, i: int) -> np.ndarray:
        """Parent and children of node i, ascending (the nodes i relays messages to)."""
        return self.in_neighbors(i)

    @property
    def height(self) -> int:
        """Largest number of hops from the root."""
        return int(self.depth.max())

    @property
    def diameter(self) -> int:
        """Longest path of the tree, in hops (two BFS sweeps)."""
        def longest() -> int:
            child = np.nonzero(self.parent >= 0)[0]
            far = int(np.argmax(self.depth))
            return int(_hops_from(self.n, child, self.parent[child], far).max())

        return self.memo("diameter", longest)


class TreePair(NamedTuple):
    """Two spanning trees that share the work of one vector (RelaySGD's double binary trees).

    A vector's last dimension is split into interleaved halves: ``x[..., 0::2]`` travels over
    ``first`` and ``x[..., 1::2]`` over ``second``, each half with its own relay state.
    :meth:`split` and :meth:`merge` do that for numpy arrays and torch tensors alike (leading
    dimensions, e.g. the simulator's node dimension, are kept). Unpacks as a tuple:
    ``t1, t2 = double_binary_trees(16)``.
    """

    first: TreeTopology
    second: TreeTopology

    @property
    def n(self) -> int:
        return self.first.n

    @staticmethod
    def split(x):
        """``(x[..., 0::2], x[..., 1::2])``: the halves sent over ``first`` and ``second``."""
        return x[..., 0::2], x[..., 1::2]

    @staticmethod
    def merge(a, b):
        """Inverse of :meth:`split`: interleave ``a`` (even positions) and ``b`` (odd)."""
        shape = tuple(a.shape[:-1]) + (a.shape[-1] + b.shape[-1],)
        out = a.new_empty(shape) if hasattr(a, "new_empty") else np.empty(shape, dtype=a.dtype)
        out[..., 0::2] = a
        out[..., 1::2] = b
        return out

    @old_rule_keyword
    def union(self, rule: str = "metropolis") -> Topology:
        """Topology of all links of both trees (e.g. to draw them or gossip over them), with
        the weight rule ``rule``."""
        edges = self.first.tree_edges + self.second.tree_edges
        return apply_weights(self.n, edges, rule, name="double_binary_trees",
                             params={"rule": rule})


@family("chain")
@old_rule_keyword
def chain(n: int, *, rule: str = "metropolis") -> TreeTopology:
    """Chain (path) 0 - 1 - ... - (n-1), rooted at 0: diameter n - 1."""
    n = check_n(n)
    parent = np.arange(-1, n - 1)
    return TreeTopology.from_parents(parent, rule=rule, name="chain")


@family("binary_tree")
@old_rule_keyword
def binary_tree(n: int, *, reverse: bool = False, rule: str = "metropolis") -> TreeTopology:
    """Binary tree in RelaySGD's heap layout: node w >= 2 has parent w // 2, node 0 is an extra
    leaf hanging from node 1 (the root). ``reverse=True`` relabels w -> n - 1 - w.

    Max degree 3 and diameter about ``2 log2 n``; for n = 16 the tree and its reverse share
    only the link (5, 10).
    """
    n = check_n(n)
    if not isinstance(reverse, (bool, np.bool_)):
        raise TopologyError(f"reverse must be True or False, got {reverse!r}.")
    heap_parent = np.arange(n) // 2
    heap_parent[0] = 1
    if n == 1:
        heap_parent[0] = -1
    else:
        heap_parent[1] = -1
    if reverse:
        mirror = n - 1 - np.arange(n)
        parent = np.empty(n, dtype=np.int64)
        parent[mirror] = np.where(heap_parent >= 0, n - 1 - heap_parent, -1)
    else:
        parent = heap_parent
    return TreeTopology.from_parents(parent, rule=rule, name="binary_tree",
                                     params={"reverse": bool(reverse)})


@old_rule_keyword
def double_binary_trees(n: int, *, rule: str = "metropolis") -> TreePair:
    """RelaySGD's double binary trees: ``TreePair(binary_tree(n), binary_tree(n, reverse=True))``.

    Mostly, a node that is internal in one tree is a leaf in the other, so splitting a vector
    in halves over the two trees (:meth:`TreePair.split`) balances the traffic per node.
    """
    return TreePair(
        binary_tree(n, rule=rule), binary_tree(n, reverse=True, rule=rule)
    )


@old_rule_keyword
def spanning_tree(graph, root=None, *, rule: str = "metropolis") -> TreeTopology:
    """Breadth-first spanning tree of a connected graph (a networkx graph or a Topology).

    Links are taken as two-way (a Topology's ``W[i, j] > 0`` or ``W[j, i] > 0``). Nodes of a
    networkx graph are numbered 0..n-1 in sorted order, as in
    :func:`declearn.topology.from_networkx`; ``root`` is a node *label* of the graph (an
    index for a Topology), by default the first one. Neighbors are visited in ascending
    order, so the tree is deterministic; ``depth[i]`` is the BFS distance from the root.
    """
    n, dst, src, labels = _undirected_links(graph)
    if root is None:
        root_index = 0
    else:
        try:
            root_index = labels.index(root)
        except ValueError:
            raise TopologyError(
                f"root {root!r} is not a node of the graph; pick one of its nodes."
            ) from None
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import breadth_first_order

    A = csr_matrix((np.ones(dst.size), (dst, src)), shape=(n, n))
    A.sort_indices()
    order, pred = breadth_first_order(A, root_index, directed=False, return_predecessors=True)
    if order.size != n:
        raise TopologyError(
            f"The graph is not connected: only {order.size} of its {n} nodes are reachable "
            f"from root {labels[root_index]!r}, so it has no spanning tree. Connect it first."
        )
    parent = np.where(pred < 0, -1, pred).astype(np.int64)
    source = getattr(graph, "name", "") or type(graph).__name__
    return TreeTopology.from_parents(
        parent, rule=rule, name="spanning_tree",
        params={"root": labels[root_index], "source": source},
    )


# ---------------------------------------------------------------------- helpers
def _check_rule(rule) -> None:
    if rule not in RULES:
        raise TopologyError(
            f"Unknown weight rule {rule!r}; choose one of {', '.join(map(repr, RULES))}."
        )


def _hops_from(n, child, par, start) -> np.ndarray:
    """Hop distance from ``start`` to every node of the tree with links ``child - par``."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import shortest_path

    A = csr_matrix((np.ones(child.size), (child, par)), shape=(n, n))
    d = shortest_path(A, directed=False, unweighted=True, indices=int(start))
    return d.astype(np.int64)


def _undirected_links(graph):
    """``(n, dst, src, labels)`` of the two-way links of a Topology or networkx graph."""
    if isinstance(graph, Topology):
        off = graph.rows != graph.indices
        dst, src = graph.rows[off], graph.indices[off]
        return graph.n, np.concatenate([dst, src]), np.concatenate([src, dst]), list(
            range(graph.n)
        )
    if getattr(graph, "is_dynamic", False):
        raise TopologyError(
            "A DynamicTopology has no single spanning tree; pass one step, topo.at(k)."
        )
    if not hasattr(graph, "nodes") or not hasattr(graph, "edges"):
        raise TopologyError(
            f"spanning_tree takes a networkx graph or a Topology, got {type(graph).__name__}."
        )
    from declearn.topology.convert import _sorted_nodes

    labels = _sorted_nodes(graph)
    if not labels:
        raise TopologyError("The graph has no nodes; a spanning tree needs at least one.")
    index = {v: k for k, v in enumerate(labels)}
    pairs = [(index[u], index[v]) for u, v in graph.edges() if u != v]
    e = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return len(labels), np.concatenate([e[:, 1], e[:, 0]]), np.concatenate([e[:, 0], e[:, 1]]), \
        labels
