"""declearn.algorithms.race: one method over several topologies, the metric recorded.

Oracles: a direct run of the same algorithm (its iterates, step by step), the dense product of
the mixing matrices with numpy (consensus), the relative error and the full gradient recomputed
with numpy from the problem's data.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from declearn.algorithms import DGD, AverageConsensus, GradientTracking
from declearn.algorithms.race import consensus_distance, race, relative_error
from declearn.comm import SimComm
from declearn.problems import LeastSquares
from declearn.topology import od_equidyn, one_peer_exponential, ring


def _problem():
    return LeastSquares(6, d=3, m=8, heterogeneity=1.0, sigma=0.3, seed=2)


def test_race_takes_the_same_iterates_as_a_direct_run():
    topologies = {"ring": ring(6), "one-peer": one_peer_exponential(6)}
    seen = {}

    def record(alg):
        seen.setdefault(alg.topology.name, []).append(alg.x.clone())
        return float(alg.x.norm())

    curves = race(lambda t: DGD(SimComm(6), _problem(), t, lr=0.1), topologies, 12,
                  metric=record, every=5)
    for name, topo in topologies.items():
        direct = DGD(SimComm(6), _problem(), topo, lr=0.1)  # a fresh problem: same noise stream
        xs = [direct.x.clone()]
        for k in range(12):
            direct.step()
            if (k + 1) % 5 == 0 or k == 11:
                xs.append(direct.x.clone())
        got = seen[topo.name]
        assert len(got) == len(xs) == 4
        for a, b in zip(got, xs):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert list(curves[name].iterations) == [0, 5, 10, 12]
        np.testing.assert_array_equal(curves[name].values, [float(x.norm()) for x in xs])
        assert curves[name].degree == topo.degree and curves[name].diverged_at is None


def test_consensus_distance_is_the_dense_product_of_the_ws():
    n, steps = 12, 9
    x0 = torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    topologies = {"1p": one_peer_exponential(n), "od": od_equidyn(n, seed=3)}
    curves = race(lambda t: AverageConsensus(SimComm(n), t, x0=x0), topologies, steps,
                  metric=consensus_distance)
    X0 = x0.numpy()
    J = np.full((n, n), 1.0 / n)
    for name, topo in topologies.items():
        P, expect = np.eye(n), []
        for k in range(steps + 1):
            expect.append(np.linalg.norm(J @ X0 - P @ X0))
            P = np.asarray(topo.at(k).W) @ P
        np.testing.assert_allclose(curves[name].values, expect, rtol=1e-9, atol=1e-13)


def test_relative_error_and_grad_norm_against_numpy():
    prob = LeastSquares(5, d=3, m=8, heterogeneity=1.0, seed=4)
    x0 = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    tops = {"ring": (ring(5), {"lr": 0.2})}
    build = lambda t, lr: GradientTracking(SimComm(5), prob, t, lr=lr, x0=x0)
    rel = race(build, tops, 0, metric=relative_error(prob.x_star))["ring"].values
    g = race(build, tops, 0, metric="grad_norm")["ring"].values
    X, xs = x0.numpy(), prob.x_star.numpy()
    assert rel[0] == pytest.approx(np.linalg.norm(X - xs) / np.linalg.norm(np.tile(xs, (5, 1))),
                                   rel=1e-12)
    A, b, xbar = prob.A.numpy(), prob.b.numpy(), X.mean(0)
    full = np.mean([A[i].T @ (A[i] @ xbar - b[i]) / 8 for i in range(5)], axis=0)
    assert g[0] == pytest.approx(np.linalg.norm(full), rel=1e-10)


def test_a_diverging_racer_stops_at_its_first_non_finite_value():
    prob = LeastSquares(4, d=2, m=5, seed=0)
    curves = race(lambda t: DGD(SimComm(4), prob, t, lr=1e150), {"ring": ring(4)}, 50,
                  metric=lambda alg: float(alg.x.pow(2).sum()), every=1)
    c = curves["ring"]
    assert c.diverged_at is not None and c.iterations[-1] == c.diverged_at < 50
    assert np.isfinite(c.values[:-1]).all() and not math.isfinite(c.values[-1])
    assert c.first_below(-1.0) == math.inf and c.first_below(math.inf) == 0


def test_race_bad_input():
    prob = LeastSquares(4, d=2, m=5, seed=0)
    build = lambda t: DGD(SimComm(4), prob, t, lr=0.1)
    with pytest.raises(TypeError, match="dict name -> Topology"):
        race(build, [ring(4)], 3, metric=consensus_distance)
    with pytest.raises(ValueError, match="every"):
        race(build, {"r": ring(4)}, 3, metric=consensus_distance, every=0)
    with pytest.raises(ValueError, match="steps"):
        race(build, {"r": ring(4)}, -1, metric=consensus_distance)
    with pytest.raises(TypeError, match="metric"):
        race(build, {"r": ring(4)}, 3, metric=3)
    with pytest.raises(ValueError, match="no 'loss' column"):
        race(build, {"r": ring(4)}, 3, metric="loss")
    with pytest.raises(TypeError, match="Algorithm"):
        race(lambda t: "not an algorithm", {"r": ring(4)}, 3, metric=consensus_distance)
    with pytest.raises(TypeError, match="options"):
        race(build, {"r": (ring(4), 0.1)}, 3, metric=consensus_distance)
    with pytest.raises(ValueError, match="x_star"):
        relative_error(torch.zeros(3))
