r"""Checks for chapter 07, *RelaySGD*.

Each of 07.1 to 07.3 recomputes the right value here with networkx and numpy (not with
declearn.topology or declearn.algorithms, so a bug there cannot make a wrong answer look right)
and answers with a :class:`~declearn.exercises.Verdict`: a hint when the answer is wrong,
"not yet" when it is still ``None``. Every answer-computing helper is private.

* :func:`check_delay` (07.1): the exchange (counted from 0) at which a value that node
  :data:`DELAY_SOURCE` of ``binary_tree(DELAY_N)`` sends at exchange 0 first appears in node
  :data:`DELAY_TARGET`'s relayed sum, ``max(d - 1, 0)`` with d the hops between them (exact).
* :func:`check_correction` (07.2): the learning-rate correction factor
  ``c = 1 + (1/n^2) sum_{i,k} max(d(i, k) - 1, 0)`` of a chain of :data:`CORRECTION_N` nodes,
  an exact fraction; accepted when it agrees to 3 decimals (``|answer - c| <= 5e-4``).
* :func:`check_best_root` (07.3): the smallest diameter of a breadth-first spanning tree of the
  Davis Southern Women graph, over its 32 possible roots (exact).
* :func:`check_relay_step` (07.4, build it yourself): ``step(comm, tree, v, received)`` returns
  the messages received after one RelaySum exchange, written with ``neighbor_alltoall``; the
  check runs it next to :class:`~declearn.algorithms.RelaySumConsensus` on a binary tree (not a
  path) and names the first exchange where the estimates differ. It works under SimComm and,
  called on every rank, under MPIComm.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from declearn.exercises.base import Verdict, check_equal, check_true, is_number, not_yet
from declearn.exercises.build import compare_iterates, refuse_before_running, seeded_node_local

__all__ = [
    "CORRECTION_N",
    "DELAY_N",
    "DELAY_SOURCE",
    "DELAY_TARGET",
    "check_best_root",
    "check_correction",
    "check_delay",
    "check_relay_step",
]

EX1 = "07.1 relay delay"
EX2 = "07.2 correction factor"
EX3 = "07.3 best root"
EX4 = "07.4 build RelaySum"

#: Exercise 07.1: the binary tree's size, the sending node and the receiving node.
DELAY_N, DELAY_SOURCE, DELAY_TARGET = 16, 15, 0
#: Exercise 07.2: the chain's size.
CORRECTION_N = 6
#: Exercise 07.2: an answer is accepted when it agrees with c to 3 decimals.
_CORRECTION_ATOL = 5e-4


def _whole_number(answer) -> bool:
    return is_number(answer) and answer == int(answer)


# ---------------------------------------------------------------------- 07.1
def _heap_tree(n: int):
    """RelaySGD's binary tree as a networkx graph: node w >= 2 hangs from w // 2, node 0 from
    node 1 (the root)."""
    import networkx as nx

    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from((w, w // 2) for w in range(2, n))
    if n > 1:
        g.add_edge(0, 1)
    return g


def _hops(n: int = DELAY_N, source: int = DELAY_SOURCE, target: int = DELAY_TARGET) -> int:
    import networkx as nx

    return nx.shortest_path_length(_heap_tree(n), source, target)


def _relay_delay(n: int = DELAY_N, source: int = DELAY_SOURCE,
                 target: int = DELAY_TARGET) -> int:
    """Exchange (from 0) at which ``source``'s value of exchange 0 reaches ``target``'s sum:
    ``max(d - 1, 0)`` with d the hops between them (neighbours see each other at once)."""
    return max(_hops(n, source, target) - 1, 0)


def check_delay(answer) -> Verdict:
    """Exercise 07.1: in ``binary_tree(16)`` node 15 relays a value at exchange 0; at which
    exchange (counted 0, 1, 2, ...) does it first appear in node 0's sum ``S_0``? Exact."""
    if answer is None:
        return not_yet(EX1, "an exchange number (0 means: in the same exchange)")
    if not _whole_number(answer) or answer < 0:
        return Verdict(False, EX1, "give a whole number >= 0: the exchange index.")
    import networkx as nx

    expected, hops = _relay_delay(), _hops()
    diameter = nx.diameter(_heap_tree(DELAY_N))
    hint = ("Follow the path from node 15 up the tree (parent of w is w // 2, node 0 hangs "
            "from node 1) and count its hops d; the value needs d - 1 exchanges after the first.")
    if answer == hops:
        hint = ("That is the number of hops. A neighbour hears a value in the very exchange it "
                "is sent (delay 0), so a node d hops away hears it d - 1 exchanges later.")
    elif answer == hops + 1:
        hint = ("Exchanges are counted from 0: the one in which node 15 sends is exchange 0, "
                "and its neighbour already hears the value there.")
    elif answer in (diameter, diameter - 1):
        hint = ("That is about the tree's diameter, the worst case over all pairs; this pair "
                "is closer. Count the hops from 15 to 0.")
    return check_equal(EX1, int(answer), expected, hint=hint)


# ---------------------------------------------------------------------- 07.2
def _chain_distances(n: int) -> np.ndarray:
    idx = np.arange(n)
    return np.abs(idx[:, None] - idx[None, :])


def _chain_correction(n: int = CORRECTION_N) -> float:
    """``1 + (1/n^2) sum_{i,k} max(|i - k| - 1, 0)`` on the chain 0 - 1 - ... - (n-1)."""
    return 1.0 + float(np.maximum(_chain_distances(n) - 1, 0).sum()) / n ** 2


def _correction_hint(answer: float) -> str:
    """A hint naming the slip behind a plausible wrong answer (each recomputed here)."""
    n = CORRECTION_N
    d = _chain_distances(n)
    delays = float(np.maximum(d - 1, 0).sum())
    slips = [
        (1.0 + float(d.sum()) / n ** 2,
         "You summed the distances d; the delay is d - 1 (neighbours have delay 0)."),
        (1.0 + float((d - 1).sum()) / n ** 2,
         "The pairs i = k have delay 0, not -1: take max(d - 1, 0)."),
        ((n - 1) / 2,
         ("That is the authors' rule of thumb (the largest delay over 2); the exercise asks "
          "for the exact value from the formula.")),
        (delays / n ** 2,
         "That is the mean delay; the factor is 1 plus it."),
        (1.0 + delays / (n * (n - 1)),
         ("The mean runs over all n^2 ordered pairs, i = k included: divide by n^2, not "
          "n (n - 1).")),
        (1.0 + delays / 2 / n ** 2,
         "Count ordered pairs: (i, k) and (k, i) are both in the sum."),
        (1.0 / _chain_correction(n),
         ("Delayed averaging damps a step, so the factor that compensates it is > 1: that is "
          "1 / c.")),
    ]
    for value, hint in slips:
        if math.isclose(answer, value, rel_tol=0.0, abs_tol=_CORRECTION_ATOL):
            return hint
    if answer < 1:
        return ("Delayed averaging damps a step, so the factor that compensates it is > 1; "
                "did you compute 1 / c instead of c?")
    return ("List the delays max(d - 1, 0) of all n x n ordered pairs (i, k), i = k included, "
            "add them up, divide by n^2 and add 1.")


def check_correction(answer) -> Verdict:
    """Exercise 07.2: the exact learning-rate correction factor of RelaySGD on a chain of 6
    nodes; right when it agrees to 3 decimals (``|answer - c| <= 5e-4``)."""
    if answer is None:
        return not_yet(EX2, "a number, the factor c")
    if not is_number(answer):
        return Verdict(False, EX2, "give one number, the factor c (about 1 to 3 here).")
    expected = _chain_correction()
    if abs(answer - expected) <= _CORRECTION_ATOL:
        return check_true(EX2, True, wrong="", right=(
            "c is one plus the mean delay over all ordered pairs."))
    return Verdict(False, EX2, f"{answer:g} is not it (an answer must agree with c to 3 "
                               f"decimals). {_correction_hint(answer)}")


# ---------------------------------------------------------------------- 07.3
def _bfs_tree_diameters(graph=None) -> dict:
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
    """Exercise 07.3: the smallest diameter (hops) of ``spanning_tree(G, root=r)`` over the 32
    roots r of the Davis Southern Women graph ``G``. Exact."""
    if answer is None:
        return not_yet(EX3, "a number of hops")
    if not _whole_number(answer) or answer < 1:
        return Verdict(False, EX3, "give a whole number of hops >= 1.")
    import networkx as nx

    diameters = _bfs_tree_diameters()
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


# ---------------------------------------------------------------------- 07.4
#: Exercise 07.4: exchanges compared, the values' width and the seed of the starting values.
_BUILD_STEPS = 12
_BUILD_WIDTH = 3
_BUILD_SEED = 16


def _received_of(result, shape: tuple) -> torch.Tensor:
    """The new ``received`` a step returned, or an error that says what is expected."""
    if not isinstance(result, torch.Tensor):
        got = "None" if result is None else f"a {type(result).__name__}"
        raise TypeError(f"relay_step returns the new received messages (one torch tensor), "
                        f"got {got}")
    if tuple(result.shape) != shape:
        raise ValueError(f"relay_step returns the new received messages, shape {shape} here "
                         f"(one slot per tree neighbour on dim -2), got {tuple(result.shape)}")
    return result


def check_relay_step(step, comm) -> Verdict:
    """``step(comm, tree, v, received)``, one RelaySum exchange, gives the same estimates
    ``S / C`` as ``RelaySumConsensus`` for :data:`_BUILD_STEPS` exchanges on
    ``binary_tree(comm.size)`` (n >= 4: not a path), from seeded values of shape ``(3,)``.

    The check hands the step ``v = [x0, 1]`` (the node's values and a count of 1, shape
    ``(4,)`` per node) and ``received`` of shape ``(tree.degree, 4)`` per node, slot s holding
    the last message from the s-th tree neighbour (ascending; zeros at first and past the
    node's degree). The step sends to its s-th neighbour ``v`` plus every slot of
    ``received`` but the s-th, and returns what arrives (``neighbor_alltoall``). After it,
    ``total = v + received.sum(-2)`` holds ``[S, C]``. Call the check with a ``SimComm`` or,
    on every engine, with the engines' ``MPIComm``."""
    from declearn.algorithms import RelaySumConsensus
    from declearn.topology import binary_tree

    refused = refuse_before_running(
        EX4, step, comm, signature="relay_step(comm, tree, v, received)",
        returns="the new received", min_nodes=4, why=", where a binary tree is not a path",
        forbidden={"RelaySum", "RelaySumConsensus", "RelaySGD", "RelaySGDGrad"})
    if refused is not None:
        return refused
    tree = binary_tree(comm.size)
    x0 = seeded_node_local(comm, _BUILD_WIDTH, _BUILD_SEED)
    v = torch.cat([x0, torch.ones_like(x0[..., :1])], dim=-1)
    empty = torch.zeros(v.shape[:-1] + (tree.degree, v.shape[-1]), dtype=v.dtype,
                        device=v.device)
    reference = RelaySumConsensus(comm, tree, x0)

    def estimates():
        received = empty.clone()
        while True:
            received = _received_of(step(comm, tree, v.clone(), received), tuple(empty.shape))
            total = v + received.sum(-2)
            yield total[..., :-1] / total[..., -1:]

    return compare_iterates(
        EX4, comm, estimates(), reference, steps=_BUILD_STEPS,
        what="RelaySumConsensus's S / C",
        hint="To each tree neighbour send your own v plus what the *other* neighbours sent "
             "you last time (never echo back a neighbour's own message), one slot per "
             "neighbour on dim -2, and return what neighbor_alltoall delivers.")
