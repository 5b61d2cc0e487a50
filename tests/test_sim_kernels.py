"""The column-blocked sparse product of :mod:`declearn.comm.sim.kernels` against the dense
``W @ X`` computed in numpy float64 from ``topology.W`` (independent of every kernel).

The block constants are shrunk here (``SPARSE_BLOCK_ELEMENTS = 512``, at least 8 columns a
block) so that small tensors run over many blocks, the last one narrower; the real
constants are checked through :func:`sparse_block_width` alone.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from declearn.comm import SimComm
from declearn.comm.sim import kernels as sim_kernels
from declearn.topology import Topology, families, make

ATOL = {torch.float32: 2e-5, torch.float64: 1e-12}
DTYPES = (torch.float32, torch.float64)


def oracle_mix(topo, x):
    X = x.double().numpy().reshape(topo.n, -1)
    return (np.asarray(topo.W) @ X).reshape(x.shape)


def close(actual, expected, dtype, what):
    np.testing.assert_allclose(
        actual.double().numpy(), expected, rtol=0, atol=ATOL[dtype], err_msg=what
    )


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of at most 512 elements and at least 8 columns; counts the blocked calls."""
    monkeypatch.setattr(sim_kernels, "SPARSE_BLOCK_ELEMENTS", 512)
    monkeypatch.setattr(sim_kernels, "SPARSE_MIN_BLOCK_WIDTH", 8)
    calls = []
    blocked = sim_kernels._mix_sparse_blocked

    def counting(x, matrix, width):
        calls.append(width)
        return blocked(x, matrix, width)

    monkeypatch.setattr(sim_kernels, "_mix_sparse_blocked", counting)
    return calls


# ----------------------------------------------------------------------- block widths
@pytest.mark.parametrize("n, d", [(256, 10_000), (256, 2049), (512, 2048), (300, 7777),
                                  (2, 10**6), (100, 10**5)])
def test_block_width_splits_d_evenly(n, d):
    widest = sim_kernels.SPARSE_BLOCK_ELEMENTS // n // 8 * 8
    b = sim_kernels.sparse_block_width(n, d)
    assert 0 < b < d and b % 8 == 0
    assert b >= sim_kernels.SPARSE_MIN_BLOCK_WIDTH
    assert math.ceil(d / b) == math.ceil(d / widest)  # no more blocks than needed ...
    assert b * (math.ceil(d / b) - 1) < d  # ... and none of them empty
    assert n * b <= sim_kernels.SPARSE_BLOCK_ELEMENTS + 7 * n


@pytest.mark.parametrize("n, d", [(256, 100), (256, 2048), (4096, 100), (4096, 1000),
                                  (10**6, 10**4), (1, 1), (2048, 300),
                                  (1024, 10_000), (512, 10_000)])
def test_block_width_is_d_when_x_is_small_or_blocks_narrow(n, d):
    assert sim_kernels.sparse_block_width(n, d) == d


def test_block_width_off_cpu_and_bad_sizes():
    assert sim_kernels.sparse_block_width(256, 10_000, "cuda") == 10_000
    assert sim_kernels.sparse_block_width(256, 10_000, torch.device("meta")) == 10_000
    for n, d in ((0, 10), (10, 0), (-1, 5)):
        with pytest.raises(ValueError, match="positive"):
            sim_kernels.sparse_block_width(n, d)


def test_auto_picks_blocked_sparse_for_the_issue_rows():
    """The exponential graph at n = 256 and Erdos-Renyi run the CSR product over blocks."""
    for topo, d in ((make("exponential", 256), 10_000), (make("erdos_renyi", 256, p=0.05,
                                                               seed=1), 10_000)):
        assert sim_kernels.choose_kernel(topo, d) == "sparse"
        assert sim_kernels.sparse_block_width(topo.n, d) < d


# ------------------------------------------------------------------ blocked against W @ X
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(8,), (64,), (67,), (5, 13), (1, 9, 7)])
def test_blocked_sparse_matches_dense_oracle(small_blocks, dtype, shape):
    """d a multiple of the block and not, node-local tensors of 1 to 3 dims."""
    gen = torch.Generator().manual_seed(0)
    for topo in (make("exponential", 48), make("erdos_renyi", 48, p=0.2, seed=3)):
        x = torch.randn((48,) + shape, generator=gen, dtype=dtype)
        keep = x.clone()
        for kern in ("sparse", "auto"):
            comm = SimComm(48, kernel=kern)
            for _ in range(2):  # first call checks and builds the mixer, the second reuses it
                got = comm.neighbor_allreduce(x, topo)
                assert got.shape == x.shape and got.dtype == dtype and got.is_contiguous()
                assert got.data_ptr() != x.data_ptr()
                close(got, oracle_mix(topo, x), dtype, f"{kern} {topo.name} {shape}")
        assert torch.equal(x, keep)
    d = math.prod(shape)
    if d > 8:  # 512 // 48 // 8 * 8 = 8 columns at most: blocked from 9 columns on
        assert small_blocks and all(w % 8 == 0 and w < d for w in small_blocks)
    else:
        assert not small_blocks


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_blocked_sparse_with_few_nodes(small_blocks, n):
    """n small: wide blocks (512 // n columns), many columns, d not a multiple of them."""
    topo = make("ring", n) if n > 2 else Topology.from_matrix(np.full((n, n), 1.0 / n))
    x = torch.randn(n, 3 * (512 // n) + 5, dtype=torch.float64)
    got = sim_kernels.mix(x, sim_kernels.mix_plan(topo, torch.device("cpu"), x.dtype, "sparse"))
    close(got, oracle_mix(topo, x), torch.float64, f"n={n}")
    assert small_blocks


def test_blocked_sparse_on_every_family(small_blocks):
    """Every registered family (dynamic ones at two steps), through the forced sparse kernel
    and through "auto", over many blocks."""
    gen = torch.Generator().manual_seed(2)
    params = {"erdos_renyi": {"p": 0.3}, "geometric": {"radius": 0.6}, "u_equistatic": {"M": 2}}
    for name in families():
        n = 64 if name == "hypercube" else 40
        dyn = make(name, n, **params.get(name, {}))
        for k in ((0, 3) if dyn.is_dynamic else (0,)):
            topo = dyn.at(k)
            for dtype in DTYPES:
                x = torch.randn(n, 7, 11, generator=gen, dtype=dtype)
                for kern in ("sparse", "auto"):
                    got = SimComm(n, kernel=kern).neighbor_allreduce(x, topo)
                    close(got, oracle_mix(topo, x), dtype, f"{kern} {name}(n={n}, k={k})")
    assert small_blocks


def test_blocked_sparse_push_sum_and_odd_inputs(small_blocks):
    """Column-stochastic W (weights='sender'), a non-contiguous input (taken unblocked), an
    empty one, and half precision (computed in float32, unblocked)."""
    n = 20
    rows, cols, vals = [], [], []
    for j in range(n):
        dests = [j, (j + 1) % n] + ([(j + 5) % n] if j % 3 == 0 else [])
        for i in dests:
            rows.append(i), cols.append(j), vals.append(1 / len(dests))
    topo = Topology.from_coo(n, rows, cols, vals, weights="sender")
    comm = SimComm(n, kernel="sparse")
    x = torch.randn(n, 101, dtype=torch.float64)
    close(comm.neighbor_allreduce(x, topo, weights="sender"), oracle_mix(topo, x),
          torch.float64, "push-sum")
    assert len(small_blocks) == 1
    xt = torch.randn(101, n, dtype=torch.float64).t()  # same shape, not contiguous
    close(comm.neighbor_allreduce(xt, topo, weights="sender"), oracle_mix(topo, xt),
          torch.float64, "non-contiguous")
    assert len(small_blocks) == 1
    assert comm.neighbor_allreduce(torch.zeros(n, 0, 5), topo, weights="sender").shape == \
        (n, 0, 5)
    h = x.to(torch.bfloat16)
    got = SimComm(n, kernel="sparse").neighbor_allreduce(h, topo, weights="sender")
    assert got.dtype == torch.bfloat16
    np.testing.assert_allclose(got.double().numpy(), oracle_mix(topo, h), atol=0.05, rtol=0)


def test_real_constants_on_one_large_case():
    """No shrunk constants: the exponential graph at n = 256 with d = 2 * 2048 + 40."""
    topo = make("exponential", 256)
    d = 2 * 2048 + 40
    assert sim_kernels.sparse_block_width(256, d) < d
    x = torch.randn(256, d, dtype=torch.float64)
    close(SimComm(256).neighbor_allreduce(x, topo), oracle_mix(topo, x), torch.float64,
          "exponential n=256")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_sparse_is_one_product_and_matches_oracle(small_blocks):
    topo = make("erdos_renyi", 48, p=0.2, seed=3)
    for dtype in DTYPES:
        x = torch.randn(48, 300, dtype=dtype)
        got = SimComm(48, device="cuda", kernel="sparse").neighbor_allreduce(x.cuda(), topo)
        assert got.device.type == "cuda"
        close(got.cpu(), oracle_mix(topo, x), dtype, f"cuda {dtype}")
    assert not small_blocks
