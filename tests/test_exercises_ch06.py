"""declearn.exercises.ch06: the right answers pass, typical wrong answers fail with a hint (and
never the answer), ``None`` says "not yet"; and the values the check computes on its own agree
with what declearn's topologies and relays do."""

from __future__ import annotations

import networkx as nx
import pytest
import torch

from declearn.algorithms import RelaySum, lr_correction
from declearn.comm import SimComm
from declearn.exercises import Verdict, ch06
from declearn.topology import binary_tree, chain, spanning_tree

JUNK = ["three", [1, 2], {"a": 1}, float("nan"), True, -1]


def _not_yet(verdict) -> bool:
    return isinstance(verdict, Verdict) and not verdict and "replace `answer = None`" in \
        verdict.message


# ---------------------------------------------------------------------- chapter 06
def test_ch06_right_answers_pass():
    assert ch06.check_delay(3)
    assert ch06.check_delay(3.0)
    assert ch06.check_correction(19 / 9)
    assert ch06.check_correction(2.111)
    assert ch06.check_best_root(6)


@pytest.mark.parametrize("check", [ch06.check_delay, ch06.check_correction,
                                   ch06.check_best_root])
def test_ch06_none_is_not_yet_and_junk_is_refused(check):
    assert _not_yet(check(None))
    for junk in JUNK:
        verdict = check(junk)
        assert isinstance(verdict, Verdict) and not verdict


@pytest.mark.parametrize("answer, hint", [
    (4, "number of hops"),            # the distance, not the delay
    (6, "diameter"),                  # the worst case over all pairs
    (5, "diameter"),
    (0, "Follow the path"),
])
def test_ch06_delay_wrong_answers_get_hints(answer, hint):
    verdict = ch06.check_delay(answer)
    assert not verdict and hint in verdict.message


@pytest.mark.parametrize("answer, hint", [
    (1 + 70 / 36, "distances d"),     # summed d instead of d - 1
    (2.5, "rule of thumb"),           # diameter / 2
    (9 / 19, "1 / c"),                # the inverse
    (3.0, "List the delays"),
])
def test_ch06_correction_wrong_answers_get_hints_not_the_answer(answer, hint):
    verdict = ch06.check_correction(answer)
    assert not verdict and hint in verdict.message
    assert "2.11" not in verdict.message and "19/9" not in verdict.message


@pytest.mark.parametrize("answer, hint", [
    (4, "diameter of the graph"), (7, "largest"), (3, "graph's own diameter"),
    (5, "insertion order"), (9, "Build"),
])
def test_ch06_best_root_wrong_answers_get_hints(answer, hint):
    verdict = ch06.check_best_root(answer)
    assert not verdict and hint in verdict.message


def test_ch06_delay_is_what_the_relay_does():
    """Node 15's pulse at exchange 0 reaches node 0's sum at exchange relay_delay(), not
    before, on declearn's binary_tree(16)."""
    n, src, dst = ch06.DELAY_N, ch06.DELAY_SOURCE, ch06.DELAY_TARGET
    assert {tuple(sorted(e)) for e in ch06.heap_tree(n).edges()} == set(binary_tree(n).tree_edges)
    relay = RelaySum(SimComm(n), binary_tree(n))
    first = None
    for t in range(binary_tree(n).diameter + 1):
        pulse = torch.zeros(n, 1, dtype=torch.float64)
        if t == 0:
            pulse[src] = 1.0
        seen = float(relay.mix(pulse)[dst]) * n
        if seen > 0.5 and first is None:
            first = t
    assert first == ch06.relay_delay() == 3


@pytest.mark.parametrize("n", [2, 5, 6, 16, 33])
def test_ch06_correction_matches_lr_correction(n):
    assert ch06.chain_correction(n) == pytest.approx(lr_correction(chain(n)), rel=1e-12)


def test_ch06_bfs_diameters_match_spanning_tree():
    g = nx.davis_southern_women_graph()
    expected = {r: spanning_tree(g, root=r).diameter for r in g}
    assert ch06.bfs_tree_diameters(g) == expected
    assert min(expected.values()) == 6
    small = nx.connected_watts_strogatz_graph(20, 4, 0.3, seed=3)
    assert ch06.bfs_tree_diameters(small) == {r: spanning_tree(small, root=r).diameter
                                              for r in small}
