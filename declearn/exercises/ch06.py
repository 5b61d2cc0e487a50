r"""Checks for chapter 06, *RelaySGD*.

Each check recomputes the right value here with networkx and numpy (not with
declearn.topology or declearn.algorithms, so a bug there cannot make a wrong answer look right)
and answers with a :class:`~declearn.exercises.Verdict`: a hint when the answer is wrong,
"not yet" when it is still ``None``.

* :func:`check_delay` (6.1): the exchange (counted from 0) at which a value that node 15 of
  ``binary_tree(16)`` sends at exchange 0 first appears in node 0's relayed sum.
* :func:`check_correction` (6.2): the learning-rate correction factor
  ``1 + (1/n^2) sum_{i,k} max(d(i, k) - 1, 0)`` of a chain of 6 nodes.
* :func:`check_best_root` (6.3): the smallest diameter of a breadth-first spanning tree of the
  Davis Southern Women graph, over its 32 possible roots.
"""

from __future__ import annotations

import math

import numpy as np

from declearn.exercises.base import (
    Verdict,
    check_close,
    check_equal,
    check_true,
    is_number,
    not_yet,
)

__all__ = [
    "CORRECTION_N",
    "DELAY_N",
    "DELAY_SOURCE",
    "DELAY_TARGET",
    "bfs_tree_diameters",
    "chain_correction",
    "check_best_root",
    "check_correction",
    "check_delay",
    "heap_tree",
    "relay_delay",
]

EX1 = "6.1 relay delay"
EX2 = "6.2 correction factor"
EX3 = "6.3 best root"

#: Exercise 6.1: the binary tree's size, the sending node and the receiving node.
DELAY_N, DELAY_SOURCE, DELAY_TARGET = 16, 15, 0
#: Exercise 6.2: the chain's size.
CORRECTION_N = 6


# ---------------------------------------------------------------------- 6.1
def heap_tree(n: int):
    """RelaySGD's binary tree as a networkx graph: node w >= 2 hangs from w // 2, node 0 from
    node 1 (the root)."""
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from((w, w // 2) for w in range(2, n))
    if n > 1:
        g.add_edge(0, 1)
    return g


def relay_delay(n: int = DELAY_N, source: int = DELAY_SOURCE, target: int = DELAY_TARGET) -> int:
    """Exchange (from 0) at which ``source``'s value of exchange 0 reaches ``target``'s sum:
    ``max(d - 1, 0)`` with d the hops between them (neighbours see each other at once)."""
    import networkx as nx

    hops = nx.shortest_path_length(heap_tree(n), source, target)
    return max(hops - 1, 0)


def check_delay(answer) -> Verdict:
    """Exercise 6.1: in ``binary_tree(16)`` node 15 relays a value at exchange 0; at which
    exchange (counted 0, 1, 2, ...) does it first appear in node 0's sum ``S_0``?"""
    if answer is None:
        return not_yet(EX1, "an exchange number (0 means: in the same exchange)")
    if not is_number(answer) or answer != int(answer) or answer < 0:
        return Verdict(False, EX1, "give a whole number >= 0: the exchange index.")
    import networkx as nx

    expected = relay_delay()
    hops = nx.shortest_path_length(heap_tree(DELAY_N), DELAY_SOURCE, DELAY_TARGET)
    diameter = nx.diameter(heap_tree(DELAY_N))
    hint = ("Follow the path from node 15 up the tree (parent of w is w // 2, node 0 hangs "
            "from node 1) and count its hops d; the value needs d - 1 exchanges after the first.")
    if answer == hops:
        hint = ("That is the number of hops. A neighbour hears a value in the very exchange it "
                "is sent (delay 0), so a node d hops away hears it d - 1 exchanges later.")
    elif answer == diameter or answer == diameter - 1:
        hint = ("That is about the tree's diameter, the worst case over all pairs; this pair "
                "is closer. Count the hops from 15 to 0.")
    return check_equal(EX1, int(answer), expected, hint=hint)


# ---------------------------------------------------------------------- 6.2
def chain_correction(n: int = CORRECTION_N) -> float:
    """``1 + (1/n^2) sum_{i,k} max(|i - k| - 1, 0)`` on the chain 0 - 1 - ... - (n-1)."""
    idx = np.arange(n)
    delays = np.maximum(np.abs(idx[:, None] - idx[None, :]) - 1, 0)
    return 1.0 + float(delays.sum()) / n ** 2


def check_correction(answer) -> Verdict:
    """Exercise 6.2: the exact learning-rate correction factor of RelaySGD on a chain of 6
    nodes (within 0.1 %)."""
    if answer is None:
        return not_yet(EX2, "a number, the factor c")
    if not is_number(answer):
        return Verdict(False, EX2, "give one number, the factor c (about 1 to 3 here).")
    n = CORRECTION_N
    expected = chain_correction(n)
    idx = np.arange(n)
    with_distance = 1.0 + float(np.abs(idx[:, None] - idx[None, :]).sum()) / n ** 2
    rough = (n - 1) / 2  # the authors' rule of thumb: the chain's largest delay (n - 1) over 2
    hint = ("List the delays max(d - 1, 0) of all n x n ordered pairs (i, k), i = k included, "
            "add them up, divide by n^2 and add 1.")
    if math.isclose(answer, with_distance, rel_tol=1e-3):
        hint = "You summed the distances d; the delay is d - 1 (neighbours have delay 0)."
    elif math.isclose(answer, rough, rel_tol=1e-3):
        hint = ("That is the authors' rule of thumb (the diameter over 2); the exercise asks "
                "for the exact value from the formula.")
    elif answer < 1:
        hint = ("Delayed averaging damps a step, so the factor that compensates it is > 1; "
                "did you compute 1 / c instead of c?")
    if math.isclose(answer, expected, rel_tol=1e-3):
        return check_close(EX2, answer, expected, rtol=1e-3)
    return check_true(EX2, False, right="", wrong=f"outside the 0.1 % tolerance. {hint}")


# ---------------------------------------------------------------------- 6.3
def bfs_tree_diameters(graph=None) -> dict:
    """``{root: diameter}`` of the breadth-first spanning tree from each root, neighbours
    visited in the sorted order of the node labels (the rule of declearn's ``spanning_tree``).
    Default graph: ``networkx.davis_southern_women_graph()``."""
    import networkx as nx

    g = nx.davis_southern_women_graph() if graph is None else graph
    try:
        labels = sorted(g.nodes)
    except TypeError:  # labels that cannot be compared keep their insertion order
        labels = list(g.nodes)
    order = {v: k for k, v in enumerate(labels)}
    by_label = lambda nodes: sorted(nodes, key=order.__getitem__)
    return {root: nx.diameter(nx.bfs_tree(g, root, sort_neighbors=by_label).to_undirected())
            for root in g.nodes}


def check_best_root(answer) -> Verdict:
    """Exercise 6.3: the smallest diameter (hops) of ``spanning_tree(G, root=r)`` over the 32
    roots r of the Davis Southern Women graph ``G``."""
    if answer is None:
        return not_yet(EX3, "a number of hops")
    if not is_number(answer) or answer != int(answer) or answer < 1:
        return Verdict(False, EX3, "give a whole number of hops >= 1.")
    import networkx as nx

    diameters = bfs_tree_diameters()
    expected, worst = min(diameters.values()), max(diameters.values())
    graph_diameter = nx.diameter(nx.davis_southern_women_graph())
    hint = ("Build spanning_tree(G, root=r) for every node r of G and take the smallest "
            ".diameter.")
    if answer == graph_diameter:
        hint = ("That is the diameter of the graph itself. A spanning tree drops 89 - 31 = 58 "
                "links, so some shortest paths get longer: measure the trees.")
    elif answer < graph_diameter:
        hint = "No tree can beat the graph's own diameter; measure the trees' diameters."
    elif answer == worst:
        hint = "That is the largest diameter over the roots; the exercise asks for the smallest."
    elif answer == expected - 1:
        hint = ("A BFS tree depends on the order in which neighbours are visited: networkx's "
                "bfs_tree takes them in insertion order, which gives other trees. The exercise "
                "asks about declearn's spanning_tree(G, root=r), which visits them in sorted "
                "order: measure those.")
    return check_equal(EX3, int(answer), expected, hint=hint)
