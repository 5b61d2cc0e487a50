r"""Checks for chapter 05, bias correction.

* :func:`check_messages` (05.1): messages per node per iteration of ATC gradient tracking and
  DIGing, ``(2 d_out, d_out)`` with ``d_out`` the mean out-degree of the topology;
* :func:`check_ed_as_d2` (05.2): the matrix M for which D2 on M runs exactly like exact
  diffusion on W, ``M = (I + W)/2``;
* :func:`check_d2_self_weight` (05.3): the smallest self weight ``s`` of a ring (even n,
  neighbours ``(1 - s)/2``) for which D2 converges: the boundary ``s = 1/3``;
* :func:`check_gt_step` (05.4, build it yourself): ``step(comm, W, x, y, g, grad, lr)`` returns
  one ATC gradient-tracking iteration ``(x, y, g)`` written with the communicator's
  primitives; the check runs it next to ``GradientTracking(variant="atc")`` and names the
  first iteration where ``(x, y)`` differ. It works under SimComm and, called on every rank,
  under MPIComm.

Each check computes its expected value with numpy or in closed form (never with declearn's
gradient tracking, D2 or exact diffusion classes) and hints without giving it away.
``answer = None`` (the notebook's starting value) gives a "not yet" verdict, never an error.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from declearn.exercises.base import Verdict, check_close, check_true
from declearn.exercises.build import (
    compare_iterates,
    path_with_chord,
    refuse_before_running,
    seeded_node_local,
)

__all__ = ["check_d2_self_weight", "check_ed_as_d2", "check_gt_step", "check_messages"]

_MISSING = "write your answer in the cell (answer = ...), then run the check again."


def _not_answered(exercise: str, answer) -> Verdict | None:
    if answer is None or answer is Ellipsis:
        return Verdict(False, exercise, _MISSING)
    return None


def _matrix(answer) -> np.ndarray:
    return np.asarray(answer.detach().cpu() if hasattr(answer, "detach") else answer,
                      dtype=float)


# ---------------------------------------------------------------------------- exercise 1
def _mean_out_degree(topology) -> float:
    """Mean number of out-neighbours (self excluded), counted on the nonzeros of W with
    numpy: node j sends to i when ``W[i, j] != 0``."""
    W = np.asarray(topology.W, dtype=float)
    off = (W != 0) & ~np.eye(W.shape[0], dtype=bool)
    return float(off.sum(axis=0).mean())


def _messages(topology) -> tuple[float, float]:
    """``(ATC-GT, DIGing)`` messages one node sends per iteration: ATC mixes x, then y, in
    two rounds; DIGing packs x and y into one message per out-neighbour."""
    d = _mean_out_degree(topology)
    return 2.0 * d, d


def check_messages(answer, topology) -> Verdict:
    """Exercise 05.1: ``answer = (atc, diging)``, the messages each node sends per iteration
    on ``topology`` with ATC gradient tracking and with DIGing (exact)."""
    ex = "05.1"
    verdict = _not_answered(ex, answer)
    if verdict is not None:
        return verdict
    if isinstance(answer, (str, bytes)):
        return Verdict(False, ex, "answer with a pair of numbers: (ATC-GT, DIGing).")
    try:
        pair = tuple(float(a) for a in answer)
    except (TypeError, ValueError):
        return Verdict(False, ex, "answer with a pair of numbers: (ATC-GT, DIGing).")
    if len(pair) != 2:
        return Verdict(False, ex, f"answer with a pair (ATC-GT, DIGing), got {len(pair)} numbers.")
    expected = _messages(topology)
    same = lambda p, q: all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(p, q))
    degree = _mean_out_degree(topology)
    if same(pair, expected):
        return check_true(ex, True, right=f"{pair[0]:g} and {pair[1]:g} messages per node "
                                          "per iteration.", wrong="")
    hint = ("Count the neighbor_allreduce calls in one iteration of each variant (the "
            "GradientTracking docstring says what travels together), then multiply by the "
            "number of neighbours a node sends to.")
    if same(pair, expected[::-1]):
        hint = "Swapped: which of the two packs x and y into one message?"
    elif same(pair, (expected[0] / degree, expected[1] / degree)):
        hint = ("Those are neighbor_allreduce calls per iteration; each call sends one message "
                "to every out-neighbour.")
    elif same(pair, (2 * expected[0], 2 * expected[1])):
        hint = ("Count each message once, at its sender: what a node receives is what its "
                "neighbours sent.")
    elif same(pair, (expected[0] + 2, expected[1] + 1)):
        hint = "A node does not send a message to itself: its own weight is applied locally."
    elif pair[0] == pair[1]:
        hint = ("The two variants do not cost the same: one of them must wait for the mixed y "
                "before it can send x.")
    return Verdict(False, ex, f"{answer!r} is not it. {hint}")


# ---------------------------------------------------------------------------- exercise 2
def check_ed_as_d2(answer, topology) -> Verdict:
    """Exercise 05.2: the matrix M (n x n) such that D2 on M produces the iterates of exact
    diffusion on ``topology``: both run ``x+ = M (2 x - x_prev - lr (g - g_prev))`` from
    ``x^1 = M (x^0 - lr g^0)``, so M must be exact diffusion's ``(I + W)/2`` (entrywise to
    1e-9)."""
    ex = "05.2"
    verdict = _not_answered(ex, answer)
    if verdict is not None:
        return verdict
    n = topology.n
    try:
        M = _matrix(answer)
    except (TypeError, ValueError):
        return Verdict(False, ex, "answer with an n x n matrix (a numpy array).")
    if M.shape != (n, n):
        return Verdict(False, ex, f"expected an n x n matrix with n = {n}, got shape {M.shape}.")
    if not np.all(np.isfinite(M)):
        return Verdict(False, ex, "the matrix has NaN or infinite entries.")
    W = np.asarray(topology.W, dtype=float)
    eye = np.eye(n)
    expected = (eye + W) / 2
    near = lambda A: np.allclose(M, A, rtol=0, atol=1e-9)
    if near(expected):
        return check_true(ex, True, right="D2 on this matrix runs exactly the iterates of exact "
                                          "diffusion on W.", wrong="")
    hint = ("Write both methods as one second-order recursion in x^{k+1}, x^k, x^{k-1} and the "
            "gradients, and compare the matrix in front.")
    if near(W):
        return Verdict(False, ex, "that is W itself, but exact diffusion does not combine with "
                       "W. " + hint)
    if near(eye):
        return Verdict(False, ex, "with the identity no node hears its neighbours: D2 refuses "
                       "such a disconnected W, and exact diffusion does mix. " + hint)
    if near(eye + W):
        return Verdict(False, ex, "the rows of this matrix sum to 2, so it would double the "
                       "iterates at every round: a mixing matrix keeps rows summing to 1. " + hint)
    if near((eye - W) / 2):
        return Verdict(False, ex, "mind the sign: this matrix sends the consensus direction "
                       "to zero. " + hint)
    return Verdict(False, ex, "D2 on your matrix drifts away from exact diffusion (from the "
                   "first step on, x^1 = M (x^0 - lr g^0) differs). " + hint)


# ---------------------------------------------------------------------------- exercise 3
def _d2_root_modulus(lam) -> np.ndarray:
    """The largest modulus of the roots of ``z^2 = lam (2 z - 1)``, D2's recursion without
    gradients along an eigenvector of W with eigenvalue ``lam`` (vectorised over lam)."""
    lam = np.asarray(lam, dtype=complex)
    disc = np.sqrt(lam * lam - lam)
    return np.maximum(np.abs(lam + disc), np.abs(lam - disc))


def _d2_threshold(tol: float = 1e-12) -> float:
    """The eigenvalue below which D2's recursion has a root of modulus >= 1, found by bisection
    on :func:`_d2_root_modulus` over [-1, 0] (a numerical cross-check of the closed form)."""
    lo, hi = -1.0, 0.0  # modulus >= 1 at lo, < 1 at hi
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if _d2_root_modulus(mid) >= 1.0:
            lo = mid
        else:
            hi = mid
    return hi


def _d2_self_weight() -> float:
    """The boundary self weight: the root ``lam - sqrt(lam^2 - lam)`` reaches -1 at
    ``lam = -1/3``, and the even ring's smallest eigenvalue is ``2 s - 1``: ``s = 1/3``."""
    lam = -1.0 / 3.0
    return (1.0 + lam) / 2.0


def check_d2_self_weight(answer) -> Verdict:
    """Exercise 05.3: the ring over an even number of nodes with self weight s and neighbour
    weights (1 - s)/2; the smallest s for which D2 converges (the boundary, rtol 1e-3)."""
    ex = "05.3"
    verdict = _not_answered(ex, answer)
    if verdict is not None:
        return verdict
    if isinstance(answer, (str, bytes, bool)):
        return Verdict(False, ex, "answer with one number, the self weight s.")
    try:
        value = float(np.asarray(answer, dtype=float).reshape(()))
    except (TypeError, ValueError):
        return Verdict(False, ex, "answer with one number, the self weight s.")
    expected = _d2_self_weight()
    lam = 2.0 * expected - 1.0
    hint = ("The slowest alternating pattern (+1, -1, +1, ...) is an eigenvector of the ring: "
            "write its eigenvalue as a function of s, then ask when D2's two-term recursion "
            "z^2 = lambda (2 z - 1) keeps both roots inside the unit circle.")
    if math.isclose(value, lam, rel_tol=1e-3):
        hint = ("That is the eigenvalue threshold; the question asks for the self weight s "
                "that puts the ring's smallest eigenvalue there.")
    elif math.isclose(value, 0.5, rel_tol=1e-3):
        hint = "s = 1/2 makes W lazy (eigenvalues >= 0): safe, but not the smallest s that works."
    elif math.isclose(value, 1.0 - expected, rel_tol=1e-3):
        hint = ("The ring's smallest eigenvalue is s - (1 - s) = 2 s - 1: solve 2 s - 1 = "
                "threshold for s once more.")
    return check_close(ex, value, expected, rtol=1e-3, hint=hint)


# ---------------------------------------------------------------------------- exercise 4
#: Exercise 05.4: iterations compared, the problem's seed, the starting point's seed.
_BUILD_STEPS = 12
_BUILD_SEED = 4
_BUILD_X0_SEED = 40


def _build_graph(n: int):
    """The graph of exercise 05.4: a path ``0 - 1 - ... - n-1`` plus the chord ``0 - (n-2)``
    (for n >= 4), Metropolis weights (symmetric, doubly stochastic, different per node)."""
    return path_with_chord(n, (0, n - 2), name="exercise_04_4")


def _build_problem(n: int):
    """Deterministic heterogeneous least squares (sigma = 0): no noise stream to share."""
    from declearn.problems import LeastSquares

    return LeastSquares(n, d=3, m=6, heterogeneity=1.0, sigma=0.0, seed=_BUILD_SEED)


class _XY:
    """The reference's ``(x, y)`` side by side, as the compared iterate."""

    def __init__(self, algorithm):
        self.algorithm = algorithm

    def step(self) -> None:
        self.algorithm.step()

    @property
    def iterate(self) -> torch.Tensor:
        return torch.cat([self.algorithm.x, self.algorithm.y], dim=-1)


def _unpacked(out, shape: tuple):
    """The student's ``(x, y, g)``, or a TypeError/ValueError saying what came back."""
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        got = type(out).__name__ if not isinstance(out, (tuple, list)) else f"{len(out)} values"
        raise TypeError(f"gt_step must return the tuple (x, y, g), got {got}")
    for name, t in zip("xyg", out):
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
            what = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"the returned {name} should be a node-local tensor of shape "
                             f"{shape}, got {what}")
    return out


def check_gt_step(step, comm) -> Verdict:
    """``step(comm, W, x, y, g, grad, lr) -> (x, y, g)``, one ATC gradient-tracking iteration
    ``x+ = W (x - lr y)``, ``g+ = grad(x+)``, ``y+ = W (y + g+ - g)`` from
    ``y^0 = g^0 = grad(x^0)``, gives the same ``(x, y)`` as ``GradientTracking(variant="atc")``
    for :data:`_BUILD_STEPS` iterations on the Metropolis graph of ``comm.size`` nodes (a path
    plus a chord), on heterogeneous least squares (3 unknowns per node, no gradient noise),
    from seeded node-local starting points, with ``lr = 0.3 / L``. ``grad`` is the node-local
    gradient oracle (a separate one from the class's). Call it with a ``SimComm`` or, on every
    engine, with the engines' ``MPIComm``."""
    from declearn.algorithms import GradientTracking

    ex = "05.4"
    refused = refuse_before_running(ex, step, comm,
                                    signature="gt_step(comm, W, x, y, g, grad, lr)",
                                    returns="the new (x, y, g)",
                                    forbidden={"GradientTracking", "PushDIGing"})
    if refused is not None:
        return refused
    topo, problem = _build_graph(comm.size), _build_problem(comm.size)
    lr = 0.3 / problem.smoothness
    x0 = seeded_node_local(comm, 3, _BUILD_X0_SEED)
    reference = _XY(GradientTracking(comm, problem, topo, lr=lr, variant="atc", x0=x0))
    grad = problem.on(comm).grad  # the student's own oracle

    def iterates():
        x = x0.clone()
        g = grad(x)
        y, k = g.clone(), 0
        while True:
            x, y, g = _unpacked(step(comm, topo.at(k), x, y, g, grad, lr), tuple(x0.shape))
            yield torch.cat([x, y], dim=-1)
            k += 1

    return compare_iterates(
        ex, comm, iterates(), reference, steps=_BUILD_STEPS,
        what="GradientTracking(variant='atc')'s (x, y)",
        hint="In ATC both updates end with one round of gossip: x steps along y and is mixed; "
             "then y is corrected by the change of the local gradient, taken at the new x, "
             "and mixed too.")
