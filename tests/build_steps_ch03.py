"""Student steps for exercise 03.4 (DGD-ATC, built from the primitives): the right ones and
plausible wrong ones, shared by the SimComm test and the ``mpiexec`` run of
tests/mpi/exercise_build_checks.py."""

import torch

from declearn.exercises import ch03

CHECK = ch03.check_dgd_step


def right(comm, W, x, grad, lr):
    return comm.neighbor_allreduce(x - lr * grad(x), W)


def right_with_torch_add(comm, W, x, grad, lr):
    stepped = torch.add(x, grad(x), alpha=-lr)
    x.mul_(1.0)  # touching the input must not disturb the check
    return comm.neighbor_allreduce(stepped, W, weighted_by="receiver")


RIGHT = [right, right_with_torch_add]


def _cta(comm, W, x, grad, lr):
    phi = comm.neighbor_allreduce(x, W)
    return phi - lr * grad(phi)


WRONG = {
    "AWC instead of ATC": lambda comm, W, x, grad, lr: comm.neighbor_allreduce(x, W)
    - lr * grad(x),
    "gradient at the mixed point (CTA)": _cta,
    "exact average instead of gossip": lambda comm, W, x, grad, lr: comm.allreduce(
        x - lr * grad(x)),
    "no communication (local gradient descent)": lambda comm, W, x, grad, lr: x - lr * grad(x),
    "mixes only the gradient": lambda comm, W, x, grad, lr: x - lr * comm.neighbor_allreduce(
        grad(x), W),
    "forgets the step size": lambda comm, W, x, grad, lr: comm.neighbor_allreduce(
        x - grad(x), W),
    "gradient ascent": lambda comm, W, x, grad, lr: comm.neighbor_allreduce(
        x + lr * grad(x), W),
    "step size applied twice": lambda comm, W, x, grad, lr: comm.neighbor_allreduce(
        x - lr * lr * grad(x), W),
    "two rounds of gossip per step": lambda comm, W, x, grad, lr: comm.neighbor_allreduce(
        comm.neighbor_allreduce(x - lr * grad(x), W), W),
    "neighbours' sum without the self weight": lambda comm, W, x, grad, lr:
        comm.neighbor_allgather(x - lr * grad(x), W).sum(-2),
    "returns None": lambda comm, W, x, grad, lr: None,
    "forgets the topology": lambda comm, W, x, grad, lr: comm.neighbor_allreduce(
        x - lr * grad(x)),
}


def raises_on_rank_1_after_communicating(comm, W, x, grad, lr):
    y = comm.neighbor_allreduce(x - lr * grad(x), W)
    if not isinstance(comm.rank, int) or comm.rank == 1:
        raise ValueError("a bug on one rank only")
    return y


WRONG["raises on one rank, after communicating"] = raises_on_rank_1_after_communicating
