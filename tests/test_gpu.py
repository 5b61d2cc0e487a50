"""The GPU paths, on a real GPU: ``make gpu-check`` runs these (``pytest -m gpu``).

Without a CUDA GPU they skip, saying so; under ``make gpu-check`` (``DECLEARN_REQUIRE_GPU=1``,
see conftest.py) they fail instead, so that a GPU check on a machine without one cannot pass
by skipping. Oracles: dense ``W @ X`` in numpy and the same computation on the CPU.

* SimComm on CUDA equals the dense oracle for every registered family, float64 and float32,
  with every kernel the family admits.
* StackedModel on CUDA (vmap over n copies of a CNN) gives the CPU's outputs and gradients.
* MPIComm on CUDA tensors under mpiexec, through the staged, CUDA-aware (where the MPI library
  supports it) and NCCL planes, equals the host plane and the oracle
  (tests/mpi/gpu_checks.py); where ranks share a GPU, NCCL is refused with a clear error.
* ``cluster.start(n, gpus=True)`` with more engines than GPUs: engines share the GPUs by local
  rank, and a neighbor_allreduce of CUDA tensors on them equals the oracle.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from declearn.comm.sim import SimComm
from declearn.topology import families, make

pytestmark = pytest.mark.gpu

N = 24


def _family_topologies(n: int):
    params = {"erdos_renyi": {"p": 0.3, "seed": 1}, "geometric": {"radius": 0.5, "seed": 1}}
    for name in families():
        if name == "hypercube":
            n_here = 16
        else:
            n_here = n
        topo = make(name, n_here, **params.get(name, {}))
        yield (topo.at(3) if topo.is_dynamic else topo)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_simcomm_on_cuda_equals_dense_oracle_for_every_family(dtype):
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    rng = np.random.default_rng(0)
    for topo in _family_topologies(N):
        X = rng.standard_normal((topo.n, 3, 50))
        want = np.einsum("ij,jab->iab", topo.W, X)
        for kernel in ("auto", "sparse", "dense") + (("circulant",) if topo.shifts else ()):
            comm = SimComm(topo.n, device="cuda", kernel=kernel)
            got = comm.neighbor_allreduce(torch.as_tensor(X, dtype=dtype, device="cuda"), topo)
            assert got.device.type == "cuda", (topo.name, kernel)
            err = np.abs(got.double().cpu().numpy() - want).max()
            assert err <= tol * max(1.0, np.abs(want).max()), (topo.name, kernel, err)
        cpu = SimComm(topo.n).allreduce(torch.as_tensor(X, dtype=dtype))
        on_gpu = SimComm(topo.n, device="cuda").allreduce(
            torch.as_tensor(X, dtype=dtype, device="cuda"))
        torch.testing.assert_close(on_gpu.cpu(), cpu, rtol=tol, atol=tol)


def test_stacked_cnn_on_cuda_equals_cpu():
    from declearn.optim import StackedModel
    from declearn.problems.models import small_cnn

    torch.manual_seed(0)
    n = 6
    base = small_cnn(10, width=8, hidden=32)
    cpu, gpu = StackedModel(base, n).double(), StackedModel(base, n).double().cuda()
    x = torch.randn(n, 8, 1, 28, 28, dtype=torch.float64)
    labels = torch.randint(0, 10, (n, 8))
    outs = []
    for model, device in ((cpu, "cpu"), (gpu, "cuda")):
        out = model(x.to(device))
        loss = torch.nn.functional.cross_entropy(out.flatten(0, 1), labels.to(device).flatten())
        loss.backward()
        outs.append((out.detach().cpu(), [p.grad.cpu() for p in model.parameters()]))
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-9, atol=1e-9)
    for g_gpu, g_cpu in zip(outs[1][1], outs[0][1], strict=True):
        torch.testing.assert_close(g_gpu, g_cpu, rtol=1e-8, atol=1e-9)


@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 2, 4])
def test_mpicomm_planes_on_cuda_equal_the_host_plane(n):
    from mpi_helpers import run_mpi

    out = run_mpi("gpu_checks.py", n, timeout=300)
    assert out.count("GPU-OK rank") == n, out
    gpus = torch.cuda.device_count()
    nccl = [line for line in out.splitlines() if line.startswith("PLANE nccl")]
    assert len(nccl) == n, out
    want = "refused" if n > gpus else "ran"
    assert all(line.startswith(f"PLANE nccl: {want}") for line in nccl), out
    print("\n".join(sorted(set(line for line in out.splitlines() if line.startswith("PLANE")))))


def _engine_mix(topology, d):
    import numpy as np
    import torch

    from declearn.comm.mpi import MPIComm

    comm = MPIComm(timeout=60)
    X = np.random.default_rng(5).standard_normal((comm.size, d))
    x = torch.as_tensor(X[comm.rank], device=comm.device)
    y = comm.neighbor_allreduce(x, topology)
    want = topology.W[comm.rank] @ X
    return str(comm.device), str(y.device), float(np.abs(y.cpu().numpy() - want).max())


@pytest.mark.cluster
@pytest.mark.slow
def test_engines_share_the_gpus_by_local_rank(tmp_path):
    import declearn.cluster as dc

    n = max(2, torch.cuda.device_count() + 1)  # more engines than GPUs: some share one
    cluster = dc.start(n, gpus=True, profile_dir=str(tmp_path / "profile_gpu"), timeout=180)
    try:
        count = torch.cuda.device_count()
        assert cluster.devices == [f"cuda:{d['local_rank'] % count}" for d in cluster.info]
        ring = make("ring", n)
        for d in (3, 1 << 20):
            answers = cluster.view.apply_sync(_engine_mix, ring, d)
            for rank, (device, y_device, err) in enumerate(answers):
                assert device.startswith("cuda") and y_device == device, (rank, answers)
                assert err <= 1e-12, (rank, d, err)
    finally:
        cluster.stop()
