"""Benchmark: communication overlapped with computation in ``Decentralized(..., overlap=True)``
against the same communication in line (the baseline, ``overlap=False``), on N MPI ranks:
seconds per training step and ``ratio = overlapped / baseline`` (< 1: overlap helps). Two
modes: ``allreduce`` (gradient buckets allreduced during backward) and ``awc`` (the neighbor
average of the next step's parameters, one-peer exponential graph, in flight during forward
and backward).

Each rank trains its own ResNet-20 (GroupNorm, 3x32x32 inputs; ``--model cnn``: the small
CNN on 1x28x28) on its own random minibatch with SGD; a step is forward, backward and the
optimizer's step (the allreduce of the 0.27M gradients, in buckets of ``--bucket-kib``). Both
variants run interleaved, best of a few rounds; the parameters are checked equal. Overlap can
only hide the communication behind the backward of earlier layers, and only if MPI moves the
operations in flight while backward runs (declearn calls ``comm.progress()`` at every
gradient hook): on a machine with fewer cores than ranks, compute and communication share the
cores and little can be hidden.

It re-executes itself under ``mpiexec -n N`` when not already running under MPI::

    python bench/bench_overlap.py            # 4 ranks, ResNet-20, batch 32
    python bench/bench_overlap.py --quick    # 4 ranks, the small CNN, batch 16
"""

from __future__ import annotations

import argparse
import os
import time

from mpi_relaunch import relaunch_unless_under_mpi  # bench/ is sys.path[0]


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=4, help="number of MPI ranks (default 4)")
    p.add_argument("--quick", action="store_true", help="the small CNN, fewer rounds")
    p.add_argument("--model", choices=("resnet20", "cnn"), default=None)
    p.add_argument("--batch", type=int, default=None, help="images per rank and step")
    p.add_argument("--bucket-kib", type=int, default=256)
    p.add_argument("--modes", default="allreduce,awc", help="comma-separated: allreduce, awc")
    return p.parse_args()


def main() -> None:
    args = _parse()
    relaunch_unless_under_mpi(args.n, __file__)

    import torch

    from declearn.comm.mpi import MPIComm
    from declearn.optim import Decentralized
    from declearn.problems import resnet20, small_cnn
    from declearn.topology import one_peer_exponential

    torch.set_num_threads(1)
    model_name = args.model or ("cnn" if args.quick else "resnet20")
    batch = args.batch or (16 if args.quick else 32)
    rounds, reps = (3, 3) if args.quick else (5, 4)
    comm = MPIComm(timeout=300)

    def build(mode, overlap):
        torch.manual_seed(0)
        model = resnet20(norm="group") if model_name == "resnet20" else small_cnn(width=16)
        how = {"bucket_bytes": args.bucket_kib * 1024} if mode == "allreduce" else \
            {"topology": one_peer_exponential(comm.size)}
        opt = Decentralized(torch.optim.SGD(model.parameters(), lr=0.01), comm, mode=mode,
                            overlap=overlap, **how)
        return model, opt

    shape = (3, 32, 32) if model_name == "resnet20" else (1, 28, 28)
    gen = torch.Generator().manual_seed(comm.rank)
    x, y = torch.rand((batch, *shape), generator=gen), torch.randint(0, 10, (batch,),
                                                                     generator=gen)
    def step(model, opt):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    if comm.rank == 0:
        print(f"{comm.size} ranks, {model_name}, batch {batch} per rank, {os.cpu_count()} "
              "cores; seconds per step, ratio = overlapped / in line")
    for mode in args.modes.split(","):
        runs = {name: build(mode, overlap) for name, overlap in (("baseline", False),
                                                                  ("overlap", True))}
        best = dict.fromkeys(runs, float("inf"))
        for _ in range(rounds):
            for name, (model, opt) in runs.items():
                step(model, opt)  # untimed: data hot, buffers allocated
                comm.barrier()
                t0 = time.perf_counter()
                for _ in range(reps):
                    step(model, opt)
                comm.barrier()
                best[name] = min(best[name], (time.perf_counter() - t0) / reps)
        for _, opt in runs.values():
            opt.finish()
        same = float((runs["baseline"][1].x - runs["overlap"][1].x).abs().max())
        if comm.rank == 0:
            P = runs["baseline"][1].x.numel()
            print(f"{mode:9s} ({P} parameters): in line {best['baseline']:.4f}  overlapped "
                  f"{best['overlap']:.4f}  ratio {best['overlap'] / best['baseline']:.3f}  "
                  f"max |x diff| {same:.1e}", flush=True)


if __name__ == "__main__":
    main()
