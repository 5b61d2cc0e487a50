"""Student steps for exercise 07.4 (one RelaySum exchange, built from neighbor_alltoall): the
right ones and plausible wrong ones, shared by the SimComm test and the ``mpiexec`` run of
tests/mpi/exercise_build_checks.py.

``received`` has the slot dim at -2 on both backends (dim 1 under SimComm, dim 0 on a rank),
so every step here names it -2: a step summing dim 0 or 1 is right on one backend only."""

from declearn.exercises import ch07

CHECK = ch07.check_relay_step


def right(comm, tree, v, received):
    total = v + received.sum(-2)                    # own value and everything heard
    return comm.neighbor_alltoall(total.unsqueeze(-2) - received, tree)


def right_broadcast_form(comm, tree, v, received):
    message = v.unsqueeze(-2) + received.sum(-2, keepdim=True) - received
    return comm.neighbor_alltoall(message, tree)


def right_in_place_input(comm, tree, v, received):
    v.mul_(1.0)  # touching the inputs must not disturb the check
    message = received.neg_().add_((v + (-received).sum(-2)).unsqueeze(-2))
    return comm.neighbor_alltoall(message, tree)


RIGHT = [right, right_broadcast_form, right_in_place_input]


def _send(comm, tree, message, received):
    return comm.neighbor_alltoall(message.unsqueeze(-2).expand(received.shape).contiguous(),
                                  tree)


WRONG = {
    "sends v only (no relay)": lambda comm, tree, v, received: _send(comm, tree, v, received),
    "relays everything, the neighbour's own message too (double counting)":
        lambda comm, tree, v, received: _send(comm, tree, v + received.sum(-2), received),
    "leaves its own value out of the message": lambda comm, tree, v, received: (
        comm.neighbor_alltoall(received.sum(-2, keepdim=True) - received, tree)),
    "adds its own value twice": lambda comm, tree, v, received: comm.neighbor_alltoall(
        (2 * v + received.sum(-2)).unsqueeze(-2) - received, tree),
    "echoes each neighbour's message back": lambda comm, tree, v, received: (
        comm.neighbor_alltoall(v.unsqueeze(-2) + received, tree)),
    "sums the values (dim -1) instead of the slots": lambda comm, tree, v, received: (
        comm.neighbor_alltoall((v + received.sum(-1)).unsqueeze(-2) - received, tree)),
    "returns the totals, not the received messages": lambda comm, tree, v, received: (
        v + right(comm, tree, v, received).sum(-2)),
    "no communication": lambda comm, tree, v, received: received,
    "returns None": lambda comm, tree, v, received: None,
    "two exchanges per step": lambda comm, tree, v, received: right(
        comm, tree, v, right(comm, tree, v, received)),
}


def raises_on_rank_1_after_communicating(comm, tree, v, received):
    out = right(comm, tree, v, received)
    if not isinstance(comm.rank, int) or comm.rank == 1:
        raise ValueError("a bug on one rank only")
    return out


WRONG["raises on one rank, after communicating"] = raises_on_rank_1_after_communicating
