"""Exercise checks of chapters 00 and 01 (right answers pass, typical wrong ones fail with a
hint that does not give the answer away, ``None`` says "not yet"), and
``declearn.comm.ring_allreduce``, the helper chapter 00's published result measures, on
SimComm and under a real ``mpiexec -n 4``."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from mpi_helpers import needs_mpi  # tests/ is on sys.path

from declearn.comm import SimComm, ring_allreduce
from declearn.comm.ring import directed_ring
from declearn.exercises import Verdict, ch00, ch01
from declearn.topology import apply_weights, rho, ring


def _not_yet(v: Verdict) -> bool:
    return isinstance(v, Verdict) and not v and "answer = None" in v.message


# ------------------------------------------------------------------ chapter 00
def test_ch00_allreduce_sum():
    right = [torch.tensor(30.0, dtype=torch.float64)] * 4
    assert ch00.check_allreduce_sum(right)
    assert ch00.check_allreduce_sum([30, 30, 30, 30])
    assert ch00.check_allreduce_sum([torch.tensor([14.0])] * 3)  # 1 + 4 + 9 on 3 ranks
    assert _not_yet(ch00.check_allreduce_sum([None] * 4))
    assert _not_yet(ch00.check_allreduce_sum(None))
    mean = ch00.check_allreduce_sum([7.5] * 4)
    assert not mean and "op='sum'" in mean.message and "30" not in mean.message
    mine = ch00.check_allreduce_sum([1.0, 4.0, 9.0, 16.0])
    assert not mine and "disagree" in mine.message
    other = ch00.check_allreduce_sum([31.0] * 4)
    assert not other and "30" not in other.message and "off by" not in other.message
    assert not ch00.check_allreduce_sum(["thirty"] * 4)


def test_ch00_ring_bytes():
    n, m = ch00.MODEL_RANKS, ch00.MODEL_ENTRIES * ch00.BYTES_PER_ENTRY
    right = 2 * (n - 1) / n * m
    assert ch00.check_ring_bytes(right)
    assert ch00.check_ring_bytes(int(right))
    assert _not_yet(ch00.check_ring_bytes(None))
    hints = {
        right / ch00.BYTES_PER_ENTRY: "bytes",
        (n - 1) * m: "naive",
        2 * m: "limit",
        (n - 1) / n * m: "one phase",
        m: "size of the model",
        1234.0: "count the steps",
    }
    for wrong, word in hints.items():
        v = ch00.check_ring_bytes(wrong)
        assert not v and word in v.message, (wrong, v)
        hint = v.message.split("is not it:")[-1]
        assert f"{right:g}" not in hint and "192" not in hint and "off by" not in v.message


@pytest.mark.parametrize("n, skipped, expected", [(4, 1, {0, 2}), (8, 1, {0, 2}), (3, 1, {0, 2}),
                                                  (2, 1, {0}), (5, 0, {1, 4})])
def test_ch00_who_times_out(n, skipped, expected):
    assert ch00.check_who_times_out(expected, n=n, skipped=skipped)
    assert ch00.check_who_times_out(sorted(expected), n=n, skipped=skipped)
    # independent of the check's arithmetic: the out-neighbors of ``skipped`` in declearn's ring
    assert set(ring(n).out_neighbors(skipped).tolist()) == expected


def test_ch00_who_times_out_hints():
    assert _not_yet(ch00.check_who_times_out(None, n=4))
    itself = ch00.check_who_times_out({0, 1, 2}, n=4, skipped=1)
    assert not itself and "never waits" in itself.message
    everyone = ch00.check_who_times_out({0, 2, 3}, n=4, skipped=1)
    assert not everyone and "allreduce" in everyone.message
    some = ch00.check_who_times_out({3}, n=4, skipped=1)
    assert not some and "receive" in some.message
    assert not ch00.check_who_times_out("zero and two", n=4)


# ------------------------------------------------------------------ chapter 01
def test_ch01_rho():
    expected = float(np.linalg.norm(ch01.RHO_W - 0.25, 2))
    assert math.isclose(expected, 0.6, rel_tol=1e-12)
    assert math.isclose(expected, rho(ch01.RHO_W), rel_tol=1e-9)  # declearn agrees
    assert ch01.check_rho(0.6)
    assert ch01.check_rho(np.float64(0.6000001))
    assert ch01.check_rho(torch.tensor(0.6))
    assert _not_yet(ch01.check_rho(None))
    for wrong, word in [(0.2, "negative eigenvalues"), (1.0, "subtract"), (0.4, "spectral gap"),
                        (0.36, "squared"), (-0.6, "never negative"), (0.5, "2-norm")]:
        v = ch01.check_rho(wrong)
        assert not v and word in v.message, (wrong, v)
        assert "0.6" not in v.message.split("is not it:")[-1]  # the hint never tells rho


def test_ch01_rounds():
    r = ring(ch01.ROUNDS_N).rho  # declearn's rho, to cross-check the check's closed form
    k = math.ceil(math.log(ch01.ROUNDS_TARGET) / math.log(r))
    assert k == 266
    for ok in (k - 1, k, k + 1, float(k), np.int64(k)):
        assert ch01.check_rounds(ok), ok
    assert _not_yet(ch01.check_rounds(None))
    approx = math.log(1 / ch01.ROUNDS_TARGET) / (1 - r)
    for wrong, word in [(round(approx), "estimate"), (133, "squared"),
                        (round(math.log10(1e-6) / math.log(r)), "bases"), (100, "too few"),
                        (400, "too many")]:
        v = ch01.check_rounds(wrong)
        assert not v and word in v.message and "266" not in v.message, (wrong, v)


def test_ch01_doubly_stochastic_accepts_any_valid_matrix():
    metropolis = apply_weights(ch01.GRAPH_N, ch01.GRAPH_EDGES, "metropolis").W
    assert ch01.check_doubly_stochastic(metropolis)
    assert ch01.check_doubly_stochastic(metropolis.tolist())
    assert ch01.check_doubly_stochastic(torch.tensor(metropolis))
    lazy = (np.eye(ch01.GRAPH_N) + metropolis) / 2
    assert ch01.check_doubly_stochastic(lazy)
    assert _not_yet(ch01.check_doubly_stochastic(None))


def test_ch01_doubly_stochastic_names_what_is_wrong():
    n = ch01.GRAPH_N
    uniform = apply_weights(n, ch01.GRAPH_EDGES, "uniform").W  # rows sum to 1, columns do not
    cases = [
        (np.eye(n), "never mixes"),
        (uniform, "column"),
        (np.full((n, n), 1 / n), "not linked"),
        (np.eye(3), "5 x 5"),
        (np.eye(n) * 2, "row"),
    ]
    neg = apply_weights(n, ch01.GRAPH_EDGES, "metropolis").W.copy()
    neg[0, 0], neg[0, 1] = 1.25, -0.25
    neg[1, 1], neg[1, 0] = 0.75, -0.25
    cases.append((neg, "negative"))
    nan = np.eye(n)
    nan[0, 0] = np.nan
    cases.append((nan, "NaN"))
    for W, word in cases:
        v = ch01.check_doubly_stochastic(W)
        assert not v and word in v.message, (word, v)
    assert not ch01.check_doubly_stochastic("W")


# ------------------------------------------------------------------ ring_allreduce
@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 16])
@pytest.mark.parametrize("shape", [(1,), (5,), (64,), (2, 3)])
def test_ring_allreduce_sim_matches_sum_and_counts_its_messages(n, shape):
    comm = SimComm(n)
    x = torch.randn((n, *shape), dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    out = ring_allreduce(comm, x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, x.sum(0, keepdim=True).expand_as(x), rtol=1e-12, atol=1e-12)
    d = math.prod(shape)
    chunk = max(1, -(-d // n))
    t = comm.traffic
    assert np.all(t.messages == 2 * (n - 1))
    assert np.allclose(t.bytes, 2 * (n - 1) * chunk * 8)
    if d % n == 0:  # no padding: exactly the published 2 (n - 1) / n * M
        assert np.allclose(t.bytes, 2 * (n - 1) / n * d * 8)
    torch.testing.assert_close(ring_allreduce(comm, x, "mean"), comm.allreduce(x, "mean"))
    assert torch.equal(x, x.clone())  # input untouched (sanity)


def test_ring_allreduce_integers_and_errors():
    comm = SimComm(4)
    x = torch.arange(24).reshape(4, 6)
    assert torch.equal(ring_allreduce(comm, x), x.sum(0, keepdim=True).expand(4, 6))
    with pytest.raises(TypeError, match="floating"):
        ring_allreduce(comm, x, "mean")
    with pytest.raises(ValueError, match="op must be"):
        ring_allreduce(comm, x.double(), "max")
    with pytest.raises(ValueError, match="node-local"):
        ring_allreduce(comm, torch.zeros(3, 2))
    with pytest.raises(TypeError, match="torch.Tensor"):
        ring_allreduce(comm, [1.0, 2.0])
    assert directed_ring(5) is directed_ring(5)  # one object per n: MPI call plans are reused
    assert directed_ring(5).in_neighbors(0).tolist() == [4]


_MPI_SCRIPT = textwrap.dedent("""
    import torch
    from mpi4py import MPI
    from declearn.comm import MPIComm, ring_allreduce

    comm = MPIComm(timeout=60)
    r, n = comm.rank, comm.size
    for shape in [(1,), (5,), (64,), (2, 3), (1000,)]:
        x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(r))
        comm.reset_traffic()
        out = ring_allreduce(comm, x)
        messages, nbytes = comm.traffic.messages, comm.traffic.bytes   # before the reference
        ref = comm.allreduce(x, "sum")
        assert out.shape == x.shape
        assert torch.allclose(out, ref, rtol=1e-12, atol=1e-12), (shape, (out - ref).abs().max())
        d = x.numel()
        chunk = max(1, -(-d // n))
        assert messages == 2 * (n - 1), messages
        assert nbytes == 2 * (n - 1) * chunk * 8, (nbytes, shape)
    y = ring_allreduce(comm, torch.full((8,), float(r)), "mean")
    assert torch.allclose(y, torch.full((8,), (n - 1) / 2))
    print(f"RING-OK rank {r} of {n}", flush=True)
""")


@needs_mpi
@pytest.mark.mpi
def test_ring_allreduce_under_mpiexec(tmp_path):
    from declearn.cluster.mpiexec import find_mpiexec, mpiexec_env

    script = tmp_path / "ring_checks.py"
    script.write_text(_MPI_SCRIPT)
    mpiexec = find_mpiexec()
    proc = subprocess.run([mpiexec, "-n", "4", sys.executable, str(script)], check=False,
                          env=mpiexec_env(mpiexec), capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert all(f"RING-OK rank {r} of 4" in out for r in range(4)), out[-5000:]
