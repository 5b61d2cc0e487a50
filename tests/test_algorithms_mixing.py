"""What the mixing methods share: the one check of W (declearn.algorithms.mixing), the
packing of several tensors into one message (declearn.algorithms.flat), and the signatures
every algorithm agrees on (x0=, topology=, run(steps))."""

from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest
import torch

import declearn.algorithms as A
from declearn.algorithms.base import Algorithm
from declearn.algorithms.flat import node_dims, pack, unpack
from declearn.algorithms.mixing import (
    CHECKED_STEPS,
    GossipMethod,
    check_mixing,
    check_schedule,
)
from declearn.comm import SimComm
from declearn.errors import TopologyError
from declearn.problems import LeastSquares
from declearn.topology import apply_weights, chain, one_peer_exponential, ring

N = 6
#: A directed graph (a cycle and two chords from node 0): its uniform in-weights have rows
#: summing to 1 and its uniform out-weights columns summing to 1, never both.
EDGES = [(j, (j + 1) % N) for j in range(N)] + [(0, 2), (0, 3)]


def _sums(topo):
    W = np.asarray(topo.W, dtype=float)
    return np.allclose(W.sum(1), 1), np.allclose(W.sum(0), 1)


def test_check_mixing_accepts_exactly_the_normalisations_the_matrix_has():
    cases = {
        "receivers": apply_weights(N, EDGES, rule="uniform", directed=True),
        "senders": apply_weights(N, EDGES, rule="uniform_out", directed=True),
        "ring": ring(N),
    }
    comm = SimComm(N)
    for name, topo in cases.items():
        rows, cols = _sums(topo)  # the oracle: numpy's sums of the dense W
        assert name != "ring" or (rows and cols)
        for mixing, ok in (("row", rows), ("column", cols), ("doubly", rows and cols)):
            if ok:
                check_mixing(comm, topo, mixing, "test")
                check_mixing(comm, topo, mixing, "test")  # remembered: passes again
            else:
                with pytest.raises(TopologyError, match="sum to 1"):
                    check_mixing(comm, topo, mixing, "test")


def test_check_mixing_says_what_to_use_instead():
    comm = SimComm(N)
    senders = apply_weights(N, EDGES, rule="uniform_out", directed=True)
    with pytest.raises(TopologyError, match=r"DGD-like needs a doubly stochastic W.*rows.*"
                                            r"PushDIGing.*Metropolis"):
        check_mixing(comm, senders, "doubly", "DGD-like")
    receivers = apply_weights(N, EDGES, rule="uniform", directed=True)
    with pytest.raises(TopologyError, match=r"columns of .* do not sum to 1") as info:
        check_mixing(comm, receivers, "doubly", "DGD-like")
    assert "PushDIGing" not in str(info.value)  # not column-stochastic either way
    with pytest.raises(TopologyError, match="n=5"):
        check_mixing(comm, ring(5), "row", "test")
    with pytest.raises(TopologyError, match=r"dynamic.*at\(k\)"):
        check_mixing(comm, one_peer_exponential(N), "row", "test")
    with pytest.raises(TopologyError, match="Topology"):
        check_mixing(comm, np.eye(N), "row", "test")
    with pytest.raises(ValueError, match="mixing must be one of"):
        check_mixing(comm, ring(N), "receiver", "test")


def test_check_schedule_checks_one_period_of_a_dynamic_topology():
    comm = SimComm(8)
    check_schedule(comm, one_peer_exponential(8), "doubly", "test")  # every step: doubly
    with pytest.raises(TopologyError, match="Expected a declearn Topology"):
        check_schedule(comm, [ring(8)], "row", "test")
    assert CHECKED_STEPS == 64


def test_the_methods_declare_the_normalisation_they_rely_on():
    assert A.DGD.mixing == "row"
    assert A.GradientTracking.mixing == "doubly"
    assert A.PushDIGing.mixing == "column"
    for cls in (A.ExactDiffusion, A.D2, A.EXTRA):
        assert cls.mixing == "doubly"
    prob = LeastSquares(N, 3, seed=0)
    receivers = apply_weights(N, EDGES, rule="uniform", directed=True)
    A.DGD(SimComm(N), prob, receivers, lr=0.1)  # rows are enough for DGD
    with pytest.raises(TopologyError, match="gt-atc needs a doubly stochastic W"):
        A.GradientTracking(SimComm(N), prob, receivers, lr=0.1)
    ed = A.ExactDiffusion(SimComm(N), prob, ring(N), lr=0.1)
    assert ed.mixing == "doubly"  # its lazy W is kept under another name


def test_a_subclass_with_the_old_weights_attribute_still_works_with_a_warning():
    with pytest.warns(DeprecationWarning, match=r"weights = 'sender'.*mixing = 'column'"):
        class PushDGD(GossipMethod):  # a student's method, written before `mixing`
            name = "push_dgd"
            weights = "sender"

            def _step(self):
                self.x = self.mix(self.x)

    assert PushDGD.mixing == "column"
    senders = apply_weights(N, EDGES, rule="uniform_out", directed=True)
    x0 = torch.arange(N, dtype=torch.float64)[:, None]
    alg = PushDGD(SimComm(N), LeastSquares(N, 1, seed=0), senders, lr=0.1, x0=x0)
    alg.step()
    want = np.asarray(senders.W) @ x0.numpy()  # sender-side weights: x <- W x
    np.testing.assert_allclose(alg.x.numpy(), want, rtol=1e-14)
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        class Declared(GossipMethod):  # the new spelling: silent
            mixing = "doubly"
            weights = "doubly"


# ------------------------------------------------------------------------- flat
@pytest.mark.parametrize("simulated", [True, False])
def test_pack_puts_parts_side_by_side_and_unpack_gives_views(simulated):
    class OneRank:  # the layout of an MPI rank: no node dim in front
        node_dims = ()

    comm = SimComm(3) if simulated else OneRank()
    lead = (3,) if simulated else ()
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(lead + (2, 2), generator=gen, dtype=torch.float64)
    b = torch.randn(lead + (3,), generator=gen, dtype=torch.float64)
    c = torch.ones(lead + (1,), dtype=torch.float64)
    assert node_dims(comm) == len(lead)
    packed = pack(comm, a, b, c)
    flat = [t.numpy().reshape(lead + (-1,)) for t in (a, b, c)]
    np.testing.assert_array_equal(packed.numpy(), np.concatenate(flat, axis=-1))
    ua, ub, uc = unpack(comm, packed, (a.shape, b.shape, c.shape))
    for got, want in ((ua, a), (ub, b), (uc, c)):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    ub.mul_(2.0)  # a view: the buffer sees it
    np.testing.assert_array_equal(packed.numpy()[..., 4:7], 2 * b.numpy().reshape(lead + (3,)))
    with pytest.raises(ValueError, match="buffer holds 8"):
        unpack(comm, packed, (a.shape, b.shape))


# ------------------------------------------------------------------------- signatures
def _algorithms():
    return [getattr(A, name) for name in A.__all__
            if isinstance(getattr(A, name), type) and issubclass(getattr(A, name), Algorithm)
            and getattr(A, name) is not Algorithm]


def test_every_algorithm_takes_x0_and_a_topology_under_those_names():
    graph_free = {A.CECA, A.ParallelSGD, A.LocalSGD, A.EASGD, A.OverlapLocalSGD, A.CoCoDSGD,
                  A.EagerSGD}
    for cls in _algorithms():
        params = inspect.signature(cls).parameters
        assert "x0" in params, cls.__name__
        assert "tree" not in params and "graph" not in params, cls.__name__
        assert ("topology" in params) == (cls not in graph_free), cls.__name__


def test_every_algorithm_runs_with_the_same_signature():
    base = inspect.signature(Algorithm.run).parameters
    for cls in _algorithms():
        params = inspect.signature(cls.run).parameters
        assert list(params)[:2] == ["self", "steps"], cls.__name__
        for name in ("log_every", "progress", "divergence"):
            assert params[name].kind is inspect.Parameter.KEYWORD_ONLY, (cls.__name__, name)
            assert params[name].default == base[name].default, (cls.__name__, name)


def test_the_old_tree_keyword_still_works_with_a_warning():
    prob = LeastSquares(5, 3, seed=1)
    ref = A.RelaySGD(SimComm(5), prob, chain(5), lr=0.1)
    ref.run(6, progress=False)
    with pytest.warns(DeprecationWarning, match=r"RelaySGD\(tree=\.\.\.\) is deprecated: "
                                                r"write topology="):
        old = A.RelaySGD(SimComm(5), prob, tree=chain(5), lr=0.1)
    old.run(6, progress=False)
    torch.testing.assert_close(old.x, ref.x, rtol=0, atol=0)
    with pytest.warns(DeprecationWarning, match="topology="):
        assert A.lr_correction(tree=chain(5)) == A.lr_correction(chain(5))
    assert A.lr_correction(chain(5)) == pytest.approx(1.8, rel=1e-14)  # 1 + 20 / 25
    with pytest.warns(DeprecationWarning, match="RelaySumConsensus"):
        A.RelaySumConsensus(SimComm(5), tree=chain(5), x0=torch.zeros(5, 1))
    with pytest.raises(TypeError, match="both"):
        A.RelaySum(SimComm(5), topology=chain(5), tree=chain(5))
