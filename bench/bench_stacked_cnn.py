"""Benchmark: n small CNNs trained as one StackedModel (vmap) against the baseline of ONE CNN
on an n-times larger batch, in training samples per second (target: ratio >= 0.5).

A training step of ours: each of the n stacked CNNs (``declearn.problems.small_cnn``, 1x28x28
inputs) takes a forward and backward pass on its own minibatch of ``batch`` images, an SGD
step, and the ring gossip ``x_i <- (x_{i-1} + x_i + x_{i+1}) / 3`` (``declearn.optim.
Decentralized`` over ``SimComm(n)``: one neighbor_allreduce on the flat (n, P) buffer). The
baseline does the same arithmetic work for one model: forward and backward on ``n * batch``
images and an SGD step (no communication), the best a single process can do with the same
samples. Both run interleaved, best of a few rounds each; printed: samples per second of each
and ``ratio = ours / baseline`` (higher is better; the target is >= 0.5).

Usage::

    python bench/bench_stacked_cnn.py            # n = 16, width 8 and 32
    python bench/bench_stacked_cnn.py --quick    # n = 16, width 8
    python bench/bench_stacked_cnn.py --device cuda   # on a GPU (make gpu-check)

On CUDA each timed round ends with ``torch.cuda.synchronize()``, so it counts the kernels'
time, not only their launches.
"""

from __future__ import annotations

import argparse
import time

import torch

from declearn.comm import SimComm
from declearn.optim import Decentralized, StackedModel
from declearn.problems import small_cnn
from declearn.topology import ring

TARGET = 0.5


def ours(n, width, batch, device="cpu"):
    stacked = StackedModel(small_cnn(width=width, hidden=4 * width), n).to(device)
    opt = Decentralized(torch.optim.SGD(stacked.parameters(), lr=0.05),
                        SimComm(n, dtype=torch.float32, device=device), ring(n))
    x = torch.rand(n, batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (n, batch), device=device)

    def step():
        opt.zero_grad()
        out = stacked(x)
        loss = torch.nn.functional.cross_entropy(out.reshape(-1, 10), y.reshape(-1),
                                                 reduction="sum") / batch
        loss.backward()
        opt.step()

    return step


def baseline(n, width, batch, device="cpu"):
    model = small_cnn(width=width, hidden=4 * width).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.rand(n * batch, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (n * batch,), device=device)

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def best_time(step, rounds, reps=3, sync=lambda: None):
    step()  # warm-up
    sync()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            step()
        sync()
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="width 8 only, fewer rounds")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--batch", type=int, default=16, help="images per node per step")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: torch {torch.__version__} sees no CUDA GPU.")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{args.threads} CPU thread(s)"
    widths, rounds = ((8,), 3) if args.quick else ((8, 32), 5)
    print(f"n = {args.n} small CNNs (1x28x28, batch {args.batch} per node), {where}; "
          "samples/s; ratio = StackedModel / one CNN on an n-times larger batch "
          f"(target >= {TARGET})")
    print(f"{'width':>6} {'one CNN (baseline)':>19} {'StackedModel':>13} {'ratio':>6}  verdict")
    for width in widths:
        s_ours = ours(args.n, width, args.batch, device)
        s_base = baseline(args.n, width, args.batch, device)
        t_ours = t_base = float("inf")
        for _ in range(2):  # interleaved, so a burst of load hits both
            t_ours = min(t_ours, best_time(s_ours, rounds, sync=sync))
            t_base = min(t_base, best_time(s_base, rounds, sync=sync))
        samples = args.n * args.batch
        ratio = t_base / t_ours
        print(f"{width:>6} {samples / t_base:>19.0f} {samples / t_ours:>13.0f} {ratio:>6.2f}  "
              f"{'ok' if ratio >= TARGET else 'BELOW TARGET'}")


if __name__ == "__main__":
    main()
