"""Gossip-PGA (declearn.algorithms.GossipPGA and declearn.optim.GossipPGA).

Checked against: parallel SGD (H = 1) and DSGD (H longer than the run), which it must equal on
the same problem, seeds and noise; a dense numpy re-run of the documented update (W(k) @ X
after each local step, the mean of the rows after every H-th), for static, dynamic and random
topologies; the theory it rests on (with a ring, its consensus error stays below DSGD's at the
global averages and right after them); the traffic it sends; a resumed optimizer equal bit for
bit to the uninterrupted one; bad input; and a real ``mpiexec -n 4`` against SimComm
(tests/mpi/pga_checks.py).
"""

from __future__ import annotations

import importlib.util
import io
import re

import numpy as np
import pytest
import torch
from test_optim import LeastSquares as TinyLeastSquares
from test_optim import _stacked_params

import declearn.algorithms as A
import declearn.optim as O
from declearn.comm import SimComm
from declearn.errors import TopologyError
from declearn.problems import LeastSquares
from declearn.topology import (
    apply_weights,
    exponential,
    od_equidyn,
    one_peer_exponential,
    ring,
)

from mpi_helpers import MPI_SCRIPTS, needs_mpi, run_mpi

_spec = importlib.util.spec_from_file_location(
    "optim_checkpoint_checks", MPI_SCRIPTS / "optim_checkpoint_checks.py")
CKPT = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(CKPT)  # its scenario only: make_net, node_data, train


def _problem(n, sigma=0.5, seed=3, **kw):
    return LeastSquares(n, d=4, m=12, sigma=sigma, seed=seed, **kw)


def _run(alg, steps):
    for _ in range(steps):
        alg.step()
    return alg.x


def _consensus_error(x: torch.Tensor) -> float:
    """``(1/n) sum_i ||x_i - xbar||^2`` in numpy (rows = nodes)."""
    X = x.numpy()
    return float(((X - X.mean(0)) ** 2).sum(-1).mean())


# ----------------------------------------------------------------- the two limits
def test_period_1_is_parallel_sgd_iterate_for_iterate():
    n = 8
    prob = _problem(n, sigma=0.7)
    pga = A.GossipPGA(SimComm(n), prob, ring(n), lr=0.05, period=1)
    psgd = A.ParallelSGD(SimComm(n), prob, lr=0.05)
    for k in range(40):
        pga.step()
        psgd.step()
        # mean_j(x - lr g_j) and x - lr mean_j g_j: the same number, summed in another order
        torch.testing.assert_close(pga.x, psgd.x, rtol=0, atol=1e-13, msg=f"k={k + 1}")
    assert float((psgd.x - psgd.x[0]).abs().max()) == 0  # the oracle moved as one model
    assert float((psgd.x - prob.on(SimComm(n)).x0()).abs().max()) > 1e-2  # and it moved


@pytest.mark.parametrize("topo", [ring, one_peer_exponential], ids=["ring", "one_peer_exp"])
def test_a_period_longer_than_the_run_is_dsgd_bit_for_bit(topo):
    n, steps = 8, 25
    prob = _problem(n, sigma=0.5, heterogeneity=2.0)
    pga = A.GossipPGA(c1 := SimComm(n), prob, topo(n), lr=0.05, period=steps + 1)
    dsgd = A.DGD(c2 := SimComm(n), prob, topo(n), lr=0.05, variant="atc")
    for _ in range(steps):
        pga.step()
        dsgd.step()
        assert torch.equal(pga.x, dsgd.x)
    assert _consensus_error(pga.x) > 1e-6  # the nodes differ: the equality says something
    ops1, ops2 = c1.traffic.by_op, c2.traffic.by_op
    assert set(ops1) == set(ops2) == {"neighbor_allreduce"}  # no global average, no allreduce
    np.testing.assert_array_equal(ops1["neighbor_allreduce"]["messages"],
                                  ops2["neighbor_allreduce"]["messages"])
    pga.step()  # iteration 25 = period - 1: the first global average
    assert _consensus_error(pga.x) < 1e-28


# ----------------------------------------------------------------- dense numpy re-run
def _dense_run(prob, topo, lr, period, steps):
    """The documented update in numpy: ``G = H_i x_i - c_i + noise``, ``half = X - lr G``,
    ``X = mean(half)`` when ``(k + 1) % period == 0`` else ``W(k) @ half``. H_i, c_i come from
    the problem's raw data; the noise of call k from an oracle of its own."""
    A_, b = prob.A.numpy(), prob.b.numpy()
    Hs = np.einsum("nmi,nmj->nij", A_, A_) / prob.m
    cs = np.einsum("nmi,nm->ni", A_, b) / prob.m
    noise = prob.on(SimComm(prob.n))
    X = np.tile(prob.initial_point().numpy(), (prob.n, 1))
    out = []
    for k in range(steps):
        G = np.einsum("nij,nj->ni", Hs, X) - cs
        if prob.sigma > 0:
            G = G + noise.noise().numpy()
        half = X - (lr(k) if callable(lr) else lr) * G
        if (k + 1) % period == 0:
            X = np.tile(half.mean(0), (prob.n, 1))
        else:
            X = np.asarray(topo.at(k).W, dtype=float) @ half
        out.append(X)
    return out


@pytest.mark.parametrize("make_topo,period,lr", [
    (lambda n: ring(n), 3, 0.05),
    (lambda n: exponential(n), 4, 0.08),
    (lambda n: one_peer_exponential(n), 2, 0.05),
    (lambda n: one_peer_exponential(n), 5, A.diminishing(0.1)),
    (lambda n: od_equidyn(n, seed=3), 4, 0.05),
], ids=["ring-H3", "exp-H4", "one_peer-H2", "one_peer-H5-diminishing", "od_equidyn-H4"])
def test_iterates_equal_a_dense_numpy_rerun_of_the_documented_update(make_topo, period, lr):
    n, steps = 8, 23
    prob = _problem(n, sigma=0.4, heterogeneity=1.5)
    topo = make_topo(n)
    alg = A.GossipPGA(SimComm(n), prob, topo, lr=lr, period=period)
    want = _dense_run(prob, make_topo(n), lr, period, steps)
    for k in range(steps):
        alg.step()
        np.testing.assert_allclose(alg.x.numpy(), want[k], rtol=1e-10, atol=1e-12,
                                   err_msg=f"k={k + 1}")
        agree = _consensus_error(alg.x) < 1e-28
        assert agree == ((k + 1) % period == 0), f"k={k + 1}: global average at the wrong step"


def test_traffic_per_period_is_h_minus_1_gossip_steps_and_one_allreduce():
    n, period, periods = 8, 4, 5
    comm = SimComm(n)
    alg = A.GossipPGA(comm, _problem(n), ring(n), lr=0.05, period=period)
    alg.run(period * periods, progress=False)
    ops = comm.traffic.by_op
    assert ops["neighbor_allreduce"]["calls"] == (period - 1) * periods
    assert ops["allreduce"]["calls"] == periods
    ref = SimComm(n)  # the same collectives, counted by a fresh communicator
    for _ in range(periods):
        ref.allreduce(torch.zeros(n, 4, dtype=torch.float64))
    np.testing.assert_array_equal(ops["allreduce"]["messages"],
                                  ref.traffic.by_op["allreduce"]["messages"])
    assert alg.history.params["period"] == period
    assert alg.history.last["consensus_error"] < 1e-28  # the run ends on a global average


# ----------------------------------------------------------------- theory
def test_global_averages_keep_the_consensus_error_below_dsgds_on_a_ring():
    """Strongly convex least squares with gradient noise, heterogeneous data, a ring of 16
    (1/(1 - rho) ~ 20 > H = 4), the same seeds: at every global average (error 0) and on
    the step right after it (in fact at every step), Gossip-PGA's nodes are closer together
    than DSGD's, by far."""
    n, period, steps = 16, 4, 400
    prob = _problem(n, sigma=1.0, heterogeneity=1.0, seed=5)
    topo = ring(n)
    assert 1 / (1 - topo.rho) > 4 * period
    lr = 0.2 / prob.smoothness
    pga = A.GossipPGA(SimComm(n), prob, topo, lr=lr, period=period)
    dsgd = A.DGD(SimComm(n), prob, topo, lr=lr, variant="atc")
    at_avg, after_avg, ratios = [], [], []
    for k in range(steps):
        pga.step()
        dsgd.step()
        e_pga, e_dsgd = _consensus_error(pga.x), _consensus_error(dsgd.x)
        if k < 2 * period:
            continue  # DSGD's nodes start together: give its error time to build up
        assert e_pga < e_dsgd, f"k={k + 1}"  # in fact at every step
        if (k + 1) % period == 0:
            at_avg.append(e_pga < e_dsgd and e_pga < 1e-28)
        elif k % period == 0:
            after_avg.append(e_pga < e_dsgd)
            ratios.append(e_pga / e_dsgd)
    assert all(at_avg) and len(at_avg) == steps // period - 2
    assert all(after_avg) and len(after_avg) == steps // period - 2
    assert float(np.mean(ratios)) < 0.25  # not a near tie (0.05 with these seeds)


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize("period", [0, -3, 2.5, True, "4", None, float("nan")])
def test_period_must_be_an_integer_at_least_1(period):
    n = 4
    with pytest.raises(ValueError, match=r"period \(H.*integer >= 1.*H = 1"):
        A.GossipPGA(SimComm(n), _problem(n), ring(n), lr=0.1, period=period)
    params = _stacked_params(TinyLeastSquares(n))
    with pytest.raises(ValueError, match=r"period \(H.*integer >= 1"):
        O.GossipPGA(params, SimComm(n), ring(n), lr=0.1, period=period)


def test_numpy_integers_are_periods():
    n = 4
    alg = A.GossipPGA(SimComm(n), _problem(n), ring(n), lr=0.1, period=np.int64(3))
    assert alg.period == 3 and type(alg.period) is int


def test_w_must_be_doubly_stochastic_and_a_topology():
    n = 6
    edges = [(j, (j + 1) % n) for j in range(n)] + [(0, 2), (0, 3)]
    rows_only = apply_weights(n, edges, rule="uniform", directed=True)
    assert rows_only.is_row_stochastic and not rows_only.is_column_stochastic
    with pytest.raises(TopologyError, match="gossip_pga needs a doubly stochastic W"):
        A.GossipPGA(SimComm(n), _problem(n), rows_only, lr=0.1, period=2)
    params = _stacked_params(TinyLeastSquares(n))
    with pytest.raises(TopologyError, match="GossipPGA needs a doubly stochastic W"):
        O.GossipPGA(params, SimComm(n), rows_only, lr=0.1, period=2)
    with pytest.raises(TopologyError, match="Expected a declearn Topology"):
        A.GossipPGA(SimComm(n), _problem(n), np.eye(n), lr=0.1, period=2)
    with pytest.raises(TopologyError, match="Expected a declearn Topology"):
        O.GossipPGA(params, SimComm(n), np.eye(n), lr=0.1, period=2)
    with pytest.raises(ValueError, match="tau"):
        O.GossipPGA(params, SimComm(n), ring(n), lr=0.1, period=2, tau=0)
    with pytest.raises(TypeError, match="period"):
        A.GossipPGA(SimComm(n), _problem(n), ring(n), lr=0.1)  # H has no default


# ----------------------------------------------------------------- the optimizer
def _train(opt, params, problem, steps):
    for _ in range(steps):
        opt.zero_grad()
        problem._loss(torch.cat(params, dim=1), problem.all_nodes).sum().backward()
        opt.step()
        opt.average()
    return torch.cat(params, 1).detach()


@pytest.mark.parametrize("topo,period", [(ring, 3), (one_peer_exponential, 2), (exponential, 1)],
                         ids=["ring-H3", "one_peer-H2", "exp-H1"])
def test_the_optimizer_equals_the_algorithm(topo, period):
    n, steps = 8, 13
    problem = TinyLeastSquares(n, seed=4)
    alg = A.GossipPGA(SimComm(n), problem, topo(n), lr=0.1, period=period)
    _run(alg, steps)
    params = _stacked_params(problem)
    comm = SimComm(n)
    got = _train(O.GossipPGA(params, comm, topo(n), lr=0.1, period=period), params, problem,
                 steps)
    torch.testing.assert_close(got, alg.x, rtol=0, atol=1e-12)
    assert comm.traffic.by_op["allreduce"]["calls"] == steps // period


def test_average_is_w_x_then_the_mean_every_period_th_sync_with_tau():
    n, tau, period = 6, 2, 3
    topo = exponential(n)
    x = torch.nn.Parameter(torch.zeros(n, 5, dtype=torch.float64))
    opt = O.GossipPGA([x], SimComm(n), topo, lr=0.1, period=period, tau=tau)
    with torch.no_grad():
        x.copy_(torch.randn(n, 5, generator=torch.Generator().manual_seed(1),
                            dtype=torch.float64))
    X = x.detach().numpy().copy()
    W = np.asarray(topo.W, dtype=float)
    for call in range(1, 4 * tau * period + 1):
        opt.average()
        if call % tau == 0:
            r = call // tau - 1  # the r-th synchronisation
            X = np.tile(X.mean(0), (n, 1)) if (r + 1) % period == 0 else W @ X
        np.testing.assert_allclose(x.detach().numpy(), X, rtol=1e-13, atol=1e-14,
                                   err_msg=f"call {call}")
    assert opt.rule.rounds == 4 * period and opt.rule.calls == 4 * tau * period


def _ckpt_build(comm, seed, period, tau, topo):
    model = O.StackedModel(CKPT.make_net(seed), comm.size)
    opt = O.GossipPGA(model.parameters(), comm, topo, lr=0.1, period=period, tau=tau,
                      momentum=0.9, weight_decay=1e-3)
    return model, opt, torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("period,tau,cut", [(3, 1, 5), (2, 2, 7), (4, 1, 3)])
def test_a_resumed_optimizer_equals_the_uninterrupted_one_bit_for_bit(period, tau, cut):
    n, steps = 4, 14
    topo = one_peer_exponential(n)  # period 2: the round is part of the state
    comm = SimComm(n, dtype=torch.float32)
    model, opt, noise = _ckpt_build(comm, 0, period, tau, topo)
    CKPT.train(model, opt, noise, comm, steps)
    ref = opt.x.clone()

    model, opt, noise = _ckpt_build(comm, 0, period, tau, topo)
    CKPT.train(model, opt, noise, comm, cut)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
                "noise": noise.get_state()}, buf)
    sync = opt.state_dict()["sync"]
    assert (sync["calls"], sync["rounds"], sync["z"]) == (cut, cut // tau, None)  # no anchor
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    model, opt, noise = _ckpt_build(comm, 1, period, tau, topo)  # another start: all comes back
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    noise.set_state(saved["noise"])
    CKPT.train(model, opt, noise, comm, steps - cut)
    assert torch.equal(opt.x, ref)
    assert float((ref[0] - ref[1]).abs().max()) > 1e-6  # nodes differ: the check has teeth


def test_a_state_from_another_period_is_refused():
    n = 4
    comm = SimComm(n, dtype=torch.float32)
    _, opt3, _ = _ckpt_build(comm, 0, 3, 1, ring(n))
    _, opt4, _ = _ckpt_build(comm, 0, 4, 1, ring(n))
    with pytest.raises(ValueError, match=r"'period': 3\}, here \{'tau': 1, 'period': 4\}"):
        opt4.load_state_dict(opt3.state_dict())
    dsgd = O.DecentralizedSGD(O.StackedModel(CKPT.make_net(0), n).parameters(), comm,
                              ring(n), lr=0.1)
    with pytest.raises(ValueError, match="DecentralizedSGD"):
        opt3.load_state_dict(dsgd.state_dict())


# ----------------------------------------------------------------- MPI
@pytest.mark.mpi
@needs_mpi
def test_same_iterates_under_mpiexec_and_simcomm():
    out = run_mpi("pga_checks.py", 4, timeout=180)
    lines = re.findall(r"PGA-OK rank (\d+) of 4: (\d+) checks, (\d+) runs", out)
    assert sorted(int(r) for r, _, _ in lines) == [0, 1, 2, 3], out[-3000:]
    assert all(int(runs) >= 8 and int(c) >= 5 * int(runs) for _, c, runs in lines), out
