"""declearn.exercises.ch04: the right answer passes, typical wrong answers fail with a hint
(never the answer), and an unanswered exercise (None) says "not yet" without raising."""

import numpy as np
import pytest
import torch

from declearn.exercises import Verdict, ch04
from declearn.problems import LeastSquares
from declearn.topology import Topology, ring

N = 16


@pytest.fixture(scope="module")
def problem():
    return LeastSquares(N, d=10, m=20, heterogeneity=1.0, seed=0)


def _not_yet(v):
    assert isinstance(v, Verdict) and not v
    assert "answer" in v.message


# ------------------------------------------------------------------------------- chapter 04
def test_ch04_messages():
    topo = ring(N)
    assert ch04.check_messages((4, 2), topo)
    assert ch04.check_messages([4.0, 2.0], topo)
    swapped = ch04.check_messages((2, 4), topo)
    assert not swapped and "Swapped" in swapped.message
    calls = ch04.check_messages((2, 1), topo)
    assert not calls and "out-neighbour" in calls.message
    assert "do not cost the same" in ch04.check_messages((2, 2), topo).message
    assert "pair" in ch04.check_messages(4, topo).message
    assert "pair" in ch04.check_messages((4, 2, 1), topo).message
    _not_yet(ch04.check_messages(None, topo))


def test_ch04_messages_other_degree():
    # the check counts, it does not assume a ring: the 4x4 torus has 4 neighbours
    from declearn.topology import grid

    assert ch04.check_messages((8, 4), grid(N, torus=True))


def test_ch04_ed_as_d2():
    topo = ring(N)
    assert ch04.check_ed_as_d2((np.eye(N) + topo.W) / 2, topo)
    assert ch04.check_ed_as_d2(torch.from_numpy((np.eye(N) + topo.W) / 2), topo)
    w = ch04.check_ed_as_d2(topo.W, topo)
    assert not w and "W itself" in w.message
    refused = ch04.check_ed_as_d2(np.eye(N), topo)  # disconnected
    assert not refused and "refuses" in refused.message
    drift = ch04.check_ed_as_d2(0.3 * np.eye(N) + 0.7 * topo.W, topo)
    assert not drift and "drifts" in drift.message
    assert "shape" in ch04.check_ed_as_d2(np.eye(3), topo).message
    assert not ch04.check_ed_as_d2("W", topo)
    _not_yet(ch04.check_ed_as_d2(None, topo))


def test_ch04_d2_threshold_and_self_weight():
    assert ch04.d2_threshold() == pytest.approx(-1 / 3, abs=1e-9)
    assert ch04.d2_root_modulus(-1 / 3) == pytest.approx(1.0)
    assert ch04.d2_root_modulus(0.5) == pytest.approx(np.sqrt(0.5))
    assert ch04.check_d2_self_weight(1 / 3)
    assert ch04.check_d2_self_weight(0.3334)
    lam = ch04.check_d2_self_weight(-1 / 3)
    assert not lam and "eigenvalue threshold" in lam.message
    assert "lazy" in ch04.check_d2_self_weight(0.5).message
    assert not ch04.check_d2_self_weight(0.25)
    assert not ch04.check_d2_self_weight([0.1, 0.2])
    _not_yet(ch04.check_d2_self_weight(None))


def test_ch04_d2_condition_matches_declearn():
    # the rings of exercise 04.3: declearn's D2 accepts s just above 1/3 and refuses s = 1/3
    from declearn.algorithms import D2
    from declearn.comm import SimComm
    from declearn.errors import TopologyError

    p = LeastSquares(N, d=4, m=8, seed=1)
    ring_s = lambda s: Topology.from_circulant(N, {0: s, 1: (1 - s) / 2, -1: (1 - s) / 2})
    D2(SimComm(N), p, ring_s(0.34), lr=0.1 / p.smoothness)
    with pytest.raises(TopologyError, match="-1/3"):
        D2(SimComm(N), p, ring_s(1 / 3), lr=0.1 / p.smoothness)
