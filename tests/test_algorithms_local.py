"""The Local SGD family (Local SGD, BMUF/SlowMo, EASGD, Overlap-Local-SGD, CoCoD-SGD):
equalities theory promises, dense re-derivations written here from the reference rules,
convergence, the overlap of the allreduce with the local steps, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from declearn.algorithms import EASGD, CoCoDSGD, LocalSGD, OverlapLocalSGD, ParallelSGD
from declearn.algorithms.local_sgd import (
    BlockMomentum,
    ElasticAveraging,
    LocalSteps,
    ModelAveraging,
)
from declearn.comm import SimComm
from declearn.comm.base import Pending
from declearn.problems.base import Problem


class Quadratics(Problem):
    """``f_i(x) = 1/2 sum_j a_ij (x_j - c_ij)^2``; ``spread`` sets how far apart the c_i are
    (0: one common minimiser, different curvatures)."""

    name = "quadratics"

    def __init__(self, n, d=5, *, spread=1.0, sigma=0.0, seed=0):
        super().__init__(n, (d,), sigma=sigma, seed=seed)
        gen = torch.Generator().manual_seed(seed)
        self.a = 0.5 + 0.5 * torch.rand(n, d, generator=gen, dtype=torch.float64)
        self.c = torch.randn(d, generator=gen, dtype=torch.float64) + spread * torch.randn(
            n, d, generator=gen, dtype=torch.float64)
        self.x_star = (self.a * self.c).sum(0) / self.a.sum(0)
        self.f_star = float(self._loss(self.x_star.expand(n, d), self.all_nodes).mean())

    def initial_point(self):
        return torch.full(self.shape, 3.0, dtype=torch.float64)

    def _loss(self, x, nodes):
        return 0.5 * (self.a[nodes] * (x - self.c[nodes]) ** 2).sum(-1)

    def _grad(self, x, nodes):
        return self.a[nodes] * (x - self.c[nodes])


def _run(alg, steps):
    for _ in range(steps):
        alg.step()
    return alg.x


# ------------------------------------------------------------------ equalities
def test_local_sgd_with_tau_1_is_parallel_sgd_iterate_for_iterate():
    n = 6
    problem = Quadratics(n, sigma=0.5, seed=2)
    local = LocalSGD(SimComm(n), problem, lr=0.2, tau=1)
    parallel = ParallelSGD(SimComm(n), problem, lr=0.2)
    for _ in range(30):
        local.step()
        parallel.step()
        torch.testing.assert_close(local.x, parallel.x, rtol=0, atol=1e-13)


def test_block_momentum_with_gmf_0_is_plain_averaging():
    n, tau = 5, 3
    problem = Quadratics(n, sigma=0.3, seed=4)
    plain = LocalSteps(c := SimComm(n), problem, ModelAveraging(c, tau), lr=0.1)
    bmuf = LocalSteps(c := SimComm(n), problem, BlockMomentum(c, tau, 0.0), lr=0.1)
    for _ in range(20):
        plain.step()
        bmuf.step()
    torch.testing.assert_close(plain.x, bmuf.x, rtol=0, atol=1e-13)
    assert isinstance(LocalSGD(SimComm(n), problem, lr=0.1, tau=tau).rule, ModelAveraging)


# ------------------------------------------------------------------ dense re-derivations
def _dense(problem, method, *, lr, tau, steps, alpha=None, gmf=0.0):
    """Each rule as the Overlap_Local_SGD reference states it (algorithms.md A.2-A.5),
    on the stacked (n, d) models, syncing after local steps tau, 2 tau, ..."""
    n = problem.n
    oracle = problem.on(SimComm(n))
    x = oracle.x0()
    z = x[0].clone()  # the anchor: everyone's copy of the starting model
    u = torch.zeros_like(x)
    s = x.clone()  # CoCoD's snapshots
    in_flight = None  # what the allreduce launched at the previous sync will return
    for t in range(1, steps + 1):
        x = x - lr * oracle.grad(x)
        if t % tau:
            continue
        if method == "local_sgd" and gmf == 0:
            x = x.mean(0).expand_as(x).clone()
        elif method == "local_sgd":
            u = gmf * u + (z - x) / lr
            z = (z - lr * u).mean(0)
            x = z.expand_as(x).clone()
        elif method == "easgd":
            if in_flight is not None:
                z = in_flight
            x = (1 - alpha) * x + alpha * z  # then the reference's contribution formula:
            beta, gamma = 1 / n - alpha - alpha ** 2 / (1 - alpha), alpha / (1 - alpha)
            in_flight = (beta * z + gamma * x).sum(0)
        elif method == "overlap":
            if in_flight is not None:
                z = in_flight
            x = (1 - alpha) * x + alpha * z
            if gmf == 0:
                in_flight = x.mean(0)
            else:
                u = gmf * u + (z - x) / lr
                in_flight = (z - lr * u).mean(0)
        elif method == "cocod":
            if in_flight is not None:
                z = in_flight
            x = z + (x - s)
            s = x
            in_flight = x.mean(0)
    return x


CASES = {
    "local_sgd": (lambda c, p: LocalSGD(c, p, lr=0.15, tau=3), dict(method="local_sgd")),
    "bmuf": (lambda c, p: LocalSGD(c, p, lr=0.15, tau=3, gmf=0.6),
             dict(method="local_sgd", gmf=0.6)),
    "easgd": (lambda c, p: EASGD(c, p, lr=0.15, tau=3, alpha=0.9 / 6),
              dict(method="easgd", alpha=0.9 / 6)),
    "overlap": (lambda c, p: OverlapLocalSGD(c, p, lr=0.15, tau=3, alpha=0.6),
                dict(method="overlap", alpha=0.6)),
    "overlap_gmf": (lambda c, p: OverlapLocalSGD(c, p, lr=0.15, tau=3, alpha=0.6, gmf=0.7),
                    dict(method="overlap", alpha=0.6, gmf=0.7)),
    "cocod": (lambda c, p: CoCoDSGD(c, p, lr=0.15, tau=3), dict(method="cocod")),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_iterates_match_the_reference_rule_rederived_here(name):
    build, spec = CASES[name]
    problem = Quadratics(6, sigma=0.3, seed=7)
    alg = build(SimComm(6), problem)
    steps = 3 * 7 + 2  # seven syncs, and two local steps past the last
    _run(alg, steps)
    expected = _dense(problem, lr=0.15, tau=3, steps=steps, **spec)
    torch.testing.assert_close(alg.x, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_variant_converges_on_a_strongly_convex_problem(name):
    build, _ = CASES[name]
    problem = Quadratics(6, spread=0.0, seed=3)  # a common minimiser: no client drift
    alg = build(SimComm(6), problem)
    alg.run(900, log_every=300, progress=False)
    h = alg.history
    assert h["suboptimality"][0] > 1.0
    assert h.last["suboptimality"] < 1e-12, (name, h["suboptimality"])
    assert h.last["consensus_error"] < 1e-20


def test_local_sgd_drift_grows_with_the_period_on_heterogeneous_data():
    """Constant-step Local SGD stalls at a client-drift error that grows with tau."""
    problem = Quadratics(8, spread=1.0, seed=5)
    plateaus = []
    for tau in (1, 4, 16):
        alg = LocalSGD(SimComm(8), problem, lr=0.05, tau=tau)
        alg.run(16 * 60, log_every=16, progress=False)
        plateaus.append(alg.history.last["suboptimality"])
    assert plateaus[0] < 1e-20  # tau = 1 is parallel SGD: exact
    assert 1e-8 < plateaus[1] < plateaus[2], plateaus


def test_the_first_synchronisation_is_after_tau_steps_and_counts_traffic():
    n, tau = 4, 5
    comm = SimComm(n)
    alg = LocalSGD(comm, Quadratics(n), lr=0.1, tau=tau)
    _run(alg, tau - 1)
    assert "allreduce" not in comm.traffic.by_op and alg.history is not None
    assert float(alg.x.std(0).max()) > 1e-3  # still apart
    alg.step()
    assert float(alg.x.std(0).max()) == 0.0  # averaged after exactly tau steps
    assert comm.traffic.by_op["allreduce"]["calls"] == 1
    np.testing.assert_array_equal(comm.traffic.messages, 2 * (n - 1))


# ------------------------------------------------------------------ overlap
class _RecordingComm(SimComm):
    """SimComm whose iallreduce remembers when each allreduce is started and awaited."""

    def __init__(self, n):
        super().__init__(n)
        self.clock = 0
        self.log = []

    def iallreduce(self, x, op="mean", *, timeout=None):
        comm, value, entry = self, self.allreduce(x, op), {"start": self.clock, "wait": None}
        self.log.append(entry)

        class _Late(Pending):
            def wait(self):
                entry["wait"] = comm.clock
                return value

            def done(self):
                return True

        return _Late()


@pytest.mark.parametrize("name", ["easgd", "overlap", "overlap_gmf", "cocod"])
def test_overlap_variants_wait_for_their_allreduce_tau_steps_later(name):
    build, _ = CASES[name]
    comm = _RecordingComm(6)
    alg = build(comm, Quadratics(6))
    for _ in range(3 * 4):
        comm.clock = alg.k + 1  # the local step being taken
        alg.step()
    assert [e["start"] for e in comm.log] == [3, 6, 9, 12]
    assert [e["wait"] for e in comm.log] == [6, 9, 12, None]  # one period of local work later


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("tau", [0, -2, 1.5, True, "3", None])
def test_tau_must_be_a_positive_integer(tau):
    with pytest.raises(ValueError, match="tau"):
        LocalSGD(SimComm(3), Quadratics(3), lr=0.1, tau=tau)
    with pytest.raises(ValueError, match="tau"):
        CoCoDSGD(SimComm(3), Quadratics(3), lr=0.1, tau=tau)


@pytest.mark.parametrize("alpha", [0, 1, -0.1, 1.5, float("nan"), "0.5"])
def test_alpha_must_lie_strictly_between_0_and_1(alpha):
    with pytest.raises(ValueError, match="alpha"):
        OverlapLocalSGD(SimComm(3), Quadratics(3), lr=0.1, tau=2, alpha=alpha)
    with pytest.raises(ValueError, match="alpha"):
        EASGD(SimComm(3), Quadratics(3), lr=0.1, tau=2, alpha=alpha)


@pytest.mark.parametrize("gmf", [1, 1.2, -0.1, math.inf])
def test_gmf_must_lie_in_0_1(gmf):
    with pytest.raises(ValueError, match="gmf"):
        LocalSGD(SimComm(3), Quadratics(3), lr=0.1, tau=2, gmf=gmf)
    with pytest.raises(ValueError, match="gmf"):
        OverlapLocalSGD(SimComm(3), Quadratics(3), lr=0.1, tau=2, alpha=0.5, gmf=gmf)


def test_easgd_refuses_a_moving_rate_that_makes_the_centre_swing():
    with pytest.raises(ValueError, match=r"alpha < 2 / \(n \+ 1\)"):
        EASGD(SimComm(8), Quadratics(8), lr=0.1, tau=2, alpha=0.25)
    # just inside the bound it is stable, and just outside the swing grows: the bound is real
    for alpha, grows in ((1.9 / 9, False), (2.1 / 9, True)):
        problem = Quadratics(8, spread=0.0, seed=1)
        rule = ElasticAveraging(c := SimComm(8), 2, 0.1)
        rule.alpha = alpha  # past the constructor's check
        alg = LocalSteps(c, problem, rule, lr=0.05)
        alg.run(400, log_every=50, progress=False, divergence=1e30)
        final = alg.history.last["consensus_error"] + alg.history.last["suboptimality"]
        assert (final > 1e3) == grows, (alpha, final)


def test_bad_step_size_and_problem_size():
    with pytest.raises(ValueError, match="step size"):
        LocalSGD(SimComm(3), Quadratics(3), lr=0, tau=2)
    with pytest.raises(ValueError, match="n=3"):
        LocalSGD(SimComm(4), Quadratics(3), lr=0.1, tau=2)
