"""Exercise checks of chapter 00 (right answers pass, typical wrong ones fail with a hint
that does not give the answer away, ``None`` says "not yet"), and ``declearn.comm.ring_allreduce``,
the helper chapter 00's published result measures, on SimComm and under a real ``mpiexec -n 4``."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from declearn.comm import SimComm, ring_allreduce
from declearn.comm.ring import directed_ring
from declearn.exercises import Verdict, ch00
from declearn.topology import ring

from mpi_helpers import needs_mpi  # tests/ is on sys.path


def _not_yet(v: Verdict) -> bool:
    return isinstance(v, Verdict) and not v and "answer = None" in v.message


# ------------------------------------------------------------------ chapter 00
def test_ch00_public_names_are_checks_and_the_data_students_get():
    assert set(ch00.__all__) == {"check_allreduce_sum", "check_ring_bytes", "check_who_times_out",
                                 "MODEL_ENTRIES", "MODEL_RANKS"}


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


def test_ch00_allreduce_sum_refuses_plausible_wrong_answers():
    # 4 ranks hold (rank + 1)^2 = 1, 4, 9, 16: the sum is 30
    wrong = {
        "mean": (1 + 4 + 9 + 16) / 4,
        "sum of rank^2 (off by one)": 0 + 1 + 4 + 9,
        "sum over 5 ranks": 1 + 4 + 9 + 16 + 25,
        "sum of rank + 1": 1 + 2 + 3 + 4,
        "square of the sum of rank + 1": (1 + 2 + 3 + 4) ** 2,
        "30 + rounding noise": 30.001,
    }
    for label, value in wrong.items():
        assert not ch00.check_allreduce_sum([value] * 4), label


def test_ch00_ring_bytes():
    n, m = ch00.MODEL_RANKS, ch00.MODEL_ENTRIES * 4          # 4 bytes per float32
    right = 2 * (n - 1) / n * m
    assert right == 192_000_000
    assert ch00.check_ring_bytes(right)
    assert ch00.check_ring_bytes(int(right))
    assert ch00.check_ring_bytes(2 * (16 - 1) / 16 * 25_600_000 * 4)   # the solution's line
    assert ch00.check_ring_bytes(np.float32(right))
    assert _not_yet(ch00.check_ring_bytes(None))
    hints = {
        right / 4: "bytes",
        (n - 1) * m: "naive",
        2 * m: "limit",
        (n - 1) / n * m: "one phase",
        m: "size of the model",
        right / 1e6: "megabytes",
        right / 2**20: "megabytes",
        2 * right: "float64",
        2 * (n - 2) / (n - 1) * m: "number of ranks",
        2 * n / (n + 1) * m: "number of ranks",
        1234.0: "count the steps",
    }
    for wrong, word in hints.items():
        v = ch00.check_ring_bytes(wrong)
        assert not v and word in v.message, (wrong, v)
        hint = v.message.split("is not it:")[-1]
        assert f"{right:g}" not in hint and "192" not in hint and "off by" not in v.message


def test_ch00_ring_bytes_accepts_only_the_exact_count():
    right = 192_000_000
    for wrong in (right - 1, right + 1, right * 1.001, right * 0.999, 191_150_000):
        assert not ch00.check_ring_bytes(wrong), wrong


@pytest.mark.parametrize("n, skipped, expected", [(4, 1, {0, 2}), (8, 1, {0, 2}), (3, 1, {0, 2}),
                                                  (2, 1, {0}), (5, 0, {1, 4})])
def test_ch00_who_times_out(n, skipped, expected):
    assert ch00.check_who_times_out(expected, n=n, skipped=skipped)
    assert ch00.check_who_times_out(sorted(expected), n=n, skipped=skipped)
    # independent of the check's arithmetic: the out-neighbors of ``skipped`` in declearn's ring
    assert set(ring(n).out_neighbors(skipped).tolist()) == expected


def test_ch00_who_times_out_hints():
    assert _not_yet(ch00.check_who_times_out(None, n=4))
    for wrong in ({0}, {2}, {1}, {0, 1, 2}, {0, 2, 3}, {3}, {0, 2, 4}, {0.5, 2}, set()):
        assert not ch00.check_who_times_out(wrong, n=4, skipped=1), wrong
    itself = ch00.check_who_times_out({0, 1, 2}, n=4, skipped=1)
    assert not itself and "never waits" in itself.message
    everyone = ch00.check_who_times_out({0, 2, 3}, n=4, skipped=1)
    assert not everyone and "allreduce" in everyone.message
    some = ch00.check_who_times_out({3}, n=4, skipped=1)
    assert not some and "receive" in some.message
    assert not ch00.check_who_times_out("zero and two", n=4)


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
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
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
    from declearn.cluster.mpiexec import local_job

    script = tmp_path / "ring_checks.py"
    script.write_text(_MPI_SCRIPT)
    cmd, env = local_job(4, [sys.executable, str(script)])  # on loopback, as a local cluster
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True,
                          timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert all(f"RING-OK rank {r} of 4" in out for r in range(4)), out[-5000:]
