"""The exercise checks of chapter 08 (asynchrony and stragglers): right answers pass, typical
wrong answers fail with a hint that does not contain the answer, None is "not yet"; and the
values the checks compute themselves agree with independent computations (networkx shortest
paths, a Monte Carlo estimate, declearn's own gossip matrix and the simulator)."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
import torch

from declearn.algorithms import AsyncGossip, EagerSGD
from declearn.comm import SimComm
from declearn.exercises import Verdict, ch08
from declearn.problems import LeastSquares
from declearn.topology import ring


def _not_yet(v: Verdict) -> None:
    assert isinstance(v, Verdict) and not v.ok
    assert "not yet" in str(v) and "None" in v.message


# ---------------------------------------------------------------------- exercise 1
def test_ring_distance_matches_networkx():
    for n in (3, 4, 7, 8, 12):
        lengths = nx.single_source_shortest_path_length(nx.cycle_graph(n), 2)
        for r in range(n):
            assert ch08.ring_distance(n, 2, r) == lengths[r]


def test_first_slow_step_right_and_wrong():
    _not_yet(ch08.check_first_slow_step(None))
    assert ch08.check_first_slow_step(3)  # ring of 8, straggler 0, rank 5: 3 hops
    assert ch08.check_first_slow_step(3.0)
    assert ch08.check_first_slow_step(2, n=8, straggler=0, rank=6)
    assert ch08.check_first_slow_step(1, n=8, straggler=0, rank=0)  # it sleeps at step 1
    assert ch08.check_first_slow_step(1, n=4, straggler=3, rank=0)
    for wrong, clue in ((2, "count steps from 1"), (4, "One step too late"),
                        (5, "shorter way"), (1, "only the straggler's neighbors"),
                        (7, "one hop at a time")):
        v = ch08.check_first_slow_step(wrong)
        assert not v.ok and clue in v.message, (wrong, v)
        assert "3" not in v.message.split("is not it.")[1]
    for bad in ("3", 2.5, True):
        v = ch08.check_first_slow_step(bad)
        assert not v.ok and "whole step number" in v.message


# ---------------------------------------------------------------------- exercise 2
def test_expected_max_count_exact_values_and_monte_carlo():
    assert ch08.expected_max_count(1, 5) == 5
    assert ch08.expected_max_count(4, 1) == pytest.approx(1.0)
    assert ch08.expected_max_count(2, 2) == pytest.approx(1.5)  # (2,0),(0,2): 2; (1,1): 1
    assert ch08.expected_max_count(4, 8) == pytest.approx(3.5380859375)  # 4^8 outcomes, by hand
    rng = np.random.default_rng(0)
    for n, S in ((4, 8), (8, 8), (3, 5)):
        mc = rng.multinomial(S, [1 / n] * n, size=200_000).max(1).mean()
        assert ch08.expected_max_count(n, S) == pytest.approx(mc, rel=0.01)


def test_solo_speedup_model_matches_the_simulator():
    """The model S (c + d) / (S c + d E[max N]) against EagerSGD's simulated clock, long run."""
    n, S, c, d = 4, 8, 0.01, 0.2
    prob = LeastSquares(n, 5, seed=0)
    walls = {}
    for label, mode, staleness in (("sync", "solo", 1), ("solo", "solo", S)):
        alg = EagerSGD(SimComm(n), prob, lr=0.05, mode=mode, staleness=staleness,
                       straggler=("random", d), step_time=c, seed=1)
        walls[label] = alg.run(S * 200, log_every=S * 200, progress=False)["wall_time"][-1]
    assert walls["sync"] / walls["solo"] == pytest.approx(ch08.solo_speedup(n, S, c, d),
                                                          rel=0.04)


def test_solo_speedup_check_right_and_wrong():
    _not_yet(ch08.check_solo_speedup(None))
    want = ch08.solo_speedup(8, 8)
    assert 3.0 < want < 3.2
    assert ch08.check_solo_speedup(want)
    assert ch08.check_solo_speedup(want * 1.015)  # a Monte Carlo estimate
    assert not ch08.check_solo_speedup(want * 1.05)
    assert ch08.check_solo_speedup(ch08.solo_speedup(4, 8), n=4)
    for wrong, clue in ((8, "synchronous"), (1.0, "persistent"), (ch08.solo_speedup(4, 8),
                                                                  "4 ranks"),
                        (0.5, "at least 1"), (5.0, "rng.multinomial")):
        v = ch08.check_solo_speedup(wrong)
        assert not v.ok and clue in v.message, (wrong, v)
        assert f"{want:.2f}" not in v.message and f"{want:.1f}" not in v.message
    assert "number" in ch08.check_solo_speedup("fast").message


# ---------------------------------------------------------------------- exercise 3
def test_gossip_exchanges_matches_declearn_lambda2():
    for n in (4, 8, 16):
        x0 = torch.zeros(n, 1, dtype=torch.float64)
        lam2 = AsyncGossip(SimComm(n), ring(n), x0).lambda2
        assert ch08.gossip_exchanges(n, 1e-6) == pytest.approx(math.log(1e6) / -math.log(lam2))
    # ring: lambda_2 = 1 - (1 - cos(2 pi / n)) / n
    lam2 = 1 - (1 - math.cos(2 * math.pi / 8)) / 8
    assert ch08.gossip_exchanges(8, 1e-6) == pytest.approx(math.log(1e6) / -math.log(lam2))


def test_gossip_exchanges_check_right_and_wrong():
    _not_yet(ch08.check_gossip_exchanges(None))
    want = ch08.gossip_exchanges(8, 1e-6)
    for right in (want, math.ceil(want), math.floor(want)):
        assert ch08.check_gossip_exchanges(right), right
    assert not ch08.check_gossip_exchanges(want * 1.05)
    rho = (1 + 2 * math.cos(2 * math.pi / 8)) / 3  # the synchronous ring, Metropolis weights
    for wrong, clue in ((math.ceil(want) / 8, "ticks per node"),
                        (math.log(1e6) / (1 - (1 - (1 - math.cos(math.pi / 4)) / 8)),
                         "approximates"),
                        (math.log(1e6) / -math.log(rho), "synchronous"),
                        (-want, "positive"), (10, "second largest eigenvalue")):
        v = ch08.check_gossip_exchanges(wrong)
        assert not v.ok and clue in v.message, (wrong, v)
        assert str(math.ceil(want)) not in v.message.split("is not it.")[1]
    assert ch08.check_gossip_exchanges(ch08.gossip_exchanges(16, 1e-3), n=16, eps=1e-3)
