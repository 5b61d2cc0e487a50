r"""Checks for chapter 06, *Directed and time-varying graphs*.

Exercises 06.1 to 06.3 use one small directed graph, :data:`EDGES` (``(u, v)``: u sends to v),
over :data:`N` = 4 nodes, with the initial values :data:`X0`. Nodes 1 and 3 send to two nodes,
the others to one, so the graph is strongly connected but not balanced. Row i of every matrix
is the receiver i (``x_i <- sum_j M[i, j] x_j``), as everywhere in declearn.

* :func:`check_biased_limit` (06.1): the common value ``pi^T x0`` that plain averaging (each
  receiver averages what it hears, ``W = D_in^{-1} (Adj + I)``, rows sum to 1) reaches, with
  ``pi^T W = pi^T``, ``sum(pi) = 1`` (relative tolerance 1e-6).
* :func:`check_push_sum_matrix` (06.2): push-sum's column-stochastic ``A = (Adj + I)
  D_out^{-1}`` (each sender splits evenly among itself and its out-neighbours; entrywise
  to 1e-6, float32 rounding allowed).
* :func:`check_weight_limit` (06.3): ``lim w^k = n p`` for ``w <- A w``, ``w^0 = 1``, with
  ``A p = p``, ``sum(p) = 1`` (relative tolerance 1e-6).
* :func:`check_push_sum_step` (06.4, build it yourself): ``step(comm, A, x, w)`` returns the pair
  ``(A x, A w)`` written with the communicator's primitives; the check runs it next to
  :class:`~declearn.algorithms.PushSumConsensus` on a directed graph whose column-stochastic
  weights are not row-stochastic, compares the ratios ``x / w`` and names the first iteration
  where they differ. It works under SimComm and, called on every rank, under MPIComm.

The values of 06.1 to 06.3 are computed here with plain numpy (not with declearn.topology), and
each check returns a :class:`~declearn.exercises.Verdict` with a hint when wrong ("not yet"
for ``None``). Every answer-computing helper is private.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from declearn.exercises.base import Verdict, check_true, not_yet
from declearn.exercises.build import compare_iterates, refuse_before_running, seeded_node_local

__all__ = [
    "EDGES",
    "X0",
    "N",
    "check_biased_limit",
    "check_push_sum_matrix",
    "check_push_sum_step",
    "check_weight_limit",
]

EX1 = "06.1 where plain averaging goes"
EX2 = "06.2 push-sum weights"
EX3 = "06.3 the limit of w"
EX4 = "06.4 build push-sum"

#: Nodes of the exercise graph.
N = 4
#: Its directed links ``(u, v)``: u sends to v. A directed 4-cycle plus the two-way shortcut
#: 1 <-> 3.
EDGES = ((0, 1), (1, 2), (2, 3), (3, 0), (1, 3), (3, 1))
#: The nodes' initial values for exercise 06.1 (their mean is 3).
X0 = (12.0, 0.0, 0.0, 0.0)

#: Tolerance of 06.1 to 06.3 (relative; absolute for the entries of 06.2). The answers are exact
#: fractions (12/5, A's shares, (4, 6, 4, 6)/5); 1e-6 leaves room for float32 (a torch
#: tensor's default) and is far below every slip the tests list.
_RTOL = 1e-6


def _as_array(answer) -> np.ndarray:
    """A float numpy array from a number, list, numpy array or torch tensor (ValueError or
    TypeError when it is none of those)."""
    if hasattr(answer, "detach"):
        answer = answer.detach().cpu().numpy()
    return np.asarray(answer, dtype=float)


def _adjacency() -> np.ndarray:
    """``Adj[i, j] = 1`` when j sends to i (self loops not included)."""
    adj = np.zeros((N, N))
    for u, v in EDGES:
        adj[v, u] = 1.0
    return adj


def _receiver_matrix() -> np.ndarray:
    """Plain averaging: receiver i averages itself and its in-neighbours, weight
    ``1/(in-degree + 1)`` each (rows sum to 1)."""
    M = _adjacency() + np.eye(N)
    return M / M.sum(axis=1, keepdims=True)


def _sender_matrix() -> np.ndarray:
    """Push-sum: sender j splits its value among itself and its out-neighbours, weight
    ``1/(out-degree + 1)`` each (columns sum to 1)."""
    M = _adjacency() + np.eye(N)
    return M / M.sum(axis=0, keepdims=True)


def _perron(M: np.ndarray) -> np.ndarray:
    """The eigenvector of M for eigenvalue 1, scaled to sum to 1 (positive for these M)."""
    vals, vecs = np.linalg.eig(M)
    v = np.real(vecs[:, np.argmin(np.abs(vals - 1.0))])
    return v / v.sum()


def _biased_limit() -> float:
    """``pi^T x0`` with ``pi^T W = pi^T`` (W = :func:`_receiver_matrix`): the value every node
    converges to under ``x <- W x``."""
    pi = _perron(_receiver_matrix().T)
    return float(pi @ np.asarray(X0))


def _weight_limit() -> np.ndarray:
    """``lim w^k = n p`` with ``A p = p``, ``sum(p) = 1`` (A = :func:`_sender_matrix`): push-sum's
    weights, started at 1, keep their total n and line up with A's Perron vector."""
    return N * _perron(_sender_matrix())


def _scalar(answer):
    """One finite float from a number, a one-element list/array/tensor; None otherwise."""
    try:
        arr = _as_array(answer)
    except (TypeError, ValueError):
        return None
    if arr.size != 1 or isinstance(answer, (bool, str)):
        return None
    value = float(arr.reshape(-1)[0])
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------------- 06.1
def check_biased_limit(answer) -> Verdict:
    """Exercise 06.1: the common value the nodes reach under plain averaging
    ``x <- W x`` (W = receivers average, rule ``"uniform"``) from ``x0 = X0`` (to 1e-6
    relative: the answer is an exact fraction, float32 rounding allowed)."""
    if answer is None:
        return not_yet(EX1, "one number")
    value = _scalar(answer)
    if value is None:
        return Verdict(False, EX1, "give one number: the value every node ends up with.")
    expected = _biased_limit()
    x0 = np.asarray(X0)
    near = lambda v: math.isclose(value, v, rel_tol=_RTOL, abs_tol=1e-12)
    if near(expected):
        return check_true(EX1, True, wrong="", right=(
            "the nodes agree on pi^T x0, not on the mean of X0. Which node's initial value "
            "counts most, and why?"))
    pi = _perron(_receiver_matrix().T)
    if near(float(np.mean(x0))):
        hint = ("That is the mean of X0, which only a doubly stochastic W keeps. Here the "
                "columns do not sum to 1: find pi with pi^T W = pi^T, sum(pi) = 1 (a *left* "
                "eigenvector: the right one of a row-stochastic W is just the all-ones vector).")
    elif near(float(pi @ x0) / np.linalg.norm(pi)) or near(-float(pi @ x0) / np.linalg.norm(pi)):
        hint = ("Your pi has length 1, as numpy's eig returns it; the limit needs pi scaled "
                "so that its entries sum to 1.")
    else:
        hint = ("The limit is pi^T x0, with pi the left eigenvector of W for eigenvalue 1 "
                "(normalised to sum 1). Check that your W has rows summing to 1 and row i = "
                "receiver i.")
    return Verdict(False, EX1, f"{value:g} is not it. {hint}")


# ---------------------------------------------------------------------- 06.2
def check_push_sum_matrix(answer) -> Verdict:
    """Exercise 06.2: the 4 x 4 matrix A of push-sum on :data:`EDGES` (row i = receiver i;
    each sender splits evenly among itself and its out-neighbours), entrywise to 1e-6."""
    if answer is None:
        return not_yet(EX2, "a 4 x 4 array")
    try:
        A = _as_array(answer)
    except (TypeError, ValueError):
        return Verdict(False, EX2, "give a 4 x 4 array of numbers (numpy or torch).")
    if A.shape != (N, N):
        return Verdict(False, EX2, f"A must be {N} x {N}, got shape {A.shape}.")
    if not np.all(np.isfinite(A)):
        return Verdict(False, EX2, "A has NaN or infinite entries.")
    expected = _sender_matrix()
    same = lambda M: np.allclose(A, M, rtol=0.0, atol=_RTOL)
    if same(expected):
        return check_true(EX2, True, wrong="", right=(
            "every column sums to 1, so sum_i x_i never changes."))
    if same(expected.T):
        hint = ("You have the transpose: in declearn row i is the receiver, so A[i, j] is the "
                "share node i gets from node j.")
    elif same(_receiver_matrix()):
        hint = ("That is plain averaging (rows sum to 1: each receiver averages). Push-sum "
                "splits at the sender: the columns must sum to 1.")
    elif not np.allclose(A.sum(axis=0), 1.0, rtol=0.0, atol=_RTOL):
        hint = ("Each column (one sender) must sum to 1, its self weight included (write the "
                "shares as exact fractions, 1/3 rather than 0.33).")
    elif np.allclose(np.diag(A), 0.0):
        hint = ("The columns sum to 1, but every diagonal entry is 0: a sender also keeps a "
                "share for itself, as large as the share of each node it sends to.")
    else:
        hint = ("The columns sum to 1, but the split is not right: sender j gives the same "
                "share to itself and to each node it sends to, and nothing to the others.")
    return Verdict(False, EX2, hint)


# ---------------------------------------------------------------------- 06.3
def check_weight_limit(answer) -> Verdict:
    """Exercise 06.3: ``lim_k w^k`` for push-sum with the matrix of 06.2 and ``w^0 = (1, 1, 1,
    1)``: a vector of 4 numbers (to 1e-6 relative: exact fractions, float32 rounding allowed)."""
    if answer is None:
        return not_yet(EX3, "a vector of 4 numbers")
    try:
        w = _as_array(answer).reshape(-1)
    except (TypeError, ValueError):
        return Verdict(False, EX3, "give 4 numbers (a list, numpy array or torch tensor).")
    if w.shape != (N,):
        return Verdict(False, EX3, f"give one limit per node: {N} numbers, got {w.size}.")
    if not np.all(np.isfinite(w)):
        return Verdict(False, EX3, "your limit has NaN or infinite entries.")
    expected = _weight_limit()
    same = lambda v: np.allclose(w, v, rtol=_RTOL, atol=1e-12)
    if same(expected):
        return check_true(EX3, True, wrong="", right=(
            "the weights do not stay at 1, yet x / w is exact."))
    if same(np.ones(N)):
        hint = ("w would stay at 1 only if the rows of A summed to 1 too; run a few hundred "
                "steps w <- A w, or find the eigenvector of A for eigenvalue 1 (a *right* "
                "eigenvector: the left one of a column-stochastic A is the all-ones vector).")
    elif same(expected / N):
        hint = ("Right direction, wrong scale: A keeps the total of w, and w starts at 1 on each "
                "of the 4 nodes.")
    elif same(expected / np.linalg.norm(expected)) or same(-expected / np.linalg.norm(expected)):
        hint = ("That eigenvector has length 1, as numpy's eig returns it: scale it so that its "
                "total is the total of w^0.")
    elif not math.isclose(w.sum(), N, rel_tol=1e-6):
        hint = ("The total of w never changes under a column-stochastic A: your limit should "
                "sum to 4.")
    else:
        hint = "The limit p satisfies A p = p: the right eigenvector for eigenvalue 1, scaled."
    return Verdict(False, EX3, hint)


# ---------------------------------------------------------------------- 06.4
#: Exercise 06.4: iterations compared, and the seed of the starting values.
_BUILD_STEPS = 12
_BUILD_SEED = 15


def _build_graph(n: int):
    """The directed graph of exercise 06.4: the ring ``j -> j + 1`` plus node 0 sending to
    every other node, with push-sum's weights (``"uniform_out"``): node 0 splits in n shares,
    the others in halves. Rows 0 and 1 sum to ``1/2 + 1/n``, the others to ``1 + 1/n``: for
    every n >= 3 the matrix is column- but not row-stochastic."""
    from declearn.topology import apply_weights

    edges = [(j, (j + 1) % n) for j in range(n)] + [(0, j) for j in range(2, n)]
    return apply_weights(n, edges, "uniform_out", directed=True, name="exercise_05_4")


def _pair(result):
    """The ``(x, w)`` pair a step returned, or a TypeError that says what is expected."""
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        got = "None" if result is None else f"a {type(result).__name__}"
        if isinstance(result, (tuple, list)):
            got = f"a {type(result).__name__} of {len(result)} items"
        raise TypeError(f"push_sum_step returns the pair (x, w), got {got}")
    x, w = result
    if not isinstance(x, torch.Tensor) or not isinstance(w, torch.Tensor):
        raise TypeError("push_sum_step returns two torch tensors (x, w)")
    return x, w


def _call(step, comm, A, x, w):
    """``step(comm, A, x, w)``; the TopologyError of receiver weights on this A (whose rows do
    not sum to 1) is replaced by one that says why, without the row sums."""
    from declearn.errors import TopologyError

    try:
        return step(comm, A, x, w)
    except TopologyError as err:
        if "receiver-side" not in str(err):
            raise
        raise TopologyError(
            "receiver weights (neighbor_allreduce's default) need the rows of A to sum to 1; "
            "push-sum's A has columns summing to 1, so each sender splits: weighted_by='sender'"
        ) from None


def check_push_sum_step(step, comm) -> Verdict:
    """``step(comm, A, x, w)``, one push-sum step ``(x, w) <- (A x, A w)`` with the
    column-stochastic ``A`` of the round, gives the same ratios ``x / w`` as
    ``PushSumConsensus`` for :data:`_BUILD_STEPS` steps on the directed graph of
    ``comm.size`` nodes of :func:`_build_graph`, from seeded values of shape ``(3,)`` per node
    and ``w = 1`` (shape ``(1,)``). Call it with a ``SimComm`` or, on every engine, with the
    engines' ``MPIComm``."""
    from declearn.algorithms import PushSumConsensus

    refused = refuse_before_running(EX4, step, comm, signature="push_sum_step(comm, A, x, w)",
                                    returns="the new pair x, w",
                                    forbidden={"PushSumConsensus", "PushDIGing"})
    if refused is not None:
        return refused
    topo = _build_graph(comm.size)
    x0 = seeded_node_local(comm, 3, _BUILD_SEED)
    w0 = torch.ones_like(x0[..., :1])
    reference = PushSumConsensus(comm, topo, x0)

    def ratios():
        x, w, k = x0.clone(), w0.clone(), 0
        while True:
            x, w = _pair(_call(step, comm, topo.at(k), x, w))
            yield x / w
            k += 1

    return compare_iterates(
        EX4, comm, ratios(), reference, steps=_BUILD_STEPS, what="PushSumConsensus's x / w",
        hint="Push-sum mixes x and w with the same column-stochastic A (each sender splits "
             "what it holds, self share included: weighted_by='sender'), and returns the new x "
             "and w themselves, not their ratio.")
