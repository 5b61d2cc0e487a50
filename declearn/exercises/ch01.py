r"""Checks for chapter 01 (average consensus).

* :func:`check_doubly_stochastic` (01.1): weights for the graph :data:`GRAPH_EDGES` on 5 nodes
  that make average consensus converge to the true mean: nonnegative, nonzero only on the
  graph's links and the diagonal, rows and columns summing to 1, and, the condition of Xiao &
  Boyd (2004, Theorem 1) that doubly stochastic alone does not give, spectral radius of
  ``W - 11^T/n`` below 1. Many matrices are right; the check tests the properties, not one
  answer.
* :func:`check_rho` (01.2): ``rho = ||W - 11^T/n||_2`` of :data:`RHO_W` (a 4-node ring whose
  weights make a negative eigenvalue the slowest one), to 1e-6.
* :func:`check_rounds` (01.3): the fewest rounds k with ``rho^k <= 1e-6`` for the 1/3-weight
  ring on 16 nodes, i.e. what the bound ``||x^k - x_bar|| <= rho^k ||x^0 - x_bar||`` needs for
  a millionfold reduction: one whole number, accepted exactly.
* :func:`check_consensus_step` (01.4, build it yourself): ``step(comm, W, x)`` returns one round
  of gossip ``x_i <- sum_j W[i, j] x_j`` written with the communicator's primitives; the check
  runs it next to :class:`~declearn.algorithms.AverageConsensus` on a graph of its own and
  reports the first iteration where they differ. It works under SimComm and, called on every
  rank, under MPIComm.

Each check computes what it needs with numpy or a closed form (not with declearn.topology) and
returns a :class:`~declearn.exercises.Verdict`; ``None`` (the shipped starter answer) gives
"not yet".
"""

from __future__ import annotations

import math

import numpy as np

from declearn.exercises.base import Verdict, check_true, not_yet
from declearn.exercises.build import (
    compare_iterates,
    path_with_chord,
    refuse_before_running,
    seeded_node_local,
)

__all__ = [
    "GRAPH_EDGES",
    "RHO_W",
    "check_consensus_step",
    "check_doubly_stochastic",
    "check_rho",
    "check_rounds",
]

#: Exercise 01.2: a ring of 4 nodes, self weight 0.2 and 0.4 to each of the two neighbors.
RHO_W = np.array([
    [0.2, 0.4, 0.0, 0.4],
    [0.4, 0.2, 0.4, 0.0],
    [0.0, 0.4, 0.2, 0.4],
    [0.4, 0.0, 0.4, 0.2],
])
#: Exercise 01.3: the ring with weights 1/3 on 16 nodes, and the error reduction asked for.
_ROUNDS_N = 16
_ROUNDS_TARGET = 1e-6
#: Exercise 01.1: a 5-node graph whose degrees differ (1, 3, 2, 3, 1); links are two-way.
_GRAPH_N = 5
GRAPH_EDGES = ((0, 1), (1, 2), (2, 3), (1, 3), (3, 4))


def _rho(W: np.ndarray) -> float:
    """``||W - 11^T/n||_2`` (numpy)."""
    n = W.shape[0]
    return float(np.linalg.norm(W - np.full((n, n), 1.0 / n), 2))


def _spectral_radius(W: np.ndarray) -> float:
    """``max |eigenvalue of W - 11^T/n|``: Xiao & Boyd's condition is that it is below 1."""
    n = W.shape[0]
    return float(np.abs(np.linalg.eigvals(W - np.full((n, n), 1.0 / n))).max())


def _wrong(exercise: str, got: float, hint: str) -> Verdict:
    """A "not yet" with a hint and without the distance to the answer (which would give the
    answer away)."""
    return Verdict(False, exercise, f"{got:g} is not it: {hint}")


def _scalar(answer):
    try:
        a = np.asarray(answer.detach().cpu() if hasattr(answer, "detach") else answer,
                       dtype=float)
    except (TypeError, ValueError):
        return None
    return float(a.reshape(-1)[0]) if a.size == 1 else None


def check_rho(answer) -> Verdict:
    """``||RHO_W - 11^T/4||_2`` to 1e-6 (relative): far narrower than the distance to any
    plausible wrong answer (rho squared, the gap, the largest eigenvalue below 1, ...)."""
    ex = "01.2"
    if answer is None:
        return not_yet(ex, "your value of rho for the matrix RHO_W")
    got = _scalar(answer)
    if got is None:
        return Verdict(False, ex, "rho is one number.")
    expected = _rho(RHO_W)
    eig = np.sort(np.linalg.eigvalsh(RHO_W))  # symmetric: real eigenvalues, ascending
    if math.isclose(got, expected, rel_tol=1e-6):
        return Verdict(True, ex, "rho = ||W - 11^T/n||_2, the largest |eigenvalue| once the "
                                 "eigenvalue 1 of the average is removed.")
    near = lambda v: math.isclose(got, v, rel_tol=1e-4, abs_tol=1e-9)
    if near(1.0):
        hint = ("1 is the eigenvalue of the all-ones vector, which consensus keeps on purpose: "
                "subtract 11^T/n from W first.")
    elif near(eig[-2]):
        hint = ("that is the largest eigenvalue below 1, but negative eigenvalues shrink "
                "slowly too: rho is the largest |eigenvalue| once 1 is removed.")
    elif near(1.0 - expected):
        hint = "that is the spectral gap 1 - rho; the question asks for rho itself."
    elif near(expected ** 2):
        hint = "that is rho squared: take the norm (the largest singular value), not its square."
    elif near(math.sqrt(expected)):
        hint = "that is the square root of rho: the 2-norm is the largest singular value itself."
    elif near(eig[0]):
        hint = "rho is a norm, so it is never negative."
    else:
        hint = "compute the 2-norm (largest singular value) of W - 11^T/n."
    return _wrong(ex, got, hint)


def _ring_rho(n: int) -> float:
    """rho of the 1/3-weight ring: its eigenvalues are ``1/3 + 2/3 cos(2 pi f / n)``; the
    largest modulus besides f = 0 is at f = 1 for n >= 5."""
    lam = 1.0 / 3.0 + 2.0 / 3.0 * np.cos(2.0 * np.pi * np.arange(1, n) / n)
    return float(np.abs(lam).max())


def _rounds(rho: float, target: float) -> int:
    """The smallest whole k with ``rho^k <= target``."""
    return math.ceil(math.log(target) / math.log(rho))


def check_rounds(answer) -> Verdict:
    """The smallest whole number k with ``rho^k <= 1e-6`` for the 1/3-weight ring on 16
    nodes, accepted exactly (k - 1 and k + 1 are wrong: one is too few, the other not the
    smallest)."""
    ex = "01.3"
    if answer is None:
        return not_yet(ex, "a number of rounds (an int)")
    got = _scalar(answer)
    if got is None:
        return Verdict(False, ex, "the answer is one whole number of rounds.")
    rho, target = _ring_rho(_ROUNDS_N), _ROUNDS_TARGET
    expected = _rounds(rho, target)
    if got == expected:
        return Verdict(True, ex, f"{expected} rounds: rho^{expected} = {rho ** expected:.3e} "
                                 f"<= 1e-6 < rho^{expected - 1} = {rho ** (expected - 1):.3e}.")
    exact = math.log(target) / math.log(rho)
    approx = math.log(1.0 / target) / (1.0 - rho)
    same = lambda v: abs(got - v) < 1e-6 * max(1.0, abs(v))
    if got != int(got):
        hint = ("a number of rounds is a whole number; the bound needs rho^k <= 1e-6, so "
                "round up.")
    elif got == expected - 1:
        hint = ("one round too few: rho^k is still above 1e-6 there (did you round down, or "
                "use int()?).")
    elif got == expected + 1:
        hint = "that works, but it is not the smallest k: rho^k is already below 1e-6 earlier."
    elif same(math.ceil(approx)) or same(math.floor(approx)):
        hint = ("that uses ln(1/rho) ~ 1 - rho, an estimate (slightly too many rounds here); "
                "solve rho^k <= 1e-6 exactly with logarithms.")
    elif same(math.ceil(exact / 2)) or same(math.floor(exact / 2)):
        hint = ("that reduces the squared error by 1e-6; the bound is on the norm "
                "||x^k - x_bar||, so rho^k itself must reach 1e-6.")
    elif any(same(f(v)) for f in (math.ceil, math.floor) for v in (
            math.log10(target) / math.log(rho), math.log(target) / math.log10(rho))):
        hint = "mixed logarithm bases: use the same base on both sides of k = log(1e-6)/log(rho)."
    elif same(_rounds(1.0 / 3.0, target)):
        hint = ("that uses |-1/3|, the most negative eigenvalue; rho is the largest "
                "|eigenvalue| other than the 1 of the average.")
    elif same(_rounds(math.cos(2 * math.pi / _ROUNDS_N), target)):
        hint = "that uses cos(2 pi/16) alone: the eigenvalue is 1/3 + 2/3 cos(2 pi f/n)."
    elif got < expected:
        hint = "too few: rho^k is still above 1e-6 there."
    else:
        hint = "too many: rho^k is already below 1e-6 earlier."
    return _wrong(ex, got, hint)


def check_doubly_stochastic(answer) -> Verdict:
    """A 5 x 5 matrix with which consensus on :data:`GRAPH_EDGES` converges to the mean: the
    first failed property is named, with what to fix. Convergence is Xiao & Boyd's condition,
    spectral radius of ``W - 11^T/n`` below 1 (for a symmetric W it equals rho)."""
    ex = "01.1"
    if answer is None:
        return not_yet(ex, "your 5 x 5 matrix W (a numpy array or nested lists)")
    try:
        W = np.asarray(answer.detach().cpu() if hasattr(answer, "detach") else answer,
                       dtype=float)
    except (TypeError, ValueError):
        return Verdict(False, ex, "W should be a 5 x 5 matrix of numbers.")
    n = _GRAPH_N
    if W.shape != (n, n):
        return Verdict(False, ex, f"W should be {n} x {n}, got shape {W.shape}.")
    if not np.all(np.isfinite(W)):
        return Verdict(False, ex, "W has NaN or infinite entries.")
    allowed = np.eye(n, dtype=bool)
    for u, v in GRAPH_EDGES:
        allowed[u, v] = allowed[v, u] = True
    tol = 1e-9
    bad = np.argwhere((np.abs(W) > tol) & ~allowed)
    if bad.size:
        i, j = bad[0]
        return Verdict(False, ex, f"W[{i}, {j}] = {W[i, j]:g}, but nodes {j} and {i} are not "
                                  "linked: a node can only weigh values it receives.")
    if W.min() < -tol:
        i, j = np.unravel_index(np.argmin(W), W.shape)
        return Verdict(False, ex, f"W[{i}, {j}] = {W[i, j]:g} is negative; use weights >= 0.")
    rows, cols = W.sum(1), W.sum(0)
    if np.max(np.abs(rows - 1)) > 1e-6:
        i = int(np.argmax(np.abs(rows - 1)))
        return Verdict(False, ex, f"row {i} sums to {rows[i]:.6g}: each node's new value "
                                  "must be a weighted average, so every row sums to 1.")
    if np.max(np.abs(cols - 1)) > 1e-6:
        j = int(np.argmax(np.abs(cols - 1)))
        return Verdict(False, ex, f"rows are fine but column {j} sums to {cols[j]:.6g}: the "
                                  "sum of all values (hence the mean) drifts. A node with few "
                                  "links must keep more weight on itself; think of the "
                                  "Metropolis rule 1/(1 + max(d_i, d_j)).")
    radius = _spectral_radius(W)
    return check_true(
        ex, radius < 1 - 1e-9,
        right=(f"doubly stochastic on the graph, and the spectral radius of W - 11^T/n is "
               f"{radius:.4f} < 1: consensus reaches the mean (Xiao & Boyd's condition)."),
        wrong=(f"doubly stochastic, but the spectral radius of W - 11^T/n is {radius:.4f}: "
               "the iteration never mixes (some link has weight 0, or values just swap back "
               "and forth). Give every link a positive weight and keep some weight on each "
               "node itself."),
    )


#: Exercise 01.4: iterations compared, and the seed of the starting values.
_BUILD_STEPS = 12
_BUILD_SEED = 14


def _build_graph(n: int):
    """The graph of exercise 01.4: a path ``0 - 1 - ... - n-1`` plus the chord ``0 - 2``, with
    Metropolis weights (degrees differ, so do the weights; for n <= 3 the path alone)."""
    return path_with_chord(n, (0, 2), name="exercise_01_4")


def check_consensus_step(step, comm) -> Verdict:
    """``step(comm, W, x)``, one round of gossip ``x_i <- sum_j W[i, j] x_j``, gives the same
    iterates as ``AverageConsensus`` for :data:`_BUILD_STEPS` rounds on the Metropolis graph of
    ``comm.size`` nodes (a path plus a chord), from seeded starting values of shape ``(3,)``
    per node. Call it with a ``SimComm`` or, on every engine, with the engines' ``MPIComm``."""
    from declearn.algorithms import AverageConsensus

    ex = "01.4"
    refused = refuse_before_running(ex, step, comm, signature="consensus_step(comm, W, x)",
                                    returns="the new x", forbidden={"AverageConsensus"})
    if refused is not None:
        return refused
    topo = _build_graph(comm.size)
    x0 = seeded_node_local(comm, 3, _BUILD_SEED)
    reference = AverageConsensus(comm, topo, x0)

    def iterates():
        x, k = x0.clone(), 0
        while True:
            x = step(comm, topo.at(k), x)
            yield x
            k += 1

    return compare_iterates(
        ex, comm, iterates(), reference, steps=_BUILD_STEPS, what="AverageConsensus's x",
        hint="One round of gossip mixes with W, self weight included, and nothing else "
             "(no gradient, no second round, no exact average).")
