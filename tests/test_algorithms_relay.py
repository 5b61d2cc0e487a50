"""RelaySum / RelaySGD / RelaySGD-Grad and parallel SGD, against what theory promises and
against dense re-derivations written here; plus the same iterates under a real mpiexec."""

from __future__ import annotations

import math
import re

import networkx as nx
import numpy as np
import pytest
import torch

from declearn.algorithms import (
    DGD,
    ParallelSGD,
    RelaySGD,
    RelaySGDGrad,
    RelaySum,
    RelaySumConsensus,
    lr_correction,
)
from declearn.algorithms.relay import impulse_response
from declearn.comm import SimComm
from declearn.errors import TopologyError
from declearn.problems import RandomQuadratics
from declearn.problems.base import Problem
from declearn.topology import (
    Topology,
    binary_tree,
    chain,
    double_binary_trees,
    grid,
    one_peer_exponential,
    ring,
    spanning_tree,
    star,
)

from mpi_helpers import needs_mpi, run_mpi


class Quadratics(Problem):
    """Stand-in heterogeneous problem: ``f_i(x) = 1/2 sum_j a_ij (x_j - c_ij)^2`` with
    ``a_ij`` in [mu, 1] and ``c_i = x_true + s o_i``, s set so that ``b^2 = zeta2``."""

    name = "quadratics"

    def __init__(self, n, d=6, *, zeta2=1.0, mu=0.5, sigma=0.0, seed=0):
        super().__init__(n, (d,), sigma=sigma, seed=seed)
        gen = torch.Generator().manual_seed(seed)
        self.a = mu + (1 - mu) * torch.rand(n, d, generator=gen, dtype=torch.float64)
        directions = torch.randn(n, d, generator=gen, dtype=torch.float64)
        center = torch.randn(d, generator=gen, dtype=torch.float64)
        spread = (self.a * directions).sum(0) / self.a.sum(0) - directions  # x* - c_i at s=1
        s = math.sqrt(zeta2 / float((self.a * spread).pow(2).sum(1).mean())) if zeta2 else 0.0
        self.c = center + s * directions
        self.x_star = (self.a * self.c).sum(0) / self.a.sum(0)
        self.f_star = float(self._loss(self.x_star.expand(n, d), self.all_nodes).mean())

    def _loss(self, x, nodes):
        return 0.5 * (self.a[nodes] * (x - self.c[nodes]) ** 2).sum(-1)

    def _grad(self, x, nodes):
        return self.a[nodes] * (x - self.c[nodes])


def _random_tree_graph(n=14, seed=4):
    g = nx.connected_watts_strogatz_graph(n, 4, 0.5, seed=seed)
    return g


def _delays(tree) -> np.ndarray:
    """tau_ik = max(d(i, k) - 1, 0) from networkx's own shortest paths."""
    g = nx.Graph()
    g.add_nodes_from(range(tree.n))
    g.add_edges_from((i, int(j)) for i in range(tree.n) for j in tree.in_neighbors(i))
    d = np.zeros((tree.n, tree.n), dtype=np.int64)
    for i, row in nx.all_pairs_shortest_path_length(g):
        for k, dist in row.items():
            d[i, k] = dist
    return np.maximum(d - 1, 0)


TREES = {
    "chain9": lambda: chain(9),
    "binary_tree13": lambda: binary_tree(13),
    "bfs_tree": lambda: spanning_tree(_random_tree_graph()),
    "star7": lambda: star(7),
}


# ------------------------------------------------------------------ RelaySum consensus
@pytest.mark.parametrize("name", sorted(TREES))
def test_relaysum_consensus_is_exact_after_diameter_rounds_not_before(name):
    tree = TREES[name]()
    n = tree.n
    diameter = int(_delays(tree).max()) + 1
    x0 = torch.randn(n, 3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mean = x0.mean(0)
    alg = RelaySumConsensus(SimComm(n), tree, x0)
    assert alg.relay.diameter == diameter
    for t in range(1, diameter + 1):
        alg.step()
        err = float((alg.x - mean).abs().max())
        if t < diameter:
            assert err > 1e-3, f"exact after {t} < diameter = {diameter} rounds"
    assert err < 1e-12
    for _ in range(3):  # stays exact
        alg.step()
    assert float((alg.x - mean).abs().max()) < 1e-12


def test_relaysum_consensus_on_double_binary_trees():
    pair = double_binary_trees(12)
    n = 12
    diam = [int(_delays(t).max()) + 1 for t in pair]
    x0 = torch.randn(n, 7, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    mean = x0.mean(0)
    alg = RelaySumConsensus(SimComm(n), pair, x0)
    errs = []
    for _ in range(max(diam)):
        alg.step()
        errs.append((alg.x - mean).abs())
    # even entries travel over the first tree, odd ones over the second
    for half, d in ((slice(0, None, 2), diam[0]), (slice(1, None, 2), diam[1])):
        assert float(errs[d - 1][:, half].max()) < 1e-12
        assert float(errs[d - 2][:, half].max()) > 1e-3
    assert float(errs[-1].max()) < 1e-12


# ------------------------------------------------------------------ the mechanism itself
@pytest.mark.parametrize("name", ["chain9", "binary_tree13", "bfs_tree"])
def test_each_contribution_arrives_once_after_tau_ik_steps(name):
    """Inject the unit vector e_k at node k at step 0 only: node i sees it (weight exactly 1)
    in its sum at step tau_ik = max(d(i, k) - 1, 0) and never again."""
    tree = TREES[name]()
    n = tree.n
    relay = RelaySum(SimComm(n), tree)
    tau = _delays(tree)
    arrivals = np.full((n, n), -1)
    seen = np.zeros((n, n))
    for t in range(tau.max() + 3):
        v = torch.eye(n, dtype=torch.float64) if t == 0 else torch.zeros(n, n, dtype=torch.float64)
        s = (relay.mix(v) * n).numpy()  # fill=None: S_i / n
        hit = np.abs(s) > 0.5
        arrivals[hit] = t
        seen += s
        assert np.all((np.abs(s) < 1e-12) | (np.abs(s - 1) < 1e-12))
    np.testing.assert_array_equal(arrivals, tau)
    np.testing.assert_allclose(seen, np.ones((n, n)), atol=1e-12)


def test_relay_traffic_is_one_packed_message_per_tree_link():
    n, d = 6, 5
    comm = SimComm(n)
    relay = RelaySum(comm, chain(n))
    for _ in range(4):
        relay.mix(torch.zeros(n, d, dtype=torch.float64))
    traffic = comm.traffic
    np.testing.assert_array_equal(traffic.messages, 4 * np.array([1, 2, 2, 2, 2, 1]))
    np.testing.assert_allclose(traffic.bytes, traffic.messages * (d + 1) * 8)  # values + count


# ------------------------------------------------------------------ RelaySGD vs dense
def _dense_relaysgd(problem, tree, lr, steps, fill):
    """Re-derivation from the delays: x_i <- (1/n) [sum over arrived k of
    half_k^{t - tau_ik} + (n - #arrived) * fill_i], half^t = x^t - lr g^t."""
    n = problem.n
    tau = torch.as_tensor(_delays(tree))
    oracle = problem.on(SimComm(n))
    x = oracle.x0()
    x_init = x[0].clone()
    halves = []
    for t in range(steps):
        half = x - lr * oracle.grad(x)
        halves.append(half)
        new = torch.empty_like(x)
        for i in range(n):
            arrived = [k for k in range(n) if tau[i, k] <= t]
            total = sum(halves[t - int(tau[i, k])][k] for k in arrived)
            missing = n - len(arrived)
            other = x_init if fill == "initial" else half[i]
            new[i] = (total + missing * other) / n
        x = new
    return x


@pytest.mark.parametrize("fill", ["own", "initial"])
@pytest.mark.parametrize("name", ["chain9", "bfs_tree"])
def test_relaysgd_matches_the_delayed_average_rederived_here(fill, name):
    tree = TREES[name]()
    problem = Quadratics(tree.n, zeta2=2.0, sigma=0.3, seed=5)
    lr, steps = 0.2, int(_delays(tree).max()) + 6  # past the point where counts are full
    alg = RelaySGD(SimComm(tree.n), problem, tree, lr=lr, fill=fill)
    for _ in range(steps):
        alg.step()
    expected = _dense_relaysgd(problem, tree, lr, steps, fill)
    torch.testing.assert_close(alg.x, expected, rtol=0, atol=1e-12)


def test_relaysgd_grad_matches_the_delayed_sum_of_updates():
    tree = binary_tree(10)
    problem = Quadratics(10, zeta2=1.0, sigma=0.2, seed=6)
    lr, steps = 0.1, 12
    alg = RelaySGDGrad(SimComm(10), problem, tree, lr=lr)
    for _ in range(steps):
        alg.step()
    tau = _delays(tree)
    oracle = problem.on(SimComm(10))
    x, updates = oracle.x0(), []
    for t in range(steps):
        updates.append(-lr * oracle.grad(x))
        x = x + torch.stack([
            sum(updates[t - tau[i, k]][k] for k in range(10) if tau[i, k] <= t) / 10
            for i in range(10)
        ])
    torch.testing.assert_close(alg.x, x, rtol=0, atol=1e-12)


def test_relaysgd_on_double_binary_trees_runs_each_half_on_its_tree():
    pair = double_binary_trees(8)
    problem = Quadratics(8, d=6, zeta2=1.0, seed=2)
    alg = RelaySGD(SimComm(8), problem, pair, lr=0.2, fill="own")
    for _ in range(10):
        alg.step()
    for half, tree in ((slice(0, None, 2), pair.first), (slice(1, None, 2), pair.second)):
        sub = _Sliced(problem, half)
        torch.testing.assert_close(alg.x[:, half], _dense_relaysgd(sub, tree, 0.2, 10, "own"),
                                   rtol=0, atol=1e-12)


class _Sliced(Quadratics):
    """The same separable quadratic restricted to some coordinates."""

    def __init__(self, problem, cols):
        Problem.__init__(self, problem.n, problem.a[:, cols].shape[1], seed=problem.seed)
        self.a, self.c = problem.a[:, cols], problem.c[:, cols]


# ------------------------------------------------------------------ theory: heterogeneity
def _plateau(alg, steps=1500, tail=300):
    alg.run(steps, log_every=10, progress=False)
    return float(np.mean(alg.history["suboptimality"][-tail // 10:]))


def test_dgd_plateau_grows_with_heterogeneity_relaysgd_does_not():
    """The paper's random quadratics (d = 10, mu = 0.5, L = 1), same lr and steps: DGD on a
    ring stalls at a bias ~ zeta^2, RelaySGD on a chain only at the noise floor."""
    n, lr = 16, 0.1
    dgd, relay = {}, {}
    for zeta2 in (0.1, 10.0):
        def problem(zeta2=zeta2):
            return RandomQuadratics(n, d=10, heterogeneity=zeta2, sigma=0.05, mu=0.5, seed=3)

        dgd[zeta2] = _plateau(DGD(SimComm(n), problem(), ring(n), lr=lr))
        relay[zeta2] = _plateau(RelaySGD(SimComm(n), problem(), chain(n), lr=lr))
    assert dgd[10.0] > 30 * dgd[0.1], dgd  # DGD's bias ~ zeta^2 (x100 here) on top of noise
    assert 0.5 < relay[10.0] / relay[0.1] < 2, relay  # noise only
    assert relay[10.0] < dgd[10.0] / 100, (relay, dgd)


def test_relaysgd_converges_exactly_without_noise_whatever_the_heterogeneity():
    problem = Quadratics(12, zeta2=10.0, seed=8)
    alg = RelaySGD(SimComm(12), problem, binary_tree(12), lr=0.2)
    alg.run(800, log_every=100, progress=False)
    assert alg.history.last["suboptimality"] < 1e-12  # f(x) - f* cancels below that
    torch.testing.assert_close(alg.x, problem.x_star.expand(12, -1), rtol=0, atol=1e-10)


# ------------------------------------------------------------------ lr correction factor
PAPER_FACTORS = {  # relaysgd.md section 1.3: compute_lr_correction(., relaysum_model)
    ("chain", 2): 1.0, ("chain", 5): 1.7999, ("chain", 10): 3.3994, ("chain", 16): 5.3741,
    ("chain", 20): 6.7024, ("chain", 32): 10.6773,
    ("binary_tree", 2): 1.0, ("binary_tree", 5): 1.6400, ("binary_tree", 10): 2.5202,
    ("binary_tree", 16): 3.3199, ("binary_tree", 20): 3.7751, ("binary_tree", 32): 4.7839,
}


@pytest.mark.parametrize("key", sorted(PAPER_FACTORS))
def test_lr_correction_reproduces_the_paper_values(key):
    family, n = key
    tree = chain(n) if family == "chain" else binary_tree(n)
    factor = lr_correction(tree)
    assert factor == pytest.approx(PAPER_FACTORS[key], rel=2e-3)
    assert factor == pytest.approx(1 + _delays(tree).mean(), rel=1e-12)  # 1 + mean delay


@pytest.mark.parametrize("tree", [chain(10), binary_tree(16), double_binary_trees(12), star(6)],
                         ids=["chain10", "tree16", "double12", "star6"])
def test_lr_correction_is_where_the_unit_impulse_settles(tree):
    response = impulse_response(tree, 1500)
    assert 1 / response[-1] == pytest.approx(lr_correction(tree), rel=1e-9)


# ------------------------------------------------------------------ parallel SGD
def test_parallel_sgd_applies_the_mean_gradient_everywhere():
    n = 5
    problem = Quadratics(n, sigma=0.4, seed=1)
    alg = ParallelSGD(SimComm(n), problem, lr=0.3)
    oracle = problem.on(SimComm(n))
    x = oracle.x0()
    for _ in range(7):
        alg.step()
        x = x - 0.3 * oracle.grad(x).mean(0)
    torch.testing.assert_close(alg.x, x, rtol=0, atol=1e-14)
    assert float((alg.x - alg.x[0]).abs().max()) == 0.0


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("topo, what", [
    (ring(6), "cycle"), (grid(6), "cycle"), (one_peer_exponential(6), "dynamic"),
    (Topology.from_matrix(np.kron(np.eye(2), np.full((3, 3), 1 / 3)), allow_disconnected=True),
     "not connected"),
    (Topology.from_matrix(np.array([[1, 0, 0], [0.5, 0.5, 0], [0, 0.5, 0.5]]),
                          allow_disconnected=True), "one-way"),
    ("chain", "spanning tree"),
], ids=["ring", "grid", "dynamic", "disconnected", "directed", "string"])
def test_relay_on_a_non_tree_says_what_to_use(topo, what):
    problem = Quadratics(6 if not hasattr(topo, "n") else topo.n)
    with pytest.raises(TopologyError, match=what) as err:
        RelaySGD(SimComm(problem.n), problem, topo, lr=0.1)
    assert "spanning_tree(graph)" in str(err.value)


def test_relay_bad_inputs():
    problem = Quadratics(5)
    with pytest.raises(TopologyError, match="n=6"):
        RelaySGD(SimComm(5), problem, chain(6), lr=0.1)
    with pytest.raises(ValueError, match="fill must be"):
        RelaySGD(SimComm(5), problem, chain(5), lr=0.1, fill="zero")
    with pytest.raises(ValueError, match="step size"):
        RelaySGDGrad(SimComm(5), problem, chain(5), lr=0)
    with pytest.raises(ValueError, match="step size"):
        ParallelSGD(SimComm(5), problem, lr=-1)
    with pytest.raises(ValueError, match="n=5"):
        RelaySGD(SimComm(4), problem, chain(4), lr=0.1)


# ------------------------------------------------------------------ same iterates under MPI
@pytest.mark.mpi
@needs_mpi
def test_same_iterates_under_mpiexec_4_as_under_simcomm():
    """Relay (every tree kind, both fills, Grad), parallel SGD and the Local SGD family."""
    out = run_mpi("algorithms_relay_checks.py", 4, "--section", "algorithms", timeout=150)
    lines = re.findall(r"RELAY-OK rank (\d) of 4: (\d+) checks, (\d+) runs", out)
    assert sorted(int(r) for r, _, _ in lines) == [0, 1, 2, 3], out[-3000:]
    assert all(int(runs) >= 29 for _, _, runs in lines)
