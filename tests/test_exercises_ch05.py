"""declearn.exercises.ch05: the right answer passes, plausible wrong answers (each computed
here independently) are refused with a hint (never the answer), and an unanswered exercise
(None) says "not yet" without raising. The checks compute their answers without declearn's
gradient tracking, D2 and exact diffusion; here they are also compared with those classes."""

import numpy as np
import pytest
import torch

from declearn.exercises import Verdict, ch05
from declearn.problems import LeastSquares
from declearn.topology import Topology, ring

N = 16


@pytest.fixture(scope="module")
def problem():
    return LeastSquares(N, d=10, m=20, heterogeneity=1.0, seed=0)


def _not_yet(v):
    assert isinstance(v, Verdict) and not v
    assert "answer" in v.message


def test_ch05_public_names():
    assert set(ch05.__all__) == {"check_d2_self_weight", "check_ed_as_d2", "check_gt_step",
                                 "check_messages"}


# ------------------------------------------------------------------------------- 05.1
def test_ch05_messages():
    topo = ring(N)
    assert ch05.check_messages((4, 2), topo)
    assert ch05.check_messages([4.0, 2.0], topo)
    swapped = ch05.check_messages((2, 4), topo)
    assert not swapped and "Swapped" in swapped.message
    calls = ch05.check_messages((2, 1), topo)
    assert not calls and "out-neighbour" in calls.message
    assert "do not cost the same" in ch05.check_messages((2, 2), topo).message
    assert "pair" in ch05.check_messages(4, topo).message
    assert "pair" in ch05.check_messages((4, 2, 1), topo).message
    _not_yet(ch05.check_messages(None, topo))


def test_ch05_messages_other_degree():
    # the check counts, it does not assume a ring: the 4x4 torus has 4 neighbours
    from declearn.topology import grid

    assert ch05.check_messages((8, 4), grid(N, torus=True))


def test_ch05_messages_refuses_plausible_wrong_answers():
    topo = ring(N)
    degree = 2  # a ring: each node sends to its two neighbours
    wrong = {
        "swapped": (degree, 2 * degree),
        "neighbor_allreduce calls, not messages": (2, 1),
        "both cost the same (two rounds)": (2 * degree, 2 * degree),
        "both cost the same (one round)": (degree, degree),
        "sent and received counted": (4 * degree, 2 * degree),
        "a message to itself": (2 * degree + 2, degree + 1),
        "DIGing counted as two messages": (2 * degree, 2 * degree + 0.5),
        "off by one": (2 * degree + 1, degree),
        "in bytes of d = 10 floats": (2 * degree * 80, degree * 160),
    }
    for label, pair in wrong.items():
        v = ch05.check_messages(pair, topo)
        assert not v, label
        assert "(4, 2)" not in v.message.split("is not it.")[-1], label


def test_ch05_messages_agree_with_gradient_tracking():
    # the check's count (numpy, from W) against what GradientTracking's History records
    from declearn.algorithms import GradientTracking
    from declearn.comm import SimComm
    from declearn.topology import grid

    p = LeastSquares(N, d=4, m=8, seed=0)
    for topo in (ring(N), grid(N, torus=True)):
        counts = []
        for variant in ("atc", "diging"):
            alg = GradientTracking(SimComm(N), p, topo, lr=0.1 / p.smoothness, variant=variant)
            counts.append(float(alg.run(3, log_every=3, progress=False).last["messages"]) / 3)
        assert ch05.check_messages(tuple(counts), topo)


# ------------------------------------------------------------------------------- 05.2
def test_ch05_ed_as_d2():
    topo = ring(N)
    assert ch05.check_ed_as_d2((np.eye(N) + topo.W) / 2, topo)
    assert ch05.check_ed_as_d2(torch.from_numpy((np.eye(N) + topo.W) / 2), topo)
    w = ch05.check_ed_as_d2(topo.W, topo)
    assert not w and "W itself" in w.message
    refused = ch05.check_ed_as_d2(np.eye(N), topo)  # disconnected
    assert not refused and "refuses" in refused.message
    drift = ch05.check_ed_as_d2(0.3 * np.eye(N) + 0.7 * topo.W, topo)
    assert not drift and "drifts" in drift.message
    assert "shape" in ch05.check_ed_as_d2(np.eye(3), topo).message
    assert not ch05.check_ed_as_d2("W", topo)
    _not_yet(ch05.check_ed_as_d2(None, topo))


def test_ch05_ed_as_d2_refuses_plausible_wrong_answers():
    topo = ring(N)
    W, I = np.asarray(topo.W), np.eye(N)
    wrong = {
        "W": W, "I": I, "I + W (not halved)": I + W, "(I - W)/2": (I - W) / 2,
        "W squared": W @ W, "2W - I": 2 * W - I, "(I + W)/3": (I + W) / 3,
        "the lazy ring of the lazy ring": (I + (I + W) / 2) / 2,
        "off by 1e-6 on one entry": (I + W) / 2 + 1e-6 * np.outer(I[0], I[1]),
    }
    for label, M in wrong.items():
        assert not ch05.check_ed_as_d2(M, topo), label


def test_ch05_ed_as_d2_answer_runs_like_exact_diffusion(problem):
    # the check's closed form against the classes: D2 on (I + W)/2 is exact diffusion on W
    from declearn.algorithms import D2, ExactDiffusion
    from declearn.comm import SimComm

    topo = ring(N)
    lr = 0.3 / problem.smoothness
    d2 = D2(SimComm(N), problem, Topology.from_matrix((np.eye(N) + topo.W) / 2), lr=lr)
    ed = ExactDiffusion(SimComm(N), problem, topo, lr=lr)
    for _ in range(30):
        d2.step()
        ed.step()
    assert float((d2.x - ed.x).abs().max()) < 1e-12


# ------------------------------------------------------------------------------- 05.3
def test_ch05_d2_threshold_and_self_weight():
    assert ch05._d2_threshold() == pytest.approx(-1 / 3, abs=1e-9)
    assert ch05._d2_root_modulus(-1 / 3) == pytest.approx(1.0)
    assert ch05._d2_root_modulus(0.5) == pytest.approx(np.sqrt(0.5))
    assert ch05._d2_self_weight() == pytest.approx((1 + ch05._d2_threshold()) / 2, abs=1e-9)
    assert ch05.check_d2_self_weight(1 / 3)
    assert ch05.check_d2_self_weight(0.3334)
    lam = ch05.check_d2_self_weight(-1 / 3)
    assert not lam and "eigenvalue threshold" in lam.message
    assert "lazy" in ch05.check_d2_self_weight(0.5).message
    assert not ch05.check_d2_self_weight(0.25)
    assert not ch05.check_d2_self_weight([0.1, 0.2])
    _not_yet(ch05.check_d2_self_weight(None))


def test_ch05_d2_self_weight_refuses_plausible_wrong_answers():
    # the ring's smallest eigenvalue is 2 s - 1; candidates a student might reach
    wrong = {"the eigenvalue -1/3 itself": -1 / 3, "lazy ring": 0.5, "1 - 1/3": 2 / 3,
             "the chapter's ring s = 0.3": 0.3, "s = 0.35 (a ring that works)": 0.35,
             "s = 0.34": 0.34, "1/4": 0.25, "0": 0.0, "(1 - 1/3)/4": 1 / 6,
             "rounded to 2 digits": 0.33}
    for label, value in wrong.items():
        assert not ch05.check_d2_self_weight(value), label


def test_ch05_d2_condition_matches_declearn():
    # the rings of exercise 05.3: declearn's D2 accepts s just above 1/3 and refuses s = 1/3
    from declearn.algorithms import D2
    from declearn.comm import SimComm
    from declearn.errors import TopologyError

    p = LeastSquares(N, d=4, m=8, seed=1)
    ring_s = lambda s: Topology.from_circulant(N, {0: s, 1: (1 - s) / 2, -1: (1 - s) / 2})
    D2(SimComm(N), p, ring_s(0.34), lr=0.1 / p.smoothness)
    with pytest.raises(TopologyError, match="-1/3"):
        D2(SimComm(N), p, ring_s(1 / 3), lr=0.1 / p.smoothness)
    with pytest.raises(TopologyError):  # the identity of 05.2's hint: refused, as it says
        D2(SimComm(N), p, Topology.from_matrix(np.eye(N)), lr=0.1 / p.smoothness)


# ------------------------------------------------------------------------------- 05.4
def test_ch05_build_check_topology_weights_differ_by_node():
    for n in (3, 4, 5, 7):
        W = np.asarray(ch05._build_graph(n).W)
        assert np.allclose(W, W.T) and np.allclose(W.sum(1), 1)
        assert len({round(w, 12) for w in np.diag(W)}) > 1  # self weights differ by node
