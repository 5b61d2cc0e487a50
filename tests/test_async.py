"""Asynchrony and stragglers: DelayedComm, partial allreduce (eager-SGD), EagerSGD,
asynchronous pairwise gossip; under SimComm here, under a real mpiexec in
tests/mpi/async_checks.py (nonblocking allreduce, service threads, wall-clock stragglers).

Every check compares with something derived independently: schedules worked out by hand,
a per-node reference emulation written here, one-hot contributions that reveal which call
landed in which round, the exact second moment of randomized gossip, and wall-clock bounds
of sleeps."""

from __future__ import annotations

import math
import re
import threading
import time

import numpy as np
import pytest
import torch

from declearn.algorithms import (
    AsyncGossip,
    EagerSGD,
    LocalSGD,
    OverlapLocalSGD,
    ParallelSGD,
)
from declearn.comm import DelayedComm, SimComm, partial_allreduce
from declearn.comm.gossip import PairEvents, expected_gossip_matrix, gossip_neighbors
from declearn.errors import TopologyError
from declearn.problems import LeastSquares
from declearn.problems.base import FunctionProblem
from declearn.topology import Topology, grid, one_peer_exponential, ring, star

from mpi_helpers import needs_mpi, run_mpi


# ====================================================================== DelayedComm
def _local_steps(pending, tau, seconds):
    for _ in range(tau):
        time.sleep(seconds)
        pending.done()


@pytest.mark.parametrize("tau", [1, 5])
def test_delayed_iallreduce_hides_the_latency_behind_local_steps(tau):
    comm = DelayedComm(SimComm(4), latency=0.3)
    x = torch.arange(8, dtype=torch.float64).reshape(4, 2)
    t0 = time.monotonic()
    p = comm.iallreduce(x, "sum")
    started = time.monotonic() - t0
    _local_steps(p, tau, 0.1)
    y = p.wait()
    overlapped = time.monotonic() - t0
    t0 = time.monotonic()
    z = comm.allreduce(x, "sum")
    for _ in range(tau):
        time.sleep(0.1)
    serial = time.monotonic() - t0
    expect = max(0.3, 0.1 * tau)
    assert started < 0.05
    assert expect - 0.01 <= overlapped <= expect + 0.15, overlapped
    assert serial >= 0.3 + 0.1 * tau - 0.01, serial
    torch.testing.assert_close(y, x.sum(0).expand(4, 2), rtol=0, atol=0)
    torch.testing.assert_close(z, y, rtol=0, atol=0)


def test_delayed_done_only_after_the_delay_and_blocking_ops_take_latency_plus_bytes():
    inner = SimComm(3)
    comm = DelayedComm(inner, latency=0.05, bandwidth=2e6)
    x = torch.randn(3, 10_000, dtype=torch.float64)  # 80 kB per node: 0.04 s at 2 MB/s
    assert comm.delay(x) == pytest.approx(0.05 + 80_000 / 2e6)
    p = comm.iallreduce(x)
    assert not p.done()
    time.sleep(0.1)
    assert p.done()
    topo = ring(3)
    for op in (lambda c: c.allreduce(x), lambda c: c.broadcast(x, 2),
               lambda c: c.neighbor_allreduce(x, topo), lambda c: c.allgather(x)):
        t0 = time.monotonic()
        got = op(comm)
        assert time.monotonic() - t0 >= 0.09 - 1e-3
        torch.testing.assert_close(got, op(inner), rtol=0, atol=0)
    t0 = time.monotonic()
    comm.barrier()
    assert 0.049 <= time.monotonic() - t0 < 0.09  # no payload: latency only
    with comm.untracked():  # measurement: not delayed, not counted
        t0 = time.monotonic()
        comm.allreduce(x)
        assert time.monotonic() - t0 < 0.04
    assert comm.traffic is inner.traffic and comm.dtype == torch.float64
    assert comm.is_simulator and comm.size == 3


def test_delayed_comm_bad_input():
    with pytest.raises(TypeError, match="Communicator"):
        DelayedComm("not a comm")
    for bad in (-0.1, math.nan, math.inf, "1", True):
        with pytest.raises(ValueError, match="latency"):
            DelayedComm(SimComm(2), latency=bad)
    for bad in (0, -5, math.inf, "fast"):
        with pytest.raises(ValueError, match="bandwidth"):
            DelayedComm(SimComm(2), bandwidth=bad)


def test_overlap_local_sgd_hides_a_network_delay_that_local_sgd_pays():
    """tau = 4 local steps of 0.05 s per period, latency 0.2 s: Overlap-Local-SGD's
    allreduce runs during the next period (about 0.2 s per period), Local SGD waits for it
    (about 0.4 s per period)."""

    class Slow(LeastSquares):
        def _grad(self, x, nodes):
            time.sleep(0.05)
            return super()._grad(x, nodes)

    prob = Slow(4, 3, seed=1)
    walls = {}
    for name, build in (("local", lambda c: LocalSGD(c, prob, lr=0.05, tau=4)),
                        ("overlap", lambda c: OverlapLocalSGD(c, prob, lr=0.05, tau=4,
                                                              alpha=0.5))):
        alg = build(DelayedComm(SimComm(4), latency=0.2))
        t0 = time.monotonic()
        alg.run(12, log_every=12, progress=False)  # 3 periods; run() waits for the last one
        walls[name] = time.monotonic() - t0
        assert getattr(alg.rule, "pending", None) is None  # nothing left in flight
    assert walls["local"] >= 3 * (0.2 + 0.2) - 0.02, walls
    assert walls["overlap"] <= walls["local"] - 0.3, walls


def test_iallreduce_under_simcomm_equals_allreduce():
    comm = SimComm(5)
    x = torch.randn(5, 3, dtype=torch.float64)
    for op in ("sum", "mean"):
        p = comm.iallreduce(x, op)
        assert p.done()
        torch.testing.assert_close(p.wait(), comm.allreduce(x, op), rtol=0, atol=0)
    assert comm.progress() == 0


# ====================================================================== partial allreduce
def _one_hot(n, T, s):
    g = torch.zeros(n, n * T, dtype=torch.float64)
    g[torch.arange(n), torch.arange(n) * T + s] = 1.0
    return g


def _members(result_row, T):
    return sorted((int(i) // T, int(i) % T) for i in torch.nonzero(result_row).flatten())


# n = 3, S = 3, step 1 s; node 2 takes 1.5 s more at every step, node 1 0.5 s more at step 1.
LAGS = [[0, 0, 1.5], [0, 0.5, 1.5], [0, 0, 1.5], [0, 0, 1.5], [0, 0, 1.5], [0, 0, 1.5]]
# Worked out by hand from A_i(t) = R_i(t-1) + 1 + lag, R_i(t) = max(A_i(t), F(t)).
HAND = {
    "solo": dict(
        seed=0,
        fire=[1, 2, 7.5, 8.5, 9.5, 15, 15],
        initiators=[0, 0, None, 0, 0, None, None],
        rounds=[[(0, 0), (1, 0)], [(0, 1)],
                [(0, 2), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)],
                [(0, 3), (1, 3)], [(0, 4), (1, 4)],
                [(0, 5), (1, 5), (2, 3), (2, 4), (2, 5)], []],
    ),
    "majority": dict(  # seed 2 draws the initiators 2, 0, (sync), 2, 2, (sync)
        seed=2,
        fire=[2.5, 3.5, 7.5, 10, 12.5, 15, 15],
        initiators=[2, 0, None, 2, 2, None, None],
        rounds=[[(0, 0), (1, 0), (2, 0)], [(0, 1)],
                [(0, 2), (1, 1), (1, 2), (2, 1), (2, 2)],
                [(0, 3), (1, 3), (2, 3)], [(0, 4), (1, 4), (2, 4)],
                [(0, 5), (1, 5), (2, 5)], []],
    ),
}


@pytest.mark.parametrize("mode", ["solo", "majority"])
def test_sim_partial_rounds_match_the_hand_derived_schedule(mode):
    hand = HAND[mode]
    n, T = 3, len(LAGS)
    pa = partial_allreduce(SimComm(n), (n * T,), op="sum", mode=mode, staleness=3,
                           seed=hand["seed"], step_time=1.0)
    rounds = [_members(pa(_one_hot(n, T, s), lag=np.array(LAGS[s]))[0], T) for s in range(T)]
    rounds.append(_members(pa.flush()[0], T))
    assert rounds == hand["rounds"]
    assert [r.time for r in pa.rounds] == hand["fire"]
    assert [r.initiator for r in pa.rounds] == hand["initiators"]
    assert [r.synchronous for r in pa.rounds] == [False, False, True, False, False, True, True]
    assert pa.pending == 0


def _reference_rounds(n, S, mode, seed, step, lags):
    """The emulation's rules, one node and one call at a time (a plain re-derivation)."""
    R, last, pending, out = [0.0] * n, 0.0, [[] for _ in range(n)], []
    for t, lag in enumerate(lags):
        A = [R[i] + step + lag[i] for i in range(n)]
        for i in range(n):
            pending[i].append((A[i], t))
        if (t + 1) % S == 0:
            F = max(A)
        elif mode == "solo":
            F = min(A)
        else:
            F = A[int(np.random.default_rng([seed, t]).integers(n))]
        F = max(F, last)
        out.append(sorted((i, s) for i in range(n) for a, s in pending[i] if a <= F))
        pending = [[(a, s) for a, s in p if a > F] for p in pending]
        R, last = [max(a, F) for a in A], F
    return out


@pytest.mark.parametrize("mode", ["solo", "majority"])
def test_sim_partial_conserves_counts_once_and_bounds_staleness(mode):
    n, S, T = 6, 5, 48
    rng = np.random.default_rng(11)
    lags = rng.exponential(0.3, size=(T, n)) * (rng.random((T, n)) < 0.5)
    lags[:, 4] += 0.8  # a persistent straggler too
    pa = partial_allreduce(SimComm(n), (n * T,), op="sum", mode=mode, staleness=S, seed=5,
                           step_time=0.2)
    results = [pa(_one_hot(n, T, s), lag=lags[s]) for s in range(T)]
    results.append(pa.flush())
    R = torch.stack([r[0] for r in results])
    for r in results:  # every node gets the same result
        assert torch.equal(r, r[:1].expand_as(r))
    assert torch.equal(R.sum(0), torch.ones(n * T, dtype=torch.float64))  # once, none lost
    landed = R.reshape(T + 1, n, T)
    rounds = [[(i, s) for i, s in torch.nonzero(landed[t]).tolist()] for t in range(T)]
    assert rounds == _reference_rounds(n, S, mode, 5, 0.2, lags)
    late = [t - s for t in range(T) for _, s in rounds[t]]
    assert min(late) == 0 and 2 <= max(late) <= S - 1  # stale calls, never past the bound
    for t in range(S - 1, T, S):  # synchronous rounds hold every node's call t
        assert all((i, t) in rounds[t] for i in range(n))
    assert sum(len(r) < n or any(s != t for _, s in r) for t, r in enumerate(rounds)) > T // 3


def test_partial_with_equal_times_or_staleness_one_is_an_allreduce():
    n, T = 5, 12
    x = torch.randn(T, n, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    comm = SimComm(n)
    lags = np.random.default_rng(1).exponential(1.0, size=(T, n))
    for mode, staleness, lag in (("solo", 4, None), ("majority", 6, None),
                                 ("solo", 1, lags), ("majority", 1, lags)):
        pa = partial_allreduce(comm, (4,), mode=mode, staleness=staleness, step_time=0.5)
        for t in range(T):
            got = pa(x[t], lag=0.0 if lag is None else lag[t])
            torch.testing.assert_close(got, comm.allreduce(x[t]), rtol=1e-15, atol=1e-15)
        assert pa.pending == 0


def test_partial_allreduce_bad_input():
    comm = SimComm(3)
    with pytest.raises(ValueError, match="mode"):
        partial_allreduce(comm, (2,), mode="fastest")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="staleness"):
            partial_allreduce(comm, (2,), staleness=bad)
    with pytest.raises(ValueError, match="op"):
        partial_allreduce(comm, (2,), op="max")
    with pytest.raises(TypeError, match="dtype"):
        partial_allreduce(comm, (2,), dtype=torch.int64)
    with pytest.raises(ValueError, match="step_time"):
        partial_allreduce(comm, (2,), step_time=-1)
    pa = partial_allreduce(comm, (2,))
    with pytest.raises(ValueError, match=r"\(3, 2\)"):
        pa(torch.zeros(3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="lag"):
        pa(torch.zeros(3, 2, dtype=torch.float64), lag=-0.5)
    pa.close()
    with pytest.raises(RuntimeError, match="closed"):
        pa(torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="partial"):
        partial_allreduce(object(), (2,))


# ====================================================================== EagerSGD
def test_eager_sgd_without_stragglers_or_with_staleness_one_is_parallel_sgd():
    n = 6
    prob = LeastSquares(n, 5, sigma=0.3, seed=2)
    ref = ParallelSGD(SimComm(n), prob, lr=0.05)
    ref.run(30, progress=False)
    for kwargs in (dict(mode="solo", staleness=4), dict(mode="majority", staleness=3),
                   dict(mode="solo", staleness=1, straggler=(2, 0.3)),
                   dict(mode="majority", staleness=1, straggler=("random", 0.3))):
        alg = EagerSGD(SimComm(n), prob, lr=0.05, **kwargs)
        alg.run(30, progress=False)
        torch.testing.assert_close(alg.x, ref.x, rtol=0, atol=1e-12)
        for col in ("suboptimality", "messages", "bytes"):  # a round counts as an allreduce
            np.testing.assert_allclose(alg.history[col], ref.history[col], rtol=1e-10,
                                       atol=1e-14)


@pytest.mark.parametrize("mode", ["solo", "majority"])
def test_eager_sgd_applies_every_gradient_exactly_once(mode):
    """With stragglers, after flush(): x = x0 - lr / n * (sum of every gradient computed)."""
    n, d, T, lr = 5, 4, 40, 0.03
    gen = torch.Generator().manual_seed(3)
    A = torch.rand(n, d, generator=gen, dtype=torch.float64) + 0.5
    b = torch.randn(n, d, generator=gen, dtype=torch.float64)
    seen = []

    def grad(x):
        g = A * x - b
        seen.append(g.clone())
        return g

    x0 = torch.zeros(n, d, dtype=torch.float64)
    alg = EagerSGD(SimComm(n), FunctionProblem(grad), lr=lr, x0=x0, mode=mode, staleness=6,
                   straggler=("random", 0.5), seed=4)
    most = 0
    for _ in range(T):
        alg.step()
        most = max(most, alg.partial.pending)
    assert most >= n  # gradients did wait for later rounds
    alg.flush()
    assert alg.partial.pending == 0
    want = x0 - lr / n * torch.stack(seen).sum((0, 1))
    torch.testing.assert_close(alg.x, want, rtol=0, atol=1e-12)
    assert float(alg.x.std(0).max()) == 0.0  # every node applies the same rounds


def test_eager_sgd_simulated_wall_time_with_a_random_straggler():
    """Synchronous steps each wait for the 0.2 s straggler: T (0.01 + 0.2) simulated
    seconds; solo with staleness 8 spreads the stragglers and takes well under half."""
    n, T = 8, 48
    prob = LeastSquares(n, 5, sigma=0.3, seed=2)
    walls = {}
    for label, mode, S in (("sync", "solo", 1), ("solo", "solo", 8),
                           ("majority", "majority", 8)):
        alg = EagerSGD(SimComm(n), prob, lr=0.05, mode=mode, staleness=S,
                       straggler=("random", 0.2), step_time=0.01)
        h = alg.run(T, progress=False)
        walls[label] = h["wall_time"][-1]
        assert np.all(np.diff(h["wall_time"]) >= 0)
        assert h["suboptimality"][-1] < 0.2 * h["suboptimality"][0]  # it still converges
    assert walls["sync"] == pytest.approx(T * 0.21)
    assert walls["solo"] < 0.5 * walls["sync"] and walls["majority"] < 0.6 * walls["sync"]


def test_eager_sgd_bad_input():
    prob = LeastSquares(4, 3, seed=0)
    for bad in ((9, 0.1), (-1, 0.1), ("slow", 0.1), (1, -0.2), (1,), 3, (True, 0.1)):
        with pytest.raises(ValueError, match="straggler"):
            EagerSGD(SimComm(4), prob, lr=0.1, straggler=bad)
    with pytest.raises(ValueError, match="mode"):
        EagerSGD(SimComm(4), prob, lr=0.1, mode="all")
    with pytest.raises(ValueError, match="staleness"):
        EagerSGD(SimComm(4), prob, lr=0.1, staleness=0)
    with pytest.raises(ValueError, match="step size"):
        EagerSGD(SimComm(4), prob, lr=0.0)


# ====================================================================== gossip
def test_gossip_conserves_the_sum_and_reaches_the_mean():
    n = 16
    x0 = torch.randn(n, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    alg = AsyncGossip(SimComm(n), grid(n), x0, rate=2.0, seed=3)
    h = alg.run(60, log_points=12)
    torch.testing.assert_close(alg.x.sum(0), x0.sum(0), rtol=0, atol=1e-12)
    err = h["consensus_error"]
    assert err[-1] < 1e-8 * err[0]
    assert h["iteration"][-1] == 60 * n and np.all(np.diff(h["iteration"]) >= 0)
    assert np.all(np.diff(h["wall_time"]) > 0)
    assert h["wall_time"][-1] == pytest.approx(alg.time)
    assert h["wall_time"][-1] == pytest.approx(60 / 2.0, rel=0.1)  # n*ticks events at n*rate/s
    np.testing.assert_allclose(h["messages"][-1], 2 * 60)  # request + reply per exchange
    torch.testing.assert_close(alg.x.mean(0), x0.mean(0), rtol=0, atol=1e-12)


def test_gossip_mean_square_error_matches_the_exact_second_moment():
    """Average over independent seeds of ||x(k) - x_bar||^2 after k = 10 exchanges against
    E[W S W^T] iterated exactly over the pair distribution P_ij = 1/(n deg_i); and the
    exact value obeys Boyd's bound lambda_2(E[W])^k."""
    n, k, runs = 5, 10, 600
    topo = ring(n)
    x0 = torch.tensor([3.0, -1.0, 0.5, 2.0, -4.5], dtype=torch.float64)[:, None]
    centred = (x0 - x0.mean()).numpy()[:, 0]
    S = np.outer(centred, centred)
    pairs = [(i, j, 1 / (n * 2)) for i in range(n) for j in ((i - 1) % n, (i + 1) % n)]
    for _ in range(k):
        new = np.zeros_like(S)
        for i, j, p in pairs:
            W = np.eye(n)
            W[[i, i, j, j], [i, j, i, j]] = 0.5
            new += p * W @ S @ W.T
        S = new
    exact = np.trace(S) / n
    errors = []
    for seed in range(runs):
        x = x0.clone()
        engine = SimComm(n).pairwise_gossip(topo, x, rate=1.0, seed=seed)
        engine.run(ticks=k // n, log_points=0)
        errors.append(float((x - x.mean()).pow(2).sum() / n))
    errors = np.array(errors)
    assert abs(errors.mean() - exact) <= 4 * errors.std() / math.sqrt(runs) + 1e-12
    lam2 = np.sort(np.linalg.eigvalsh(expected_gossip_matrix(topo)))[-2]
    assert exact <= lam2 ** k * (centred ** 2).sum() / n
    assert AsyncGossip(SimComm(n), topo, x0).lambda2 == pytest.approx(lam2)


def test_pair_events_are_a_seeded_stream_with_the_right_law():
    topo = star(6)
    indptr, indices = gossip_neighbors(topo)
    a, b = PairEvents(indptr, indices, 2.0, seed=7), PairEvents(indptr, indices, 2.0, seed=7)
    t1, i1, j1 = a.take(10)
    t2, i2, j2 = a.until(float(b.take(5010)[0][-1]) + 1e-12)
    tb, ib, jb = PairEvents(indptr, indices, 2.0, seed=7).take(5010)
    np.testing.assert_array_equal(np.concatenate([t1, t2]), tb)
    np.testing.assert_array_equal(np.concatenate([i1, i2]), ib)
    np.testing.assert_array_equal(np.concatenate([j1, j2]), jb)
    t, i, j = PairEvents(indptr, indices, 2.0, seed=1).take(120_000)
    assert np.mean(np.diff(t)) == pytest.approx(1 / (6 * 2.0), rel=0.02)
    counts = np.zeros((6, 6))
    np.add.at(counts, (i, j), 1)
    P = np.zeros((6, 6))
    P[0, 1:] = 1 / 5  # the hub picks a leaf uniformly; a leaf can only pick the hub
    P[1:, 0] = 1.0
    np.testing.assert_allclose(counts / len(i), P / 6, atol=3e-3)
    assert np.all(i != j)


def test_gossip_duration_runs_and_repeated_runs_continue():
    n = 8
    x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    alg = AsyncGossip(SimComm(n), ring(n), x0, rate=3.0, seed=2)
    alg.run(duration=2.0, log_points=4)
    alg.run(duration=1.5, log_points=3)
    assert alg.time == pytest.approx(3.5)
    np.testing.assert_allclose(alg.history["wall_time"][-3:], [2.5, 3.0, 3.5])
    one = AsyncGossip(SimComm(n), ring(n), x0, rate=3.0, seed=2)
    one.run(duration=3.5, log_points=7)  # the same events, whatever the split
    torch.testing.assert_close(alg.x, one.x, rtol=0, atol=0)
    alg.step()
    assert alg.k == 1


def test_gossip_bad_input():
    n = 4
    x0 = torch.zeros(n, 2, dtype=torch.float64)
    directed = Topology.from_matrix(np.roll(np.eye(n), 1, axis=1) * 0.5 + np.eye(n) * 0.5)
    with pytest.raises(TopologyError, match="undirected"):
        AsyncGossip(SimComm(n), directed, x0)
    with pytest.raises(TopologyError, match="dynamic"):
        AsyncGossip(SimComm(n), one_peer_exponential(n), x0)
    split = Topology.from_matrix(np.kron(np.eye(2), np.full((2, 2), 0.5)),
                                 allow_disconnected=True)
    with pytest.raises(TopologyError, match="connected"):
        AsyncGossip(SimComm(n), split, x0)
    with pytest.raises(TopologyError, match="n=5"):
        AsyncGossip(SimComm(n), ring(5), x0)
    for bad in (0, -1.0, math.inf, "fast"):
        with pytest.raises(ValueError, match="rate"):
            AsyncGossip(SimComm(n), ring(n), x0, rate=bad)
    alg = AsyncGossip(SimComm(n), ring(n), x0)
    with pytest.raises(ValueError, match="exactly one"):
        alg.run(3, duration=1.0)
    with pytest.raises(ValueError, match="ticks"):
        alg.run(-2)
    with pytest.raises(TypeError, match="floating"):
        AsyncGossip(SimComm(n), ring(n), torch.zeros(n, 2, dtype=torch.int64))


def test_gossip_run_takes_steps_like_every_algorithm():
    """run(steps) is n * steps exchanges (one clock tick per node per step, as step() does);
    the old keyword ticks= still works, with a DeprecationWarning; log_every sets the rows."""
    n = 8
    x0 = torch.randn(n, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    new = AsyncGossip(SimComm(n), ring(n), x0, rate=2.0, seed=5)
    h = new.run(30, log_every=4)
    assert len(h) == 1 + math.ceil(30 / 4) and new.k == 30
    assert h["iteration"][-1] == 30 * n
    with pytest.warns(DeprecationWarning, match=r"AsyncGossip.run\(ticks=\.\.\.\) is "
                                                r"deprecated: write steps=30"):
        old = AsyncGossip(SimComm(n), ring(n), x0, rate=2.0, seed=5)
        old.run(ticks=30, log_points=8)
    torch.testing.assert_close(old.x, new.x, rtol=0, atol=0)  # the same seeded events
    timed = AsyncGossip(SimComm(n), ring(n), x0, rate=2.0, seed=5)
    assert len(timed.run(duration=3.0, log_every=2)) == 1 + 3  # 3 s * 2 ticks/s / 2
    with pytest.raises(ValueError, match="not both"):
        timed.run(3, log_every=1, log_points=3)
    with pytest.raises(ValueError, match="log_every"):
        timed.run(3, log_every=0)


def test_the_asynchronous_methods_close_their_engine_on_leaving_a_with_block():
    from declearn.algorithms.asynchronous import AsynchronousAlgorithm

    with EagerSGD(SimComm(3), LeastSquares(3, 2), lr=0.1) as alg:
        assert isinstance(alg, AsynchronousAlgorithm) and not alg.partial.closed
        alg.run(3, progress=False)
    assert alg.partial.closed and alg.engine is alg.partial
    assert issubclass(AsyncGossip, AsynchronousAlgorithm)
    with pytest.raises(RuntimeError, match="cannot roll back"):
        alg.roll_back()


def test_the_simulator_starts_no_threads():
    before = threading.active_count()
    EagerSGD(SimComm(3), LeastSquares(3, 2), lr=0.1, straggler=(1, 0.5)).run(5, progress=False)
    AsyncGossip(SimComm(3), ring(3), torch.randn(3, 1, dtype=torch.float64)).run(5)
    assert threading.active_count() == before


# ====================================================================== under mpiexec
@pytest.mark.mpi
@needs_mpi
def test_async_under_mpiexec_4():
    out = run_mpi("async_checks.py", 4, timeout=120)
    lines = re.findall(r"ASYNC-OK rank (\d+) of 4: (\d+) checks", out)
    assert sorted(int(r) for r, _ in lines) == [0, 1, 2, 3], out[-5000:]
    assert all(int(c) > 300 for _, c in lines), "suspiciously few checks ran"
    assert len(re.findall(r"PARTIAL (solo|majority) rank", out)) == 8
    assert len(re.findall(r"STRAGGLER random rank \d (sync|solo|majority)", out)) == 12
    assert out.count("GOSSIP rank") == 4
