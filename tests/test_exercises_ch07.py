"""declearn.exercises.ch07: the right answers pass, plausible wrong answers (each recomputed
here with numpy or networkx) fail with a hint that never contains the answer, ``None`` says
"not yet"; and the values the check computes on its own agree with what declearn's topologies
and relays do. Exercise 07.4 (RelaySum built from neighbor_alltoall) is tested by
tests/test_exercises_build.py with tests/build_steps_ch07.py."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch

from declearn.algorithms import RelaySum, RelaySumConsensus, lr_correction
from declearn.comm import SimComm
from declearn.exercises import Verdict, ch07
from declearn.topology import binary_tree, chain, spanning_tree

JUNK = ["three", [1, 2], {"a": 1}, float("nan"), True, -1]


def _not_yet(verdict) -> bool:
    return isinstance(verdict, Verdict) and not verdict and "replace `answer = None`" in \
        verdict.message


def test_public_names_are_checks_and_data():
    assert set(ch07.__all__) == {"CORRECTION_N", "DELAY_N", "DELAY_SOURCE", "DELAY_TARGET",
                                 "check_best_root", "check_correction", "check_delay",
                                 "check_relay_step"}
    for name in ("relay_delay", "chain_correction", "bfs_tree_diameters", "heap_tree"):
        assert not hasattr(ch07, name), f"ch07.{name} computes an answer: make it private"


# ---------------------------------------------------------------------- chapter 07
def test_ch07_right_answers_pass():
    assert ch07.check_delay(3)
    assert ch07.check_delay(3.0)
    assert ch07.check_correction(19 / 9)
    assert ch07.check_correction(2.111)
    assert ch07.check_correction(2.1111)
    assert ch07.check_best_root(6)


@pytest.mark.parametrize("check", [ch07.check_delay, ch07.check_correction,
                                   ch07.check_best_root])
def test_ch07_none_is_not_yet_and_junk_is_refused(check):
    assert _not_yet(check(None))
    for junk in JUNK:
        verdict = check(junk)
        assert isinstance(verdict, Verdict) and not verdict


@pytest.mark.parametrize("answer, hint", [
    (4, "number of hops"),            # the distance, not the delay
    (6, "diameter"),                  # the worst case over all pairs
    (5, "Exchanges are counted from 0"),  # hops + 1: counted from 1
    (0, "Follow the path"),
])
def test_ch07_delay_wrong_answers_get_hints(answer, hint):
    verdict = ch07.check_delay(answer)
    assert not verdict and hint in verdict.message


# The path 15 - 7 - 3 - 1 - 0 of the heap layout, recomputed with networkx.
_HEAP16 = nx.Graph([(w, w // 2) for w in range(2, 16)] + [(0, 1)])
_HOPS = nx.shortest_path_length(_HEAP16, 15, 0)


@pytest.mark.parametrize("label, answer", [
    ("the hops d", _HOPS),
    ("d + 1 (counted from 1)", _HOPS + 1),
    ("d - 2", _HOPS - 2),
    ("the tree's diameter", nx.diameter(_HEAP16)),
    ("the diameter minus 1", nx.diameter(_HEAP16) - 1),
    ("log2 n", int(np.log2(16))),
    ("at once", 0),
])
def test_ch07_delay_refuses(label, answer):
    assert answer != max(_HOPS - 1, 0), f"{label} is not a wrong answer"
    verdict = ch07.check_delay(answer)
    assert not verdict, label
    assert "3 exchanges" not in verdict.message


@pytest.mark.parametrize("answer, hint", [
    (1 + 70 / 36, "distances d"),     # summed d instead of d - 1
    (2.5, "rule of thumb"),           # diameter / 2
    (9 / 19, "1 / c"),                # the inverse
    (3.0, "List the delays"),
])
def test_ch07_correction_wrong_answers_get_hints_not_the_answer(answer, hint):
    verdict = ch07.check_correction(answer)
    assert not verdict and hint in verdict.message
    assert "2.11" not in verdict.message and "19/9" not in verdict.message


def _chain_slips(n: int = 6) -> dict:
    i = np.arange(n)
    d = np.abs(i[:, None] - i[None, :])
    delays = np.maximum(d - 1, 0).sum()
    c = 1 + delays / n ** 2
    return {
        "summed distances": (1 + d.sum() / n ** 2, "distances d"),
        "no max(., 0) on the diagonal": (1 + (d - 1).sum() / n ** 2, "not -1"),
        "the mean delay without the 1": (delays / n ** 2, "1 plus it"),
        "divided by n (n - 1)": (1 + delays / (n * (n - 1)), "n (n - 1)"),
        "unordered pairs": (1 + delays / 2 / n ** 2, "ordered pairs"),
        "the inverse": (1 / c, "1 / c"),
        "rule of thumb": ((n - 1) / 2, "rule of thumb"),
        "the chain of 5": (1 + np.maximum(d[:5, :5] - 1, 0).sum() / 25, "List the delays"),
        "rounded to 2 decimals": (round(c, 2), "3 decimals"),
        "divided by n": (1 + delays / n, "List the delays"),
    }


@pytest.mark.parametrize("label", list(_chain_slips()))
def test_ch07_correction_refuses_each_slip(label):
    value, hint = _chain_slips()[label]
    assert abs(value - 19 / 9) > 1e-3, f"{label} is not a wrong answer"
    verdict = ch07.check_correction(float(value))
    assert not verdict and hint in verdict.message, (label, verdict)
    assert "2.11" not in verdict.message.split("is not it")[-1]


@pytest.mark.parametrize("answer, hint", [
    (4, "diameter of the graph"), (7, "largest"), (3, "graph's own diameter"),
    (5, "insertion order"), (9, "Build"),
])
def test_ch07_best_root_wrong_answers_get_hints(answer, hint):
    verdict = ch07.check_best_root(answer)
    assert not verdict and hint in verdict.message


def test_ch07_best_root_refuses_the_networkx_insertion_order_minimum():
    """networkx's bfs_tree with its own neighbour order gives trees of diameter 5 from some
    roots: a plausible answer from the wrong tree builder, refused."""
    g = nx.davis_southern_women_graph()
    insertion = min(nx.diameter(nx.bfs_tree(g, r).to_undirected()) for r in g)
    assert insertion != 6
    assert not ch07.check_best_root(insertion)
    assert not ch07.check_best_root(6.5)


def test_ch07_delay_is_what_the_relay_does():
    """Node 15's pulse at exchange 0 reaches node 0's sum at exchange relay_delay(), not
    before, on declearn's binary_tree(16)."""
    n, src, dst = ch07.DELAY_N, ch07.DELAY_SOURCE, ch07.DELAY_TARGET
    assert {tuple(sorted(e)) for e in ch07._heap_tree(n).edges()} == \
        set(binary_tree(n).tree_edges)
    relay = RelaySum(SimComm(n), binary_tree(n))
    first = None
    for t in range(binary_tree(n).diameter + 1):
        pulse = torch.zeros(n, 1, dtype=torch.float64)
        if t == 0:
            pulse[src] = 1.0
        seen = float(relay.mix(pulse)[dst]) * n
        if seen > 0.5 and first is None:
            first = t
    assert first == ch07._relay_delay() == 3


@pytest.mark.parametrize("n", [2, 5, 6, 16, 33])
def test_ch07_correction_matches_lr_correction(n):
    assert ch07._chain_correction(n) == pytest.approx(lr_correction(chain(n)), rel=1e-12)


def test_ch07_bfs_diameters_match_spanning_tree():
    g = nx.davis_southern_women_graph()
    expected = {r: spanning_tree(g, root=r).diameter for r in g}
    assert ch07._bfs_tree_diameters(g) == expected
    assert min(expected.values()) == 6
    small = nx.connected_watts_strogatz_graph(20, 4, 0.3, seed=3)
    assert ch07._bfs_tree_diameters(small) == {r: spanning_tree(small, root=r).diameter
                                               for r in small}


# ---------------------------------------------------------------------- 07.4 (entry checks)
def _right_relay_step(comm, tree, v, received):
    total = v + received.sum(-2)
    return comm.neighbor_alltoall(total.unsqueeze(-2) - received, tree)


def test_ch07_relay_step_not_yet_small_networks_and_the_library_class():
    assert not ch07.check_relay_step(None, SimComm(4))
    assert "function" in ch07.check_relay_step(42, SimComm(4)).message
    assert "4 or more" in ch07.check_relay_step(_right_relay_step, SimComm(3)).message
    for n in (4, 5, 16):
        assert ch07.check_relay_step(_right_relay_step, SimComm(n)), n

    def uses_the_class(comm, tree, v, received):
        RelaySumConsensus(comm, tree, v)
        return _right_relay_step(comm, tree, v, received)

    assert "RelaySumConsensus" in ch07.check_relay_step(uses_the_class, SimComm(4)).message


@pytest.mark.parametrize("n", [4, 7, 16])
def test_ch07_relay_step_tree_is_not_a_path(n):
    """The check's tree has a node with 3 neighbours, so relaying 'everything but the
    neighbour's own message' differs from relaying 'everything'."""
    degrees = np.bincount(np.ravel(binary_tree(n).tree_edges), minlength=n)
    assert degrees.max() == 3
