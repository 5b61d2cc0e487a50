"""Student steps for exercise 05.4 (ATC gradient tracking, built from the primitives): the
right ones and plausible wrong ones, shared by the SimComm test and the ``mpiexec`` run of
tests/mpi/exercise_build_checks.py."""

import torch

from declearn.exercises import ch05

CHECK = ch05.check_gt_step


def right(comm, W, x, y, g, grad, lr):
    x = comm.neighbor_allreduce(x - lr * y, W)
    g_new = grad(x)
    y = comm.neighbor_allreduce(y + g_new - g, W)
    return x, y, g_new


def right_as_a_list(comm, W, x, y, g, grad, lr):
    x_new = comm.neighbor_allreduce(torch.add(x, y, alpha=-lr), W, weighted_by="receiver")
    g_new = grad(x_new)
    x.mul_(1.0)  # touching the inputs must not disturb the check
    return [x_new, comm.neighbor_allreduce(y.add(g_new).sub(g), W), g_new]


RIGHT = [right, right_as_a_list]


def _gt(mix_x, mix_y, at_new_x=True, scale=1.0, order=(0, 1, 2), keep_old_g=False):
    """A gradient-tracking step with one deliberate change (see WRONG)."""
    def step(comm, W, x, y, g, grad, lr):
        x_new = mix_x(comm, W, x, y, lr)
        g_new = grad(x_new) if at_new_x else grad(x - lr * y)
        y_new = mix_y(comm, W, y, g_new, g, scale)
        out = (x_new, y_new, g if keep_old_g else g_new)
        return tuple(out[i] for i in order)
    return step


_atc_x = lambda comm, W, x, y, lr: comm.neighbor_allreduce(x - lr * y, W)
_atc_y = lambda comm, W, y, gn, g, s: comm.neighbor_allreduce(y + s * (gn - g), W)

WRONG = {
    "DIGing (AWC) instead of ATC": _gt(
        lambda comm, W, x, y, lr: comm.neighbor_allreduce(x, W) - lr * y,
        lambda comm, W, y, gn, g, s: comm.neighbor_allreduce(y, W) + gn - g),
    "y mixed before the correction (AWC in y)": _gt(
        _atc_x, lambda comm, W, y, gn, g, s: comm.neighbor_allreduce(y, W) + gn - g),
    "gradient at the point before mixing": _gt(_atc_x, _atc_y, at_new_x=False),
    "forgets to mix y": _gt(_atc_x, lambda comm, W, y, gn, g, s: y + gn - g),
    "y updated with the new gradient only": _gt(
        _atc_x, lambda comm, W, y, gn, g, s: comm.neighbor_allreduce(gn, W)),
    "exact average instead of gossip": _gt(
        lambda comm, W, x, y, lr: comm.allreduce(x - lr * y),
        lambda comm, W, y, gn, g, s: comm.allreduce(y + gn - g)),
    "sign of the correction flipped": _gt(_atc_x, _atc_y, scale=-1.0),
    "returns the old gradient": _gt(_atc_x, _atc_y, keep_old_g=True),
    "returns (x, g, y)": _gt(_atc_x, _atc_y, order=(0, 2, 1)),
    "no tracking: DGD with the local gradient": lambda comm, W, x, y, g, grad, lr: (
        comm.neighbor_allreduce(x - lr * grad(x), W), y, g),
    "returns only x": lambda comm, W, x, y, g, grad, lr: comm.neighbor_allreduce(x - lr * y, W),
    "returns None": lambda comm, W, x, y, g, grad, lr: None,
}


def _lr_in_y(comm, W, x, y, g, grad, lr):
    x = comm.neighbor_allreduce(x - lr * y, W)
    g_new = grad(x)
    return x, comm.neighbor_allreduce(y + lr * (g_new - g), W), g_new


WRONG["lr applied to the correction of y too"] = _lr_in_y


def raises_on_rank_1_after_communicating(comm, W, x, y, g, grad, lr):
    # after both rounds: a rank that raises between two collectives leaves the others waiting
    # in the second one, which no check can recover from without comm.resync()
    x = comm.neighbor_allreduce(x - lr * y, W)
    g_new = grad(x)
    y = comm.neighbor_allreduce(y + g_new - g, W)
    if not isinstance(comm.rank, int) or comm.rank == 1:
        raise ValueError("a bug on one rank only")
    return x, y, g_new


WRONG["raises on one rank, after communicating"] = raises_on_rank_1_after_communicating
