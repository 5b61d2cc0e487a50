"""The Algorithm base, History, step sizes, divergence, untracked traffic, problem binding."""

import math

import numpy as np
import pytest
import torch

from declearn.algorithms import AverageConsensus, History, check_step_size, diminishing
from declearn.algorithms.base import Algorithm
from declearn.comm import SimComm
from declearn.errors import DivergenceError
from declearn.problems.base import FunctionProblem, Problem, as_problem
from declearn.topology import one_peer_exponential, ring, star


def _x0(n, d=3, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_untracked_operations_do_not_count():
    comm, topo, x = SimComm(6), ring(6), _x0(6)
    for _ in range(3):
        comm.neighbor_allreduce(x, topo)
    with comm.untracked():
        comm.allreduce(x)
        comm.neighbor_allreduce(x, topo)
    comm.neighbor_allreduce(x, topo)
    np.testing.assert_array_equal(comm.traffic.messages, np.full(6, 4 * 2))
    assert set(comm.traffic.by_op) == {"neighbor_allreduce"}


def test_consensus_meets_the_rho_bound_and_counts_messages():
    n, k = 10, 40
    x0 = _x0(n)
    alg = AverageConsensus(SimComm(n), ring(n), x0)
    hist = alg.run(k, log_every=5, progress=False)
    xbar = x0.mean(0)
    rho = 1 / 3 + 2 / 3 * math.cos(2 * math.pi / n)
    assert (alg.x - xbar).norm() <= rho ** k * (x0 - xbar).norm() * (1 + 1e-12)
    assert torch.allclose(alg.x.mean(0), xbar, atol=1e-14)  # doubly stochastic keeps the mean
    assert list(hist["iteration"]) == [0, 5, 10, 15, 20, 25, 30, 35, 40]
    assert hist["messages"][-1] == 2 * k  # two out-neighbors per node per step
    assert hist["consensus_error"][0] == pytest.approx(float(((x0 - xbar) ** 2).sum(1).mean()))
    assert np.isnan(hist["suboptimality"]).all()


def test_one_peer_exponential_consensus_is_exact_after_log2_n_steps():
    n = 16
    alg = AverageConsensus(SimComm(n), one_peer_exponential(n), _x0(n))
    alg.run(4, progress=False)
    assert alg.history.last["consensus_error"] < 1e-28


def test_history_plot_and_dict():
    alg = AverageConsensus(SimComm(4), ring(4), _x0(4))
    hist = alg.run(5, progress=False)
    fig = hist.plot()
    assert fig.axes and fig.axes[0].get_yscale() == "log"
    d = hist.to_dict()
    assert d["name"] == "average_consensus" and len(d["consensus_error"]) == len(hist) == 6
    with pytest.raises(KeyError, match="Unknown history column"):
        hist["accuracy"]
    assert isinstance(History("x").last, dict)


@pytest.mark.parametrize("bad", [0, -0.1, float("nan"), float("inf"), True, "0.1", None])
def test_step_size_must_be_positive(bad):
    with pytest.raises(ValueError, match="step size"):
        check_step_size(bad)


def test_diminishing_schedule():
    s = diminishing(1.0, 0.5)
    assert s(0) == 1.0 and s(3) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="power"):
        diminishing(1.0, 1.5)


class _Doubling(Algorithm):
    name = "doubling"

    def _step(self):
        self.x = 2 * self.x + self.comm.rank.unsqueeze(1)  # nodes drift apart, exponentially


def test_divergence_stops_with_the_iteration_and_a_hint():
    alg = _Doubling(SimComm(4), None, x0=torch.zeros(4, 2, dtype=torch.float64), lr=0.5)
    with pytest.raises(DivergenceError, match=r"diverged at iteration \d+.*lr=0.25") as err:
        alg.run(200, log_every=1, progress=False)
    assert 10 < err.value.iteration < 40  # 4^k growth of the squared spread passes 1e8 early


def test_consensus_needs_x0_and_checks_the_node_dim():
    with pytest.raises(ValueError, match="node-local"):
        AverageConsensus(SimComm(4), ring(4), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="sum to 1"):
        from declearn.topology import Topology

        W = Topology.from_matrix(np.array([[0.5, 0.5], [1.0, 0.0]]).T, stochastic="column")
        AverageConsensus(SimComm(2), W, torch.zeros(2, 1))  # column- but not row-stochastic


def test_star_consensus_keeps_the_average():
    x0 = _x0(5)
    alg = AverageConsensus(SimComm(5), star(5), x0)
    alg.run(200, progress=False)
    assert torch.allclose(alg.x, x0.mean(0).expand_as(alg.x), atol=1e-10)


class _Quadratic(Problem):
    """f_i(x) = 1/2 ||x - c_i||^2 with c_i = i * ones."""

    name = "quadratic"

    def __init__(self, n, d=2, sigma=0.0):
        super().__init__(n, (d,), sigma=sigma, seed=3)
        self.x_star = torch.full((d,), (n - 1) / 2, dtype=torch.float64)
        c = torch.arange(n, dtype=torch.float64)[:, None].expand(n, d)
        self.f_star = float(0.5 * ((self.x_star - c) ** 2).sum(1).mean())
        self._c = c

    def _loss(self, x, nodes):
        return 0.5 * ((x - self._c[nodes]) ** 2).sum(1)

    def _grad(self, x, nodes):
        return x - self._c[nodes]


def test_oracle_shapes_noise_and_heterogeneity():
    prob = _Quadratic(4, sigma=0.5)
    assert prob.heterogeneity == pytest.approx(np.mean([(i - 1.5) ** 2 * 2 for i in range(4)]))
    oracle = prob.on(SimComm(4))
    x = oracle.x0()
    g1, g2 = oracle.grad(x), oracle.grad(x)
    assert g1.shape == (4, 2) and not torch.equal(g1, g2)  # fresh noise per call
    again = prob.on(SimComm(4))
    assert torch.equal(again.grad(x), g1)  # same seed, same call count: same noise
    with pytest.raises(ValueError, match="node-local of shape"):
        oracle.grad(torch.zeros(2))
    with pytest.raises(ValueError, match="n=4"):
        prob.on(SimComm(5))
    with pytest.raises(ValueError, match="sigma"):
        _Quadratic(4, sigma=-1)


def test_a_gradient_function_stands_in_for_a_problem():
    assert isinstance(as_problem(lambda x: x), FunctionProblem)
    oracle = as_problem(lambda x: x[:, :1]).on(SimComm(3))
    with pytest.raises(ValueError, match="same shape"):
        oracle.grad(torch.zeros(3, 2))
    with pytest.raises(TypeError, match="Problem or a gradient function"):
        as_problem(42)


def test_a_run_counts_only_its_own_messages():
    comm, x0 = SimComm(6), _x0(6)
    AverageConsensus(comm, ring(6), x0).run(10, progress=False)
    second = AverageConsensus(comm, ring(6), x0)  # same communicator, reused as in a notebook
    hist = second.run(5, progress=False)
    assert hist["messages"][0] == 0 and hist["messages"][-1] == 5 * 2
