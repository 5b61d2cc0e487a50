"""MPIComm's data planes for CUDA tensors, 1 MiB to 256 MiB: NCCL against pinned-host staging.

Every rank holds a float32 CUDA tensor of each size and times, through each plane:
``neighbor_allreduce`` over a ring and ``allreduce`` (mean). Each timing is the slowest rank of
one call, best of k, with the GPU synchronised before and after. Planes:

* ``staged``: copies to a cached pinned host buffer, MPI on host memory, copies back;
* ``cuda-aware``: the device pointer handed to MPI, when the loaded MPI library supports CUDA
  (the mpich wheel does not; a site's CUDA-aware MPI does);
* ``nccl``: ``torch.distributed`` with NCCL, headers still on MPI. NCCL needs one GPU per
  rank: with fewer GPUs than ranks it is not run (the table says so);
* ``host`` (reference): the same sizes as CPU tensors on the host plane.

Printed: milliseconds per call and per plane, and ``nccl/staged`` (lower is better for NCCL).

Usage::

    python bench/bench_gpu_planes.py [-n RANKS] [--quick] [--max-mb 256]

``-n`` defaults to the number of GPUs (at least 2). It re-executes itself under
``mpiexec -n N`` when not already running under MPI.
"""

from __future__ import annotations

import argparse
import time

from mpi_relaunch import relaunch_unless_under_mpi  # bench/ is sys.path[0]


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=None, help="MPI ranks (default: GPUs, at least 2)")
    p.add_argument("--quick", action="store_true", help="1, 16 and 256 MiB, fewer repetitions")
    p.add_argument("--max-mb", type=float, default=256.0, help="largest tensor in MiB")
    return p.parse_args()


def main() -> None:
    args = _parse()
    import torch

    if not torch.cuda.is_available():
        raise SystemExit(f"bench_gpu_planes needs a CUDA GPU: torch {torch.__version__} "
                         f"(CUDA {torch.version.cuda}) sees none here.")
    relaunch_unless_under_mpi(args.n or max(2, torch.cuda.device_count()), __file__)

    from mpi4py import MPI

    import declearn.topology as T
    from declearn.comm.mpi import MPIComm
    from declearn.comm.mpi.planes import cuda_aware_mpi

    world = MPI.COMM_WORLD.Dup()
    rank, size = world.Get_rank(), world.Get_size()
    gpus = torch.cuda.device_count()
    planes = ["staged"] + (["cuda-aware"] if cuda_aware_mpi() else [])
    skipped = []
    if gpus >= size:
        planes.append("nccl")
    else:
        skipped.append(f"nccl: not run, {size} ranks on {gpus} GPU(s) (NCCL needs one per rank)")
    comms = {p: MPIComm(data_plane=p, timeout=300) for p in planes}
    comms["host"] = MPIComm(device="cpu", timeout=300)
    ring = T.make("ring", size)
    sizes = [1 << 20]
    while sizes[-1] * 4 <= args.max_mb * (1 << 20):
        sizes.append(sizes[-1] * 4)
    if args.quick:
        sizes = sizes[::2]
    reps = 3 if args.quick else 7
    if rank == 0:
        print(f"{size} ranks on {gpus} x {torch.cuda.get_device_name()} (torch "
              f"{torch.__version__}, CUDA {torch.version.cuda}, NCCL "
              f"{'.'.join(map(str, torch.cuda.nccl.version()))}); float32; ms per call, "
              f"slowest rank, best of {reps}", flush=True)
        for line in skipped:
            print(line, flush=True)
    for op in ("neighbor_allreduce", "allreduce"):
        if rank == 0:
            print(f"\n{op}:", flush=True)
            print(f"{'size':>8} " + " ".join(f"{p:>11}" for p in comms)
                  + ("  nccl/staged" if "nccl" in comms else ""), flush=True)
        for nbytes in sizes:
            row = {}
            for plane, comm in comms.items():
                x = torch.randn(nbytes // 4, device=comm.device)
                call = ((lambda c=comm, x=x: c.neighbor_allreduce(x, ring))
                        if op == "neighbor_allreduce" else (lambda c=comm, x=x: c.allreduce(x)))
                row[plane] = _best(call, world, reps, comm.device)
            if rank == 0:
                ratio = f"  {row['nccl'] / row['staged']:11.2f}" if "nccl" in row else ""
                print(f"{nbytes >> 20:>5} MiB " + " ".join(f"{row[p] * 1e3:11.3f}" for p in comms)
                      + ratio, flush=True)


def _best(call, world, reps, device) -> float:
    import torch
    from mpi4py import MPI

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    call()  # warm-up: buffers, NCCL communicators
    sync()
    best = float("inf")
    for _ in range(reps):
        world.Barrier()
        t0 = time.perf_counter()
        call()
        sync()
        best = min(best, world.allreduce(time.perf_counter() - t0, op=MPI.MAX))
    return best


if __name__ == "__main__":
    main()
