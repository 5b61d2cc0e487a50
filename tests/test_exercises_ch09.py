"""The exercise checks of chapter 09 (asynchrony and stragglers): right answers pass,
plausible wrong answers (each computed here independently) are refused with a hint that does
not contain the answer, None is "not yet"; and the values the checks compute themselves agree
with independent computations (networkx shortest paths, a closed form, a generating-function
count, a Monte Carlo estimate, declearn's own gossip matrix and the simulator)."""

from __future__ import annotations

import inspect
import math
from fractions import Fraction

import networkx as nx
import numpy as np
import pytest
import torch

from declearn.algorithms import AsyncGossip, EagerSGD
from declearn.comm import SimComm
from declearn.exercises import Verdict, ch09
from declearn.problems import LeastSquares
from declearn.topology import ring


def _not_yet(v: Verdict) -> None:
    assert isinstance(v, Verdict) and not v.ok
    assert "not yet" in str(v) and "None" in v.message


def test_public_names_are_checks_and_question_data():
    assert set(ch09.__all__) == {"SOLO_ESTIMATE", "check_first_slow_step",
                                 "check_gossip_exchanges", "check_solo_speedup"}
    own = [name for name, obj in vars(ch09).items() if not name.startswith("_")
           and inspect.isfunction(obj) and obj.__module__ == ch09.__name__]
    assert sorted(own) == ["check_first_slow_step", "check_gossip_exchanges",
                           "check_solo_speedup"]


# ---------------------------------------------------------------------- exercise 1
def test_ring_distance_matches_networkx():
    for n in (3, 4, 7, 8, 12):
        lengths = nx.single_source_shortest_path_length(nx.cycle_graph(n), 2)
        for r in range(n):
            assert ch09._ring_distance(n, 2, r) == lengths[r]


def test_first_slow_step_right_and_wrong():
    _not_yet(ch09.check_first_slow_step(None))
    right = nx.shortest_path_length(nx.cycle_graph(8), 0, 5)  # ring of 8, straggler 0, rank 5
    assert right == 3
    assert ch09.check_first_slow_step(3)
    assert ch09.check_first_slow_step(3.0)
    assert ch09.check_first_slow_step(np.int64(3))
    assert ch09.check_first_slow_step(2, n=8, straggler=0, rank=6)
    assert ch09.check_first_slow_step(1, n=8, straggler=0, rank=0)  # it sleeps at step 1
    assert ch09.check_first_slow_step(1, n=4, straggler=3, rank=0)
    assert "correct" in str(ch09.check_first_slow_step(3))
    for wrong, clue in ((right - 1, "count steps from 1"), (right + 1, "One step too late"),
                        (8 - right, "shorter way"), (1, "only the straggler's neighbors"),
                        (7, "one hop at a time")):
        v = ch09.check_first_slow_step(wrong)
        assert not v.ok and clue in v.message, (wrong, v)
        assert "3" not in v.message.split("is not it.")[1]
    for bad in ("3", 2.5, True, 3.0001):
        v = ch09.check_first_slow_step(bad)
        assert not v.ok and "whole step number" in v.message


# ---------------------------------------------------------------------- exercise 3
def _e_max_generating_function(n: int, S: int) -> float:
    """E[max_i N_i] from P(max <= m) = S!/n^S [x^S] (sum_{k<=m} x^k/k!)^n, in exact fractions
    (independent of the check's sum over compositions)."""
    total = Fraction(0)
    for m in range(S):
        poly = [Fraction(1, math.factorial(k)) for k in range(m + 1)]
        prod = [Fraction(1)]
        for _ in range(n):
            prod = [sum(prod[i] * poly[j - i] for i in range(len(prod)) if 0 <= j - i <= m)
                    for j in range(min(len(prod) + m, S + 1))]
        coeff = prod[S] if len(prod) > S else Fraction(0)
        total += 1 - coeff * math.factorial(S) / Fraction(n) ** S
    return float(total)


def test_expected_max_count_exact_values_and_monte_carlo():
    assert ch09._expected_max_count(1, 5) == 5
    assert ch09._expected_max_count(4, 1) == pytest.approx(1.0)
    assert ch09._expected_max_count(2, 2) == pytest.approx(1.5)  # (2,0),(0,2): 2; (1,1): 1
    assert ch09._expected_max_count(4, 8) == pytest.approx(3.5380859375)  # 4^8 outcomes, by hand
    for n, S in ((4, 8), (8, 8), (3, 5), (5, 6)):
        assert ch09._expected_max_count(n, S) == pytest.approx(
            _e_max_generating_function(n, S), rel=1e-12)
    rng = np.random.default_rng(0)
    for n, S in ((4, 8), (8, 8), (3, 5)):
        mc = rng.multinomial(S, [1 / n] * n, size=200_000).max(1).mean()
        assert ch09._expected_max_count(n, S) == pytest.approx(mc, rel=0.01)


def test_solo_speedup_model_matches_the_simulator():
    """The model S (c + d) / (S c + d E[max N]) against EagerSGD's simulated clock, long run."""
    n, S, c, d = 4, 8, 0.01, 0.2
    prob = LeastSquares(n, 5, seed=0)
    walls = {}
    for label, mode, staleness in (("sync", "solo", 1), ("solo", "solo", S)):
        alg = EagerSGD(SimComm(n), prob, lr=0.05, mode=mode, staleness=staleness,
                       straggler=("random", d), step_time=c, seed=1)
        walls[label] = alg.run(S * 200, log_every=S * 200, progress=False)["wall_time"][-1]
    assert walls["sync"] / walls["solo"] == pytest.approx(ch09._solo_speedup(n, S, c, d),
                                                          rel=0.04)


#: Exercise 09.3's right answers, computed here: the exact value and the estimate the exercise
#: spells out (generator, seed and size of ch09.SOLO_ESTIMATE).
E_MAX_8 = _e_max_generating_function(8, 8)
SOLO_EXACT = 8 / E_MAX_8
SOLO_COUNTS = np.random.default_rng(0).multinomial(8, [1 / 8] * 8, size=200_000).max(1)
SOLO_ESTIMATE = 8 / SOLO_COUNTS.mean()
SOLO_WRONG = [
    (8, "synchronous"),                                      # nobody waits: S
    (1.0, "persistent"),                                     # the persistent straggler
    (E_MAX_8, "S divided by it"),                            # E[max] itself
    (float((8 / SOLO_COUNTS).mean()), "Average the largest count first"),  # E[S / max]
    (8 / _e_max_generating_function(4, 8), "4 ranks"),       # the engines' n
    (8 * 1.01 / (8 * 0.01 + E_MAX_8), "finite delay"),       # d = 100 c, the simulator
    (8 * 0.11 / (8 * 0.01 + 0.1 * E_MAX_8), "finite delay"),  # d = 10 c
    (0.5, "at least 1"),
    (SOLO_EXACT * 1.015, "Close"),                           # the old 2 % band accepted it
    (8 / np.random.default_rng(1).multinomial(8, [1 / 8] * 8, size=200_000).max(1).mean(),
     "Close"),                                               # another sample, not the spelled one
    (5.0, "rng.multinomial"),
]


def test_solo_speedup_check_right_and_wrong():
    _not_yet(ch09.check_solo_speedup(None))
    assert ch09.SOLO_ESTIMATE == {"seed": 0, "size": 200_000}
    assert 3.0 < SOLO_EXACT < 3.2
    assert pytest.approx(ch09._solo_speedup(8, 8), rel=1e-12) == SOLO_EXACT
    assert ch09.check_solo_speedup(SOLO_EXACT)
    assert ch09.check_solo_speedup(SOLO_ESTIMATE)
    assert ch09.check_solo_speedup(8 / _e_max_generating_function(4, 8), n=4)
    for wrong, clue in SOLO_WRONG:
        v = ch09.check_solo_speedup(wrong)
        assert not v.ok and clue in v.message, (wrong, v)
        hint = v.message.split("is not it.")[1]  # (the message repeats the answer first)
        assert f"{SOLO_EXACT:.2f}" not in hint and f"{SOLO_EXACT:.1f}" not in hint
    assert "number" in ch09.check_solo_speedup("fast").message


# ---------------------------------------------------------------------- exercise 2
def _smallest_k(lam: float, eps: float) -> int:
    k = 0
    while lam ** k > eps:
        k += 1
    return k


def test_gossip_exchanges_matches_declearn_lambda2():
    for n in (4, 8, 16):
        x0 = torch.zeros(n, 1, dtype=torch.float64)
        lam2 = AsyncGossip(SimComm(n), ring(n), x0).lambda2
        assert ch09._gossip_exchanges(n, 1e-6) == _smallest_k(lam2, 1e-6)
    # ring: lambda_2 = 1 - (1 - cos(2 pi / n)) / n
    lam2 = 1 - (1 - math.cos(2 * math.pi / 8)) / 8
    assert ch09._gossip_exchanges(8, 1e-6) == _smallest_k(lam2, 1e-6) == 371


LAM2_8 = 1 - (1 - math.cos(2 * math.pi / 8)) / 8            # closed form, ring of 8
K_REAL = math.log(1e6) / math.log(1 / LAM2_8)                # 370.4
K_RIGHT = _smallest_k(LAM2_8, 1e-6)                          # 371
RHO_SYNC = (1 + 2 * math.cos(2 * math.pi / 8)) / 3
GOSSIP_WRONG = [
    (K_REAL, "over the reals"),                              # not rounded up
    (K_RIGHT - 1, "One too few"),                            # rounded down
    (K_RIGHT + 1, "One too many"),
    (K_RIGHT / 8, "ticks per node"),
    (math.ceil(K_REAL / 8), "ticks per node"),
    (math.ceil(math.log(1e6) / (1 - LAM2_8)), "approximates"),  # 1 - lambda for ln(1/lambda)
    (math.log(1e6) / (1 - LAM2_8), "approximates"),
    (math.ceil(2 * K_REAL), "squared error"),                # the norm, not its square
    (_smallest_k(1 - 2 * (1 - LAM2_8), 1e-6), "1/(2n)"),     # E[W] without the 1/2
    (math.ceil(math.log10(1e6) / math.log(1 / LAM2_8)), "bases"),
    (math.ceil(math.log(1e6) / -math.log(RHO_SYNC)), "synchronous"),
    (math.log(1e6) / -math.log(RHO_SYNC), "synchronous"),
    (-K_RIGHT, "positive"),
    (10, "second largest eigenvalue"),
]


def test_gossip_exchanges_check_right_and_wrong():
    _not_yet(ch09.check_gossip_exchanges(None))
    assert K_RIGHT == 371 and LAM2_8 ** K_RIGHT <= 1e-6 < LAM2_8 ** (K_RIGHT - 1)
    for right in (K_RIGHT, float(K_RIGHT), np.int64(K_RIGHT)):
        assert ch09.check_gossip_exchanges(right), right
    assert not ch09.check_gossip_exchanges(K_RIGHT * 1.05)
    for wrong, clue in GOSSIP_WRONG:
        v = ch09.check_gossip_exchanges(wrong)
        assert not v.ok and clue in v.message, (wrong, v)
        assert str(K_RIGHT) not in v.message.split("is not it.")[1]
    lam2_16 = 1 - (1 - math.cos(2 * math.pi / 16)) / 16
    assert ch09.check_gossip_exchanges(_smallest_k(lam2_16, 1e-3), n=16, eps=1e-3)
    assert not ch09.check_gossip_exchanges(_smallest_k(lam2_16, 1e-3) - 1, n=16, eps=1e-3)
