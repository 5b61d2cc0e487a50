"""Checks for chapter 00 (getting started with a cluster of MPI engines).

* :func:`check_allreduce_sum`: every rank holds ``(rank + 1) ** 2``; after the student's
  ``comm.allreduce`` each rank should hold the sum over all ranks.
* :func:`check_who_times_out`: which ranks raise CollectiveTimeoutError when rank
  ``skipped`` does not call ``neighbor_allreduce`` on the ring.
* :func:`check_ring_bytes`: bytes one rank sends in a ring allreduce of a float32 model
  (:data:`MODEL_ENTRIES` entries, :data:`MODEL_RANKS` ranks): ``2 (n - 1) / n * M``, a whole
  number of bytes, accepted exactly.

Each check computes the right value itself (plain arithmetic, not declearn's communication
code) and returns a :class:`~declearn.exercises.Verdict`; ``None`` (the shipped starter
answer) gives a "not yet" verdict instead of an error. Every answer has one exact value, and
only that value is accepted (up to float round-off).
"""

from __future__ import annotations

import math
from numbers import Real

from declearn.exercises.base import Verdict, check_equal, not_yet

__all__ = [
    "MODEL_ENTRIES",
    "MODEL_RANKS",
    "check_allreduce_sum",
    "check_ring_bytes",
    "check_who_times_out",
]

#: Exercise 00.3: a ResNet-50-sized model (about 25.6 million float32 parameters) on 16 ranks.
MODEL_ENTRIES = 25_600_000
MODEL_RANKS = 16
_BYTES_PER_ENTRY = 4  # float32: part of the answer, so not handed out


def _wrong(exercise: str, got: float, hint: str) -> Verdict:
    """A "not yet" with a hint and without the distance to the answer (which would give the
    answer away)."""
    return Verdict(False, exercise, f"{got:g} is not it: {hint}")


def _as_number(value):
    """A float from a number, a one-element tensor/array/list, or None if it is not one."""
    if value is None or isinstance(value, bool):
        return None
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        return float(value.reshape(-1)[0]) if value.numel() == 1 else None
    if hasattr(value, "shape") and hasattr(value, "reshape"):
        return float(value.reshape(-1)[0]) if value.size == 1 else None
    if isinstance(value, (list, tuple)):
        return _as_number(value[0]) if len(value) == 1 else None
    return float(value) if isinstance(value, Real) else None


def _same(got: float, value: float) -> bool:
    """Equal up to float round-off (the answers are whole numbers computed in floating point)."""
    return math.isclose(got, value, rel_tol=1e-12, abs_tol=1e-9)


def check_allreduce_sum(answers) -> Verdict:
    """``answers``: what every rank holds in ``answer``, in rank order (from
    ``cluster.view.pull("answer")``). Right when each is ``sum_{i<n} (i + 1)^2``, exactly."""
    ex = "00.1"
    answers = list(answers) if isinstance(answers, (list, tuple)) else [answers]
    if not answers or all(a is None for a in answers):
        return not_yet(ex, "a comm.allreduce(...) of `mine` in the %%px cell")
    values = [_as_number(a) for a in answers]
    if any(v is None for v in values):
        return Verdict(False, ex, "every rank's `answer` should be one number (a tensor "
                                  "with one element is fine); some rank holds something else.")
    n = len(values)
    expected = float(sum((i + 1) ** 2 for i in range(n)))
    if max(values) - min(values) > 1e-9 * max(1.0, abs(expected)):
        return Verdict(False, ex, f"the ranks disagree ({values}): after an allreduce every "
                                  "rank holds the same result. Did every rank call it?")
    got = values[0]
    if _same(got, expected):
        return Verdict(True, ex, f"every rank holds the sum over the {n} ranks.")
    if _same(got, expected / n):
        hint = "that is the mean over ranks: allreduce averages unless you ask for op='sum'."
    else:
        hint = "every rank should end up with the sum of `mine` over all ranks."
    return _wrong(ex, got, hint)


def _ring_bytes() -> float:
    """``2 (n - 1) / n * M`` with ``M`` = :data:`MODEL_ENTRIES` float32 values (bytes)."""
    n, m = MODEL_RANKS, MODEL_ENTRIES * _BYTES_PER_ENTRY
    return 2 * (n - 1) * m / n


def check_ring_bytes(answer) -> Verdict:
    """Bytes one rank sends in a ring allreduce of :data:`MODEL_ENTRIES` float32 values over
    :data:`MODEL_RANKS` ranks: ``2 (n - 1) / n * M``, a whole number of bytes, accepted
    exactly (up to float round-off)."""
    ex = "00.3"
    if answer is None:
        return not_yet(ex, "a number of bytes")
    got = _as_number(answer)
    if got is None:
        return Verdict(False, ex, "the answer should be one number of bytes.")
    n, m = MODEL_RANKS, MODEL_ENTRIES * _BYTES_PER_ENTRY
    expected = _ring_bytes()
    if _same(got, expected):
        return Verdict(True, ex, "that is what each GPU sends per step with a ring allreduce.")
    near = lambda value: math.isclose(got, value, rel_tol=1e-6)
    if near(expected / _BYTES_PER_ENTRY):
        hint = "that counts entries, not bytes: how many bytes does one float32 take?"
    elif near(expected / 1e6) or near(expected / 2**20):
        hint = "give the answer in bytes, not in megabytes."
    elif near(2 * expected):
        hint = "a float32 takes 4 bytes, not 8 (that would be float64)."
    elif near((n - 1) * m):
        hint = ("that is the naive pattern where every rank sends its whole vector to every "
                "other rank; the ring sends pieces of size M/n.")
    elif near(2 * m):
        hint = "that is the limit for very many ranks; keep the exact factor for n = 16."
    elif near((n - 1) / n * m):
        hint = "that is one phase only: a ring allreduce has a reduce-scatter AND an allgather."
    elif near(m):
        hint = "that is the size of the model itself; count the messages of both phases."
    elif near(2 * (n - 2) / (n - 1) * m) or near(2 * n / (n + 1) * m) or near(2 * n / (n - 1) * m):
        hint = "check the number of ranks in the factor 2(n - 1)/n: n is the number of GPUs."
    else:
        hint = ("count the steps of both phases and the size of one message "
                "(a chunk of the vector).")
    return _wrong(ex, got, hint)


def check_who_times_out(answer, n: int, skipped: int = 1) -> Verdict:
    """The ranks that time out when rank ``skipped`` does not call ``neighbor_allreduce`` on
    ``ring(n)`` while every other rank does: the ranks that receive from it."""
    ex = "00.2"
    if answer is None:
        return not_yet(ex, "the ranks that will raise, e.g. {0, 3}")
    if isinstance(answer, Real) and not isinstance(answer, bool):
        answer = [answer]
    try:
        got = {int(r) for r in answer if float(r) == int(r)}
        whole = len(got) == len(set(answer))
    except (TypeError, ValueError):
        whole = False
    if not whole or isinstance(answer, (str, bytes)):
        return Verdict(False, ex, "give the ranks as a set or list of ints, e.g. {0, 3}.")
    if n < 2:
        return Verdict(False, ex, "this exercise needs at least 2 ranks.")
    expected = {(skipped - 1) % n, (skipped + 1) % n} - {skipped}
    if got == expected:
        return check_equal(ex, got, expected)
    if skipped in got:
        hint = (f"rank {skipped} never calls the operation, so it never waits for anything "
                "and cannot time out.")
    elif got == set(range(n)) - {skipped}:
        hint = ("that is what happens with allreduce, where every rank waits for every other; "
                "a neighbor operation only waits for the ranks it receives from.")
    else:
        hint = f"which ranks receive a message from rank {skipped} on the ring?"
    return check_equal(ex, got, expected, hint=hint)
