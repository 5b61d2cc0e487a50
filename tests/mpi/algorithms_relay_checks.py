"""RelaySum/RelaySGD, parallel SGD, the Local SGD family and the declearn.optim optimizers:
the same iterates under a real mpiexec as under SimComm.

Run as ``mpiexec -n N python tests/mpi/algorithms_relay_checks.py --section S`` (N >= 2; the
pytest side uses N = 4), S = ``algorithms`` or ``optim``.

* algorithms: every rank builds the same problems, trees and x0 from seeds, runs each
  algorithm under MPIComm and again under SimComm(N) in this process, and compares its iterate
  with row ``rank`` of the simulator's (float64, 1e-6), and the logged metrics. Ends with
  ``RELAY-OK rank r of N: <checks> checks, <runs> runs``.
* optim: each rank trains a tiny two-layer network on its own data with each optimizer; right
  after each synchronisation of Local SGD / BMUF the parameters are identical on every rank
  (bit for bit), and every optimizer's parameters equal those of N stacked models trained
  under SimComm (1e-6). Ends with ``OPTIM-OK rank r of N: <checks> checks``.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from declearn.problems.base import Problem

STEPS = 12
TOL = 1e-6


class SpreadQuadratics(Problem):
    """``f_i(x) = 1/2 sum_j a_ij (x_j - c_ij)^2``, node-specific a_i in [0.5, 1] and c_i."""

    name = "spread_quadratics"

    def __init__(self, n, d=6, *, sigma=0.0, seed=0):
        super().__init__(n, (d,), sigma=sigma, seed=seed)
        g = torch.Generator().manual_seed(seed)
        self.a = 0.5 + 0.5 * torch.rand(n, d, generator=g, dtype=torch.float64)
        self.c = 2.0 * torch.randn(n, d, generator=g, dtype=torch.float64)
        self.x_star = (self.a * self.c).sum(0) / self.a.sum(0)
        self.f_star = float(self._loss(self.x_star.expand(n, d), torch.arange(n)).mean())

    def _loss(self, x, nodes):
        return 0.5 * (self.a[nodes.cpu()] * (x - self.c[nodes.cpu()]) ** 2).sum(-1)

    def _grad(self, x, nodes):
        return self.a[nodes.cpu()] * (x - self.c[nodes.cpu()])


def algorithm_cases(n: int):
    """``(label, factory(comm, x0), x0)`` for every configuration compared across backends."""
    import networkx as nx

    import declearn.algorithms as A
    from declearn.topology import binary_tree, chain, double_binary_trees, spanning_tree, star

    det, noisy = SpreadQuadratics(n, seed=1), SpreadQuadratics(n, sigma=0.4, seed=2)
    trees = {
        "chain": chain(n), "binary_tree": binary_tree(n), "double_trees": double_binary_trees(n),
        "bfs_tree": spanning_tree(nx.cycle_graph(n), root=n // 2), "star": star(n),
    }
    x0 = torch.randn(n, 3, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    out = []
    for name, tree in trees.items():
        out.append((f"relaysum_consensus {name}",
                    lambda c, x, t=tree: A.RelaySumConsensus(c, t, x), x0))
        for fill in ("initial", "own"):
            out.append((f"relaysgd {fill} {name}", lambda c, x, t=tree, f=fill: A.RelaySGD(
                c, noisy, t, lr=0.2, fill=f), None))
        out.append((f"relaysgd_grad {name}",
                    lambda c, x, t=tree: A.RelaySGDGrad(c, noisy, t, lr=0.2), None))
    out += [
        ("relaysgd det chain", lambda c, x: A.RelaySGD(c, det, trees["chain"], lr=0.3), None),
        ("parallel_sgd", lambda c, x: A.ParallelSGD(c, noisy, lr=0.3), None),
        ("local_sgd", lambda c, x: A.LocalSGD(c, noisy, lr=0.2, tau=3), None),
        ("local_sgd tau1 det", lambda c, x: A.LocalSGD(c, det, lr=0.2, tau=1), None),
        ("bmuf", lambda c, x: A.LocalSGD(c, noisy, lr=0.2, tau=3, gmf=0.6), None),
        ("easgd", lambda c, x: A.EASGD(c, noisy, lr=0.2, tau=2, alpha=0.9 / n), None),
        ("overlap", lambda c, x: A.OverlapLocalSGD(c, noisy, lr=0.2, tau=3, alpha=0.5), None),
        ("overlap gmf", lambda c, x: A.OverlapLocalSGD(c, noisy, lr=0.2, tau=2, alpha=0.6,
                                                       gmf=0.7), None),
        ("cocod", lambda c, x: A.CoCoDSGD(c, noisy, lr=0.2, tau=3), None),
    ]
    return out


# ---------------------------------------------------------------------- the tiny network
def make_data(n: int, batch: int = 16, d_in: int = 4):
    g = torch.Generator().manual_seed(11)
    X = torch.randn(n, batch, d_in, generator=g, dtype=torch.float64)
    y = torch.sin(X.sum(-1, keepdim=True)) + 0.3 * torch.arange(n, dtype=torch.float64)[
        :, None, None]
    return X, y


def make_params(seed: int, lead=(), d_in: int = 4, hidden: int = 8):
    """The network's tensors (W1, b1, W2, b2), initialised from ``seed``; ``lead`` = (n,) for
    n stacked copies."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(d_in, hidden), (1, hidden), (hidden, 1), (1, 1)]
    return [torch.nn.Parameter(0.5 * torch.randn(lead + s, generator=g, dtype=torch.float64))
            for s in shapes]


def forward(params, X):
    """Two-layer tanh network; ``matmul`` broadcasts over a leading node dim if any."""
    W1, b1, W2, b2 = params
    return torch.tanh(X @ W1 + b1) @ W2 + b2


def optimizer_cases():
    import declearn.optim as O
    from declearn.topology import chain, double_binary_trees, one_peer_exponential, ring

    sgd = dict(momentum=0.9, weight_decay=1e-3)
    return [
        ("local_sgd", lambda ps, c: O.LocalSGD(ps, c, lr=0.05, tau=3, **sgd), True),
        ("bmuf", lambda ps, c: O.LocalSGD(ps, c, lr=0.05, tau=3, gmf=0.5, **sgd), True),
        ("easgd", lambda ps, c: O.EASGD(ps, c, lr=0.05, tau=2, alpha=0.2, **sgd), False),
        ("overlap", lambda ps, c: O.OverlapLocalSGD(ps, c, lr=0.05, tau=2, alpha=0.5, gmf=0.3,
                                                    nesterov=True, momentum=0.9), False),
        ("cocod", lambda ps, c: O.CoCoDSGD(ps, c, lr=0.05, tau=3, **sgd), False),
        ("dsgd ring", lambda ps, c: O.DecentralizedSGD(ps, c, ring(c.size), lr=0.05, **sgd),
         False),
        ("dsgd one-peer exp tau2", lambda ps, c: O.DecentralizedSGD(
            ps, c, one_peer_exponential(c.size), lr=0.05, tau=2, **sgd), False),
        ("relaysgd chain", lambda ps, c: O.RelaySGD(ps, c, chain(c.size), lr=0.05, **sgd),
         False),
        ("relaysgd double trees", lambda ps, c: O.RelaySGD(
            ps, c, double_binary_trees(c.size), lr=0.05, momentum=0.9), False),
    ]


# --------------------------------------------------------------------------- the checks
def main():
    from mpi4py import MPI

    from declearn.comm import SimComm
    from declearn.comm.mpi import MPIComm

    section = sys.argv[sys.argv.index("--section") + 1] if "--section" in sys.argv \
        else "algorithms"
    world = MPI.COMM_WORLD
    rank, n = world.Get_rank(), world.Get_size()
    checks = [0]

    def check(cond, what):
        checks[0] += 1
        if not cond:
            raise AssertionError(f"rank {rank}: {what}")

    t0 = time.monotonic()
    comm = MPIComm(timeout=30)
    if section == "algorithms":
        runs = 0
        for label, factory, x0 in algorithm_cases(n):
            comm.reset_traffic()
            alg_mpi = factory(comm, None if x0 is None else x0[rank])
            alg_sim = factory(SimComm(n), x0)
            h_mpi = alg_mpi.run(STEPS, log_every=4, progress=False)
            h_sim = alg_sim.run(STEPS, log_every=4, progress=False)
            mine, ref = alg_mpi.iterate, alg_sim.iterate[rank]
            check(mine.shape == ref.shape, f"{label}: shape {tuple(mine.shape)} vs "
                                           f"{tuple(ref.shape)}")
            err = float((mine - ref).abs().max())
            check(err <= TOL * max(1.0, float(ref.abs().max())),
                  f"{label}: MPI and SimComm iterates differ by {err:.3g}")
            check(float((mine - alg_sim.iterate[(rank + 1) % n]).abs().max()) > 0
                  or label.startswith(("parallel", "local_sgd tau1", "relaysum")),
                  f"{label}: nodes identical, the comparison would prove little")
            for col in ("consensus_error", "suboptimality", "messages", "bytes"):
                a, b = h_mpi[col], h_sim[col]
                check(np.allclose(a, b, rtol=1e-6, atol=1e-9, equal_nan=True),
                      f"{label}: history {col} differs: MPI {a} vs SimComm {b}")
            for rule in (getattr(alg_mpi, "rule", None),):
                if hasattr(rule, "finish"):
                    rule.finish()  # leave no allreduce in flight
            runs += 1
        comm.barrier()
        print(f"RELAY-OK rank {rank} of {n}: {checks[0]} checks, {runs} runs, "
              f"{time.monotonic() - t0:.1f} s", flush=True)
    elif section == "optim":
        X, y = make_data(n)
        for label, build, synced in optimizer_cases():
            mine = make_params(seed=100 + rank)  # different on every rank at first
            per_rank = [make_params(seed=100 + r) for r in range(n)]
            stacked = [torch.nn.Parameter(torch.stack([ps[i].detach() for ps in per_rank]))
                       for i in range(4)]
            opt, opt_sim = build(mine, comm), build(stacked, SimComm(n))
            tau = opt.rule.tau
            for it in range(1, 4 * tau + 2):
                for ps, o, xb, yb in ((mine, opt, X[rank], y[rank]), (stacked, opt_sim, X, y)):
                    o.zero_grad()
                    loss = ((forward(ps, xb) - yb) ** 2).mean(-1).mean(-1).sum()
                    loss.backward()
                    o.step()
                    o.average()
                flat = opt.flat.flat
                if synced and it % tau == 0:
                    everyone = comm.allgather(flat)
                    check(bool((everyone == flat).all()),
                          f"{label}: parameters differ across ranks right after sync {it}")
                err = float((flat - opt_sim.flat.flat[rank]).abs().max())
                check(err <= TOL, f"{label}: MPI and stacked SimComm differ by {err:.3g} at {it}")
            check(float((opt.flat.flat - opt_sim.flat.flat[(rank + 1) % n]).abs().max()) > 0
                  or synced, f"{label}: ranks identical, the comparison would prove little")
            opt.finish()
        comm.barrier()
        print(f"OPTIM-OK rank {rank} of {n}: {checks[0]} checks, "
              f"{time.monotonic() - t0:.1f} s", flush=True)
    else:
        raise ValueError(f"unknown --section {section!r}; use 'algorithms' or 'optim'")


if __name__ == "__main__":
    from harness import run_or_abort  # this folder is sys.path[0] when run as a script

    run_or_abort(main, "RELAY")
