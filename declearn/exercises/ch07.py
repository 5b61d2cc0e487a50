r"""Checks for chapter 07, *Communication-efficient methods: the Local SGD family*.

Each check recomputes the right value here with plain Python and numpy (not with declearn.comm
or declearn.algorithms, so a bug there cannot make a wrong answer look right) and answers with
a :class:`~declearn.exercises.Verdict`: a hint when the answer is wrong, "not yet" when it is
still ``None``.

* :func:`check_bytes` (7.1): bytes each node sends in a run of Local SGD, counted like
  ``comm.traffic`` (a ring allreduce sends ``2 (n - 1) / n`` times the model per node).
* :func:`check_round_times` (7.2): seconds per round of Local SGD and of Overlap-Local-SGD for
  a given compute time per step, period and communication delay.
* :func:`check_easgd_alpha` (7.3): the largest moving rate alpha for which EASGD's mean model
  and centre do not swing apart, for n = 16 workers.
"""

from __future__ import annotations

import math

import numpy as np

from declearn.exercises.base import Verdict, check_close, check_true, is_number, not_yet

__all__ = [
    "BYTES_SETTING",
    "EASGD_N",
    "ROUND_SETTING",
    "check_bytes",
    "check_easgd_alpha",
    "check_round_times",
    "easgd_largest_alpha",
    "easgd_swing",
    "local_sgd_bytes",
    "round_times",
]

EX1 = "7.1 bytes of Local SGD"
EX2 = "7.2 time per round"
EX3 = "7.3 largest EASGD alpha"

#: Exercise 7.1: nodes, float64 entries of the model, local steps, period.
BYTES_SETTING = {"n": 16, "d": 10, "steps": 600, "tau": 4}
#: Exercise 7.2: seconds of compute per local step, period, seconds per allreduce.
ROUND_SETTING = {"step_seconds": 0.006, "tau": 5, "delay": 0.045}
#: Exercise 7.3: number of workers.
EASGD_N = 16


def _wrong(exercise: str, hint: str) -> Verdict:
    return check_true(exercise, False, right="", wrong=hint)


# ---------------------------------------------------------------------- 7.1
def local_sgd_bytes(n: int, d: int, steps: int, tau: int, itemsize: int = 8) -> float:
    """Bytes one node sends: ``steps // tau`` ring allreduces of a ``d``-entry model, each
    ``2 (n - 1)`` messages of ``1/n`` of the model."""
    return (steps // tau) * 2 * (n - 1) / n * d * itemsize


def check_bytes(answer) -> Verdict:
    """Exercise 7.1: bytes each node sends in 600 local steps of Local SGD with tau = 4 on
    n = 16 nodes, for a model of d = 10 float64 numbers (the count of ``comm.traffic``)."""
    if answer is None:
        return not_yet(EX1, "a number of bytes")
    if not is_number(answer):
        return Verdict(False, EX1, "give one number: bytes sent per node, whole run.")
    s = BYTES_SETTING
    expected = local_sgd_bytes(**s)
    model = s["d"] * 8
    rounds = s["steps"] // s["tau"]
    if math.isclose(answer, expected, rel_tol=1e-6):
        return check_close(EX1, answer, expected, rtol=1e-6)
    hint = ("Count the synchronisations (one allreduce every tau steps), then the bytes one node "
            "sends in one ring allreduce of the model.")
    if math.isclose(answer, rounds * model, rel_tol=1e-6):
        hint = ("Right number of rounds, but a ring allreduce does not send the model once: each "
                "node sends 2 (n - 1) messages of 1/n of the model.")
    elif math.isclose(answer, s["steps"] * 2 * (s["n"] - 1) / s["n"] * model, rel_tol=1e-6):
        hint = "That is one allreduce per step (tau = 1); Local SGD averages every tau-th step."
    elif math.isclose(answer, expected / 8, rel_tol=1e-6):
        hint = "That counts numbers; a float64 number is 8 bytes."
    elif math.isclose(answer, expected * s["n"], rel_tol=1e-6):
        hint = "That is all nodes together; the question asks for one node."
    return _wrong(EX1, f"that is not what comm.traffic counts. {hint}")


# ---------------------------------------------------------------------- 7.2
def round_times(step_seconds: float, tau: int, delay: float) -> tuple[float, float]:
    """Seconds per round: ``(tau s + delta, max(tau s, delta))`` for Local SGD (it waits for
    the allreduce) and Overlap-Local-SGD (the allreduce runs during the next tau steps)."""
    compute = tau * step_seconds
    return compute + delay, max(compute, delay)


def check_round_times(answer) -> Verdict:
    """Exercise 7.2: ``(local_sgd_seconds, overlap_seconds)`` per round when a local step
    computes for 6 ms, tau = 5 and an allreduce takes 45 ms (within 1 %)."""
    if answer is None:
        return not_yet(EX2, "a pair (seconds per round of Local SGD, of Overlap-Local-SGD)")
    try:
        local, overlap = (float(v) for v in answer)
    except (TypeError, ValueError):
        return Verdict(False, EX2, "give a pair of numbers in seconds, e.g. (0.1, 0.05).")
    s = ROUND_SETTING
    expected = round_times(**s)
    if all(math.isclose(a, e, rel_tol=0.01) for a, e in zip((local, overlap), expected)):
        return check_close(EX2, [local, overlap], list(expected), rtol=0.01)
    compute = s["tau"] * s["step_seconds"]
    hints = []
    if math.isclose(local, expected[1], rel_tol=0.01) and math.isclose(overlap, expected[0],
                                                                      rel_tol=0.01):
        hints.append("The two are swapped: which method waits for its allreduce?")
    elif any(math.isclose(v, 1000 * e, rel_tol=0.01) for v, e in zip((local, overlap),
                                                                     expected)):
        hints.append("Give seconds, not milliseconds.")
    else:
        if not math.isclose(local, expected[0], rel_tol=0.01):
            hints.append("Local SGD computes its tau steps, then blocks in the allreduce: the "
                         "two times add up.")
        if not math.isclose(overlap, expected[1], rel_tol=0.01):
            what = ("compute cannot hide more than it lasts" if math.isclose(
                overlap, compute, rel_tol=0.01) else
                "the allreduce runs during the next tau local steps, so a round lasts as long "
                "as the longer of the two")
            hints.append(f"Overlap-Local-SGD: {what}.")
    return _wrong(EX2, "outside the 1 % tolerance. " + " ".join(hints))


# ---------------------------------------------------------------------- 7.3
def easgd_swing(alpha: float, n: int) -> float:
    """Spectral radius of the map ``(mean model, centre)`` -> next, without gradients:
    ``xbar <- (1 - alpha) xbar + alpha z``, ``z <- z + n alpha (xbar - z)``, on the part
    orthogonal to the fixed direction ``xbar = z``."""
    M = np.array([[1.0 - alpha, alpha], [n * alpha, 1.0 - n * alpha]])
    eig = np.linalg.eigvals(M)
    eig = eig[np.argsort(np.abs(eig - 1.0))][1:]  # drop the eigenvalue 1 (xbar = z moves freely)
    return float(np.abs(eig).max())


def easgd_largest_alpha(n: int = EASGD_N) -> float:
    """The largest alpha in (0, 1) with ``easgd_swing(alpha, n) < 1`` (bisection)."""
    lo, hi = 1e-9, 1.0 - 1e-9
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if easgd_swing(mid, n) < 1.0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def check_easgd_alpha(answer) -> Verdict:
    """Exercise 7.3: the largest moving rate alpha for which EASGD with n = 16 workers is
    stable (its mean model and centre do not swing apart), within 0.5 %."""
    if answer is None:
        return not_yet(EX3, "a number alpha in (0, 1)")
    if not is_number(answer) or not 0 < answer < 1:
        return Verdict(False, EX3, "alpha is a number strictly between 0 and 1.")
    n = EASGD_N
    expected = easgd_largest_alpha(n)
    if math.isclose(answer, expected, rel_tol=0.005):
        return check_close(EX3, answer, expected, rtol=0.005)
    hint = ("Write one synchronisation as a 2 x 2 linear map on (mean model, centre) and ask "
            "when its second eigenvalue stays inside (-1, 1).")
    if math.isclose(answer, 0.9 / n, rel_tol=0.005):
        hint = ("0.9 / n is the EASGD paper's recommended value: stable, but not the largest "
                "stable one.")
    elif math.isclose(answer, 2 / n, rel_tol=0.005) or math.isclose(answer, 1 / n, rel_tol=0.005):
        hint = ("Close, but the centre moves by n alpha and the mean model by alpha: both "
                "moves enter the second eigenvalue of the 2 x 2 map.")
    elif math.isclose(answer, 1 / (n + 1), rel_tol=0.005):
        hint = ("At that alpha the swing factor is 0 (fastest agreement); stability allows "
                "factors down to -1.")
    elif answer > expected:
        hint = "Too large: at that alpha the mean model and the centre overshoot each other."
    return _wrong(EX3, f"outside the 0.5 % tolerance. {hint}")
