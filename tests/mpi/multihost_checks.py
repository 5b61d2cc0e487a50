"""MPIComm across test hosts (tools/netns_hosts.py): one MPI job whose ranks sit on two hosts
joined by a real network stack (veth pairs and a bridge), launched by Hydra over ssh.

Run from host 0 as ``mpiexec <TestHosts.mpiexec_args(k)> python tests/mpi/multihost_checks.py
MODE OUTDIR HOSTS`` with ``HOSTS`` the host names in rank order (``dl-h0,dl-h0,dl-h1,...``)
and UCX on TCP over ``eth0`` (``UCX_TLS=self,tcp``: UCX's shared-memory transports would
otherwise reach the other "host", which runs on the same kernel). Each rank writes its findings
to ``OUTDIR/rank<r>.json`` (a rank cut off from host 0 cannot print through mpiexec) and ends
with ``MULTIHOST-OK rank r``.

``exchange``
    every rank is on the host ``HOSTS`` says; ``neighbor_allreduce`` over three topologies and
    chapter 00's ring allreduce equal SimComm over all ranks' data (built from one seed on every
    rank); the bytes MPIComm counts equal the topology's (each rank sends ``x`` to each
    out-neighbor); and the bytes through each host's interface during a large exchange are
    the payload its ranks sent to the other host, plus headers (measured by the host's first
    rank, from the kernel's counters).
``unplug``
    ranks exchange in a loop (timeout 3 s) with one partner each on the other host (pairs
    0-2, 1-3: no rank waits for a rank of its own host, so whom a rank names depends only on
    the cut) and write ``OUTDIR/running`` once under way; the test then unplugs host 1's
    cable. Every rank must raise CollectiveTimeoutError naming its partner; it records it and
    leaves with ``os._exit`` (MPI cannot finalize over a dead link).
``overlap WIDTH``
    (the test slows both hosts' links with ``tc``: latency or a bandwidth cap) chapter 08's
    experiment with real packets instead of ``DelayedComm``: the seconds per round of Local SGD
    and of Overlap-Local-SGD training a ``Linear(1000, WIDTH)`` model, ``TAU`` local steps of
    ``COMPUTE_S`` each, the latter twice: as in the chapter, and calling ``comm.progress()``
    during the compute (``overlap_polled``); and the time of one allreduce of its parameters
    over the slowed links (the chapter's delta). The last allreduce (``finish()``, with no
    compute left to hide it) is not in the rounds' time.
``straggler NUMEL``
    (the test slows host 1's outgoing link) chapter 09's synchronous averaging on a chain, of
    float64 vectors of NUMEL entries: the end time of every step on every rank, from which the
    test reads the first slow step of each rank.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from mpi4py import MPI

import declearn.topology as T
from declearn.comm.mpi import MPIComm
from declearn.comm.ring import ring_allreduce
from declearn.comm.sim import SimComm
from declearn.errors import CollectiveTimeoutError
from declearn.topology import Topology

world = MPI.COMM_WORLD
RANK, N = world.Get_rank(), world.Get_size()
MODE, OUT, HOSTS = sys.argv[1], Path(sys.argv[2]), sys.argv[3].split(",")
FINDINGS: dict = {"rank": RANK, "host": socket.gethostname(), "checks": 0}


def check(ok: bool, what: str) -> None:
    if not ok:
        raise AssertionError(f"rank {RANK} on {socket.gethostname()}: {what}")
    FINDINGS["checks"] += 1


def tx_bytes() -> int:
    out = subprocess.run(["ip", "-s", "-j", "link", "show", "eth0"], capture_output=True,
                         text=True, check=True, timeout=10).stdout
    return int(json.loads(out)[0]["stats64"]["tx"]["bytes"])


def exchange() -> None:
    check(socket.gethostname() == HOSTS[RANK], f"rank {RANK} runs on {HOSTS[RANK]}")
    comm = MPIComm(timeout=30)
    sim = SimComm(N)
    for topo in (T.make("ring", N), T.make("exponential", N),
                 T.make("one_peer_exponential", N).at(3)):
        for numel in (3, 1000, 300_000):
            X = torch.as_tensor(np.random.default_rng(numel).standard_normal((N, numel)))
            got = comm.neighbor_allreduce(X[RANK].clone(), topo)
            want = sim.neighbor_allreduce(X, topo)[RANK]
            check(torch.allclose(got, want, rtol=1e-12, atol=1e-12),
                  f"neighbor_allreduce {topo.name} d={numel} equals SimComm")
    X = torch.as_tensor(np.random.default_rng(9).standard_normal((N, 10_001)))
    check(torch.allclose(ring_allreduce(comm, X[RANK].clone()), ring_allreduce(sim, X)[RANK],
                         rtol=1e-12, atol=1e-12), "chapter 00's ring allreduce equals SimComm")
    check(torch.allclose(ring_allreduce(sim, X)[RANK], X.sum(0), rtol=1e-12, atol=1e-12),
          "SimComm's ring allreduce is the sum")

    # Bytes: MPIComm's count against the topology, the interface's against the payload.
    ring, calls, numel = T.make("ring", N), 8, 1 << 20  # 8 MiB float64 per call
    x = torch.ones(numel, dtype=torch.float64)
    comm.reset_traffic()
    first_on_host = HOSTS.index(HOSTS[RANK]) == RANK
    comm.barrier()
    before = tx_bytes() if first_on_host else 0
    comm.barrier()
    for _ in range(calls):
        comm.neighbor_allreduce(x, ring)
    comm.barrier()
    after = tx_bytes() if first_on_host else 0
    payload = numel * 8
    outs = [int(j) for j in ring.out_neighbors(RANK)]
    check(comm.traffic.bytes == calls * payload * len(outs),
          f"MPIComm counted {comm.traffic.bytes} bytes, the topology says "
          f"{calls * payload * len(outs)}")
    if first_on_host:
        mine = HOSTS[RANK]
        cross = sum(1 for r in range(N) if HOSTS[r] == mine
                    for j in ring.out_neighbors(r) if HOSTS[int(j)] != mine)
        expected = calls * payload * cross
        FINDINGS["interface"] = {"tx_bytes": after - before, "cross_host_payload": expected}
        check(expected <= after - before <= 1.06 * expected + (1 << 18),
              f"{mine}'s eth0 sent {after - before} bytes for {expected} bytes of payload "
              "to the other host (headers allowed: 6% + 256 KiB)")


def unplug() -> None:
    comm = MPIComm(timeout=3)
    W = np.eye(N) / 2
    for r in range(N):
        W[r, (r + N // 2) % N] = 0.5
    pairs = Topology.from_matrix(W, name="cross_host_pairs", allow_disconnected=True)
    x = torch.full((1000,), float(RANK), dtype=torch.float64)
    t0 = time.monotonic()
    try:
        for k in range(100_000):
            comm.neighbor_allreduce(x, pairs)
            if k == 20 and RANK == 0:
                (OUT / "running").write_text("yes")
            time.sleep(0.005)
        FINDINGS["error"] = None
    except CollectiveTimeoutError as exc:
        FINDINGS["error"] = {"missing": list(exc.missing), "message": str(exc),
                             "after_s": time.monotonic() - t0}


TAU, COMPUTE_S, ROUNDS = 8, 0.04, 4


def overlap() -> None:
    import declearn.optim as O

    comm = MPIComm(timeout=60)
    width = int(sys.argv[4])
    x = torch.zeros(1001 * width)  # the model's parameters, flat
    for _ in range(2):
        comm.allreduce(x)  # connections set up
    times = []
    for _ in range(5):
        comm.barrier()
        t0 = time.perf_counter()
        comm.allreduce(x)
        times.append(time.perf_counter() - t0)
    FINDINGS["allreduce_s"] = float(np.median(times))
    times = []
    for _ in range(5):
        comm.barrier()
        t0 = time.perf_counter()
        pending = comm.iallreduce(x)
        while not pending.done():
            time.sleep(0.001)
        times.append(time.perf_counter() - t0)
    FINDINGS["iallreduce_s"] = float(np.median(times))
    builds = {"local": lambda p: O.LocalSGD(p, comm, lr=0.1, tau=TAU),
              "overlap": lambda p: O.OverlapLocalSGD(p, comm, lr=0.1, tau=TAU, alpha=0.6),
              "overlap_polled": lambda p: O.OverlapLocalSGD(p, comm, lr=0.1, tau=TAU,
                                                            alpha=0.6)}
    for name, build in builds.items():
        torch.manual_seed(0)
        model = torch.nn.Linear(1000, width)
        opt = build(model.parameters())
        comm.barrier()
        start, busy, syncs = time.perf_counter(), 0.0, []
        for _ in range(ROUNDS * TAU):
            tick = time.perf_counter()
            opt.zero_grad()
            model(torch.randn(8, 1000)).pow(2).mean().backward()
            if name == "overlap_polled":  # MPI moves data only inside MPI calls
                for _ in range(20):
                    time.sleep(COMPUTE_S / 20)
                    comm.progress()
            else:
                time.sleep(COMPUTE_S)
            opt.step()
            busy += time.perf_counter() - tick
            tick = time.perf_counter()
            opt.average()
            syncs.append(round(time.perf_counter() - tick, 3))
        elapsed = time.perf_counter() - start
        opt.finish()  # the last allreduce, with no compute left to hide it: not in the rounds
        FINDINGS[name] = {"round_s": elapsed / ROUNDS,
                          "compute_s": busy / ROUNDS, "syncs": [t for t in syncs if t > 0.005]}


def straggler() -> None:
    comm = MPIComm(timeout=60)
    chain = T.make("chain", N)
    x = torch.full((int(sys.argv[4]),), float(RANK), dtype=torch.float64)
    for _ in range(3):
        x = comm.neighbor_allreduce(x, chain)  # connections set up, before the clock starts
    comm.barrier()
    start, ends = time.perf_counter(), []
    for _ in range(12):
        x = comm.neighbor_allreduce(x, chain)
        ends.append(time.perf_counter() - start)
    FINDINGS["ends"] = ends


def main() -> None:
    {"exchange": exchange, "unplug": unplug, "overlap": overlap, "straggler": straggler}[MODE]()
    (OUT / f"rank{RANK}.json").write_text(json.dumps(FINDINGS))
    print(f"MULTIHOST-OK rank {RANK}", flush=True)
    if MODE == "unplug":
        os._exit(0)


if __name__ == "__main__":
    try:
        main()
    except BaseException as exc:  # noqa: BLE001 - report, then end the whole job
        FINDINGS["failure"] = f"{type(exc).__name__}: {exc}"
        (OUT / f"rank{RANK}.json").write_text(json.dumps(FINDINGS))
        print(f"MULTIHOST-FAIL rank {RANK}: {exc}", file=sys.stderr, flush=True)
        world.Abort(1)
