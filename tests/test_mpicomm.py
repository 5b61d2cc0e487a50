"""MPIComm: real MPI processes under mpiexec (tests/mpi/*.py), plus its pure-Python parts.

The MPI scripts compare every operation with a dense ``W @ X`` oracle on every registered
topology family and exercise timeouts, Ctrl-C, resync, mismatches and sub-communicators; see
tests/mpi/mpicomm_checks.py. This process never initialises MPI itself.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
import torch

from mpi_helpers import have_mpi, needs_mpi, run_mpi


def _ok_lines(output: str, n: int) -> list[str]:
    lines = re.findall(r"MPICOMM-OK rank (\d+) of (\d+): (\d+) checks", output)
    assert sorted(int(r) for r, _, _ in lines) == list(range(n)), output[-5000:]
    assert all(int(size) == n for _, size, _ in lines)
    assert all(int(c) > 500 for _, _, c in lines), "suspiciously few checks ran"
    assert output.count("SimComm oracle on") == n, "SimComm must serve as a second oracle"
    return lines


# --------------------------------------------------------------------------- under mpiexec
@pytest.mark.mpi
@needs_mpi
def test_mpicomm_four_ranks():
    """Oracle on every family (static, dynamic at several k), every op, dtypes and shapes;
    timeouts naming the skipper, Ctrl-C, resync, mismatches, bad input, sub-communicators."""
    out = run_mpi("mpicomm_checks.py", 4, timeout=150)
    _ok_lines(out, 4)
    assert "SKIPPED-FAMILY" not in out, "every registered family must build at n = 4"


@pytest.mark.mpi
@needs_mpi
def test_mpicomm_two_ranks():
    out = run_mpi("mpicomm_checks.py", 2, timeout=120)
    _ok_lines(out, 2)


@pytest.mark.mpi
@needs_mpi
def test_mpicomm_one_rank():
    out = run_mpi("mpicomm_checks.py", 1, timeout=60)
    _ok_lines(out, 1)


# --------------------------------------------------------------------------- pure Python
def test_importing_mpicomm_does_not_import_mpi4py():
    code = ("import sys, declearn.comm.mpi, declearn.comm.mpi.planes, declearn.comm.placement, "
            "declearn.comm.mpi.deadline; assert 'mpi4py' not in sys.modules, 'mpi4py imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_deadline_expires_on_time_and_returns_early():
    from declearn.comm.mpi.deadline import Deadline, wait_until

    t0 = time.monotonic()
    assert wait_until(lambda: False, Deadline(0.3)) is False
    elapsed = time.monotonic() - t0
    assert 0.3 <= elapsed < 1.0
    calls = []
    assert wait_until(lambda: calls.append(1) or len(calls) > 3, Deadline(5)) is True
    assert len(calls) == 4


def test_resolve_timeout_order_and_errors():
    from declearn.comm.base import get_default_timeout
    from declearn.comm.mpi.deadline import resolve_timeout

    assert resolve_timeout(None, 7) == 7.0
    assert resolve_timeout(2, 7) == 2.0
    assert resolve_timeout(None, None) == get_default_timeout()
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="positive"):
            resolve_timeout(bad)
    for bad in ("soon", True):
        with pytest.raises(TypeError, match="seconds"):
            resolve_timeout(bad)


def test_as_bytes_is_a_view():
    from declearn.comm.mpi.planes import as_bytes

    for dtype in (torch.float64, torch.float32, torch.complex64, torch.bool, torch.bfloat16):
        t = torch.zeros((3, 2), dtype=dtype)
        b = as_bytes(t)
        assert b.dtype == torch.uint8 and b.numel() == t.numel() * t.element_size()
        assert b.data_ptr() == t.data_ptr()
    t = torch.tensor(1.5, dtype=torch.float64)
    assert as_bytes(t).numel() == 8


def test_buffer_cache_reuses_and_evicts():
    from declearn.comm.mpi.planes import BufferCache

    cache = BufferCache(capacity=2)
    a = cache.get("k", (3,), torch.float64, "cpu")
    assert cache.get("k", (3,), torch.float64, "cpu") is a
    assert cache.get("k", (4,), torch.float64, "cpu") is not a
    cache.get("j", (3,), torch.float64, "cpu")
    assert cache.get("k", (3,), torch.float64, "cpu") is not a  # least recently used went


def test_cuda_aware_env_override(monkeypatch):
    from declearn.comm.mpi import planes as gpu

    monkeypatch.setenv("DECLEARN_CUDA_AWARE", "1")
    assert gpu.cuda_aware_mpi() is True
    monkeypatch.setenv("DECLEARN_CUDA_AWARE", "0")
    assert gpu.cuda_aware_mpi() is False
    monkeypatch.setenv("DECLEARN_CUDA_AWARE", "maybe")
    with pytest.raises(ValueError, match="0 or 1"):
        gpu.cuda_aware_mpi()


def test_default_device_without_cuda(monkeypatch):
    from declearn.comm import placement

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert placement.default_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert placement.default_device(3) == torch.device("cuda", 1)


def test_local_rank_from_launcher_variables(monkeypatch):
    from declearn.comm import placement

    monkeypatch.setattr(placement, "_node_split", lambda comm=None: None)
    for name in placement.LOCAL_RANK_ENV:
        monkeypatch.delenv(name, raising=False)
    assert placement.local_rank() == 0
    monkeypatch.setenv("SLURM_LOCALID", "3")
    assert placement.local_rank() == 3
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_RANK", "2")
    assert placement.local_rank() == 2


def test_mpi_library_is_found_and_asked():
    """ctypes can find the loaded libmpi and ask it about CUDA (in a child that loads MPI)."""
    if not have_mpi():
        pytest.skip("needs mpi4py")
    code = (
        "from mpi4py import MPI\n"
        "from declearn.comm.mpi import planes as gpu\n"
        "p = gpu.libmpi_path(); print(p); print(gpu.query_cuda_support(p))\n"
    )
    env = dict(os.environ)
    env.pop("DECLEARN_CUDA_AWARE", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    path, answer = proc.stdout.split()
    assert "mpi" in os.path.basename(path)
    assert answer in ("True", "False", "None")
