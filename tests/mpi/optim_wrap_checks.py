"""declearn.optim.Decentralized (any torch optimizer): the same parameters under a real mpiexec
as under SimComm with stacked models.

Run as ``mpiexec -n N python tests/mpi/optim_wrap_checks.py`` (the pytest side,
tests/test_optim_wrap.py, uses N = 4). Every rank builds the same float32 MLP and data from
seeds, trains its own copy with a wrapped torch optimizer (Adam, AdamW, SGD with momentum) on
its own rows of the data under MPIComm, and N stacked copies under SimComm(N) in the same
process, and compares its parameters with row ``rank`` after every step (float32, 1e-5) for
the modes atc, awc, allreduce (also overlapped with backward), tracking and quasi-global
momentum over static and dynamic
topologies; then the training loop's records. Then every rank but one
builds a model of another shape, and each rank must get a ValueError naming the parameter and
the ranks. Each rank ends with ``WRAP-OK rank r of N: <checks> checks``.
"""

from __future__ import annotations

import sys

import torch

STEPS, TOL = 6, 1e-5


def model(width=6):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, width), torch.nn.Tanh(),
                               torch.nn.Linear(width, 3))


def loss_of(out, y):
    return torch.nn.functional.cross_entropy(out.reshape(-1, 3), y.reshape(-1),
                                             reduction="sum") / y.shape[-1]


def main() -> None:
    from declearn.comm import SimComm
    from declearn.comm.mpi import MPIComm
    from declearn.optim import Decentralized, StackedModel
    from declearn.topology import exponential, one_peer_exponential, ring

    comm = MPIComm(timeout=60)
    n, rank = comm.size, comm.rank
    checks = [0]

    def check(ok: bool, what: str) -> None:
        if not ok:
            raise AssertionError(what)
        checks[0] += 1

    optimizers = {
        "adam": lambda ps: torch.optim.Adam(ps, lr=0.01),
        "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1),
        "sgd-momentum": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    }
    cases = [("adam", "atc", ring(n)), ("adam", "awc", one_peer_exponential(n)),
             ("adamw", "atc", exponential(n)), ("sgd-momentum", "awc", ring(n)),
             ("adam", "allreduce", None), ("sgd-momentum", "quasi-global", ring(n)),
             ("adam", "tracking", one_peer_exponential(n)), ("adam", "overlap", None),
             ("adam", "awc-overlap", one_peer_exponential(n))]
    gen = torch.Generator().manual_seed(1)
    data = [(torch.randn(n, 8, 5, generator=gen), torch.randint(0, 3, (n, 8), generator=gen))
            for _ in range(STEPS)]
    for name, mode, topo in cases:
        how = {"quasi-global": {"mode": "atc", "quasi_global": True},
               "overlap": {"mode": "allreduce", "overlap": True, "bucket_bytes": 64},
               "awc-overlap": {"mode": "awc", "overlap": True}}.get(
            mode, {"mode": mode})
        mine = model()
        opt = Decentralized(optimizers[name](mine.parameters()), comm, topo, model=mine, **how)
        stacked = StackedModel(model(), n)
        sim = Decentralized(optimizers[name](stacked.parameters()), SimComm(n), topo, **how)
        for k, (x, y) in enumerate(data):
            for o, m, xs, ys in ((opt, mine, x[rank], y[rank]), (sim, stacked, x, y)):
                o.zero_grad()
                loss_of(m(xs), ys).backward()
                o.step()
            err = float((opt.x - sim.x[rank]).abs().max())
            check(err <= TOL, f"{name} {mode}: MPI and SimComm differ by {err:.3g} at step {k}")
        if mode == "awc-overlap":
            check(opt.background.overlapping, "awc-overlap: the average did not run in a thread")
        opt.finish()
        spread = float((sim.x[0] - sim.x[1]).abs().max())
        check(spread > 0 or mode in ("allreduce", "overlap"),
              f"{name} {mode}: the nodes are identical")

    # the training loop: the same records on every rank as in the simulator
    from declearn.optim import train
    from declearn.problems import NodeBatches, load_digits, partition

    digits = load_digits(test_size=100)
    parts = partition(digits.y_train.numpy(), n, method="dirichlet", alpha=0.5, seed=0)

    def mlp():
        torch.manual_seed(2)
        return torch.nn.Sequential(torch.nn.Linear(64, 12), torch.nn.ReLU(),
                                   torch.nn.Linear(12, 10))

    mine = mlp()
    opt = Decentralized(torch.optim.Adam(mine.parameters(), lr=0.01), comm, ring(n))
    log = train(mine, opt, digits, NodeBatches(parts, 8, seed=1, node=rank), 6, every=3)
    stacked = StackedModel(mlp(), n)
    sim = Decentralized(torch.optim.Adam(stacked.parameters(), lr=0.01), SimComm(n), ring(n))
    ref = train(stacked, sim, digits, NodeBatches(parts, 8, seed=1), 6, every=3)
    for a, b in zip(log.records, ref.records, strict=True):
        check(a.step == b.step and bool(abs(a.loss - b.loss).max() <= 1e-4)
              and bool(abs(a.accuracy - b.accuracy).max() <= 1e-6)
              and abs(a.mean_accuracy - b.mean_accuracy) <= 1e-6
              and abs(a.consensus - b.consensus) <= 1e-4 * max(1.0, b.consensus),
              f"train records differ at step {b.step}: {a} vs {b}")

    # a model of another shape on the last rank: every rank is told which parameter and ranks
    odd = model(width=7 if rank == n - 1 else 6)
    try:
        Decentralized(torch.optim.Adam(odd.parameters(), lr=0.1), comm, ring(n), model=odd)
    except ValueError as error:
        text = str(error)
        check("0.weight" in text and f"rank {n - 1}: 35" in text and "rank 0: 30" in text,
              f"the shape error does not name the parameter and the ranks: {text}")
    else:
        raise AssertionError("models of different shapes were accepted")
    comm.barrier()
    sys.stdout.write(f"WRAP-OK rank {rank} of {n}: {checks[0]} checks\n")
    sys.stdout.flush()


if __name__ == "__main__":
    from harness import run_or_abort  # this folder is sys.path[0] when run as a script

    run_or_abort(main, "WRAP")
