r"""Checks for chapter 05, *Directed and time-varying graphs*.

All three exercises use one small directed graph, :data:`EDGES` (``(u, v)``: u sends to v),
over ``N = 4`` nodes, with the initial values :data:`X0`. Nodes 1 and 3 send to two nodes,
the others to one, so the graph is strongly connected but not balanced. Row i of every matrix is
the receiver i (``x_i <- sum_j M[i, j] x_j``), as everywhere in declearn.

Each check recomputes the right value with plain numpy and answers with a
:class:`~declearn.exercises.Verdict` (a hint when wrong, "not yet" for ``None``):

* :func:`check_biased_limit` (5.1): where plain averaging (each receiver averages what it
  hears: row-stochastic weights) takes the nodes.
* :func:`check_push_sum_matrix` (5.2): push-sum's column-stochastic matrix ``A`` for the graph.
* :func:`check_weight_limit` (5.3): the limit of push-sum's weights ``w^k`` (``w^0 = 1``).
"""

from __future__ import annotations

import math

import numpy as np

from declearn.exercises.base import Verdict, not_yet

__all__ = [
    "EDGES",
    "X0",
    "N",
    "biased_limit",
    "check_biased_limit",
    "check_push_sum_matrix",
    "check_weight_limit",
    "receiver_matrix",
    "sender_matrix",
    "weight_limit",
]

EX1 = "5.1 where plain averaging goes"
EX2 = "5.2 push-sum weights"
EX3 = "5.3 the limit of w"

#: Nodes of the exercise graph.
N = 4
#: Its directed links ``(u, v)``: u sends to v. A directed 4-cycle plus the two-way shortcut
#: 1 <-> 3.
EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (1, 3), (3, 1))
#: The nodes' initial values for exercise 5.1 (their mean is 3).
X0 = (12.0, 0.0, 0.0, 0.0)


def _as_array(answer) -> np.ndarray:
    """A float numpy array from a number, list, numpy array or torch tensor (ValueError or
    TypeError when it is none of those)."""
    if hasattr(answer, "detach"):
        answer = answer.detach().cpu().numpy()
    return np.asarray(answer, dtype=float)


def _adjacency() -> np.ndarray:
    """``A[i, j] = 1`` when j sends to i (self loops not included)."""
    adj = np.zeros((N, N))
    for u, v in EDGES:
        adj[v, u] = 1.0
    return adj


def receiver_matrix() -> np.ndarray:
    """Plain averaging: receiver i averages itself and its in-neighbours, weight
    ``1/(in-degree + 1)`` each (rows sum to 1)."""
    M = _adjacency() + np.eye(N)
    return M / M.sum(axis=1, keepdims=True)


def sender_matrix() -> np.ndarray:
    """Push-sum: sender j splits its value among itself and its out-neighbours, weight
    ``1/(out-degree + 1)`` each (columns sum to 1)."""
    M = _adjacency() + np.eye(N)
    return M / M.sum(axis=0, keepdims=True)


def _perron(M: np.ndarray) -> np.ndarray:
    """The eigenvector of M for eigenvalue 1, scaled to sum to 1 (positive for these M)."""
    vals, vecs = np.linalg.eig(M)
    v = np.real(vecs[:, np.argmin(np.abs(vals - 1.0))])
    return v / v.sum()


def biased_limit() -> float:
    """``pi^T x0`` with ``pi^T W = pi^T`` (W = :func:`receiver_matrix`): the value every node
    converges to under ``x <- W x``."""
    pi = _perron(receiver_matrix().T)
    return float(pi @ np.asarray(X0))


def weight_limit() -> np.ndarray:
    """``lim w^k = n p`` with ``A p = p``, ``sum(p) = 1`` (A = :func:`sender_matrix`): push-sum's
    weights, started at 1, keep their total n and line up with A's Perron vector."""
    return N * _perron(sender_matrix())


def check_biased_limit(answer) -> Verdict:
    """Exercise 5.1: the common value the nodes reach under plain averaging
    ``x <- W x`` (W = :func:`receiver_matrix`) from ``x0 = X0`` (within 1e-6 relative)."""
    if answer is None:
        return not_yet(EX1, "one number")
    try:
        arr = _as_array(answer)
        value = float(arr.reshape(-1)[0]) if arr.size == 1 else None
    except (TypeError, ValueError):
        value = None
    if value is None or not math.isfinite(value):
        return Verdict(False, EX1, "give one number: the value every node ends up with.")
    expected = biased_limit()
    if math.isclose(value, expected, rel_tol=1e-6):
        return Verdict(True, EX1, "right: not the mean of X0. Which node's initial value counts "
                                  "most, and why?")
    if math.isclose(value, float(np.mean(X0)), rel_tol=1e-9):
        hint = ("That is the mean of X0, which only a doubly stochastic W keeps. Here the "
                "columns do not sum to 1: find pi with pi^T W = pi^T, sum(pi) = 1.")
    else:
        hint = ("The limit is pi^T x0, with pi the left eigenvector of W for eigenvalue 1 "
                "(normalised to sum 1). Check that your W has rows summing to 1 and row i = "
                "receiver i.")
    return Verdict(False, EX1, hint)


def check_push_sum_matrix(answer) -> Verdict:
    """Exercise 5.2: the 4 x 4 matrix A of push-sum on :data:`EDGES` (row i = receiver i;
    each sender splits evenly among itself and its out-neighbours)."""
    if answer is None:
        return not_yet(EX2, "a 4 x 4 array")
    try:
        A = _as_array(answer)
    except (TypeError, ValueError):
        return Verdict(False, EX2, "give a 4 x 4 array of numbers (numpy or torch).")
    if A.shape != (N, N):
        return Verdict(False, EX2, f"A must be {N} x {N}, got shape {A.shape}.")
    expected = sender_matrix()
    if np.allclose(A, expected, atol=1e-9):
        return Verdict(True, EX2, "right: every column sums to 1, so sum_i x_i never changes.")
    if np.allclose(A.T, expected, atol=1e-9):
        hint = ("You have the transpose: in declearn row i is the receiver, so A[i, j] is the "
                "share node i gets from node j.")
    elif np.allclose(A, receiver_matrix(), atol=1e-9):
        hint = ("That is plain averaging (rows sum to 1: each receiver averages). Push-sum "
                "splits at the sender: the columns must sum to 1.")
    elif not np.allclose(A.sum(axis=0), 1.0, atol=1e-9):
        hint = "Each column (one sender) must sum to 1, its self weight included."
    else:
        hint = ("The columns sum to 1, but the split is not even: sender j gives "
                "1/(out-degree of j + 1) to itself and to each node it sends to.")
    return Verdict(False, EX2, hint)


def check_weight_limit(answer) -> Verdict:
    """Exercise 5.3: ``lim_k w^k`` for push-sum with A = :func:`sender_matrix` and
    ``w^0 = (1, 1, 1, 1)``: a vector of 4 numbers (within 1e-6 relative)."""
    if answer is None:
        return not_yet(EX3, "a vector of 4 numbers")
    try:
        w = _as_array(answer).reshape(-1)
    except (TypeError, ValueError):
        return Verdict(False, EX3, "give 4 numbers (a list, numpy array or torch tensor).")
    if w.shape != (N,):
        return Verdict(False, EX3, f"give one limit per node: {N} numbers, got {w.size}.")
    expected = weight_limit()
    if np.allclose(w, expected, rtol=1e-6, atol=1e-9):
        return Verdict(True, EX3, "right: the weights do not stay at 1, yet x / w is exact.")
    if np.allclose(w, 1.0):
        hint = ("w would stay at 1 only if the rows of A summed to 1 too; run a few hundred "
                "steps w <- A w, or find the eigenvector of A for eigenvalue 1.")
    elif np.allclose(w, expected / N, rtol=1e-6, atol=1e-9):
        hint = ("Right direction, wrong scale: A keeps the total of w, and w starts at 1 on each "
                "of the 4 nodes.")
    elif not math.isclose(w.sum(), N, rel_tol=1e-6):
        hint = ("The total of w never changes under a column-stochastic A: your limit should "
                "sum to 4.")
    else:
        hint = "The limit p satisfies A p = p: the right eigenvector for eigenvalue 1, scaled."
    return Verdict(False, EX3, hint)
