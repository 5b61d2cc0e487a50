"""``make gpu-check`` on a machine without a GPU: it must fail, saying why, not pass by
skipping; and the one piece of its logic that needs no GPU (which ranks would share one)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from declearn.comm.mpi.planes import shared_gpus

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_check_fails_clearly_without_a_gpu(tmp_path):
    out = subprocess.run([sys.executable, "bench/gpu_check.py", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out
    assert "needs a CUDA GPU" in out.stderr and "Nothing was run" in out.stderr, out.stderr
    if torch.version.cuda is None:
        assert "CPU-only build" in out.stderr
    assert list(tmp_path.iterdir()) == []  # no report that could pass for a run


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_tests_fail_instead_of_skipping_under_gpu_check():
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu",
           "tests/test_gpu.py::test_stacked_cnn_on_cuda_equals_cpu"]
    plain = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0 and "1 skipped" in plain.stdout, plain.stdout
    required = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "DECLEARN_REQUIRE_GPU": "1"})
    assert required.returncode != 0 and "DECLEARN_REQUIRE_GPU=1" in required.stdout, \
        required.stdout


def test_shared_gpus_names_the_ranks_on_each_shared_gpu():
    ids = ["a/GPU-1", "a/GPU-2", "a/GPU-1", "b/GPU-1", "a/GPU-1", "b/GPU-9"]
    assert shared_gpus(ids) == {"a/GPU-1": [0, 2, 4]}
    assert shared_gpus(["a/GPU-1", "b/GPU-1"]) == {}  # the same UUID text on two hosts
    assert shared_gpus([]) == {}
