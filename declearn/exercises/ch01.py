r"""Checks for chapter 01 (average consensus).

* :func:`check_doubly_stochastic` (01.1): weights for the graph :data:`GRAPH_EDGES` on
  :data:`GRAPH_N` nodes that make average consensus converge to the true mean: nonnegative,
  nonzero only on the graph's links and the diagonal, rows and columns summing to 1, and
  ``rho < 1``. Many matrices are right; the check tests the properties, not one answer.
* :func:`check_rho` (01.2): ``rho = ||W - 11^T/n||_2`` of :data:`RHO_W` (a 4-node ring whose
  weights make a negative eigenvalue the slowest one).
* :func:`check_rounds` (01.3): the fewest rounds k with ``rho^k <= 1e-6`` for the ring on
  :data:`ROUNDS_N` nodes, i.e. what the bound ``||x^k - x_bar|| <= rho^k ||x^0 - x_bar||``
  needs for a millionfold reduction.
* :func:`check_consensus_step` (01.4, build it yourself): ``step(comm, W, x)`` returns one round
  of gossip ``x_i <- sum_j W[i, j] x_j`` written with the communicator's primitives; the check
  runs it next to :class:`~declearn.algorithms.AverageConsensus` on :func:`build_graph` and
  reports the first iteration where they differ. It works under SimComm and, called on every
  rank, under MPIComm.

Each check computes what it needs with numpy (not with declearn.topology) and returns a
:class:`~declearn.exercises.Verdict`; ``None`` (the shipped starter answer) gives "not yet".
"""

from __future__ import annotations

import math

import numpy as np

import torch

from declearn.exercises.base import Verdict, check_close, check_true, not_yet
from declearn.exercises.build import compare_iterates, refuse_library_call

__all__ = [
    "GRAPH_EDGES",
    "GRAPH_N",
    "RHO_W",
    "ROUNDS_N",
    "ROUNDS_TARGET",
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
ROUNDS_N = 16
ROUNDS_TARGET = 1e-6
#: Exercise 01.1: a 5-node graph whose degrees differ (1, 3, 2, 3, 1); links are two-way.
GRAPH_N = 5
GRAPH_EDGES = ((0, 1), (1, 2), (2, 3), (1, 3), (3, 4))


def _rho(W: np.ndarray) -> float:
    n = W.shape[0]
    return float(np.linalg.norm(W - np.full((n, n), 1.0 / n), 2))


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
    """``||RHO_W - 11^T/4||_2`` to 1e-4 (relative)."""
    ex = "01.2"
    if answer is None:
        return not_yet(ex, "your value of rho for the matrix RHO_W")
    got = _scalar(answer)
    if got is None:
        return Verdict(False, ex, "rho is one number.")
    expected = _rho(RHO_W)
    eig = np.sort(np.linalg.eigvalsh(RHO_W))  # symmetric: real eigenvalues, ascending
    near = lambda v: math.isclose(got, v, rel_tol=1e-4, abs_tol=1e-9)
    if near(expected):
        return check_close(ex, got, expected, rtol=1e-4)
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
    elif near(eig[0]):
        hint = "rho is a norm, so it is never negative."
    else:
        hint = "compute the 2-norm (largest singular value) of W - 11^T/n."
    return _wrong(ex, got, hint)


def check_rounds(answer) -> Verdict:
    """The smallest integer k with ``rho^k <= ROUNDS_TARGET`` for the 1/3-weight ring on
    ``ROUNDS_N`` nodes (off by one is accepted: rounding rho changes the last step)."""
    ex = "01.3"
    if answer is None:
        return not_yet(ex, "a number of rounds (an int)")
    got = _scalar(answer)
    if got is None:
        return Verdict(False, ex, "the answer is one whole number of rounds.")
    n = ROUNDS_N
    rho = 1.0 / 3.0 + 2.0 / 3.0 * math.cos(2.0 * math.pi / n)  # eigenvalues of a circulant
    expected = math.ceil(math.log(ROUNDS_TARGET) / math.log(rho))
    if abs(got - expected) <= 1:
        return check_true(ex, True, right=f"{expected} rounds (the bound is reached at "
                                          f"rho^{expected} = {rho ** expected:.2e}).", wrong="")
    approx = math.log(1.0 / ROUNDS_TARGET) / (1.0 - rho)
    if abs(got - approx) <= 1.5:
        hint = ("that uses ln(1/rho) ~ 1 - rho, an estimate (slightly too many rounds here); "
                "solve rho^k <= 1e-6 exactly with logarithms.")
    elif abs(got - expected / 2) <= 1.5:
        hint = ("that reduces the squared error by 1e-6; the bound is on the norm "
                "||x^k - x_bar||, so rho^k itself must reach 1e-6.")
    elif abs(got - math.log10(ROUNDS_TARGET) / math.log(rho)) <= 1.5 or \
            abs(got - math.log(ROUNDS_TARGET) / math.log10(rho)) <= 1.5:
        hint = "mixed logarithm bases: use the same base on both sides of k = log(1e-6)/log(rho)."
    elif got < expected:
        hint = "too few: rho^k is still above 1e-6 there."
    else:
        hint = "too many: rho^k is already below 1e-6 earlier."
    return _wrong(ex, got, hint)


def check_doubly_stochastic(answer) -> Verdict:
    """A ``GRAPH_N x GRAPH_N`` matrix with which consensus on :data:`GRAPH_EDGES` converges to
    the mean: the first failed property is named, with what to fix."""
    ex = "01.1"
    if answer is None:
        return not_yet(ex, "your 5 x 5 matrix W (a numpy array or nested lists)")
    try:
        W = np.asarray(answer.detach().cpu() if hasattr(answer, "detach") else answer,
                       dtype=float)
    except (TypeError, ValueError):
        return Verdict(False, ex, "W should be a 5 x 5 matrix of numbers.")
    n = GRAPH_N
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
    rho = _rho(W)
    return check_true(
        ex, rho < 1 - 1e-9,
        right=f"doubly stochastic on the graph, rho = {rho:.4f} < 1: consensus reaches the mean.",
        wrong=(f"doubly stochastic, but rho = {rho:.4f}: the iteration never mixes (some link "
               "has weight 0, or values just swap back and forth). Give every link a positive "
               "weight and keep some weight on each node itself."),
    )


#: Exercise 01.4: iterations compared, and the seed of the starting values.
_BUILD_STEPS = 12
_BUILD_SEED = 14


def _build_graph(n: int):
    """The graph of exercise 01.4: a path ``0 - 1 - ... - n-1`` plus the chord ``0 - 2``, with
    Metropolis weights (degrees differ, so do the weights; for n <= 3 the path alone)."""
    from declearn.topology import apply_weights

    edges = [(i, i + 1) for i in range(n - 1)] + ([(0, 2)] if n >= 4 else [])
    return apply_weights(n, edges, "metropolis", name="exercise_01_4")


def check_consensus_step(step, comm) -> Verdict:
    """``step(comm, W, x)``, one round of gossip ``x_i <- sum_j W[i, j] x_j``, gives the same
    iterates as ``AverageConsensus`` for :data:`_BUILD_STEPS` rounds on the Metropolis graph of
    ``comm.size`` nodes (a path plus a chord), from seeded starting values of shape ``(3,)``
    per node. Call it with a ``SimComm`` or, on every engine, with the engines' ``MPIComm``."""
    from declearn.algorithms import AverageConsensus

    ex = "01.4"
    if step is None:
        return Verdict(False, ex, "define consensus_step(comm, W, x) (it returns the new x), "
                                  "then pass the function to the check.")
    refused = refuse_library_call(ex, step, {"AverageConsensus"})
    if refused is not None:
        return refused
    n = comm.size
    if n < 3:
        return Verdict(False, ex, f"run the check on 3 or more nodes (this communicator has {n}).")
    topo = _build_graph(n)
    x0 = torch.randn(n, 3, dtype=torch.float64,
                     generator=torch.Generator().manual_seed(_BUILD_SEED)).to(comm.device)
    x0 = x0[comm.rank]  # node-local: all rows under SimComm, the rank's own row on MPI
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
