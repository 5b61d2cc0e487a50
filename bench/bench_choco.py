"""Benchmark: CHOCO-Gossip's per-step cost over plain gossip, in the simulator.

Baseline (named in every line): plain gossip, ``AverageConsensus`` on the same SimComm,
topology and x0: one ``neighbor_allreduce`` per step (``x <- W x``, DGD's communication).
Measured: ``CHOCOGossip`` with each compressor: compress ``x - x_hat`` into its bytes, one
``neighbor_allgather`` of the messages, decode the neighbors' messages weighted by W, and the
three vector updates. Prints seconds per step of both, the overhead ``choco - gossip`` per
step and the ratio ``choco / gossip`` (what compression and error feedback cost in compute
here; what they save is the bytes, printed as the message's size over the uncompressed one's,
``msg/full``), for a ring and an exponential graph, a few n and d.

Timings are the best of a few rounds of a few steps, with one torch thread (the machine may
be shared)::

    python bench/bench_choco.py            # full run, a few minutes
    python bench/bench_choco.py --quick    # a few seconds
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from declearn.algorithms.choco import CHOCOGossip, ConsensusStepWarning
from declearn.algorithms.consensus import AverageConsensus
from declearn.comm import SimComm
from declearn.compress import QSGD, Identity, RandK, Sign, TopK
from declearn.topology import exponential, ring

COMPRESSORS = [Identity(), TopK(ratio=0.01), RandK(ratio=0.01), Sign(), QSGD(15)]


def seconds_per_step(alg, steps: int, rounds: int) -> float:
    alg.step()  # warm-up: plans, caches
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(steps):
            alg.step()
        best = min(best, (time.perf_counter() - t) / steps)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few rounds")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", ConsensusStepWarning)
    if args.quick:
        sizes, steps, rounds = [(16, 1000), (64, 10000)], 10, 3
    else:
        sizes, steps, rounds = [(16, 1000), (64, 10000), (256, 10000), (64, 100000)], 10, 3
    print("baseline: plain gossip (AverageConsensus, one neighbor_allreduce per step) on the "
          "same SimComm, topology and x0")
    print(f"{'graph':<12} {'n':>4} {'d':>7} {'compressor':<18} {'msg/full':>8} "
          f"{'gossip s/step':>14} {'choco s/step':>13} {'overhead s/step':>16} {'ratio':>6}")
    for n, d in sizes:
        comm = SimComm(n)
        x0 = torch.randn(n, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        for top in (ring(n), exponential(n)):
            base = seconds_per_step(AverageConsensus(comm, top, x0), steps, rounds)
            for comp in COMPRESSORS:
                alg = CHOCOGossip(comm, top, x0, compressor=comp, gamma=0.01)
                t = seconds_per_step(alg, steps, rounds)
                frac = comp.bytes(d) / (8 * d)
                print(f"{top.name:<12} {n:>4} {d:>7} {comp!r:<18} {frac:>8.4f} "
                      f"{base:>14.2e} {t:>13.2e} {t - base:>16.2e} {t / base:>6.1f}  "
                      "(vs plain gossip)")


if __name__ == "__main__":
    main()
