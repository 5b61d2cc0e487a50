"""Student steps for exercise 01.4 (average consensus, built from the primitives): the right
ones and plausible wrong ones, shared by the SimComm test and the ``mpiexec`` run of
tests/mpi/exercise_build_checks.py."""

from declearn.exercises import ch01

CHECK = ch01.check_consensus_step


def right(comm, W, x):
    return comm.neighbor_allreduce(x, W)


def right_in_place_input(comm, W, x):
    x.mul_(1.0)  # touching the input must not disturb the check
    return comm.neighbor_allreduce(x, W, weighted_by="receiver")


RIGHT = [right, right_in_place_input]

WRONG = {
    "exact average instead of gossip": lambda comm, W, x: comm.allreduce(x),
    "no communication": lambda comm, W, x: x,
    "two rounds per step": lambda comm, W, x: comm.neighbor_allreduce(
        comm.neighbor_allreduce(x, W), W),
    "neighbours' sum without the self weight": lambda comm, W, x: comm.neighbor_allgather(
        x, W).sum(-2),
    "neighbours' mean, self included, equal weights": lambda comm, W, x: (
        comm.neighbor_allgather(x, W).sum(-2) + x) / 3,
    "returns None": lambda comm, W, x: None,
    "forgets the topology": lambda comm, W, x: comm.neighbor_allreduce(x),
    "loses the vector dim": lambda comm, W, x: comm.neighbor_allreduce(x, W)[..., 0],
    "the mean of the gossip": lambda comm, W, x: comm.allreduce(comm.neighbor_allreduce(x, W)),
}


def raises_on_rank_1_after_communicating(comm, W, x):
    y = comm.neighbor_allreduce(x, W)
    if not isinstance(comm.rank, int) or comm.rank == 1:
        raise ValueError("a bug on one rank only")
    return y


WRONG["raises on one rank, after communicating"] = raises_on_rank_1_after_communicating
