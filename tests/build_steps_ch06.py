"""Student steps for exercise 06.4 (push-sum, built from the primitives): the right ones and
plausible wrong ones, shared by the SimComm test and the ``mpiexec`` run of
tests/mpi/exercise_build_checks.py."""

import torch

from declearn.exercises import ch06

CHECK = ch06.check_push_sum_step


def _mix(comm, A, v):
    return comm.neighbor_allreduce(v, A, weighted_by="sender")


def right(comm, A, x, w):
    return comm.neighbor_allreduce(x, A, weighted_by="sender"), \
        comm.neighbor_allreduce(w, A, weighted_by="sender")


def right_packed(comm, A, x, w):
    """One message per out-neighbour, as PushSumConsensus sends it."""
    xw = comm.neighbor_allreduce(torch.cat([x, w], dim=-1), A, weighted_by="sender")
    return xw[..., :-1], xw[..., -1:]


def right_in_place_input(comm, A, x, w):
    x.mul_(1.0)  # touching the inputs must not disturb the check
    w.add_(0.0)
    return [_mix(comm, A, x), _mix(comm, A, w)]  # a list is a pair too


RIGHT = [right, right_packed, right_in_place_input]

WRONG = {
    "receiver weights (the default) on a column-stochastic A": lambda comm, A, x, w: (
        comm.neighbor_allreduce(x, A), comm.neighbor_allreduce(w, A)),
    "mixes x but not w": lambda comm, A, x, w: (_mix(comm, A, x), w),
    "mixes w but not x": lambda comm, A, x, w: (x, _mix(comm, A, w)),
    "returns the ratio x / w as x": lambda comm, A, x, w: (
        _mix(comm, A, x) / _mix(comm, A, w), _mix(comm, A, w)),
    "resets w to 1 after dividing": lambda comm, A, x, w: (
        _mix(comm, A, x) / _mix(comm, A, w), torch.ones_like(w)),
    "x and w swapped": lambda comm, A, x, w: (_mix(comm, A, w), _mix(comm, A, x)),
    "no communication": lambda comm, A, x, w: (x, w),
    "two rounds per step": lambda comm, A, x, w: (
        _mix(comm, A, _mix(comm, A, x)), _mix(comm, A, _mix(comm, A, w))),
    "exact average instead of push-sum": lambda comm, A, x, w: (
        comm.allreduce(x), torch.ones_like(w)),
    "unweighted sum of what arrives, self included": lambda comm, A, x, w: (
        x + comm.neighbor_allgather(x, A).sum(-2), w + comm.neighbor_allgather(w, A).sum(-2)),
    "returns only x": lambda comm, A, x, w: _mix(comm, A, x),
    "returns None": lambda comm, A, x, w: None,
    "forgets the topology": lambda comm, A, x, w: (
        comm.neighbor_allreduce(x), comm.neighbor_allreduce(w)),
}


def raises_on_rank_1_after_communicating(comm, A, x, w):
    pair = right(comm, A, x, w)
    if not isinstance(comm.rank, int) or comm.rank == 1:
        raise ValueError("a bug on one rank only")
    return pair


WRONG["raises on one rank, after communicating"] = raises_on_rank_1_after_communicating
