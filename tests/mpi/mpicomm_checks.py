"""MPIComm under a real mpiexec: every operation against a dense oracle, then the failures.

Run as ``mpiexec -n N python tests/mpi/mpicomm_checks.py [--quick]`` (N = 1, 2, 4, ...).
Every rank builds the same random data from one seed, runs the operations through MPIComm
and compares its own result with what it computes locally from the dense matrix ``W``
(``y_i = sum_j W[i, j] x_j``), and with SimComm when it exists. Then (for N >= 2): a
collective that one rank skips times out naming that rank, Ctrl-C interrupts a waiting rank,
``resync()`` brings the ranks back, shape/dtype/topology mismatches raise
CollectiveMismatchError on the ranks that see them and nobody hangs, bad input raises locally,
and MPIComm works on a sub-communicator.

Each rank ends with one line ``MPICOMM-OK rank r of N: <checks> checks`` and lines
``SKIPPED-FAMILY name: why`` for the registered families it could not build at this N; the
pytest side (tests/test_mpicomm.py) checks both.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback

import numpy as np
import torch
from mpi4py import MPI

import declearn.topology as T
from declearn.comm.mpi import MPIComm, resync_all
from declearn.errors import (
    CollectiveMismatchError,
    CollectiveTimeoutError,
    CommunicatorOutOfSyncError,
    TopologyError,
)
from declearn.topology.base import Topology

# Parameters of the registered families (required ones, and a few non-defaults).
FAMILY_PARAMS = {
    "erdos_renyi": {"p": 0.9, "seed": 3},
    "geometric": {"radius": 0.9, "seed": 3},
    "grid": {"torus": True},
    "binary_tree": {"reverse": True},
    "d_equistatic": {"seed": 1},
    "u_equistatic": {"seed": 1},
    "od_equidyn": {"seed": 2},
    "ou_equidyn": {"seed": 2},
}
DYNAMIC_KS = (0, 1, 2, 7)
SHAPES = ((), (5,), (3, 4))
DTYPES = (torch.float64, torch.float32)
TOL = {torch.float64: 1e-12, torch.float32: 1e-5}
# Shapes whose payload is over INLINE_MAX (4 KiB), so neighbor_allreduce sends it apart from
# its header; SHAPES all travel inside the header's message (declearn.comm.mpi.inline).
LARGE_SHAPES = {torch.float64: (9, 70), torch.float32: (33, 40)}
QUICK = "--quick" in sys.argv

world = MPI.COMM_WORLD
RANK, N = world.Get_rank(), world.Get_size()
CHECKS = [0]


def say(line):
    """One write per line, so lines of different ranks do not interleave mid-line."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def check(cond, what):
    CHECKS[0] += 1
    if not cond:
        raise AssertionError(f"rank {RANK}: {what}")


def close(a, b, tol, what):
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    err = (a - b).abs().max().item() if a.numel() else 0.0
    check(a.shape == b.shape and err <= tol * max(1.0, b.abs().max().item() if b.numel() else 1),
          f"{what}: shapes {tuple(a.shape)} vs {tuple(b.shape)}, max error {err:.3g}")


def sim_comm(n):
    """SimComm as a second oracle, if it has landed."""
    try:
        from declearn.comm.sim import SimComm

        if not hasattr(SimComm, "neighbor_allreduce"):
            return None
        return SimComm(n, dtype=torch.float64)
    except Exception:  # noqa: BLE001 - not there yet
        return None


# ---------------------------------------------------------------------------- topologies
def custom_topologies(n, rng):
    """Directed, irregular, column-only and row-only stochastic matrices (push-sum cases)."""
    out = []
    if n == 1:
        return out
    mask = rng.random((n, n)) < 0.5
    np.fill_diagonal(mask, True)
    mask[np.arange(n), (np.arange(n) - 1) % n] = True  # a directed ring keeps it connected
    A = mask * (0.5 + rng.random((n, n)))
    out.append(Topology.from_matrix(A / A.sum(0, keepdims=True), name="col_random",
                                    stochastic="column"))
    out.append(Topology.from_matrix(A / A.sum(1, keepdims=True), name="row_random"))
    return out


def all_topologies(n):
    rng = np.random.default_rng(7)
    cases = []
    for name in T.families():
        info = T.family_info(name)
        try:
            topo = T.make(name, n, **FAMILY_PARAMS.get(name, {}))
        except TopologyError as exc:
            say(f"SKIPPED-FAMILY {name}: {exc}")
            continue
        if info.dynamic:
            cases += [(f"{name}.at({k})", topo.at(k)) for k in DYNAMIC_KS]
        else:
            cases.append((name, topo))
    cases += [(t.name, t) for t in custom_topologies(n, rng)]
    return cases


# ---------------------------------------------------------------------------- oracle checks
def oracle_checks(comm, sim):
    n, r = comm.size, comm.rank
    gen = torch.Generator().manual_seed(1234)
    topologies = all_topologies(n)
    shapes = SHAPES[1:2] if QUICK else SHAPES
    for tname, topo in topologies:
        W = torch.as_tensor(np.array(topo.W))
        modes = [m for m, ok in (("receiver", topo.is_row_stochastic),
                                 ("sender", topo.is_column_stochastic)) if ok]
        ins = [int(j) for j in topo.in_neighbors(r)]
        d_in, d_out = int(topo.in_degrees.max()), int(topo.out_degrees.max())
        for dtype in DTYPES:
            for shape in shapes:
                X = torch.randn((n, *shape), generator=gen, dtype=torch.float64)
                Xd = X.to(dtype)
                ref = (W @ Xd.double().reshape(n, -1)).reshape(n, *shape)
                what = f"{tname} {dtype} {shape}"
                for mode in modes:
                    y = comm.neighbor_allreduce(Xd[r], topo, weighted_by=mode)
                    check(y.dtype == dtype and y.shape == shape, f"{what}: result {y.dtype}")
                    close(y, ref[r], TOL[dtype], f"neighbor_allreduce {mode} {what}")
                    if sim is not None and dtype == torch.float64:
                        close(y, sim.neighbor_allreduce(X, topo, weighted_by=mode)[r], 1e-12,
                              f"MPIComm vs SimComm neighbor_allreduce {what}")
                g = comm.neighbor_allgather(Xd[r], topo)
                expect = torch.zeros((d_in, *shape), dtype=dtype)
                for s, j in enumerate(ins):
                    expect[s] = Xd[j]
                check(torch.equal(g, expect), f"neighbor_allgather {what}")
                # message M[i, s] goes from i to its s-th out-neighbor
                M = torch.randn((n, d_out, *shape), generator=gen, dtype=torch.float64).to(dtype)
                a = comm.neighbor_alltoall(M[r], topo)
                expect = torch.zeros((d_in, *shape), dtype=dtype)
                for s, j in enumerate(ins):
                    expect[s] = M[j, list(topo.out_neighbors(j)).index(r)]
                check(torch.equal(a, expect), f"neighbor_alltoall {what}")
                if sim is not None and dtype == torch.float64:
                    check(torch.equal(sim.neighbor_allgather(X, topo)[r], g),
                          f"MPIComm vs SimComm neighbor_allgather {what}")
                    check(torch.equal(sim.neighbor_alltoall(M, topo)[r], a),
                          f"MPIComm vs SimComm neighbor_alltoall {what}")
        for dtype, shape in LARGE_SHAPES.items():  # payloads sent apart from the header
            X = torch.randn((n, *shape), generator=gen, dtype=torch.float64).to(dtype)
            ref = (W @ X.double().reshape(n, -1)).reshape(n, *shape)
            for _ in range(2):  # the second time through the cached call plan
                y = comm.neighbor_allreduce(X[r], topo, weighted_by=modes[0])
                close(y, ref[r], TOL[dtype], f"neighbor_allreduce {tname} {dtype} {shape}")
    inline_dtype_checks(comm, gen)
    return len(topologies)


def inline_dtype_checks(comm, gen):
    """Small payloads in every floating dtype (BLAS dtypes combine with one addmv, the others
    term by term), and a zero self weight, where ``y_i = W_ii x_i + sum_j W_ij x_j`` keeps a
    NaN of ``x_i`` (``0 * nan``) as the term-by-term sum does."""
    n, r = comm.size, comm.rank
    ring = T.make("ring", n)
    W = torch.as_tensor(np.array(ring.W))
    for dtype, tol in ((torch.complex128, 1e-12), (torch.complex64, 1e-5),
                       (torch.float16, 1e-2), (torch.bfloat16, 2e-2)):
        wide = torch.complex128 if dtype.is_complex else torch.float64
        X = torch.randn((n, 2, 3), generator=gen, dtype=wide).to(dtype)
        ref = (W.to(wide) @ X.to(wide).reshape(n, -1))[r].reshape(2, 3)
        y = comm.neighbor_allreduce(X[r], ring)
        err = (y.to(wide) - ref).abs().max().item()
        check(y.dtype == dtype and y.shape == (2, 3)
              and err <= tol * max(1.0, ref.abs().max().item()),
              f"inline neighbor_allreduce {dtype}: {y.dtype} {tuple(y.shape)}, error {err:.3g}")
    for shape in ((0,), (2, 0)):  # nothing to send but the header
        y = comm.neighbor_allreduce(torch.zeros(shape, dtype=torch.float64), ring)
        check(y.shape == shape and y.dtype == torch.float64, f"empty inline payload {y.shape}")
    x = torch.arange(6, dtype=torch.float64).reshape(2, 3) + r
    y = comm.neighbor_allreduce(x.t(), ring)  # not contiguous: the full checks, then inline
    ref = (W @ (torch.arange(6, dtype=torch.float64) + torch.arange(n).double()[:, None]))[r]
    close(y, ref.reshape(2, 3).t(), 1e-12, "inline neighbor_allreduce of a transpose")
    if n < 3:
        return
    A = np.zeros((n, n))
    A[np.arange(n), (np.arange(n) + 1) % n] = A[np.arange(n), (np.arange(n) - 1) % n] = 0.5
    hollow = Topology.from_matrix(A, name="hollow_ring")
    v = np.where(np.arange(n) == 0, np.nan, np.arange(n, dtype=np.float64))
    with np.errstate(invalid="ignore"):
        expect = 0.0 * v[r] + 0.5 * v[(r - 1) % n] + 0.5 * v[(r + 1) % n]
    y = comm.neighbor_allreduce(torch.full((4,), v[r], dtype=torch.float64), hollow)
    check(torch.allclose(y, torch.full((4,), expect, dtype=torch.float64), equal_nan=True),
          f"zero self weight, x_0 = nan: rank {r} got {y}, expected {expect}")


def global_checks(comm, sim):
    n, r = comm.size, comm.rank
    gen = torch.Generator().manual_seed(99)
    for dtype in DTYPES + (torch.complex128,):
        for shape in SHAPES:
            X = torch.randn((n, *shape), generator=gen, dtype=dtype)
            what = f"{dtype} {shape}"
            close(comm.allreduce(X[r], "sum").real, X.sum(0).real, TOL.get(dtype, 1e-12),
                  f"allreduce sum {what}")
            if dtype.is_complex:
                close(comm.allreduce(X[r], "sum").imag, X.sum(0).imag, 1e-12, what)
            close(comm.allreduce(X[r]).real, X.mean(0).real, TOL.get(dtype, 1e-12),
                  f"allreduce mean {what}")
            for root in range(n):
                b = comm.broadcast(X[r], root)
                check(torch.equal(b, X[root]) and b.data_ptr() != X[r].data_ptr(),
                      f"broadcast root {root} {what}")
            check(torch.equal(comm.allgather(X[r]), X), f"allgather {what}")
            if sim is not None and dtype == torch.float64:
                close(comm.allreduce(X[r]), sim.allreduce(X)[r], 1e-12, f"vs SimComm {what}")
                check(torch.equal(comm.broadcast(X[r], n - 1), sim.broadcast(X, n - 1)[r]),
                      f"broadcast vs SimComm {what}")
    ints = torch.arange(n * 6, dtype=torch.int64).reshape(n, 2, 3) * 1000 + 7
    check(torch.equal(comm.allreduce(ints[r], "sum"), ints.sum(0)), "allreduce int64 sum")
    H = torch.randn((n, 8), generator=gen).to(torch.float16)
    close(comm.allreduce(H[r], "sum").float(), H.float().sum(0), 1e-2, "allreduce float16")
    B = torch.rand((n, 4), generator=gen) > 0.5
    check(torch.equal(comm.allgather(B[r]), B), "allgather bool")
    # non-contiguous input, requires_grad input
    Y = torch.randn((n, 4, 3), generator=gen, dtype=torch.float64)
    close(comm.allreduce(Y[r].t(), "sum"), Y.sum(0).t(), 1e-12, "allreduce of a transpose")
    z = Y[r].clone().requires_grad_(True)
    close(comm.allreduce(z, "sum"), Y.sum(0), 1e-12, "allreduce of a requires_grad tensor")
    comm.barrier()
    CHECKS[0] += 1


def traffic_checks(comm, sim):
    n, r = comm.size, comm.rank
    topo = T.make("exponential", n)
    comm.reset_traffic()
    x = torch.ones(10, dtype=torch.float64)
    comm.neighbor_allreduce(x, topo)
    comm.allreduce(x)
    if sim is not None:
        sim.reset_traffic()
        X = torch.ones((n, 10), dtype=torch.float64)
        sim.neighbor_allreduce(X, topo)
        sim.allreduce(X)
        for op in ("neighbor_allreduce", "allreduce"):
            mine, theirs = comm.traffic.by_op[op], sim.traffic.by_op[op]
            check(mine["messages"] == theirs["messages"][r]
                  and abs(mine["bytes"] - theirs["bytes"][r]) < 1e-9,
                  f"traffic of {op} like SimComm: {mine} vs {theirs}")
    deg = len(topo.out_neighbors(r))
    t = comm.traffic
    check(t.by_op["neighbor_allreduce"]["messages"] == deg
          and t.by_op["neighbor_allreduce"]["bytes"] == deg * 80, f"traffic {t}")
    check(t.messages == deg + 2 * (n - 1), f"traffic total {t}")
    # small neighbor_allreduces are tallied on their call plans and counted when traffic is
    # read: three calls, one untracked, one after a reset
    comm.reset_traffic()
    for _ in range(3):
        comm.neighbor_allreduce(x, topo)
    with comm.untracked():
        comm.neighbor_allreduce(x, topo)
    entry = comm.traffic.by_op["neighbor_allreduce"]
    check(entry == {"calls": 3, "messages": 3 * deg, "bytes": 3 * deg * 80},
          f"three tracked calls of four: {entry}")
    comm.neighbor_allreduce(x, topo)
    comm.reset_traffic()
    check(comm.traffic.messages == 0 and not comm.traffic.by_op, "reset drops tallied calls")


# ---------------------------------------------------------------------------- failures
def expect_raise(exc_type, fn, what):
    try:
        fn()
    except exc_type as exc:
        CHECKS[0] += 1
        return exc
    raise AssertionError(f"rank {RANK}: {what} did not raise {exc_type.__name__}")


def bad_input_checks(comm):
    n = comm.size
    x = torch.zeros(3, dtype=torch.float64)
    ring = T.make("ring", n)
    seq = comm.seq
    expect_raise(TopologyError, lambda: comm.neighbor_allreduce(x, T.make("ring", n + 1)),
                 "topology of the wrong size")
    expect_raise(TopologyError, lambda: comm.neighbor_allreduce(
        x, T.make("one_peer_exponential", n)), "dynamic topology without .at(k)")
    expect_raise(TypeError, lambda: comm.allreduce([1.0, 2.0]), "a list instead of a tensor")
    expect_raise(TypeError, lambda: comm.neighbor_allreduce(torch.zeros(3, dtype=torch.int64),
                                                            ring), "integer neighbor_allreduce")
    expect_raise(TypeError, lambda: comm.allreduce(torch.zeros(3, dtype=torch.int64)),
                 "mean of integers")
    expect_raise(ValueError, lambda: comm.allreduce(x, op="max"), "unknown reduce op")
    expect_raise(ValueError, lambda: comm.broadcast(x, root=n), "root out of range")
    expect_raise(ValueError, lambda: comm.neighbor_allreduce(x, ring, weighted_by="both"),
                 "unknown weights mode")
    expect_raise(ValueError, lambda: comm.allreduce(x, timeout=-1), "negative timeout")
    expect_raise(ValueError, lambda: comm.neighbor_alltoall(torch.zeros(ring.degree + 1, 3),
                                                            ring), "alltoall with wrong D_out")
    if n > 2:
        row_only = next(t for name, t in all_topologies_cached(n) if name == "row_random")
        expect_raise(TopologyError, lambda: comm.neighbor_allreduce(x, row_only,
                                                                    weighted_by="sender"),
                     "sender weights on a row-stochastic matrix")
    expect_raise(ValueError, lambda: MPIComm(data_plane="carrier-pigeon"), "bad data_plane")
    expect_raise(TypeError, lambda: MPIComm(comm="world"), "comm that is not a communicator")
    if not torch.cuda.is_available():
        expect_raise(ValueError, lambda: MPIComm(device="cuda"), "CUDA device without CUDA")
        expect_raise(ValueError, lambda: MPIComm(data_plane="nccl"), "NCCL without CUDA")
    check(comm.seq == seq and comm.in_sync, "bad input must not advance the sequence")


_TOPO_CACHE = {}


def all_topologies_cached(n):
    if n not in _TOPO_CACHE:
        _TOPO_CACHE[n] = [(t.name, t) for t in custom_topologies(n, np.random.default_rng(7))]
    return _TOPO_CACHE[n]


def skipped_collective(comm, last):
    """Rank ``last`` skips an allreduce: the others time out naming it, within the timeout."""
    x = torch.full((4,), float(comm.rank), dtype=torch.float64)
    if comm.rank != last:
        t0 = time.monotonic()
        exc = expect_raise(CollectiveTimeoutError, lambda: comm.allreduce(x, timeout=1.5),
                           "skipped allreduce")
        elapsed = time.monotonic() - t0
        check(exc.missing == (last,) and f"rank {last} did not arrive" in str(exc),
              f"timeout names rank {last}: {exc}")
        check(1.4 <= elapsed <= 4.0, f"allreduce waited {elapsed:.2f} s for a 1.5 s timeout")
        check(not comm.in_sync and "resync" in str(exc), "out of sync after a timeout")
        t0 = time.monotonic()
        exc = expect_raise(CommunicatorOutOfSyncError, comm.barrier, "op after a timeout")
        check(time.monotonic() - t0 < 0.5 and "resync()" in str(exc), f"fast refusal: {exc}")
    stale = comm._tag(0)  # on the skipper: the tag of the headers the others sent it
    comm.resync(timeout=20)
    check(comm.in_sync, "in sync after resync")
    if comm.rank == last:
        check(not comm._p2p.Iprobe(MPI.ANY_SOURCE, stale), "resync drained stale headers")
    close(comm.allreduce(x, "sum"), torch.full((4,), sum(range(comm.size)), dtype=torch.float64),
          1e-12, "allreduce after resync")


def skipped_neighbor_op(comm, skipper):
    """Rank ``skipper`` skips a ring neighbor_allreduce: only its neighbors time out."""
    n = comm.size
    ring = T.make("ring", n)
    x = torch.full((3,), float(comm.rank), dtype=torch.float64)
    near = {(skipper - 1) % n, (skipper + 1) % n}
    if comm.rank == skipper:
        pass
    elif comm.rank in near:
        exc = expect_raise(CollectiveTimeoutError,
                           lambda: comm.neighbor_allreduce(x, ring, timeout=1.0, tag="s"),
                           "neighbor of a rank that skipped")
        check(skipper in exc.missing and set(exc.missing) <= near | {skipper},
              f"neighbor timeout names rank {skipper}: {exc}")
    else:  # not adjacent to the skipper: its exchange completes
        y = comm.neighbor_allreduce(x, ring, timeout=5.0, tag="s")
        close(y, (ring.W[comm.rank] * np.arange(n)).sum() * np.ones(3), 1e-12,
              "neighbor op far from the skipper")
    stale = (comm._tag(0), comm._tag(1))
    resync_all(timeout=20)
    if comm.rank == skipper:
        check(not any(comm._p2p.Iprobe(MPI.ANY_SOURCE, t) for t in stale),
              "resync drained the stale headers and payloads")
    y = comm.neighbor_allreduce(x, ring)
    close(y, (ring.W[comm.rank] * np.arange(n)).sum() * np.ones(3), 1e-12, "after resync_all")


def interrupted_wait(comm):
    """Ctrl-C (SIGINT) interrupts a rank waiting for a collective that never comes."""
    if comm.rank == 0:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        t0 = time.monotonic()
        try:
            comm.allreduce(torch.ones(2), timeout=30)
        except KeyboardInterrupt:
            CHECKS[0] += 1
        else:
            raise AssertionError("rank 0: the interrupted allreduce returned")
        elapsed = time.monotonic() - t0
        check(elapsed < 5, f"SIGINT took {elapsed:.2f} s to stop the wait")
        check(not comm.in_sync, "out of sync after an interrupt")
    comm.resync(timeout=20)
    close(comm.allreduce(torch.ones(2, dtype=torch.float64), "sum"),
          torch.full((2,), float(comm.size), dtype=torch.float64), 1e-12, "after interrupt")


def abandoned_native_collective(comm, quitter):
    """Rank ``quitter`` leaves after the header exchange (as if interrupted there), so the
    others start the native Iallreduce and time out in it; resync then replaces the
    collective communicator everywhere."""
    x = torch.ones(3, dtype=torch.float64)
    if comm.rank == quitter:
        exchange = comm._exchange_all

        def exchange_then_interrupt(state, hdr):
            exchange(state, hdr)
            raise KeyboardInterrupt

        comm._exchange_all = exchange_then_interrupt
        try:
            expect_raise(KeyboardInterrupt, lambda: comm.allreduce(x, timeout=1.5, tag="q"),
                         "interrupted after the headers")
        finally:
            del comm._exchange_all
    else:
        exc = expect_raise(CollectiveTimeoutError,
                           lambda: comm.allreduce(x, timeout=1.5, tag="q"),
                           "a native collective one rank left")
        check("did not move in time" in str(exc) and comm._coll_poisoned,
              f"data-phase timeout: {exc}")
    old = comm._coll
    comm.resync(timeout=20)
    check(comm._coll is not old and not comm._coll_poisoned, "resync renews the collective comm")
    close(comm.allreduce(x, "sum"), torch.full((3,), float(comm.size), dtype=torch.float64),
          1e-12, "allreduce on the renewed collective communicator")


def no_leftovers(comm, tags, what):
    """No message with the tags of a finished operation waits here: every message sent to
    this rank in that operation was received by it (a mismatching payload included)."""
    check(not any(comm._p2p.Iprobe(MPI.ANY_SOURCE, t) for t in tags),
          f"no message left behind by {what}")


def layout_checks(comm):
    """The protocol's layout members on a rank: no node dim, rank 0 reports, one_node is x."""
    check(comm.node_dims == () and comm.reports == (comm.rank == 0), "node_dims and reports")
    x = torch.arange(3, dtype=torch.float64)
    check(comm.one_node(x) is x, "one_node on a rank is the value itself")


def mismatch_checks(comm):
    n, r = comm.size, comm.rank
    # global: rank 0 passes a different shape; every rank sees it, nobody hangs
    x = torch.zeros(4 if r == 0 else 3, dtype=torch.float64)
    exc = expect_raise(CollectiveMismatchError, lambda: comm.allreduce(x, timeout=20),
                       "allreduce with different shapes")
    check("rank 0 called allreduce(float64 (4,)" in str(exc) and "(3,)" in str(exc),
          f"mismatch names rank 0 and the shapes: {exc}")
    check(comm.in_sync, "a mismatch leaves the communicator in sync")
    # global: different dtypes
    x = torch.zeros(3, dtype=torch.float32 if r == n - 1 else torch.float64)
    exc = expect_raise(CollectiveMismatchError, lambda: comm.broadcast(x, 0, timeout=20),
                       "broadcast with different dtypes")
    check(f"rank {n - 1} called broadcast(float32" in str(exc), f"dtype mismatch: {exc}")
    # global: different operations at the same point
    x = torch.zeros(3, dtype=torch.float64)
    op = comm.allgather if r == 0 else comm.allreduce
    exc = expect_raise(CollectiveMismatchError, lambda: op(x, timeout=20), "different ops")
    check("allgather" in str(exc) and "allreduce" in str(exc), f"op mismatch: {exc}")
    # neighbor: rank 0 sends a larger tensor (1 MiB vs 0.5 MiB, so rendezvous-size messages
    # must be drained), ranks that receive from 0 raise; the others complete normally
    ring = T.make("ring", n)
    size = 131072 if r == 0 else 65536
    x = torch.ones(size, dtype=torch.float64)
    ins = set(int(j) for j in ring.in_neighbors(r))
    sees = (0 in ins) or (r == 0 and len(ins) > 0)
    tags = (comm._tag(0), comm._tag(1))
    if sees:
        exc = expect_raise(CollectiveMismatchError,
                           lambda: comm.neighbor_allreduce(x, ring, timeout=20, tag="m"),
                           "neighbor_allreduce with different shapes")
        check("(131072,)" in str(exc) and "(65536,)" in str(exc), f"neighbor mismatch: {exc}")
    else:
        y = comm.neighbor_allreduce(x, ring, timeout=20, tag="m")
        close(y, torch.ones(size, dtype=torch.float64), 1e-12, "ranks away from the mismatch")
    check(comm.in_sync, "in sync after a neighbor mismatch")
    no_leftovers(comm, tags, "a neighbor mismatch (larger and smaller payloads)")
    # neighbor: rank 0 sends an empty payload (0 bytes), the others 3 floats
    x = torch.ones(0 if r == 0 else 3, dtype=torch.float64)
    tags = (comm._tag(0), comm._tag(1))
    if sees:
        exc = expect_raise(CollectiveMismatchError,
                           lambda: comm.neighbor_allreduce(x, ring, timeout=20, tag="m"),
                           "neighbor_allreduce with an empty tensor on rank 0")
        check("(0,)" in str(exc) and "(3,)" in str(exc), f"empty-payload mismatch: {exc}")
    else:
        comm.neighbor_allreduce(x, ring, timeout=20, tag="m")
    no_leftovers(comm, tags, "a neighbor mismatch with an empty payload")
    inline_mismatch_checks(comm, ring, sees)
    # the same shapes again, matching: the call plans of the failed calls still work
    x = torch.full((3,), float(r), dtype=torch.float64)
    close(comm.neighbor_allreduce(x, ring, timeout=20),
          (ring.W[r] * np.arange(n)).sum() * np.ones(3), 1e-12, "after the mismatches")
    # neighbor: same graph, different weights on rank 0 (as if it used another k)
    other = ring.lazy() if r == 0 else ring
    x = torch.ones(3, dtype=torch.float64)
    tags = (comm._tag(0), comm._tag(1))
    if sees:
        exc = expect_raise(CollectiveMismatchError,
                           lambda: comm.neighbor_allreduce(x, other, timeout=20, tag="m"),
                           "neighbor_allreduce with different topologies")
        check("different topology" in str(exc), f"topology mismatch: {exc}")
    else:
        comm.neighbor_allreduce(x, other, timeout=20, tag="m")
    no_leftovers(comm, tags, "a topology mismatch")
    # a global op where the others call a neighbor op on the complete graph, with
    # rendezvous-size payloads: rank 0 drains what the others send it, and nobody hangs
    full = T.make("complete", n)
    x = torch.ones(131072, dtype=torch.float64)
    if r == 0:
        op = lambda: comm.allreduce(x, timeout=20, tag="m")
    else:
        op = lambda: comm.neighbor_allreduce(x, full, timeout=20, tag="m")
    tags = (comm._tag(0), comm._tag(1))
    exc = expect_raise(CollectiveMismatchError, op, "a global op against a neighbor op")
    check("allreduce(" in str(exc) and "neighbor_allreduce(" in str(exc),
          f"global vs neighbor: {exc}")
    check(comm.in_sync, "in sync after a global-vs-neighbor mismatch")
    no_leftovers(comm, tags, "a global-vs-neighbor mismatch")
    # still usable, no resync needed
    close(comm.allreduce(torch.ones(2, dtype=torch.float64), "sum"),
          torch.full((2,), float(n), dtype=torch.float64), 1e-12, "after the mismatches")


def inline_mismatch_checks(comm, ring, sees):
    """Mismatches where payloads travel inside the header's message (at most 4 KiB,
    declearn.comm.mpi.inline): a larger inline payload, an inline payload against one sent
    apart (both ways), a neighbor_allgather (payload apart) against a small
    neighbor_allreduce, and a global op against small neighbor ops. The ranks that see a
    mismatch raise naming both calls, nobody hangs, and nothing is left behind."""
    n, r = comm.size, comm.rank
    for size0, size in ((300, 3), (4096, 3), (3, 4096)):  # rank 0's length, the others'
        x = torch.ones(size0 if r == 0 else size, dtype=torch.float64)
        tags = (comm._tag(0), comm._tag(1))
        if sees:
            exc = expect_raise(CollectiveMismatchError,
                               lambda x=x: comm.neighbor_allreduce(x, ring, timeout=20, tag="m"),
                               f"neighbor_allreduce of {size0} against {size} values")
            check(f"({size0},)" in str(exc) and f"({size},)" in str(exc),
                  f"inline mismatch {size0} vs {size}: {exc}")
        else:
            comm.neighbor_allreduce(x, ring, timeout=20, tag="m")
        check(comm.in_sync, f"in sync after an inline mismatch ({size0} vs {size})")
        no_leftovers(comm, tags, f"an inline mismatch ({size0} vs {size} values)")
    x = torch.ones(3, dtype=torch.float64)
    tags = (comm._tag(0), comm._tag(1))
    if sees:
        op = comm.neighbor_allgather if r == 0 else comm.neighbor_allreduce
        exc = expect_raise(CollectiveMismatchError, lambda: op(x, ring, timeout=20, tag="m"),
                           "neighbor_allgather against a small neighbor_allreduce")
        check("neighbor_allgather(" in str(exc) and "neighbor_allreduce(" in str(exc),
              f"allgather vs inline allreduce: {exc}")
    elif r == 0:
        comm.neighbor_allgather(x, ring, timeout=20, tag="m")
    else:
        comm.neighbor_allreduce(x, ring, timeout=20, tag="m")
    no_leftovers(comm, tags, "a neighbor_allgather against a small neighbor_allreduce")
    full = T.make("complete", n)
    tags = (comm._tag(0), comm._tag(1))
    if r == 0:
        op = lambda: comm.allreduce(x, timeout=20, tag="m")
    else:
        op = lambda: comm.neighbor_allreduce(x, full, timeout=20, tag="m")
    exc = expect_raise(CollectiveMismatchError, op, "a global op against small neighbor ops")
    check("allreduce(" in str(exc) and "neighbor_allreduce(" in str(exc),
          f"global vs inline neighbor: {exc}")
    check(comm.in_sync, "in sync after a global-vs-inline mismatch")
    no_leftovers(comm, tags, "a global op against small neighbor ops")
    close(comm.neighbor_allreduce(torch.full((3,), float(r), dtype=torch.float64), ring),
          (ring.W[r] * np.arange(n)).sum() * np.ones(3), 1e-12, "after the inline mismatches")


def subcomm_checks(sim_factory):
    color = RANK % 2
    sub = world.Split(color, RANK)
    comm = MPIComm(sub, timeout=20)
    n, r = comm.size, comm.rank
    check(n == len(range(color, N, 2)) and r == RANK // 2, "sub-communicator rank and size")
    members = torch.tensor(list(range(color, N, 2)), dtype=torch.float64)
    close(comm.allreduce(torch.tensor([float(RANK)], dtype=torch.float64), "sum"),
          members.sum().reshape(1), 1e-12, "allreduce on a sub-communicator")
    ring = T.make("ring", n)
    y = comm.neighbor_allreduce(torch.tensor([float(RANK)], dtype=torch.float64), ring)
    close(y, (torch.as_tensor(np.array(ring.W)) @ members)[r].reshape(1), 1e-12,
          "neighbor_allreduce on a sub-communicator")
    comm.close()
    exc = expect_raise(CommunicatorOutOfSyncError, comm.barrier, "an op on a closed comm")
    check("closed" in str(exc), f"closed: {exc}")
    sub.Free()
    for _ in range(3):  # created and dropped: the garbage collector frees its communicators
        check(MPIComm(timeout=20).allreduce(torch.ones(1), "sum").item() == N, "throwaway comm")


def plane_logic_checks(comm):
    """The CUDA data planes' logic, run on CPU tensors: staging through (unpinned) host
    buffers, and handing tensors to MPI directly as CUDA-aware MPI would (no stream here)."""
    from declearn.comm.mpi import planes as gpu

    n, r = comm.size, comm.rank
    cache = gpu.BufferCache()
    plain_get = cache.get
    cache.get = lambda key, shape, dtype, device, *, pin=False: plain_get(key, shape, dtype,
                                                                         device)
    sync = gpu._CudaAwareSession._sync
    gpu._CudaAwareSession._sync = lambda self, t: None
    host = comm._host
    gen = torch.Generator().manual_seed(11)
    try:
        for plane in (gpu.StagedPlane(cache), gpu.CudaAwarePlane(cache)):
            comm._host = plane
            for name in ("exponential", "star"):
                topo = T.make(name, n)
                W = torch.as_tensor(np.array(topo.W))
                X = torch.randn((n, 3, 2), generator=gen, dtype=torch.float64)
                what = f"{plane.name} plane, {name}"
                for _ in range(2):  # the second time through cached buffers
                    close(comm.neighbor_allreduce(X[r], topo),
                          (W @ X.reshape(n, -1)).reshape(n, 3, 2)[r], 1e-12,
                          f"neighbor_allreduce, {what}")
                ins = [int(j) for j in topo.in_neighbors(r)]
                g = comm.neighbor_allgather(X[r], topo)
                check(all(torch.equal(g[s], X[j]) for s, j in enumerate(ins)),
                      f"neighbor_allgather, {what}")
                d_out = int(topo.out_degrees.max())
                M = torch.randn((n, d_out, 2), generator=gen, dtype=torch.float64)
                a = comm.neighbor_alltoall(M[r], topo)
                check(all(torch.equal(a[s], M[j, list(topo.out_neighbors(j)).index(r)])
                          for s, j in enumerate(ins)), f"neighbor_alltoall, {what}")
                close(comm.allreduce(X[r], "sum"), X.sum(0), 1e-12, f"allreduce, {what}")
                check(torch.equal(comm.broadcast(X[r], n - 1), X[n - 1]), f"broadcast, {what}")
                check(torch.equal(comm.allgather(X[r]), X), f"allgather, {what}")
                H = torch.randn((n, 4), generator=gen).to(torch.bfloat16)
                close(comm.allreduce(H[r], "sum").double(), H.double().sum(0), 2e-2,
                      f"bfloat16 allreduce, {what}")
    finally:
        comm._host = host
        gpu._CudaAwareSession._sync = sync


def gpu_plane_checks():
    from declearn.comm import placement
    from declearn.comm.mpi import planes as gpu

    path = gpu.libmpi_path()
    check(path is not None and "mpi" in os.path.basename(path), f"libmpi found: {path}")
    support = gpu.query_cuda_support(path)
    check(support in (True, False, None), "query_cuda_support answers")
    old = os.environ.get("DECLEARN_CUDA_AWARE")
    try:
        os.environ["DECLEARN_CUDA_AWARE"] = "1"
        check(gpu.cuda_aware_mpi() is True, "DECLEARN_CUDA_AWARE=1 forces CUDA-aware")
        os.environ["DECLEARN_CUDA_AWARE"] = "0"
        check(gpu.cuda_aware_mpi() is False, "DECLEARN_CUDA_AWARE=0 forces staging")
    finally:
        if old is None:
            os.environ.pop("DECLEARN_CUDA_AWARE", None)
        else:
            os.environ["DECLEARN_CUDA_AWARE"] = old
    env = os.environ.get("MPI_LOCALRANKID")
    if env is not None:
        check(placement.local_rank() == int(env), "local rank agrees with MPI_LOCALRANKID")
    if not torch.cuda.is_available():
        check(placement.default_device() == torch.device("cpu"), "default device is cpu")


def main():
    t0 = time.monotonic()
    comm = MPIComm(timeout=30)
    check(comm.size == N and comm.rank == RANK and comm.device == torch.device("cpu"),
          f"{comm!r}")
    sim = sim_comm(N)
    covered = oracle_checks(comm, sim)
    global_checks(comm, sim)
    traffic_checks(comm, sim)
    bad_input_checks(comm)
    gpu_plane_checks()
    plane_logic_checks(comm)
    layout_checks(comm)
    if N >= 2:
        mismatch_checks(comm)
        skipped_collective(comm, N - 1)
        skipped_neighbor_op(comm, 1)
        interrupted_wait(comm)
        abandoned_native_collective(comm, N - 1)
        subcomm_checks(sim)
        # traffic of a user on COMM_WORLD never mixes with ours
        world.Barrier()
    comm.barrier()
    say(f"MPICOMM-OK rank {RANK} of {N}: {CHECKS[0]} checks, {covered} topologies, "
        f"SimComm oracle {'on' if sim is not None else 'absent'}, "
        f"{time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    try:
        main()
    except BaseException:  # noqa: BLE001 - make every failure loud and end the whole job
        print(f"MPICOMM-FAIL rank {RANK}:\n{traceback.format_exc()}", file=sys.stderr,
              flush=True)
        world.Abort(1)
