"""The alpha-beta cost model (declearn.comm.costs), DelayedComm's per-operation costs and virtual
clock, and the collective timer (declearn.comm.timing).

Oracles: numbers worked out by hand from the formulas; peers counted on the dense W with numpy;
the ring allreduce *run* message by message (declearn.comm.ring_allreduce) through a DelayedComm
that charges each message; the wall clock of a sleeping DelayedComm.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from declearn.comm import DelayedComm, SimComm, ring_allreduce
from declearn.comm.costs import NetworkModel, peers, ring_over_one_peer
from declearn.comm.timing import CollectiveTimes, time_collectives
from declearn.errors import TopologyError
from declearn.topology import (
    d_equistatic,
    exponential,
    grid,
    od_equidyn,
    one_peer_exponential,
    ring,
    star,
)

from mpi_helpers import needs_mpi, run_mpi


# ====================================================================== the formulas
def test_network_model_matches_the_formulas_worked_by_hand():
    net = NetworkModel(alpha=1e-3, beta=1e6)  # 1 ms, 1 MB/s
    # n = 8, M = 6400 B: ring allreduce 2*7 messages of 800 B: 14 * (1 ms + 0.8 ms) = 25.2 ms
    assert net.allreduce(8, 6400) == pytest.approx(0.0252, rel=1e-12)
    assert net.allgather(8, 6400) == pytest.approx(7 * 0.0074, rel=1e-12)
    assert net.broadcast(5, 1000) == pytest.approx(3 * 0.002, rel=1e-12)  # ceil(log2 5) = 3
    assert net.broadcast(8, 1000) == pytest.approx(3 * 0.002, rel=1e-12)
    assert net.barrier(9) == pytest.approx(4e-3, rel=1e-12)
    assert net.neighbor(2, 1000) == pytest.approx(2 * 0.002, rel=1e-12)
    assert net.message(0) == 1e-3
    for op in (lambda: net.allreduce(1, 1e6), lambda: net.allgather(1, 1e6),
               lambda: net.broadcast(1, 1e6), lambda: net.barrier(1)):
        assert op() == 0.0
    latency_only = NetworkModel(1e-3)  # beta = inf
    assert latency_only.allreduce(256, 1e9) == pytest.approx(2 * 255 * 1e-3)


def test_ring_over_one_peer_tends_to_its_two_limits():
    n = 256
    assert ring_over_one_peer(NetworkModel(1e-3), n, 1e6) == pytest.approx(2 * (n - 1))
    bandwidth_only = NetworkModel(0.0, 1e9)
    assert ring_over_one_peer(bandwidth_only, n, 1e8) == pytest.approx(2 * (n - 1) / n)
    # ResNet-50 size (25.5M float32) at 25 Gbit/s and 10 us: 2 (n-1) alpha is 5.1 ms of ~70 ms
    net = NetworkModel(1e-5, 25e9 / 8)
    M = 25.5e6 * 4
    ring_ms = 2 * 255 * (1e-5 + M / (256 * 25e9 / 8))
    assert net.allreduce(n, M) == pytest.approx(ring_ms)
    assert ring_over_one_peer(net, n, M) == pytest.approx(ring_ms / (1e-5 + M / (25e9 / 8)))


@pytest.mark.parametrize("build", [
    lambda: ring(7), lambda: grid(12), lambda: exponential(16), lambda: star(6),
    lambda: d_equistatic(20, M=3, seed=1), lambda: one_peer_exponential(12).at(2),
    lambda: od_equidyn(10).at(5),
], ids=["ring", "grid", "exponential", "star", "d_equistatic", "one_peer", "od_equidyn"])
def test_peers_is_the_busiest_node_counted_on_dense_w(build):
    topo = build()
    links = (np.asarray(topo.W) != 0) & ~np.eye(topo.n, dtype=bool)
    dense = max(links.sum(1).max(), links.sum(0).max())  # receives (rows), sends (columns)
    assert peers(topo) == dense


def test_peers_of_known_graphs():
    assert peers(one_peer_exponential(64).at(3)) == 1
    assert peers(ring(10)) == 2
    assert peers(star(6)) == 5  # the centre talks to everyone
    assert peers(exponential(16)) == 4  # log2 16


def test_fit_allreduce_recovers_alpha_and_beta():
    true = NetworkModel(3e-5, 2e9)
    sizes = np.array([4e3, 4e4, 4e5, 4e6])
    t = np.array([true.allreduce(4, b) for b in sizes])
    fit = NetworkModel.fit_allreduce(4, sizes, t)
    assert fit.alpha == pytest.approx(3e-5, rel=1e-9) and fit.beta == pytest.approx(2e9, rel=1e-9)


def test_cost_model_bad_input():
    for bad in (-1.0, math.nan, math.inf, "1", True):
        with pytest.raises(ValueError, match="alpha"):
            NetworkModel(bad)
    for bad in (0, -5, math.nan, "fast"):
        with pytest.raises(ValueError, match="beta"):
            NetworkModel(1e-3, bad)
    net = NetworkModel(1e-3, 1e6)
    with pytest.raises(ValueError, match="nodes"):
        net.allreduce(0, 10)
    with pytest.raises(ValueError, match="nbytes"):
        net.allreduce(4, -1)
    with pytest.raises(ValueError, match="peers"):
        net.neighbor(-1, 10)
    with pytest.raises(TypeError, match="at\\(k\\)"):
        peers(one_peer_exponential(8))
    with pytest.raises(ValueError, match="two distinct sizes"):
        NetworkModel.fit_allreduce(4, [100, 100], [1.0, 1.0])
    with pytest.raises(ValueError, match="n >= 2"):
        NetworkModel.fit_allreduce(1, [1, 2], [1.0, 1.0])


# ====================================================================== DelayedComm
def _virtual(n, **kw):
    return DelayedComm(SimComm(n), cost="alpha_beta", clock="virtual", **kw)


@pytest.mark.parametrize("n, d", [(8, 800), (5, 35), (2, 6)])
def test_ring_allreduce_run_message_by_message_costs_the_allreduce_formula(n, d):
    """ring_allreduce sends 2 (n - 1) chunks of M / n bytes through neighbor_allgather on the
    directed ring: charged one message each, they add up to the closed form."""
    comm = _virtual(n, latency=1e-3, bandwidth=1e6)
    x = torch.randn(n, d, dtype=torch.float64)
    got = ring_allreduce(comm, x)
    assert comm.clock == pytest.approx(2 * (n - 1) * (1e-3 + (d // n) * 8 / 1e6), rel=1e-12)
    assert comm.clock == pytest.approx(comm.network.allreduce(n, d * 8), rel=1e-12)
    torch.testing.assert_close(got, x.sum(0).expand(n, d))
    before = comm.clock
    comm.allreduce(x)  # the one-call collective charges the same
    assert comm.clock - before == pytest.approx(comm.network.allreduce(n, d * 8), rel=1e-12)


def test_alpha_beta_charges_each_operation_its_own_cost():
    n, d = 16, 1000
    comm = _virtual(n, latency=1e-4, bandwidth=1e8)
    x = torch.ones(n, d, dtype=torch.float32)  # 4000 B per node
    msg = 1e-4 + 4000 / 1e8
    cases = [
        (lambda: comm.allreduce(x), 2 * 15 * (1e-4 + 250 / 1e8)),
        (lambda: comm.neighbor_allreduce(x, one_peer_exponential(n).at(1)), msg),
        (lambda: comm.neighbor_allreduce(x, ring(n)), 2 * msg),
        (lambda: comm.neighbor_allreduce(x, exponential(n)), 4 * msg),
        (lambda: comm.neighbor_allgather(x, ring(n)), 2 * msg),
        (lambda: comm.allgather(x), 15 * msg),
        (lambda: comm.broadcast(x, 3), 4 * msg),
        (lambda: comm.barrier(), 4e-4),
        (lambda: comm.neighbor_alltoall(torch.ones(n, 2, d), ring(n)),
         2 * (1e-4 + 4000 / 1e8)),  # two slots of d float32 each: 4000 B per message
    ]
    for op, expect in cases:
        before = comm.clock
        op()
        assert comm.clock - before == pytest.approx(expect, rel=1e-12)
    with comm.untracked():
        comm.allreduce(x)
    assert comm.clock == pytest.approx(sum(e for _, e in cases), rel=1e-12)


def test_per_call_default_is_unchanged_and_also_clocks():
    comm = DelayedComm(SimComm(16), latency=0.0, bandwidth=1e6, clock="virtual")
    x = torch.ones(16, 250, dtype=torch.float64)  # 2000 B
    comm.allreduce(x)
    comm.neighbor_allreduce(x, exponential(16))
    assert comm.clock == pytest.approx(2 * 2000 / 1e6)  # one message each, whatever the op
    assert comm.delay(x) == pytest.approx(2000 / 1e6)


def test_virtual_clock_equals_the_sleeping_clock_and_the_sleeping_wall_time():
    def ops(comm):
        x = torch.ones(4, 2500, dtype=torch.float64)  # 20 kB per node
        comm.allreduce(x)
        for k in range(3):
            comm.neighbor_allreduce(x, one_peer_exponential(4).at(k))
        comm.barrier()

    asleep = DelayedComm(SimComm(4), latency=0.01, bandwidth=1e6, cost="alpha_beta")
    awake = DelayedComm(SimComm(4), latency=0.01, bandwidth=1e6, cost="alpha_beta",
                        clock="virtual")
    t0 = time.monotonic()
    ops(asleep)
    wall = time.monotonic() - t0
    t0 = time.monotonic()
    ops(awake)
    virtual_wall = time.monotonic() - t0
    # hand: allreduce 6 (0.01 + 5000 / 1e6) = 0.09; 3 one-peer rounds 3 (0.01 + 0.02) = 0.09;
    # barrier ceil(log2 4) 0.01 = 0.02
    assert awake.clock == pytest.approx(0.2, rel=1e-12)
    assert asleep.clock == pytest.approx(awake.clock, rel=1e-12)
    assert 0.2 - 1e-3 <= wall <= 0.2 + 0.1, wall
    assert virtual_wall < 0.05, virtual_wall


def test_virtual_iallreduce_is_hidden_by_advanced_local_work():
    comm = DelayedComm(SimComm(4), latency=0.1, cost="alpha_beta", clock="virtual")
    x = torch.arange(8, dtype=torch.float64).reshape(4, 2)  # allreduce: 6 * 0.1 = 0.6 s
    for tau, expect in ((2, 0.6), (9, 0.9)):
        start = comm.clock
        p = comm.iallreduce(x, "sum")
        assert not p.done()
        for _ in range(tau):
            comm.advance(0.1)
        assert p.done() == (tau * 0.1 >= 0.6)
        torch.testing.assert_close(p.wait(), x.sum(0).expand(4, 2))
        assert comm.clock - start == pytest.approx(expect)


def test_time_collectives_measures_a_sleeping_delayed_comm_as_modelled():
    """A real timed run: the medians of time_collectives over a sleeping DelayedComm are its
    modelled costs (plus the few ms the simulator itself takes)."""
    comm = DelayedComm(SimComm(4), latency=0.01, bandwidth=1e7, cost="alpha_beta")
    times = time_collectives(comm, one_peer_exponential(4), [1000, 20000], repeats=2)
    for j, nbytes in enumerate([4000, 80000]):
        ar = 6 * (0.01 + nbytes / 4 / 1e7)
        nb = 0.01 + nbytes / 1e7
        assert ar - 1e-3 <= times.seconds["allreduce"][j] <= ar + 0.02
        assert nb - 1e-3 <= times.seconds["neighbor_allreduce"][j] <= nb + 0.02
    assert times.peers == 1 and times.n == 4 and list(times.nbytes) == [4000, 80000]
    fit = times.fit()
    assert fit.alpha == pytest.approx(0.01, rel=0.2)
    assert "allreduce" in times.table(fit)


def test_slowest_takes_the_largest_median_per_size_and_op():
    def result(a, b):
        return CollectiveTimes(2, np.array([10, 100]), 4, "ring", 1,
                               {"allreduce": np.array(a), "neighbor_allreduce": np.array(b)}, 3)

    worst = CollectiveTimes.slowest([result([1.0, 5.0], [2.0, 1.0]),
                                     result([3.0, 4.0], [1.0, 6.0])])
    assert list(worst.seconds["allreduce"]) == [3.0, 5.0]
    assert list(worst.seconds["neighbor_allreduce"]) == [2.0, 6.0]
    np.testing.assert_allclose(worst.ratio, [1.5, 5 / 6])
    other = CollectiveTimes(2, np.array([10]), 4, "ring", 1, {}, 3)
    with pytest.raises(ValueError, match="same arguments"):
        CollectiveTimes.slowest([worst, other])
    with pytest.raises(TypeError, match="CollectiveTimes"):
        CollectiveTimes.slowest([])


def test_delayed_comm_and_timer_bad_input():
    with pytest.raises(ValueError, match="cost must be one of"):
        DelayedComm(SimComm(2), cost="ring")
    with pytest.raises(ValueError, match="clock must be one of"):
        DelayedComm(SimComm(2), clock="fast")
    comm = _virtual(4)
    with pytest.raises(TopologyError, match="at\\(k\\)"):
        comm.neighbor_allreduce(torch.ones(4, 2), one_peer_exponential(4))
    with pytest.raises(TopologyError, match="n=4"):
        comm.neighbor_allreduce(torch.ones(4, 2), ring(5))
    with pytest.raises(ValueError, match="seconds"):
        comm.advance(-1)
    with pytest.raises(ValueError, match="op must be one of"):
        comm.delay(torch.ones(4, 2), "gossip")
    with pytest.raises(ValueError, match="sizes"):
        time_collectives(SimComm(2), ring(2), [0, 10])
    with pytest.raises(ValueError, match="repeats"):
        time_collectives(SimComm(2), ring(2), [10], repeats=0)
    with pytest.raises(ValueError, match="n = 2"):
        time_collectives(SimComm(2), ring(3), [10])
    with pytest.raises(TypeError, match="Topology"):
        time_collectives(SimComm(2), "ring", [10])
    assert "cost='alpha_beta'" in repr(comm) and "clock='virtual'" in repr(comm)


def test_time_collectives_reads_the_virtual_clock_of_a_simulated_network():
    comm = DelayedComm(SimComm(64), latency=1e-5, bandwidth=1e9, cost="alpha_beta",
                       clock="virtual")
    times = time_collectives(comm, one_peer_exponential(64), [1000, 100_000], repeats=1,
                             warmup=0)
    for j, d in enumerate([1000, 100_000]):
        M = 4 * d
        assert times.seconds["allreduce"][j] == pytest.approx(126 * (1e-5 + M / 64e9))
        assert times.seconds["neighbor_allreduce"][j] == pytest.approx(1e-5 + M / 1e9)


@pytest.mark.mpi
@needs_mpi
def test_cost_model_and_timer_on_mpi_ranks():
    out = run_mpi("delay_costs_checks.py", 4, timeout=120)
    assert sum(f"COSTS-OK rank {r} of 4" in out for r in range(4)) == 4, out
