"""SimComm against oracles computed here, independently of its kernels.

* neighbor_allreduce: ``W @ X`` in numpy float64 with ``W = topology.W`` (the dense matrix);
* allgather / alltoall slots: explicit Python loops over ``in_neighbors`` / ``out_neighbors``;
* collectives: numpy sums; traffic: out-degrees counted from the columns of ``W``.

Every registered topology family is covered (static ones, and dynamic ones at several k);
a family missing from FAMILY_CASES fails ``test_every_family_has_a_case``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from declearn.comm import SimComm
from declearn.comm.sim import kernels as sim_kernels
from declearn.errors import TopologyError
from declearn.topology import Topology, families, make

# name -> (parameters, node counts). n = 48 > DENSE_MAX_N lets "auto" choose circulant and
# sparse kernels; n = 1 is the edge case with no neighbors at all.
FAMILY_CASES = {
    "ring": ({}, (1, 12, 48)),
    "grid": ({}, (1, 12, 48)),
    "star": ({}, (1, 12, 48)),
    "complete": ({}, (1, 12, 48)),
    "erdos_renyi": ({"p": 0.4}, (1, 12, 48)),
    "geometric": ({"radius": 0.6}, (1, 12, 48)),
    "hypercube": ({}, (1, 16, 64)),
    "exponential": ({}, (1, 12, 48)),
    "chain": ({}, (1, 12, 48)),
    "binary_tree": ({}, (1, 12, 48)),
    "d_equistatic": ({}, (1, 12, 48)),
    "u_equistatic": ({"M": 2}, (1, 12, 48)),
    "one_peer_exponential": ({}, (1, 12, 48)),
    "one_peer": ({}, (1, 12, 48)),
    "od_equidyn": ({}, (1, 12, 48)),
    "ou_equidyn": ({}, (1, 12, 48)),
    "ceca": ({}, (1, 12, 48)),
}
STEPS = (0, 1, 2, 7)  # iterations k at which dynamic families are checked
NODE_SHAPES = ((), (3,), (2, 3))  # node-local tensors of 1, 2 and 3 dims
DTYPES = (torch.float32, torch.float64)
ATOL = {torch.float32: 2e-5, torch.float64: 1e-12}


# ------------------------------------------------------------------------------ oracles
def oracle_mix(topo, x):
    X = x.double().numpy().reshape(topo.n, -1)
    return (np.asarray(topo.W) @ X).reshape(x.shape)


def oracle_allgather(topo, x):
    n = topo.n
    lists = [list(topo.in_neighbors(i)) for i in range(n)]
    D = max((len(nb) for nb in lists), default=0)
    out = np.zeros((n, D) + tuple(x.shape[1:]))
    for i, nb in enumerate(lists):
        for t, j in enumerate(nb):
            out[i, t] = x[j].double().numpy()
    return out


def d_out_of(topo):
    return max((len(topo.out_neighbors(j)) for j in range(topo.n)), default=0)


def oracle_alltoall(topo, m):
    n = topo.n
    lists = [list(topo.in_neighbors(i)) for i in range(n)]
    D = max((len(nb) for nb in lists), default=0)
    out = np.zeros((n, D) + tuple(m.shape[2:]))
    for i, nb in enumerate(lists):
        for t, j in enumerate(nb):
            r = list(topo.out_neighbors(j)).index(i)
            out[i, t] = m[j, r].double().numpy()
    return out


def oracle_out_degrees(topo):
    A = np.asarray(topo.W) != 0
    np.fill_diagonal(A, False)
    return A.sum(axis=0)  # column j: the nodes j sends to


def push_sum_topology(n):
    """Directed, column-stochastic: node j keeps a share and sends equal shares to j+1, and
    also to j+3 when j is even."""
    rows, cols, vals = [], [], []
    for j in range(n):
        dests = [j, (j + 1) % n] + ([(j + 3) % n] if j % 2 == 0 else [])
        for i in dests:
            rows.append(i), cols.append(j), vals.append(1 / len(dests))
    return Topology.from_coo(n, rows, cols, vals, stochastic="column")


def kernels_for(topo):
    return ("auto", "sparse", "dense") + (("circulant",) if topo.shifts is not None else ())


def family_topologies():
    for name in families():
        if name not in FAMILY_CASES:
            continue
        params, ns = FAMILY_CASES[name]
        for n in ns:
            topo = make(name, n, **params)
            for k in (STEPS if topo.is_dynamic else (0,)):
                yield f"{name}(n={n}, k={k})", topo.at(k)


def close(actual, expected, dtype, what):
    np.testing.assert_allclose(
        actual.double().numpy(), expected, rtol=0, atol=ATOL[dtype], err_msg=what
    )


# ------------------------------------------------------------------------ every family
def test_every_family_has_a_case():
    missing = sorted(set(families()) - set(FAMILY_CASES))
    assert not missing, (
        f"Topology families {missing} have no entry in FAMILY_CASES of tests/test_simcomm.py: "
        "add their parameters and node counts so the simulator is checked on them."
    )


@pytest.mark.parametrize("name", sorted(FAMILY_CASES))
def test_family_primitives_match_oracles(name):
    if name not in families():
        pytest.fail(f"FAMILY_CASES names {name!r}, which is not a registered family.")
    params, ns = FAMILY_CASES[name]
    gen = torch.Generator().manual_seed(0)
    for n in ns:
        dyn = make(name, n, **params)
        for k in (STEPS if dyn.is_dynamic else (0,)):
            topo = dyn.at(k)
            where = f"{name}(n={n}, k={k})"
            comms = {kern: SimComm(n, kernel=kern) for kern in kernels_for(topo)}
            d_out = d_out_of(topo)
            for shape in NODE_SHAPES:
                for dtype in DTYPES:
                    x = torch.randn((n,) + shape, generator=gen, dtype=dtype)
                    want = oracle_mix(topo, x)
                    for kern, comm in comms.items():
                        got = comm.neighbor_allreduce(x, topo)
                        assert got.shape == x.shape and got.dtype == dtype
                        close(got, want, dtype, f"neighbor_allreduce {kern} on {where} {shape}")
                    comm = comms["auto"]
                    got = comm.neighbor_allgather(x, topo)
                    close(got, oracle_allgather(topo, x), dtype, f"allgather on {where}")
                    m = torch.randn((n, d_out) + shape, generator=gen, dtype=dtype)
                    got = comm.neighbor_alltoall(m, topo)
                    close(got, oracle_alltoall(topo, m), dtype, f"alltoall on {where}")


def test_directed_topology_primitives_match_oracles():
    """A directed graph whose in- and out-neighbor lists differ, so slot order matters."""
    topo = push_sum_topology(11)
    gen = torch.Generator().manual_seed(1)
    for shape in NODE_SHAPES:
        x = torch.randn((11,) + shape, generator=gen, dtype=torch.float64)
        for kern in kernels_for(topo):
            got = SimComm(11, kernel=kern).neighbor_allreduce(x, topo, weighted_by="sender")
            close(got, oracle_mix(topo, x), torch.float64, f"directed {kern}")
        comm = SimComm(11)
        close(comm.neighbor_allgather(x, topo), oracle_allgather(topo, x), torch.float64, "ag")
        m = torch.randn((11, d_out_of(topo)) + shape, generator=gen, dtype=torch.float64)
        close(comm.neighbor_alltoall(m, topo), oracle_alltoall(topo, m), torch.float64, "a2a")


def test_kernels_agree_on_large_circulant():
    """The same topology through the three kernels, a size where rounding could show."""
    topo = make("exponential", 200)
    x = torch.randn(200, 64, dtype=torch.float64)
    outs = [SimComm(200, kernel=k).neighbor_allreduce(x, topo) for k in sim_kernels.KERNELS]
    want = oracle_mix(topo, x)
    for k, out in zip(sim_kernels.KERNELS, outs):
        close(out, want, torch.float64, k)
    ring = make("ring", 200)  # large enough for "auto" to take the slices
    x = torch.randn(200, 1000, dtype=torch.float32)
    comm = SimComm(200)
    close(comm.neighbor_allreduce(x, ring), oracle_mix(ring, x), torch.float32, "auto ring")
    assert ("sim.mix", "circulant", comm.device, torch.float32) in ring._cache


def test_auto_kernel_choice():
    assert sim_kernels.choose_kernel(make("ring", 64)) == "circulant"
    assert sim_kernels.choose_kernel(make("one_peer_exponential", 64).at(3)) == "circulant"
    assert sim_kernels.choose_kernel(make("exponential", 1024)) == "sparse"
    assert sim_kernels.choose_kernel(make("erdos_renyi", 200, p=0.06)) == "sparse"
    assert sim_kernels.choose_kernel(make("complete", 64)) == "dense"
    assert sim_kernels.choose_kernel(make("ring", 8)) == "dense"
    # small tensors: one sparse product beats the per-shift calls
    assert sim_kernels.choose_kernel(make("ring", 64), d=10) == "sparse"
    assert sim_kernels.choose_kernel(make("ring", 64), d=10_000) == "circulant"
    # a moderately dense graph: sparse for small values, dense (BLAS) for large ones
    er = make("erdos_renyi", 200, p=0.3)
    assert sim_kernels.choose_kernel(er, d=10) == "sparse"
    assert sim_kernels.choose_kernel(er, d=10_000) == "dense"
    comm = SimComm(200)
    for d, kernel in ((10, "sparse"), (10_000, "dense")):
        comm.neighbor_allreduce(torch.zeros(200, d, dtype=torch.float64), er)
        assert ("sim.mix", kernel, comm.device, torch.float64) in er._cache


# ------------------------------------------------------------------------ collectives
@pytest.mark.parametrize("shape", NODE_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_collectives_match_numpy(shape, dtype):
    n = 7
    comm = SimComm(n)
    x = torch.randn((n,) + shape, dtype=dtype)
    X = x.double().numpy()
    close(comm.allreduce(x, "sum"), np.broadcast_to(X.sum(0), X.shape), dtype, "sum")
    close(comm.allreduce(x, "mean"), np.broadcast_to(X.mean(0), X.shape), dtype, "mean")
    close(comm.allreduce(x), np.broadcast_to(X.mean(0), X.shape), dtype, "default op")
    for root in (0, 3, n - 1):
        close(comm.broadcast(x, root), np.broadcast_to(X[root], X.shape), dtype, "broadcast")
    close(comm.broadcast(x), np.broadcast_to(X[0], X.shape), dtype, "default root")
    got = comm.allgather(x)
    assert got.shape == (n, n) + shape
    close(got, np.stack([X] * n), dtype, "allgather")
    assert comm.barrier() is None


def test_integer_tensors():
    comm = SimComm(4)
    x = torch.tensor([[1, 2], [3, 4], [5, 6], [7, 2**40]], dtype=torch.int64)
    got = comm.allreduce(x, "sum")
    assert got.dtype == torch.int64
    assert got.tolist() == [[16, 2**40 + 12]] * 4
    small = torch.tensor([100, 100, 100, 100], dtype=torch.int8)
    assert comm.allreduce(small, "sum").dtype == torch.int8  # own dtype, as documented
    assert comm.broadcast(x, 3).tolist() == [[7, 2**40]] * 4
    assert torch.equal(comm.allgather(x), x.expand(4, 4, 2))
    topo = make("ring", 4)
    assert comm.neighbor_allgather(x, topo)[0].tolist() == [[3, 4], [7, 2**40]]
    b = torch.tensor([True, False, True, False])
    assert comm.neighbor_allgather(b, topo).tolist() == [[False, False], [True, True]] * 2
    with pytest.raises(TypeError, match=r"round.*convert"):
        comm.neighbor_allreduce(x, topo)
    with pytest.raises(TypeError, match=r"round.*convert"):
        comm.allreduce(x, "mean")
    with pytest.raises(TypeError, match="bool"):
        comm.allreduce(b, "sum")


def test_other_dtypes():
    topo = make("erdos_renyi", 40, p=0.3)
    x = torch.randn(40, 5, dtype=torch.float64)
    want = oracle_mix(topo, x)
    for dtype, atol in ((torch.bfloat16, 0.05), (torch.float16, 5e-3)):
        for kern in ("sparse", "dense"):
            got = SimComm(40, kernel=kern).neighbor_allreduce(x.to(dtype), topo)
            assert got.dtype == dtype
            np.testing.assert_allclose(got.double().numpy(), want, atol=atol, rtol=0)
    z = torch.randn(40, 5, dtype=torch.complex128)
    for kern in ("sparse", "dense"):
        got = SimComm(40, kernel=kern).neighbor_allreduce(z, topo).numpy()
        np.testing.assert_allclose(got, np.asarray(topo.W) @ z.numpy(), atol=1e-12, rtol=0)


# --------------------------------------------------------------------- traffic counters
def test_traffic_counts_out_degrees():
    n = 12
    comm = SimComm(n, dtype=torch.float32)
    topo = make("star", n)  # out-degrees 11 (center) and 1 (leaves)
    deg = oracle_out_degrees(topo)
    assert deg.tolist() == [11] + [1] * 11
    x = torch.randn(n, 2, 3, dtype=torch.float32)  # 24 bytes per node
    comm.neighbor_allreduce(x, topo)
    comm.neighbor_allgather(x, topo)
    m = torch.randn(n, d_out_of(topo), 5, dtype=torch.float64)  # 40 bytes per message
    comm.neighbor_alltoall(m, topo)
    t = comm.traffic
    np.testing.assert_array_equal(t.messages, 3 * deg)
    np.testing.assert_allclose(t.bytes, deg * (24 + 24 + 40))
    assert t.by_op["neighbor_allgather"]["calls"] == 1
    np.testing.assert_allclose(t.by_op["neighbor_alltoall"]["bytes"], deg * 40)

    comm.reset_traffic()
    assert comm.traffic.messages.sum() == 0 and comm.traffic.by_op == {}
    comm.allreduce(x)  # ring allreduce: 2(n-1) messages, 2(n-1)/n of the payload
    np.testing.assert_array_equal(comm.traffic.messages, [2 * (n - 1)] * n)
    np.testing.assert_allclose(comm.traffic.bytes, [2 * (n - 1) / n * 24] * n)
    comm.reset_traffic()
    comm.broadcast(x, root=5)
    want = np.zeros(n)
    want[5] = n - 1
    np.testing.assert_array_equal(comm.traffic.messages, want)
    np.testing.assert_allclose(comm.traffic.bytes, want * 24)
    comm.reset_traffic()
    comm.allgather(x)
    comm.barrier()
    np.testing.assert_array_equal(comm.traffic.messages, [n - 1] * n)
    np.testing.assert_allclose(comm.traffic.bytes, [(n - 1) * 24] * n)
    assert comm.traffic.by_op["barrier"]["calls"] == 1


def test_traffic_on_dynamic_and_directed_topologies():
    directed = push_sum_topology(20)  # in-degrees differ from out-degrees
    assert not np.array_equal(directed.in_degrees, directed.out_degrees)
    for dyn in (make("exponential", 20), make("erdos_renyi", 20, p=0.3), make("ou_equidyn", 20),
                directed):
        comm = SimComm(20)
        want = np.zeros(20)
        for k in range(5):
            topo = dyn.at(k)
            comm.neighbor_allreduce(torch.ones(20, 4, dtype=torch.float64), topo,
                                    weighted_by="sender")
            want += oracle_out_degrees(topo)
        np.testing.assert_array_equal(comm.traffic.messages, want)
        np.testing.assert_allclose(comm.traffic.bytes, want * 32)


# ------------------------------------------------------------------ n = 1 and odd inputs
def test_single_node():
    comm = SimComm(1)
    topo = Topology.from_matrix([[1.0]])
    x = torch.randn(1, 3, dtype=torch.float64)
    for kern in ("auto", "sparse", "dense"):
        assert torch.equal(SimComm(1, kernel=kern).neighbor_allreduce(x, topo), x)
    assert comm.neighbor_allgather(x, topo).shape == (1, 0, 3)
    assert comm.neighbor_alltoall(torch.zeros(1, 0, 3), topo).shape == (1, 0, 3)
    assert torch.equal(comm.allreduce(x, "sum"), x)
    assert torch.equal(comm.allgather(x), x[None])
    assert torch.equal(comm.broadcast(x, 0), x)
    assert comm.traffic.messages.tolist() == [0] and comm.traffic.bytes.tolist() == [0.0]
    assert comm.rank.tolist() == [0]


def test_odd_layouts_and_grad():
    n = 40
    topo = make("ring", n)
    base = torch.randn(3, n, dtype=torch.float64)
    x = base.t()  # non-contiguous node-local tensor
    for kern in kernels_for(topo):
        close(SimComm(n, kernel=kern).neighbor_allreduce(x, topo), oracle_mix(topo, x),
              torch.float64, f"non-contiguous, {kern}")
    g = torch.randn(n, 4, dtype=torch.float64, requires_grad=True)
    for kern in kernels_for(topo):
        out = SimComm(n, kernel=kern).neighbor_allreduce(g, topo)
        assert not out.requires_grad
        close(out, oracle_mix(topo, g.detach()), torch.float64, f"requires_grad, {kern}")
    empty = torch.zeros(n, 0, dtype=torch.float64)
    for kern in kernels_for(topo):
        assert SimComm(n, kernel=kern).neighbor_allreduce(empty, topo).shape == (n, 0)


def test_sender_weights_push_sum():
    """Column-stochastic W (each sender splits its mass): weighted_by='sender' mixes W @ X and
    conserves the sum; weighted_by='receiver' rejects it."""
    n = 9
    topo = push_sum_topology(n)
    assert not topo.is_row_stochastic
    rows, cols, vals = topo.rows.tolist(), topo.indices.tolist(), topo.data.tolist()
    topo2 = Topology.from_coo(n, rows + [0], cols + [4], vals + [0.5])
    x = torch.randn(n, 2, dtype=torch.float64)
    comm = SimComm(n)
    got = comm.neighbor_allreduce(x, topo, weighted_by="sender")
    close(got, oracle_mix(topo, x), torch.float64, "push-sum")
    np.testing.assert_allclose(got.sum(0).numpy(), x.sum(0).numpy(), atol=1e-12)
    with pytest.raises(TopologyError, match="Columns of W must sum to 1"):
        comm.neighbor_allreduce(x, topo2, weighted_by="sender")
    with pytest.raises(TopologyError, match="Rows of W must sum to 1"):
        comm.neighbor_allreduce(x, topo)


# ---------------------------------------------------------------------- no mutation, no alias
def test_inputs_are_not_modified_and_outputs_are_fresh():
    n = 48
    topos = [make("ring", n), make("exponential", n), make("star", n), make("complete", n)]
    x = torch.randn(n, 5, dtype=torch.float64)
    keep = x.clone()
    for topo in topos:
        for kern in kernels_for(topo):
            comm = SimComm(n, kernel=kern)
            out = comm.neighbor_allreduce(x, topo)
            out.add_(1.0)
        m = torch.randn(n, d_out_of(topo), 5, dtype=torch.float64)
        m_keep = m.clone()
        comm.neighbor_alltoall(m, topo).add_(1.0)
        comm.neighbor_allgather(x, topo).add_(1.0)
        assert torch.equal(m, m_keep)
    comm = SimComm(n)
    for out in (comm.allreduce(x), comm.allreduce(x, "sum"), comm.broadcast(x, 2),
                comm.allgather(x)):
        assert out.is_contiguous()
        out[0].add_(1.0)  # rows are not views of one another, nor of x
        assert not torch.equal(out[0], out[1])
    assert torch.equal(x, keep)


# ------------------------------------------------------------------------- plans and devices
def test_plans_are_cached_per_topology_device_dtype():
    comm = SimComm(100)
    topo = make("erdos_renyi", 100, p=0.1)
    x = torch.randn(100, 3, dtype=torch.float64)
    comm.neighbor_allreduce(x, topo)
    plan = sim_kernels.mix_plan(topo, comm.device, torch.float64, d=3)
    assert plan.kernel == "sparse" and plan.matrix.device == comm.device
    assert sim_kernels.mix_plan(topo, torch.device("cpu"), torch.float64, d=3) is plan
    assert ("sim.mix", "sparse", torch.device("cpu"), torch.float64) in topo._cache
    assert sim_kernels.mix_plan(topo, comm.device, torch.float32, d=3) is not plan
    assert "W" not in topo._cache  # the sparse plan never formed the dense n x n matrix
    dyn = make("one_peer_exponential", 16)  # period 4: step k and k + 4 share one plan
    comm = SimComm(16)
    comm.neighbor_allreduce(torch.ones(16, dtype=torch.float64), dyn.at(1))
    assert dyn.at(5) is dyn.at(1)
    assert sim_kernels.mix_plan(dyn.at(5), comm.device, torch.float64) is \
        sim_kernels.mix_plan(dyn.at(1), comm.device, torch.float64)


def test_large_sparse_plan_is_cheap():
    """O(nnz) plans: a 200 000-node ring-like graph (not circulant) mixes without any
    n x n array (which would need 320 GB)."""
    n = 200_000
    i = np.arange(n)
    rows = np.concatenate([i, i, i])
    cols = np.concatenate([i, (i + 1) % n, (i * 7 + 3) % n])
    topo = Topology.from_coo(n, rows, cols, np.full(3 * n, 1 / 3), stochastic="row")
    x = torch.randn(n, dtype=torch.float64)
    got = SimComm(n).neighbor_allreduce(x, topo)
    want = (x + x[(i + 1) % n] + x[(i * 7 + 3) % n]) / 3
    close(got, want.numpy(), torch.float64, "large sparse")
    got = SimComm(n).neighbor_allgather(x, topo)
    assert got.shape[0] == n and "W" not in topo._cache


def test_device_plumbing_on_cpu():
    comm = SimComm(4, device=torch.device("cpu"))
    assert comm.device == torch.device("cpu") and comm.rank.device == comm.device
    assert comm.rank.tolist() == [0, 1, 2, 3]
    meta = torch.empty(4, 3, device="meta")
    with pytest.raises(ValueError, match=r"is on meta.*\.to\(comm\.device\)"):
        comm.neighbor_allreduce(meta, make("ring", 4))
    with pytest.raises(ValueError, match="Cannot place tensors on device"):
        SimComm(4, device="nonsense")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            SimComm(4, device="cuda")


# ---------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_helpful_errors():
    n = 6
    comm = SimComm(n)
    ring = make("ring", n)
    x = torch.randn(n, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"node dim first, n = 6.*shape \(5, 2\)"):
        comm.neighbor_allreduce(torch.randn(5, 2, dtype=torch.float64), ring)
    with pytest.raises(ValueError, match="node dim first"):
        comm.allreduce(torch.tensor(1.0))
    with pytest.raises(TypeError, match=r"torch\.Tensor.*as_tensor"):
        comm.allreduce(np.ones((n, 2)))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        comm.neighbor_allgather([1.0] * n, ring)
    with pytest.raises(TopologyError, match="n=8 nodes but the communicator has 6"):
        comm.neighbor_allreduce(x, make("ring", 8))
    with pytest.raises(TopologyError, match=r"at\(k\)"):
        comm.neighbor_allreduce(x, make("one_peer_exponential", n))
    with pytest.raises(TopologyError, match=r"at\(k\)"):
        comm.neighbor_alltoall(x, make("od_equidyn", n))
    with pytest.raises(TopologyError, match="Expected a declearn Topology"):
        comm.neighbor_allreduce(x, np.eye(n))
    row_only = Topology.from_matrix(np.full((n, n), 1 / n) + np.eye(n) * 0 + _tilt(n))
    with pytest.raises(TopologyError, match="Columns of W must sum to 1"):
        comm.neighbor_allreduce(x, row_only, weighted_by="sender")
    col_only = Topology.from_matrix((np.full((n, n), 1 / n) + _tilt(n)).T, stochastic="column")
    with pytest.raises(TopologyError, match="Rows of W must sum to 1"):
        comm.neighbor_allreduce(x, col_only)
    with pytest.raises(ValueError, match="weighted_by must be 'receiver'"):
        comm.neighbor_allreduce(x, ring, weighted_by="both")
    with pytest.raises(ValueError, match="op must be one of"):
        comm.allreduce(x, "max")
    for root in (-1, n, 1.0, True, "0"):
        with pytest.raises(ValueError, match=r"root must be a rank in 0\.\.5"):
            comm.broadcast(x, root)
    m = torch.zeros(n, 3, 2)
    with pytest.raises(ValueError, match=r"D_out = 2 .*out_neighbors.*\(6, 3, 2\)"):
        comm.neighbor_alltoall(m, ring)
    with pytest.raises(ValueError, match="D_out"):
        comm.neighbor_alltoall(torch.zeros(n), ring)
    with pytest.raises(ValueError, match="circulant"):
        SimComm(12, kernel="circulant").neighbor_allreduce(torch.ones(12), make("star", 12))
    with pytest.raises(ValueError, match="kernel must be"):
        SimComm(n, kernel="roll")
    with pytest.raises(TypeError, match="dtype"):
        SimComm(n, dtype=torch.int64)
    with pytest.raises(TopologyError, match="at least 1"):
        SimComm(0)
    # a rejected call leaves no trace in the counters
    assert comm.traffic.messages.sum() == 0


def _tilt(n):
    """A row-sum-zero perturbation whose columns do not sum to zero."""
    T = np.zeros((n, n))
    T[:, 0] += 0.5 / n
    T[:, 1] -= 0.5 / n
    return T


def test_fast_path_refuses_a_meta_tensor_after_a_cpu_call():
    """The cached mixer of a CPU call must not accept a meta tensor of the same shape (its
    get_device() is -1, as for CPU): it would return uninitialised memory."""
    comm, ring = SimComm(4), make("ring", 4)
    comm.neighbor_allreduce(torch.ones(4, 3, dtype=torch.float64), ring)
    meta = torch.empty(4, 3, dtype=torch.float64, device="meta")
    with pytest.raises(ValueError, match="on meta but this SimComm lives on cpu"):
        comm.neighbor_allreduce(meta, ring)


def test_protocol_layout_members_on_the_simulator():
    """node_dims, reports and one_node: what algorithms use instead of asking which backend
    runs (MPIComm's answers are checked under mpiexec in tests/mpi/mpicomm_checks.py)."""
    from declearn.comm import DelayedComm

    comm = SimComm(5)
    for c in (comm, DelayedComm(comm, latency=0.0)):
        assert c.node_dims == (5,) and c.reports is True
        x = c.allreduce(torch.arange(5, dtype=torch.float64)[:, None] * torch.ones(5, 2), "sum")
        assert torch.equal(c.one_node(x), torch.full((2,), 10.0, dtype=torch.float64))
        assert c.progress() == 0 and c.in_flight == 0 and c.resync() is None


def test_the_protocol_declares_every_operation_a_backend_must_write():
    from declearn.comm import Communicator

    assert {"allreduce", "broadcast", "allgather", "barrier", "neighbor_allreduce",
            "neighbor_allgather", "neighbor_alltoall", "partial_allreduce", "pairwise_gossip",
            "node_dims", "reports", "size", "rank", "device"} <= Communicator.__abstractmethods__


def test_old_weights_keyword_of_neighbor_allreduce_warns_and_mixes_the_same():
    """``weights=`` is the old name of ``weighted_by=``: same W @ X, a DeprecationWarning
    naming the new keyword from the caller's line; DelayedComm forwards it."""
    from declearn.comm import DelayedComm

    n = 9
    topo = push_sum_topology(n)
    x = torch.randn(n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    want = torch.tensor(topo.W) @ x
    for comm in (SimComm(n), DelayedComm(SimComm(n))):
        with pytest.warns(DeprecationWarning, match=r"write weighted_by='sender'") as record:
            got = comm.neighbor_allreduce(x, topo, weights="sender")
        assert record[0].filename == __file__
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
        with pytest.raises(TopologyError, match="Rows of W must sum to 1"), \
                pytest.warns(DeprecationWarning):
            comm.neighbor_allreduce(x, topo, weights="receiver")
