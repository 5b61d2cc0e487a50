"""The mixing kernels of :mod:`declearn.comm.sim.kernels` against ``W @ X`` computed in numpy
float64 from the dense ``topology.W`` (independent of every kernel), and the circulant
kernel against ``sum_s w_s roll(X, s)`` in numpy.

Most tests shrink the cache constants (blocks of at most 512 elements and 8 columns, X
"out of cache" from 64 elements on, rows "wide" from 8 columns on, the reduce engine from 4
columns on) so that small tensors run through every path: MKL and ``reduce="sum"``, one
block and many, the last one narrower. The real constants are checked through the
functions that use them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from declearn.comm import SimComm
from declearn.comm.sim import kernels as sim_kernels
from declearn.comm.sim.circulant import mix_circulant
from declearn.topology import Topology, families, make

ATOL = {torch.float32: 2e-5, torch.float64: 1e-12}
DTYPES = (torch.float32, torch.float64)
CPU = torch.device("cpu")
PARAMS = {"erdos_renyi": {"p": 0.3}, "geometric": {"radius": 0.6}, "u_equistatic": {"M": 2}}
# node-local shapes: 1-D, thin (MKL engine), odd widths over and under the shrunk block
SHAPES = ((), (3,), (7,), (5, 13), (67,), (9, 8))


def oracle_mix(topo, x):
    X = x.double().numpy().reshape(topo.n, -1)
    return (np.asarray(topo.W) @ X).reshape(x.shape)


def close(actual, expected, dtype, what):
    np.testing.assert_allclose(
        actual.double().numpy(), expected, rtol=0, atol=ATOL[dtype], err_msg=what
    )


def kernels_for(topo):
    return ("auto", "sparse", "dense") + (("circulant",) if topo.shifts is not None else ())


@pytest.fixture
def small_cache(monkeypatch):
    """Shrunk constants (see the module docstring); records the widths of blocked calls."""
    monkeypatch.setattr(sim_kernels, "SPARSE_BLOCK_ELEMENTS", 512)
    monkeypatch.setattr(sim_kernels, "SPARSE_MIN_BLOCK_WIDTH", 8)
    monkeypatch.setattr(sim_kernels, "CACHED_ELEMENTS", 64)
    monkeypatch.setattr(sim_kernels, "SPARSE_REDUCE_MIN_D", 4)
    monkeypatch.setattr(sim_kernels, "SPARSE_WIDE_ROW", 8)
    monkeypatch.setattr(sim_kernels, "SPARSE_WIDE_MIN_DEGREE", 1)
    calls = []
    blocked = sim_kernels._mix_sparse_blocked

    def counting(x, matrix, width):
        calls.append(width)
        return blocked(x, matrix, width)

    monkeypatch.setattr(sim_kernels, "_mix_sparse_blocked", counting)
    return calls


def check_mix(comm, topo, x, mode, what, want=None):
    """Two calls (the first checks and builds the mixer, the second reuses it) against the
    oracle ``want`` (computed here if not given); the input is left as it was."""
    keep = x.clone()
    want = oracle_mix(topo, x) if want is None else want
    for _ in range(2):
        got = comm.neighbor_allreduce(x, topo, weighted_by=mode)
        assert got.shape == x.shape and got.dtype == x.dtype and got.is_contiguous(), what
        assert x.numel() == 0 or got.data_ptr() != x.data_ptr(), what
        close(got, want, x.dtype, what)
    assert torch.equal(x, keep), f"{what}: the input was modified"


# ------------------------------------------------------------------------- every family
@pytest.mark.parametrize("name", sorted(families()))
def test_every_family_kernel_dtype_and_mode_matches_dense_oracle(small_cache, name):
    """Every registered family (dynamic ones at two steps), at a size where "auto" takes the
    circulant/sparse kernels and one past 256, through every kernel, both weighting modes
    (all families are doubly stochastic), float32 and float64, node-local tensors of 1-3
    dims with odd widths."""
    gen = torch.Generator().manual_seed(0)
    for n in ((64, 256) if name == "hypercube" else (40, 257)):
        dyn = make(name, n, **PARAMS.get(name, {}))
        for k in ((0, 3) if dyn.is_dynamic else (0,)):
            topo = dyn.at(k)
            for mode in ("receiver", "sender"):
                comms = {kern: SimComm(n, kernel=kern) for kern in kernels_for(topo)}
                for shape in SHAPES if n < 256 else SHAPES[::2]:
                    for dtype in DTYPES:
                        x = torch.randn((n,) + shape, generator=gen, dtype=dtype)
                        want = oracle_mix(topo, x)
                        for kern, comm in comms.items():
                            check_mix(comm, topo, x, mode, f"{kern} {name}(n={n}, k={k}) "
                                      f"{shape} {dtype} {mode}", want)
    assert small_cache  # some product ran over blocks


def test_one_sided_topologies_in_their_mode(small_cache):
    """A column-stochastic directed graph (push-sum, weighted_by='sender') and a row-stochastic
    one (weighted_by='receiver') whose other sums are off, with rows and columns of different
    lengths, an empty row in the push-sum graph (a node nobody sends to, not even itself)."""
    n = 41
    rows, cols, vals = [], [], []
    for j in range(n):
        dests = [(j + 1) % n] + ([j] if j else []) + ([(j + 5) % n] if j % 3 == 0 else [])
        for i in dests:
            rows.append(i), cols.append(j), vals.append(1 / len(dests))
    push = Topology.from_coo(n, rows, cols, vals)
    assert np.allclose(push.W.sum(0), 1) and not np.allclose(push.W.sum(1), 1)
    pull = Topology.from_coo(n, cols, rows, vals)  # the transpose: rows sum to 1
    assert np.allclose(pull.W.sum(1), 1) and not np.allclose(pull.W.sum(0), 1)
    gen = torch.Generator().manual_seed(1)
    for topo, mode in ((push, "sender"), (pull, "receiver")):
        for kern in ("auto", "sparse", "dense"):
            comm = SimComm(n, kernel=kern)
            for shape in SHAPES:
                for dtype in DTYPES:
                    x = torch.randn((n,) + shape, generator=gen, dtype=dtype)
                    check_mix(comm, topo, x, mode, f"{kern} {mode} {shape} {dtype}")


# ---------------------------------------------------------------------- sparse engines
def test_both_sparse_engines_and_the_blocks_on_a_random_graph(small_cache):
    """d below and from the reduce threshold, one block and many (d not a multiple of the
    width), a non-contiguous input; blocks split d evenly in multiples of 8 columns."""
    n = 48
    topo = make("erdos_renyi", n, p=0.2, seed=3)
    plan = sim_kernels.mix_plan(topo, CPU, torch.float64, "sparse")
    gen = torch.Generator().manual_seed(2)
    for d in (1, 3, 4, 8, 10, 11, 16, 17, 100, 257):
        x = torch.randn(n, d, generator=gen, dtype=torch.float64)
        close(sim_kernels.mix(x, plan), oracle_mix(topo, x), torch.float64, f"d={d}")
        xt = torch.randn(d, n, generator=gen, dtype=torch.float64).t()
        close(sim_kernels.mix(xt, plan), oracle_mix(topo, xt), torch.float64, f"d={d} T")
    widths = set(small_cache)
    assert widths and all(w % 8 == 0 for w in widths)
    assert sim_kernels._reduce_engine(plan, torch.float64, 4)
    assert not sim_kernels._reduce_engine(plan, torch.float64, 3)
    assert not sim_kernels._reduce_engine(plan, torch.complex128, 100)


def test_sparse_engines_with_real_constants():
    """No shrunk constants: MKL below SPARSE_REDUCE_MIN_D columns, reduce from it on, and a
    blocked product for a random graph whose X leaves the cache."""
    topo = make("erdos_renyi", 300, p=0.03, seed=2)
    plan = sim_kernels.mix_plan(topo, CPU, torch.float64, "sparse")
    assert plan.scattered > 0.5 and plan.degree == topo.nnz / 300
    dmin = sim_kernels.SPARSE_REDUCE_MIN_D
    for d in (dmin - 1, dmin, 7777):
        x = torch.randn(300, d, dtype=torch.float64)
        close(sim_kernels.mix(x, plan), oracle_mix(topo, x), torch.float64, f"d={d}")
    assert sim_kernels.sparse_block_width(300, 7777, scattered=plan.scattered) < 7777


def test_half_precision_runs_in_float32():
    """No half sparse product on CPU: computed in float32, returned in the input's dtype."""
    topo = make("exponential", 40)
    for dtype in (torch.float16, torch.bfloat16):
        x = torch.randn(40, 50).to(dtype)
        got = SimComm(40, kernel="sparse").neighbor_allreduce(x, topo)
        assert got.dtype == dtype
        np.testing.assert_allclose(got.double().numpy(), oracle_mix(topo, x), atol=0.05, rtol=0)


def test_empty_node_values():
    topo = make("erdos_renyi", 40, p=0.3, seed=1)
    for kern in kernels_for(topo):
        got = SimComm(40, kernel=kern).neighbor_allreduce(torch.zeros(40, 0, 5), topo)
        assert got.shape == (40, 0, 5)


# ---------------------------------------------------------------------------- block widths
@pytest.mark.parametrize("n, d", [(256, 10_000), (256, 100_001), (1024, 10_000), (300, 7777),
                                  (4096, 1000), (100, 10**5)])
def test_block_width_splits_d_evenly(n, d):
    b = sim_kernels.sparse_block_width(n, d)  # scattered reads by default
    assert 0 < b < d and b % 8 == 0 and b >= sim_kernels.SPARSE_MIN_BLOCK_WIDTH
    widest = max(sim_kernels.SPARSE_MIN_BLOCK_WIDTH,
                 sim_kernels.SPARSE_BLOCK_ELEMENTS // n // 8 * 8)
    assert math.ceil(d / b) == math.ceil(d / widest)  # no more blocks than needed ...
    assert b * (math.ceil(d / b) - 1) < d  # ... and none of them empty
    assert b <= widest + 7


@pytest.mark.parametrize("n, d", [(256, 100), (256, 4000), (1, 1), (4096, 100), (100, 200)])
def test_block_width_is_d_while_x_stays_in_cache_or_is_thin(n, d):
    assert sim_kernels.sparse_block_width(n, d) == d


def test_block_width_for_streamed_reads_only_for_wide_rows_with_many_updates():
    wide, updates = sim_kernels.SPARSE_WIDE_ROW, sim_kernels.SPARSE_WIDE_MIN_DEGREE
    assert sim_kernels.sparse_block_width(256, 10_000, scattered=0.0, degree=3) == 10_000
    assert sim_kernels.sparse_block_width(4096, 1000, scattered=0.0, degree=13) == 1000
    assert sim_kernels.sparse_block_width(1024, wide - 8, scattered=0.0, degree=20) \
        == wide - 8
    assert sim_kernels.sparse_block_width(1024, wide, scattered=0.0, degree=updates) < wide
    assert sim_kernels.sparse_block_width(256, 10_000, scattered=0.0, degree=9) < 10_000


def test_block_width_off_cpu_and_bad_sizes():
    assert sim_kernels.sparse_block_width(256, 10**5, "cuda") == 10**5
    assert sim_kernels.sparse_block_width(256, 10**5, torch.device("meta")) == 10**5
    for n, d in ((0, 10), (10, 0), (-1, 5)):
        with pytest.raises(ValueError, match="positive"):
            sim_kernels.sparse_block_width(n, d)


def test_scattered_fraction_separates_random_from_structured_graphs():
    frac = sim_kernels.scattered_fraction
    for name in ("ring", "exponential", "chain", "star", "grid", "binary_tree", "hypercube"):
        assert frac(make(name, 256)) < 0.1, name
    assert frac(make("one_peer_exponential", 256).at(3)) < 0.1
    assert frac(make("erdos_renyi", 256, p=0.05, seed=0)) > 0.6
    assert frac(make("erdos_renyi", 4096, p=0.004, seed=0)) > 0.8
    assert frac(Topology.from_coo(3, [], [], [])) == 0.0
    # a random permutation (no self-loops): almost every entry starts a new stream
    perm = np.random.default_rng(0).permutation(1000)
    shuffled = Topology.from_coo(1000, np.arange(1000), perm, np.ones(1000))
    assert frac(shuffled) > 0.95


# ------------------------------------------------------------------------------ circulant
def roll_oracle(x, shifts):
    X = x.double().numpy()
    return sum(w * np.roll(X, s, axis=0) for s, w in shifts) if shifts else np.zeros_like(X)


@pytest.mark.parametrize("shifts", [
    (), ((0, 1.0),), ((3, 1.0),), ((0, 0.5), (1, 0.5)), ((0, 0.25), (10, 0.75)),
    ((1, 0.5), (10, 0.5)), ((0, 1 / 3), (1, 1 / 3), (10, 1 / 3)),
    ((0, 0.2), (1, 0.3), (2, 0.1), (5, 0.4)),  # a stochastic W with four shifts
    ((0, 0.7), (4, 1.1), (9, 0.2), (10, 0.5)),  # weights summing to 2.5: scaled at the end
    ((2, 1e-3), (7, 3.0)),  # very unequal weights, not summing to 1
])
@pytest.mark.parametrize("dtype", DTYPES)
def test_circulant_kernel_matches_rolls(shifts, dtype):
    gen = torch.Generator().manual_seed(4)
    for shape in ((11,), (11, 1), (11, 5, 3)):
        x = torch.randn(shape, generator=gen, dtype=dtype)
        out = torch.full_like(x, float("nan"))
        mix_circulant(x, out, shifts)
        close(out, roll_oracle(x, shifts), dtype, f"{shifts} {shape}")
    xt = torch.randn(5, 11, generator=gen, dtype=dtype).t()  # strided rows
    out = torch.empty(11, 5, dtype=dtype)
    mix_circulant(xt, out, shifts)
    close(out, roll_oracle(xt, shifts), dtype, f"{shifts} transposed")


def test_circulant_kernel_rejects_unreduced_shifts():
    x, out = torch.zeros(8, 2), torch.zeros(8, 2)
    for shifts in (((8, 1.0),), ((-1, 1.0),), ((0, 0.5), (1, -0.5)), ((2, 0.0),)):
        with pytest.raises(ValueError, match="from_circulant"):
            mix_circulant(x, out, shifts)


def test_circulant_kernel_through_simcomm_on_large_rings():
    """Past the size where "auto" takes it: the ring (3 shifts) and a one-peer step (2)."""
    for topo in (make("ring", 300), make("one_peer_exponential", 300).at(5)):
        assert sim_kernels.choose_kernel(topo, 1000) == "circulant"
        for dtype in DTYPES:
            x = torch.randn(300, 1000, dtype=dtype)
            check_mix(SimComm(300), topo, x, "receiver", f"{topo.name} {dtype}")


# -------------------------------------------------------------------------- dense, rank 1
def test_common_row_path_for_rank_one_weights():
    """W = 1 c^T (all rows equal: the complete graph, or a non-uniform c): out_i = c^T X."""
    c = np.arange(1.0, 31.0)
    c /= c.sum()
    tilted = Topology.from_matrix(np.tile(c, (30, 1)))
    gen = torch.Generator().manual_seed(5)
    for topo in (make("complete", 300), make("complete", 30), tilted):
        n = topo.n
        plan = sim_kernels.mix_plan(topo, CPU, torch.float64, "dense")
        assert plan.row is not None
        for shape in ((), (4,), (3, 5)):
            for dtype in DTYPES:
                x = torch.randn((n,) + shape, generator=gen, dtype=dtype)
                check_mix(SimComm(n), topo, x, "receiver", f"{topo.name} {shape} {dtype}")
    assert sim_kernels.choose_kernel(make("complete", 300), 10_000) == "dense"
    assert sim_kernels.mix_plan(make("star", 40), CPU, torch.float64, "dense").row is None


# ------------------------------------------------------------------------- plans and choice
def test_plans_are_memoized_on_the_topology():
    topo = make("erdos_renyi", 100, p=0.1, seed=4)
    plan = sim_kernels.mix_plan(topo, CPU, torch.float32, "sparse")
    assert sim_kernels.mix_plan(topo, CPU, torch.float32, "sparse") is plan
    key = ("sim.mix", "sparse", CPU, torch.float32)
    assert topo.recall(key) is plan
    ring = make("ring", 300)
    auto = sim_kernels.mix_plan(ring, CPU, torch.float64, d=1000)
    assert auto.kernel == "circulant" and auto is sim_kernels.mix_plan(ring, CPU, torch.float64,
                                                                       "circulant")
    with pytest.raises(ValueError, match="kernel must be"):
        sim_kernels.mix_plan(ring, CPU, torch.float64, "roll")
    with pytest.raises(ValueError, match="circulant topology"):
        sim_kernels.mix_plan(make("star", 40), CPU, torch.float64, "circulant")


def test_auto_choice_on_the_benchmarked_rows():
    """The choices the module docstring argues for, at n >= 256."""
    choose = sim_kernels.choose_kernel
    assert choose(make("ring", 256), 10_000) == "circulant"
    assert choose(make("one_peer_exponential", 4096).at(3), 100) == "circulant"
    assert choose(make("one_peer_exponential", 256).at(3), 100) == "sparse"  # small X
    assert choose(make("exponential", 256), 10_000) == "sparse"
    assert choose(make("erdos_renyi", 4096, p=0.004, seed=0), 100) == "sparse"
    assert choose(make("d_equistatic", 256), 10_000) == "dense"  # 78 shifts: density 0.3
    assert choose(make("d_equistatic", 256, M=8), 10_000) == "sparse"

    def width(topo, d):
        plan = sim_kernels.mix_plan(topo, CPU, torch.float64, "sparse")
        return sim_kernels.sparse_block_width(topo.n, d, scattered=plan.scattered,
                                              degree=plan.degree)

    assert width(make("exponential", 256), 4000) == 4000  # streamed reads: no blocks ...
    assert width(make("exponential", 256), 10_000) < 10_000  # ... unless 9 updates a row
    assert width(make("exponential", 4096), 1000) == 1000
    assert width(make("star", 256), 10_000) == 10_000  # 3 updates a row
    assert width(make("erdos_renyi", 4096, p=0.004, seed=0), 1000) < 1000  # scattered


@pytest.mark.gpu
def test_cuda_kernels_match_oracle(small_cache):
    """On CUDA the sparse product is one cuSPARSE call (never blocked)."""
    for topo in (make("erdos_renyi", 48, p=0.2, seed=3), make("ring", 48),
                 make("complete", 48)):
        for kern in kernels_for(topo):
            for dtype in DTYPES:
                x = torch.randn(48, 300, dtype=dtype)
                got = SimComm(48, device="cuda", kernel=kern).neighbor_allreduce(x.cuda(), topo)
                assert got.device.type == "cuda"
                close(got.cpu(), oracle_mix(topo, x), dtype, f"cuda {kern} {dtype}")
    assert not small_cache
