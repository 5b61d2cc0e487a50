"""MPIComm on CUDA tensors under a real mpiexec: every data plane against the host result.

Run as ``mpiexec -n N python tests/mpi/gpu_checks.py [planes]`` on a machine with a GPU,
``planes`` a comma-separated subset of ``staged,cuda-aware,nccl`` (default: ``staged``, plus
``cuda-aware`` when the loaded MPI says it supports CUDA, plus ``nccl``). Ranks share the GPUs
by local rank (``cuda:(local rank % GPUs)``), as engines started with ``gpus=True`` do.

Every rank draws the same data from one seed and computes each result twice: through an
``MPIComm(device="cpu")`` on host memory (the plane that tests/mpi/mpicomm_checks.py checks
against the dense oracle) and through ``MPIComm(device=cuda, data_plane=P)`` on CUDA tensors;
both are compared with the dense oracle ``y_i = sum_j W[i, j] x_j`` as well. Sizes go from
1 KiB to 16 MiB (the staged plane's pinned buffers and NCCL's chunking both start above a
few MiB).

NCCL refuses two ranks on one GPU: where ranks share one, the check is that MPIComm says so
on every rank (ValueError naming the ranks) instead of failing inside NCCL or hanging.

Each rank ends with ``GPU-OK rank r of N: <checks> checks, planes ...`` and one line
``PLANE p: ran|refused|unavailable (why)`` per plane; tests/test_gpu.py reads them.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from mpi4py import MPI

import declearn.topology as T
from declearn.comm.mpi import MPIComm
from declearn.comm.mpi.planes import cuda_aware_mpi
from declearn.comm.placement import local_rank

world = MPI.COMM_WORLD
RANK, N = world.Get_rank(), world.Get_size()
CHECKS = [0]
SIZES = (1 << 10, 1 << 16, 1 << 20, 1 << 24)  # bytes of one rank's tensor


def say(text: str) -> None:
    print(text, flush=True)


def check(ok: bool, what: str) -> None:
    if not ok:
        raise AssertionError(f"rank {RANK}: {what}")
    CHECKS[0] += 1


def close(got: torch.Tensor, want, tol: float, what: str) -> None:
    want = torch.as_tensor(np.asarray(want)).to(got.dtype)
    err = (got.detach().cpu() - want).abs().max().item() if got.numel() else 0.0
    scale = max(1.0, want.abs().max().item() if want.numel() else 0.0)
    check(err <= tol * scale, f"{what}: max error {err:.3g} > {tol:g} x {scale:.3g}")


def data(nbytes: int, dtype: torch.dtype) -> np.ndarray:
    """Every rank's tensor (row r is rank r's), from one seed: the same on every rank."""
    numel = nbytes // torch.empty((), dtype=dtype).element_size()
    return np.random.default_rng(numel).standard_normal((N, numel))


def plane_checks(host: MPIComm, gpu: MPIComm, dtype: torch.dtype) -> None:
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    topologies = [T.make("ring", N), T.make("exponential", N),
                  T.make("one_peer_exponential", N).at(1)]
    for nbytes in SIZES:
        X = data(nbytes, dtype)
        mine = torch.as_tensor(X[RANK], dtype=dtype)
        on_gpu = mine.to(gpu.device)
        for topo in topologies:
            want = topo.W[RANK] @ X
            y_gpu = gpu.neighbor_allreduce(on_gpu, topo)
            check(y_gpu.device == gpu.device, f"result on {gpu.device}, got {y_gpu.device}")
            close(y_gpu, want, tol, f"{gpu.data_plane} neighbor_allreduce {topo.name} "
                  f"{nbytes} B {dtype}")
            close(y_gpu.cpu(), host.neighbor_allreduce(mine, topo), tol,
                  "CUDA result equals the host plane's")
        close(gpu.allreduce(on_gpu, "sum"), X.sum(0), tol, f"allreduce sum {nbytes} B")
        close(gpu.allreduce(on_gpu, "mean"), X.mean(0), tol, f"allreduce mean {nbytes} B")
        close(gpu.broadcast(on_gpu, N - 1), X[N - 1], 0.0, f"broadcast {nbytes} B")
        if nbytes <= 1 << 20:
            close(gpu.allgather(on_gpu), X, 0.0, f"allgather {nbytes} B")
    gpu.barrier()


def planes_wanted() -> list[str]:
    if len(sys.argv) > 1:
        return sys.argv[1].split(",")
    return ["staged"] + (["cuda-aware"] if cuda_aware_mpi() else []) + ["nccl"]


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit(f"rank {RANK}: torch {torch.__version__} sees no CUDA GPU here.")
    host = MPIComm(device="cpu", timeout=60)
    gpus = torch.cuda.device_count()
    check(host.size == N, "communicator size")
    outcomes = []
    for plane in planes_wanted():
        if plane == "nccl" and gpus < N:  # ranks share a GPU (one host)
            try:
                MPIComm(data_plane="nccl", timeout=60)
            except ValueError as exc:
                check("needs one GPU per rank" in str(exc) and "ranks 0, " in str(exc)
                      and "data_plane='staged'" in str(exc), f"NCCL refusal says why: {exc}")
                outcomes.append(f"PLANE nccl: refused ({N} ranks on {gpus} GPU(s): {exc})")
                continue
            raise AssertionError(f"rank {RANK}: NCCL accepted {N} ranks on {gpus} GPU(s)")
        gpu = MPIComm(data_plane=plane, timeout=60)
        check(gpu.device.type == "cuda", f"{plane}: device {gpu.device}")
        check(gpu.device.index == local_rank() % gpus,
              f"{plane}: device {gpu.device} follows the local rank {local_rank()}")
        for dtype in (torch.float64, torch.float32):
            plane_checks(host, gpu, dtype)
        outcomes.append(f"PLANE {plane}: ran on {gpu.device} ({torch.cuda.get_device_name()})")
    host.barrier()
    for line in outcomes:
        say(line)
    say(f"GPU-OK rank {RANK} of {N}: {CHECKS[0]} checks, planes {', '.join(planes_wanted())}")


if __name__ == "__main__":
    from harness import run_or_abort

    run_or_abort(main, "GPU")
