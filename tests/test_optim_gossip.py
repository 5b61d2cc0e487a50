"""declearn.optim gossip optimizers and StackedModel.

DecentralizedSGD and RelaySGD (plain SGD) must give the iterates of the problem-level DGD (ATC)
and RelaySGD (fill="initial") on the same data; DecentralizedSGD's average() must be W x (a
dense oracle); StackedModel must compute what n separate copies of the model compute, output
and gradient. Under a real mpiexec the optimizers are checked in test_optim.py (the ``optim``
section of tests/mpi/algorithms_relay_checks.py).
"""

from __future__ import annotations

import pytest
import torch
from test_optim import LeastSquares, _stacked_params

import declearn.algorithms as A
import declearn.optim as O
from declearn.comm import SimComm
from declearn.errors import TopologyError
from declearn.topology import (
    Topology,
    binary_tree,
    chain,
    double_binary_trees,
    exponential,
    one_peer_exponential,
    ring,
)


def _train(opt, params, problem, steps):
    for _ in range(steps):
        opt.zero_grad()
        w = torch.cat(params, dim=1)
        problem._loss(w, problem.all_nodes).sum().backward()
        opt.step()
        opt.average()
    return torch.cat(params, 1).detach()


@pytest.mark.parametrize("topo", [ring, exponential, one_peer_exponential],
                         ids=["ring", "exponential", "one_peer_exponential"])
def test_decentralized_sgd_equals_dgd_atc(topo):
    n, steps = 8, 11
    problem = LeastSquares(n, seed=4)
    alg = A.DGD(SimComm(n), problem, topo(n), lr=0.1, variant="atc")
    for _ in range(steps):
        alg.step()
    params = _stacked_params(problem)
    comm = SimComm(n)
    got = _train(O.DecentralizedSGD(params, comm, topo(n), lr=0.1), params, problem, steps)
    torch.testing.assert_close(got, alg.x, rtol=0, atol=1e-12)
    assert comm.traffic.by_op["neighbor_allreduce"]["calls"] == steps


@pytest.mark.parametrize("tree", [chain, binary_tree, double_binary_trees],
                         ids=["chain", "binary_tree", "double_binary_trees"])
def test_relaysgd_optimizer_equals_the_algorithm(tree):
    n, steps = 7, 12
    problem = LeastSquares(n, seed=6)
    alg = A.RelaySGD(SimComm(n), problem, tree(n), lr=0.1, fill="initial")
    for _ in range(steps):
        alg.step()
    params = _stacked_params(problem)
    got = _train(O.RelaySGD(params, SimComm(n), tree(n), lr=0.1), params, problem, steps)
    torch.testing.assert_close(got, alg.x, rtol=0, atol=1e-12)


def test_x_is_the_flat_parameters():
    n = 3
    problem = LeastSquares(n, seed=2)
    params = _stacked_params(problem)
    opt = O.RelaySGD(params, SimComm(n), chain(n), lr=0.1)
    assert opt.x.shape == (n, 4)
    assert torch.equal(opt.x, torch.cat(params, 1).detach())
    with torch.no_grad():
        params[1].add_(1.0)  # parameters are views of the buffer
    assert torch.equal(opt.x[:, 1:], params[1].detach())


def test_average_is_w_times_x_and_tau_skips_rounds():
    n = 6
    topo = exponential(n)
    x = torch.nn.Parameter(torch.randn(n, 5, dtype=torch.float64))
    opt = O.DecentralizedSGD([x], SimComm(n), topo, lr=0.1, tau=2)
    with torch.no_grad():
        x.add_(torch.arange(n, dtype=torch.float64)[:, None])  # make the nodes differ
    before = x.detach().clone()
    opt.average()  # call 1 of tau = 2: no communication
    torch.testing.assert_close(x.detach(), before)
    opt.average()  # call 2: x <- W x
    W = torch.tensor(topo.W, dtype=torch.float64)
    torch.testing.assert_close(x.detach(), W @ before, rtol=0, atol=1e-14)


def test_decentralized_sgd_reaches_consensus_on_the_mean_without_gradients():
    n = 8
    x = torch.nn.Parameter(torch.zeros(n, 3, dtype=torch.float64))
    opt = O.DecentralizedSGD([x], SimComm(n), ring(n), lr=0.1)
    with torch.no_grad():
        x.copy_(torch.randn(n, 3, dtype=torch.float64))
    mean = x.detach().mean(0)
    for _ in range(400):
        opt.average()
    torch.testing.assert_close(x.detach(), mean.expand(n, -1), rtol=0, atol=1e-8)


def _mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))


def test_stacked_model_output_and_gradients_equal_separate_copies():
    n = 4
    stacked = O.StackedModel(_mlp(), n)
    with torch.no_grad():  # make the copies differ
        for p in stacked.parameters():
            p.add_(0.1 * torch.randn_like(p))
    copies = [stacked.node(i) for i in range(n)]
    x = torch.randn(n, 9, 6)
    y = torch.randint(0, 3, (n, 9))
    out = stacked(x)
    assert out.shape == (n, 9, 3)
    for i, model in enumerate(copies):
        torch.testing.assert_close(out[i], model(x[i]))
    loss = torch.nn.functional.cross_entropy(out.reshape(-1, 3), y.reshape(-1), reduction="none")
    loss.reshape(n, 9).mean(1).sum().backward()
    for i, model in enumerate(copies):
        torch.nn.functional.cross_entropy(model(x[i]), y[i]).backward()
        for name, p in stacked.stacked_parameters().items():
            torch.testing.assert_close(p.grad[i], model.get_parameter(name).grad)
    mean = stacked.mean_model()
    for name, p in stacked.stacked_parameters().items():
        torch.testing.assert_close(mean.get_parameter(name), p.detach().mean(0))


def test_stacked_model_trains_with_an_optimizer_and_starts_equal():
    n = 5
    stacked = O.StackedModel(_mlp(1), n)
    ref = _mlp(1)
    for name, p in stacked.stacked_parameters().items():
        torch.testing.assert_close(p.detach(), ref.get_parameter(name).detach().expand_as(p))
    opt = O.DecentralizedSGD(stacked.parameters(), SimComm(n, dtype=torch.float32), ring(n),
                             lr=0.5)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 32, 6, generator=g)
    y = (x[..., 0] > 0).long()
    losses = []
    for _ in range(60):
        opt.zero_grad()
        out = stacked(x)
        loss = torch.nn.functional.cross_entropy(out.reshape(-1, 3), y.reshape(-1))
        (loss * n).backward()
        opt.step()
        opt.average()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_bad_input():
    n = 4
    x = torch.nn.Parameter(torch.zeros(n, 2, dtype=torch.float64))
    with pytest.raises(TopologyError, match="tree"):
        O.RelaySGD([x], SimComm(n), ring(n), lr=0.1)
    row_only = Topology.from_matrix([[0.5, 0.5, 0, 0], [0, 0.5, 0.5, 0], [0, 0, 0.5, 0.5],
                                     [0.5, 0.5, 0, 0]])
    with pytest.raises(TopologyError, match="doubly stochastic"):
        O.DecentralizedSGD([x], SimComm(n), row_only, lr=0.1)
    with pytest.raises(TopologyError):
        O.DecentralizedSGD([x], SimComm(n), ring(n + 1), lr=0.1)
    with pytest.raises(TopologyError, match="Topology"):
        O.DecentralizedSGD([x], SimComm(n), "ring", lr=0.1)
    with pytest.raises(ValueError, match="tau"):
        O.DecentralizedSGD([x], SimComm(n), ring(n), lr=0.1, tau=0)
    with pytest.raises(ValueError):
        O.DecentralizedSGD([x], SimComm(n), ring(n), lr=-1.0)
    with pytest.raises(ValueError, match="BatchNorm"):
        O.StackedModel(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2)), n)
    with pytest.raises(ValueError, match="n=4"):
        O.StackedModel(_mlp(), n)(torch.randn(3, 2, 6))
    with pytest.raises(ValueError, match="integer >= 1"):
        O.StackedModel(_mlp(), 0)
