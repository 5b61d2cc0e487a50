r"""Checks for chapter 08, *Communication-efficient methods: the Local SGD family and
compressed gossip*.

Each check works its answer out here with plain Python and numpy (not with declearn.comm or
declearn.algorithms, so a bug there cannot make a wrong answer look right) and answers with a
:class:`~declearn.exercises.Verdict`: a hint when the answer is wrong, "not yet" while it is
still ``None``. Every question has one exact answer; answers are compared to it up to float
round-off (relative ``1e-9``), far below the distance to any plausible wrong answer.

* :func:`check_bytes` (08.1): bytes each node sends in a run of Local SGD, counted like
  ``comm.traffic``: ``steps // tau`` ring allreduces of a ``d``-entry float64 model, each of
  which makes every node send ``2 (n - 1)`` chunks of ``1/n`` of the model.
* :func:`check_round_times` (08.2): seconds per round of Local SGD, ``tau s + delta`` (compute,
  then wait for the allreduce), and of Overlap-Local-SGD, ``max(tau s, delta)`` (the allreduce
  runs during the next ``tau`` steps), for the numbers in :data:`ROUND_SETTING`.
* :func:`check_easgd_alpha` (08.3): the largest moving rate alpha for which EASGD's mean model
  and centre do not swing apart, for :data:`EASGD_N` workers: the second eigenvalue
  ``1 - (n + 1) alpha`` of the synchronisation map must stay in ``(-1, 1)``, so the bound is
  the exact value ``2 / (n + 1)``.
* :func:`check_message_bytes` (08.4): the bytes of one compressed message of a ``d``-entry
  float64 vector in declearn's packed format (:data:`MESSAGE_SETTING`), for top-1% and sign:
  top-k sends ``k = round(ratio d)`` values (8 bytes each) and their ``k`` indices in the
  smallest integer type that holds ``0 .. d - 1`` (worked out here with ``numpy.iinfo``, not
  with declearn.compress); sign sends one float64 scale and the ``d`` sign bits packed 8 per
  byte, ``8 + ceil(d / 8)``.
"""

from __future__ import annotations

import math

import numpy as np

from declearn.exercises.base import Verdict, is_number, not_yet

__all__ = [
    "BYTES_SETTING",
    "EASGD_N",
    "MESSAGE_SETTING",
    "ROUND_SETTING",
    "check_bytes",
    "check_easgd_alpha",
    "check_message_bytes",
    "check_round_times",
]

_EX1 = "08.1 bytes of Local SGD"
_EX2 = "08.2 time per round"
_EX3 = "08.3 largest EASGD alpha"
_EX4 = "08.4 bytes of a compressed message"
_RTOL = 1e-9  # float round-off only: every answer of this chapter is exact

#: Exercise 08.1: nodes, float64 entries of the model, local steps, period.
BYTES_SETTING = {"n": 16, "d": 10, "steps": 600, "tau": 4}
#: Exercise 08.2: seconds of compute per local step, period, seconds per allreduce.
ROUND_SETTING = {"step_seconds": 0.006, "tau": 5, "delay": 0.045}
#: Exercise 08.3: number of workers.
EASGD_N = 16
#: Exercise 08.4: entries of a node's float64 vector, the fraction top-k keeps.
MESSAGE_SETTING = {"d": 2000, "ratio": 0.01}


def _same(a: float, b: float, rtol: float = _RTOL) -> bool:
    return math.isclose(a, b, rel_tol=rtol, abs_tol=1e-15)


# ---------------------------------------------------------------------- 08.1
def _local_sgd_bytes(n: int, d: int, steps: int, tau: int, itemsize: int = 8) -> float:
    """Bytes one node sends: ``steps // tau`` ring allreduces of a ``d``-entry model, each
    ``2 (n - 1)`` messages of ``1/n`` of the model."""
    return (steps // tau) * 2 * (n - 1) / n * d * itemsize


def check_bytes(answer) -> Verdict:
    """Exercise 08.1: bytes each node sends in 600 local steps of Local SGD with tau = 4 on
    n = 16 nodes, for a model of d = 10 float64 numbers (the count of ``comm.traffic``).
    One exact answer."""
    if answer is None:
        return not_yet(_EX1, "a number of bytes")
    if not is_number(answer):
        return Verdict(False, _EX1, "give one number: bytes sent per node, whole run.")
    s = BYTES_SETTING
    n, d, steps, tau = s["n"], s["d"], s["steps"], s["tau"]
    expected = _local_sgd_bytes(**s)
    if _same(answer, expected):
        return Verdict(True, _EX1, f"{steps // tau} ring allreduces, each 2 (n - 1) chunks of "
                                   "1/n of the model per node.")
    model, rounds = d * 8, steps // tau
    per_round = 2 * (n - 1) / n * model
    hints = [
        (rounds * model, ("Right number of rounds, but a ring allreduce does not send the model "
                          "once: each node sends 2 (n - 1) messages of 1/n of the model.")),
        (rounds * 2 * model, ("2 models per round is the large-n limit; with n = 16 a node sends "
                              "2 (n - 1) chunks of 1/n of the model, a little less.")),
        (rounds * (n - 1) / n * model, ("That is only the reduce-scatter half of a ring "
                                        "allreduce; the allgather sends as much again.")),
        (steps * per_round, ("That is one allreduce per step (tau = 1); Local SGD averages "
                             "every tau-th step.")),
        ((rounds - 1) * per_round, ("One round short: 600 steps with tau = 4 end with "
                                    "600 // 4 synchronisations.")),
        ((rounds + 1) * per_round, "One round too many: count 600 // 4 synchronisations."),
        (expected / 8, "That counts numbers; a float64 number is 8 bytes."),
        (expected * n, ("That is n times too much: all nodes together, or whole models instead "
                        "of 1/n chunks. The question asks what one node sends.")),
    ]
    hint = next((h for v, h in hints if _same(answer, v)),
                "Count the synchronisations (one allreduce every tau steps), then the bytes one "
                "node sends in one ring allreduce of the model.")
    return Verdict(False, _EX1, f"that is not what comm.traffic counts. {hint}")


# ---------------------------------------------------------------------- 08.2
def _round_times(step_seconds: float, tau: int, delay: float) -> tuple[float, float]:
    """Seconds per round: ``(tau s + delta, max(tau s, delta))`` for Local SGD (it waits for
    the allreduce) and Overlap-Local-SGD (the allreduce runs during the next tau steps)."""
    compute = tau * step_seconds
    return compute + delay, max(compute, delay)


def check_round_times(answer) -> Verdict:
    """Exercise 08.2: ``(local_sgd_seconds, overlap_seconds)`` per round when a local step
    computes for 6 ms, tau = 5 and an allreduce takes 45 ms. One exact pair (seconds)."""
    if answer is None:
        return not_yet(_EX2, "a pair (seconds per round of Local SGD, of Overlap-Local-SGD)")
    try:
        local, overlap = answer
    except (TypeError, ValueError):
        local = overlap = None
    if isinstance(answer, (str, bytes, dict)) or not (is_number(local) and is_number(overlap)):
        return Verdict(False, _EX2, "give a pair of numbers in seconds, e.g. (0.1, 0.05).")
    s = ROUND_SETTING
    expected = _round_times(**s)
    ok = [_same(a, e) for a, e in zip((local, overlap), expected)]
    if all(ok):
        return Verdict(True, _EX2, "Local SGD adds the delay to the compute; Overlap-Local-SGD "
                                   "pays only the longer of the two.")
    compute = s["tau"] * s["step_seconds"]
    if _same(local, expected[1]) and _same(overlap, expected[0]):
        hint = "The two are swapped: which method waits for its allreduce?"
    elif _same(local, 1000 * expected[0]) or _same(overlap, 1000 * expected[1]):
        hint = "Give seconds, not milliseconds."
    elif all(abs(a - e) <= 0.02 * e for a, e in zip((local, overlap), expected)):
        hint = ("Close, but both times follow exactly from the numbers given: compute them "
                "without rounding.")
    else:
        hints = []
        if not ok[0]:
            hints.append("Local SGD computes its tau steps, then blocks in the allreduce: the "
                         "two times add up.")
        if not ok[1]:
            if _same(overlap, compute):
                what = "compute cannot hide more than it lasts"
            elif _same(overlap, s["delay"] - compute):
                what = "that is the time spent waiting; a round also holds the compute"
            else:
                what = ("the allreduce runs during the next tau local steps, so a round lasts "
                        "as long as the longer of the two")
            hints.append(f"Overlap-Local-SGD: {what}.")
        hint = " ".join(hints)
    return Verdict(False, _EX2, f"that pair is not it. {hint}")


# ---------------------------------------------------------------------- 08.3
def _easgd_swing(alpha: float, n: int) -> float:
    """Largest |eigenvalue| of the map ``(mean model, centre)`` -> next, without gradients,
    ``xbar <- (1 - alpha) xbar + alpha z``, ``z <- z + n alpha (xbar - z)``, once the
    eigenvalue 1 (the direction ``xbar = z``, which moves freely) is removed."""
    M = np.array([[1.0 - alpha, alpha], [n * alpha, 1.0 - n * alpha]])
    eig = np.linalg.eigvals(M)
    eig = eig[np.argsort(np.abs(eig - 1.0))][1:]
    return float(np.abs(eig).max())


def _easgd_largest_alpha(n: int = EASGD_N) -> float:
    """The largest alpha in (0, 1) with ``_easgd_swing(alpha, n) < 1``, by bisection on the
    eigenvalues (80 halvings: exact to round-off)."""
    lo, hi = 1e-12, 1.0 - 1e-12
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _easgd_swing(mid, n) < 1.0 else (lo, mid)
    return 0.5 * (lo + hi)


def check_easgd_alpha(answer) -> Verdict:
    """Exercise 08.3: the largest moving rate alpha for which EASGD with n = 16 workers is
    stable (its mean model and centre do not swing apart). One exact value."""
    if answer is None:
        return not_yet(_EX3, "a number alpha in (0, 1)")
    if not is_number(answer) or not 0 < answer < 1:
        return Verdict(False, _EX3, "alpha is a number strictly between 0 and 1.")
    n = EASGD_N
    expected = _easgd_largest_alpha(n)
    if _same(answer, expected):
        return Verdict(True, _EX3, "the second eigenvalue 1 - (n + 1) alpha reaches -1 there.")
    hints = [
        (0.9 / n, ("0.9 / n is the value the chapter runs: stable, but not the largest stable "
                   "one.")),
        (2 / n, ("Close, but the centre moves by n alpha and the mean model by alpha: both "
                 "moves enter the second eigenvalue of the 2 x 2 map.")),
        (1 / n, ("Close, but the centre moves by n alpha and the mean model by alpha: both "
                 "moves enter the second eigenvalue of the 2 x 2 map.")),
        (2 / (n - 1), "Check the count: the centre moves by n alpha (not (n - 1) alpha)."),
        (1 / (n + 1), ("At that alpha the swing factor is 0 (fastest agreement); stability "
                       "allows factors down to -1.")),
    ]
    hint = next((h for v, h in hints if _same(answer, v)), None)
    if hint is None and abs(answer - expected) <= 0.01 * expected:
        hint = ("Close, but not exact: solve for the bound in closed form (a fraction with n in "
                "it) rather than rounding or bisecting.")
    elif hint is None:
        hint = ("Too large: at that alpha the mean model and the centre overshoot each other."
                if answer > expected else
                "Write one synchronisation as a 2 x 2 linear map on (mean model, centre) and "
                "ask when its second eigenvalue stays inside (-1, 1).")
    return Verdict(False, _EX3, f"that is not it. {hint}")


# ---------------------------------------------------------------------- 08.4
_FLOAT64_BYTES = 8
_INDEX_TYPES = (np.uint8, np.int16, np.int32, np.int64)  # declearn's choice, smallest first


def _index_bytes(d: int) -> int:
    """Bytes of one index of a d-entry vector: the smallest of uint8, int16, int32, int64 whose
    largest value reaches ``d - 1``."""
    return next(np.dtype(t).itemsize for t in _INDEX_TYPES if np.iinfo(t).max >= d - 1)


def _message_bytes(d: int, ratio: float) -> tuple[int, int]:
    """``(top-k, sign)`` bytes of one node's message for a float64 vector of length d: k values
    and k indices (``k = max(1, round(ratio d))``); one float64 scale and d bits, packed."""
    k = max(1, round(ratio * d))
    return k * (_FLOAT64_BYTES + _index_bytes(d)), _FLOAT64_BYTES + math.ceil(d / 8)


def check_message_bytes(answer) -> Verdict:
    """Exercise 08.4: ``(top_k_bytes, sign_bytes)``, the bytes of one message of
    ``TopK(ratio=0.01)`` and of ``Sign()`` for a float64 vector of d = 2000 entries, in
    declearn's packed format. One exact pair."""
    if answer is None:
        return not_yet(_EX4, "a pair (bytes of one top-1% message, bytes of one sign message)")
    try:
        top, sign = answer
    except (TypeError, ValueError):
        top = sign = None
    if isinstance(answer, (str, bytes, dict)) or not (is_number(top) and is_number(sign)):
        return Verdict(False, _EX4, "give a pair of numbers of bytes, e.g. (100, 50).")
    s = MESSAGE_SETTING
    d = s["d"]
    expected = _message_bytes(d, s["ratio"])
    ok = [_same(a, e) for a, e in zip((top, sign), expected)]
    if all(ok):
        return Verdict(True, _EX4, "k values and k two-byte indices for top-k; a scale and d "
                                   "packed bits for sign.")
    if _same(top, expected[1]) and _same(sign, expected[0]):
        return Verdict(False, _EX4, "that pair is not it. The two are swapped: top-1% first.")
    k = max(1, round(s["ratio"] * d))
    hints = []
    if not ok[0]:
        top_hints = [
            (k * _FLOAT64_BYTES, "the receiver must also learn *which* coordinates the values "
                                 "belong to."),
            (k * (_FLOAT64_BYTES + 1), "one byte (uint8) cannot number the coordinates of a "
                                       "vector this long."),
            (k * (_FLOAT64_BYTES + 4), "indices take the smallest integer type that holds "
                                       "every index 0 .. d - 1, and int32 is larger than needed."),
            (k * (_FLOAT64_BYTES + 8), "indices are not sent as int64: the smallest integer "
                                       "type that holds 0 .. d - 1 is used."),
            (d * _FLOAT64_BYTES, "that is the uncompressed vector; top-k keeps only a fraction "
                                 "of the coordinates."),
            (2 * expected[0], "that is one message per neighbor of a ring node; the question "
                              "asks for one message."),
        ]
        hints.append("Top-1%: " + next(
            (h for v, h in top_hints if _same(top, v)),
            "count the coordinates kept, then the bytes of a value and of an index each."))
    if not ok[1]:
        sign_hints = [
            (d / 8, "the receiver also needs the scale the signs are multiplied by."),
            (math.ceil(d / 8) + 4, "the scale travels in the vector's own dtype, float64."),
            (d, "a sign is one bit, and the bits are packed 8 to a byte."),
            (d + _FLOAT64_BYTES, "a sign is one bit, and the bits are packed 8 to a byte."),
            (d * _FLOAT64_BYTES / 8 + _FLOAT64_BYTES, "a sign is one bit, and the bits are "
                                                      "packed 8 to a byte."),
            (2 * expected[1], "that is one message per neighbor of a ring node; the question "
                              "asks for one message."),
        ]
        hints.append("Sign: " + next(
            (h for v, h in sign_hints if _same(sign, v)),
            "one scale, then one bit per coordinate, packed into whole bytes."))
    return Verdict(False, _EX4, f"that pair is not it. {' '.join(hints)}")
