"""A small CNN learns MNIST-format data under a real mpiexec: every rank reads the IDX files
that tests/test_images.py wrote (a learnable sample: each class lights its own square), keeps
its Dirichlet share of the training images, and trains ``declearn.problems.small_cnn`` with
``Decentralized(torch.optim.Adam, ring)`` through ``declearn.optim.train``. The training loss
of every rank must fall below a threshold, and the records must equal those of the same run
under SimComm with stacked models.

Run as ``mpiexec -n N python tests/mpi/image_training_checks.py FOLDER``; each rank ends with
``IMAGES-OK rank r of N: first loss <a>, last loss <b>``.
"""

from __future__ import annotations

import sys

import torch

STEPS, THRESHOLD = 40, 0.3


def main() -> None:
    from declearn.comm import SimComm
    from declearn.comm.mpi import MPIComm
    from declearn.optim import Decentralized, StackedModel, train
    from declearn.problems import NodeBatches, load_mnist, partition, small_cnn
    from declearn.topology import ring

    torch.set_num_threads(1)
    comm = MPIComm(timeout=120)
    n, rank = comm.size, comm.rank
    data = load_mnist(sys.argv[1], download=False)
    parts = partition(data.y_train.numpy(), n, method="dirichlet", alpha=1.0, seed=0)

    def cnn():
        torch.manual_seed(0)
        return small_cnn(width=4, hidden=16)

    mine = cnn()
    opt = Decentralized(torch.optim.Adam(mine.parameters(), lr=0.01), comm, ring(n))
    log = train(mine, opt, data, NodeBatches(parts, 8, seed=1, node=rank), STEPS, every=10)
    stacked = StackedModel(cnn(), n)
    sim = Decentralized(torch.optim.Adam(stacked.parameters(), lr=0.01), SimComm(n), ring(n))
    ref = train(stacked, sim, data, NodeBatches(parts, 8, seed=1), STEPS, every=10)
    first, last = float(log.records[0].loss.mean()), float(log.records[-1].loss.mean())
    if not last < THRESHOLD:
        raise AssertionError(f"the CNN did not learn: mean loss {first:.3f} -> {last:.3f}")
    for a, b in zip(log.records, ref.records, strict=True):
        if not (abs(a.loss - b.loss).max() <= 1e-3 and abs(a.consensus - b.consensus)
                <= 1e-3 * max(1.0, b.consensus)):
            raise AssertionError(f"engines and simulator differ at step {a.step}: {a} vs {b}")
    comm.barrier()
    sys.stdout.write(f"IMAGES-OK rank {rank} of {n}: first loss {first:.3f}, "
                     f"last loss {last:.3f}\n")
    sys.stdout.flush()


if __name__ == "__main__":
    from harness import run_or_abort  # this folder is sys.path[0] when run as a script

    run_or_abort(main, "IMAGES")
