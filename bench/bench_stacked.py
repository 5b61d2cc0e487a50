"""Benchmark: one DSGD training step of n small networks in one process, StackedModel (vmap)
against the baseline of a Python loop over n separate torch modules.

The step: forward and backward of each node's MLP on its own minibatch, a local SGD step, and
the ring gossip ``x_i <- (x_{i-1} + x_i + x_{i+1}) / 3``. Ours: ``StackedModel`` +
``declearn.optim.DecentralizedSGD`` under ``SimComm(n)`` (one vmap'd forward, one backward,
one neighbor_allreduce on the flat (n, P) buffer). Baseline: n ``nn.Module`` s, n
``torch.optim.SGD`` s, and the gossip done parameter by parameter on stacked copies (what one
writes without declearn). Both compute the same thing; we check the parameters agree after
the timed steps, then print seconds per step and ``ratio = ours / baseline`` (< 1 is faster).

Usage::

    python bench/bench_stacked.py            # n = 16, 64, 256
    python bench/bench_stacked.py --quick    # n = 16, 64
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

import declearn.optim as O
from declearn.comm import SimComm
from declearn.topology import ring


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def data(n: int, batch: int, steps: int):
    g = torch.Generator().manual_seed(1)
    return (torch.rand(steps, n, batch, 64, generator=g),
            torch.randint(0, 10, (steps, n, batch), generator=g))


def ours(n, X, Y, lr):
    stacked = O.StackedModel(make_model(), n)
    opt = O.DecentralizedSGD(stacked.parameters(), SimComm(n, dtype=torch.float32), ring(n),
                             lr=lr)
    loss_fn = torch.nn.functional.cross_entropy

    def step(k):
        opt.zero_grad()
        out = stacked(X[k])
        loss = loss_fn(out.reshape(-1, 10), Y[k].reshape(-1), reduction="sum") / X.shape[2]
        loss.backward()
        opt.step()
        opt.average()

    return step, lambda: [p.detach() for p in stacked.parameters()]


def baseline(n, X, Y, lr):
    models = [copy.deepcopy(make_model()) for _ in range(n)]
    opts = [torch.optim.SGD(m.parameters(), lr=lr) for m in models]
    loss_fn = torch.nn.functional.cross_entropy

    def step(k):
        for i, (m, o) in enumerate(zip(models, opts)):
            o.zero_grad()
            loss_fn(m(X[k, i]), Y[k, i]).backward()
            o.step()
        with torch.no_grad():
            for params in zip(*(m.parameters() for m in models)):
                x = torch.stack(params)
                mixed = (x.roll(1, 0) + x + x.roll(-1, 0)) / 3
                for p, new in zip(params, mixed):
                    p.copy_(new)

    def params():
        return [torch.stack([p.detach() for p in ps])
                for ps in zip(*(m.parameters() for m in models))]

    return step, params


def timed(step, steps):
    step(0)  # warm-up (vmap tracing, allocations)
    t0 = time.perf_counter()
    for k in range(1, steps):
        step(k)
    return (time.perf_counter() - t0) / (steps - 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="n = 16 and 64")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ns = (16, 64) if args.quick else (16, 64, 256)
    print("DSGD training step of n MLPs 64-32-10 (batch 16 per node), seconds per step; "
          "ratio = StackedModel / loop over n modules (< 1: faster)")
    print(f"{'n':>5} {'loop (baseline)':>16} {'StackedModel':>14} {'ratio':>7} {'max |diff|':>11}")
    for n in ns:
        steps = 30
        X, Y = data(n, 16, steps)
        s_ours, p_ours = ours(n, X, Y, lr=0.1)
        s_base, p_base = baseline(n, X, Y, lr=0.1)
        t_ours, t_base = timed(s_ours, steps), timed(s_base, steps)
        diff = max(float((a - b).abs().max()) for a, b in zip(p_ours(), p_base()))
        print(f"{n:>5} {t_base:>16.2e} {t_ours:>14.2e} {t_ours / t_base:>7.3f} {diff:>11.1e}")


if __name__ == "__main__":
    main()
