r"""Weight rules: turn a graph (who may talk to whom) into a mixing matrix ``W`` (row = receiver).

Notation: ``N_in(i)`` are the nodes i receives from, ``N_out(i)`` those it sends to (self
excluded), ``d_i = |N_in(i)|`` on an undirected graph, ``L = D - A`` the graph Laplacian.

===============  ==================================================================  ============
rule             W[i, j] for j in N_in(i) (self weight W[i, i])                       stochastic
===============  ==================================================================  ============
``metropolis``   ``1 / (1 + max(d_i, d_j))``  (``1 - sum_j W[i, j]``)                   doubly
``uniform``      ``1 / (|N_in(i)| + 1)``      (same): the receiver averages (BlueFog)   rows
``uniform_out``  ``1 / (|N_out(j)| + 1)``     (``1 / (|N_out(i)| + 1)``): the sender    columns
                 splits its value evenly (push-sum)
``max_degree``   ``1 / (d_max + 1)``          (``1 - d_i / (d_max + 1)``)                doubly
``laplacian``    ``eps``, i.e. ``W = I - eps L`` (``1 - eps d_i``)                       doubly
===============  ==================================================================  ============

``metropolis``, ``max_degree`` and ``laplacian`` need an undirected graph and give a symmetric,
doubly stochastic ``W`` on any connected graph. ``uniform`` is doubly stochastic only on
regular graphs: elsewhere consensus converges to a *weighted* average (BlueFog's classic trap).

:func:`apply_weights` is the single entry point used by the families and by
:mod:`declearn.topology.convert`; :func:`lazy` gives ``(I + W) / 2`` of any topology.
"""

from __future__ import annotations

import numbers

import numpy as np

from declearn._deprecation import renamed_keyword
from declearn.errors import TopologyError
from declearn.topology.base import (  # LazyDynamicTopology: re-exported, its old home
    BaseTopology,
    LazyDynamicTopology,
    Topology,
    check_n,
)

__all__ = ["RULES", "apply_weights", "lazy", "LazyDynamicTopology"]

#: Weight rules understood by :func:`apply_weights`.
RULES = ("metropolis", "uniform", "uniform_out", "max_degree", "laplacian")
#: For the families: their rule keyword was called ``weights=``; still accepted, with a
#: DeprecationWarning that says to write ``rule=``.
old_rule_keyword = renamed_keyword("weights", "rule")

_UNDIRECTED_RULES = ("metropolis", "max_degree", "laplacian")
_STOCHASTIC = {
    "metropolis": "doubly", "max_degree": "doubly", "laplacian": "doubly",
    "uniform": "row", "uniform_out": "column",
}
_TINY = 1e-12  # self weights within this of 0 are rounding noise of 1 - sum(...)


def apply_weights(
    n: int,
    edges=None,
    rule: str = "metropolis",
    *,
    adjacency=None,
    eps: float | None = None,
    directed: bool = False,
    name: str = "custom",
    params: dict | None = None,
    allow_disconnected: bool = False,
    hint: str = "",
) -> Topology:
    """Mixing topology of a graph over nodes ``0..n-1`` with the weight rule ``rule``.

    Give the graph either as ``edges``, a sequence (or ``(m, 2)`` array) of pairs ``(u, v)``
    meaning **u sends to v** (with ``directed=False``, the default, every pair is a two-way
    link), or as ``adjacency=A``, an ``n x n`` numpy array, torch tensor or scipy sparse
    matrix with ``A[i, j] != 0`` when **j sends to i** (the orientation of W;
    ``directed=False`` uses ``A | A.T``).

    Self loops are ignored: the rule sets the self weights. ``eps`` is the Laplacian step
    (``rule="laplacian"`` only): by default the best constant ``2 / (lambda_2 + lambda_n)``
    of ``L`` (Xiao & Boyd), lowered to ``1 / d_max`` when it would make a self weight
    negative (the best nonnegative choice, since the contraction improves with eps up to the
    best constant). ``params`` (the topology's ``params``) defaults to ``{"rule": rule}``,
    plus the ``"eps"`` used; families pass their own keyword arguments instead, so that
    ``make(t.name, t.n, **t.params)`` rebuilds ``t``. The default eps needs the spectrum of
    L (a dense eigendecomposition, O(n^3)). A circulant result gets its
    ``shifts`` (see :meth:`Topology.from_circulant`). A disconnected graph raises, with
    ``hint`` appended to the message, unless ``allow_disconnected``.
    """
    n = check_n(n)
    if rule not in RULES:
        raise TopologyError(
            f"Unknown weight rule {rule!r}; choose one of {', '.join(map(repr, RULES))}."
        )
    if eps is not None and rule != "laplacian":
        raise TopologyError(f"eps is the step of the 'laplacian' rule; rule {rule!r} takes none.")
    if (edges is None) == (adjacency is None):
        raise TopologyError(
            "Give the graph either as edges (pairs (u, v): u sends to v) or as adjacency=A "
            "(n x n, A[i, j] != 0 when j sends to i), not both and not neither."
        )
    if adjacency is not None:
        dst, src = _adjacency_links(n, adjacency)
    else:
        dst, src = _edge_links(n, edges)
    dst, src = _distinct_links(n, dst, src, directed=directed)
    fill_params = params is None
    params = dict(params or {})
    if rule in _UNDIRECTED_RULES and not _is_symmetric(n, dst, src):
        raise TopologyError(
            f"The {rule!r} rule needs an undirected graph, but some links go one way only. "
            "Use rule='uniform' (row-stochastic) or 'uniform_out' (column-stochastic, push-sum) "
            "for a directed graph, or pass directed=False to make every link two-way."
        )
    if not allow_disconnected and not _is_connected(n, dst, src):
        raise TopologyError(
            f"The graph of {name} (n={n}) is not connected: some nodes never hear from others, "
            f"so they cannot agree. {hint or 'Add edges to connect it.'}"
        )
    in_deg = np.bincount(dst, minlength=n)
    out_deg = np.bincount(src, minlength=n)
    if rule == "metropolis":
        w = 1.0 / (1.0 + np.maximum(in_deg[dst], in_deg[src]))
        self_w = 1.0 - np.bincount(dst, weights=w, minlength=n)
    elif rule == "uniform":
        w = 1.0 / (in_deg[dst] + 1.0)
        self_w = 1.0 / (in_deg + 1.0)
    elif rule == "uniform_out":
        w = 1.0 / (out_deg[src] + 1.0)
        self_w = 1.0 / (out_deg + 1.0)
    elif rule == "max_degree":
        d_max = int(in_deg.max()) if n else 0
        w = np.full(dst.size, 1.0 / (d_max + 1.0))
        self_w = 1.0 - in_deg / (d_max + 1.0)
    else:
        eps = _laplacian_eps(n, dst, src, in_deg, eps)
        if fill_params:
            params["eps"] = eps
        w = np.full(dst.size, eps)
        self_w = 1.0 - eps * in_deg
    self_w = np.where(np.abs(self_w) < _TINY, 0.0, self_w)
    if fill_params:
        params["rule"] = rule
    diag = np.arange(n)
    rows = np.concatenate([dst, diag])
    cols = np.concatenate([src, diag])
    vals = np.concatenate([w, self_w])
    return _build(n, rows, cols, vals, name=name, params=params, stochastic=_STOCHASTIC[rule])


def lazy(topology):
    """The lazy topology ``(I + W) / 2``: same graph, eigenvalues of a symmetric W moved into
    ``[0, 1]`` (exact diffusion needs it; D^2 needs ``lambda_min(W) > -1/3``).

    A circulant topology keeps its shifts. A :class:`DynamicTopology` gives a
    :class:`LazyDynamicTopology` whose ``at(k)`` is ``lazy(topology.at(k))``. The same as
    ``topology.lazy()``.
    """
    if not isinstance(topology, BaseTopology):
        raise TopologyError(
            f"lazy() takes a Topology or DynamicTopology, got {type(topology).__name__}; "
            "build one first, e.g. lazy(ring(8)) or lazy(from_networkx(G))."
        )
    return topology.lazy()


# ---------------------------------------------------------------------- helpers
def _adjacency_links(n: int, A) -> tuple[np.ndarray, np.ndarray]:
    """``(dst, src)`` with ``A[dst, src] != 0``."""
    if hasattr(A, "detach"):  # torch tensor
        A = A.detach().cpu().numpy()
    if hasattr(A, "tocoo"):  # scipy sparse
        coo = A.tocoo()
        _check_adjacency_shape(n, coo.shape)
        return coo.row[coo.data != 0], coo.col[coo.data != 0]
    try:
        A = np.asarray(A)
    except (TypeError, ValueError):
        raise TopologyError(f"adjacency must be an {n} x {n} matrix.") from None
    _check_adjacency_shape(n, A.shape)
    return np.nonzero(A)


def _edge_links(n: int, edges) -> tuple[np.ndarray, np.ndarray]:
    """``(dst, src)`` of the pairs ``(src, dst)``."""
    try:
        pairs = np.asarray(edges if isinstance(edges, np.ndarray) else list(edges))
    except (TypeError, ValueError):
        raise TopologyError(
            f"edges must be a sequence of (sender, receiver) pairs, got {type(edges).__name__}."
        ) from None
    if pairs.size == 0:
        pairs = np.zeros((0, 2), dtype=np.int64)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise TopologyError(
            f"edges must be a sequence of (u, v) pairs, got an array of shape {pairs.shape}; "
            "pass a matrix as adjacency=A."
        )
    if pairs.dtype.kind not in "iu" and (
        pairs.dtype.kind != "f" or not np.all(pairs == np.round(pairs))
    ):
        raise TopologyError("Edges must be pairs of integer node indices.")
    src, dst = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
    if src.size and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= n):
        raise TopologyError(f"Edge endpoints must lie in 0..{n - 1} for n = {n}.")
    return dst, src


def _distinct_links(n: int, dst, src, *, directed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct links ``src -> dst`` without self loops (both ways unless directed)."""
    dst, src = np.asarray(dst, dtype=np.int64), np.asarray(src, dtype=np.int64)
    off = dst != src
    dst, src = dst[off], src[off]
    if not directed:
        dst, src = np.concatenate([dst, src]), np.concatenate([src, dst])
    key = np.unique(dst * n + src)
    return key // n, key % n


def _check_adjacency_shape(n: int, shape) -> None:
    if tuple(shape) != (n, n):
        raise TopologyError(f"The adjacency matrix must be {n} x {n} for n = {n}, got {shape}.")


def _is_symmetric(n: int, dst: np.ndarray, src: np.ndarray) -> bool:
    return np.array_equal(np.unique(dst * n + src), np.unique(src * n + dst))


def _is_connected(n: int, dst: np.ndarray, src: np.ndarray) -> bool:
    """Strong connectivity of the links ``src -> dst``."""
    if n == 1:
        return True
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    A = csr_matrix((np.ones(dst.size), (dst, src)), shape=(n, n))
    k, _ = connected_components(A, directed=True, connection="strong")
    return bool(k == 1)


def _laplacian_eps(n, dst, src, deg, eps) -> float:
    d_max = int(deg.max()) if n else 0
    if d_max == 0:  # a single node: W = I whatever eps is
        return 0.0 if eps is None else float(eps)
    if eps is None:
        L = np.zeros((n, n))
        L[dst, src] = -1.0
        L[np.arange(n), np.arange(n)] = deg
        lam = np.linalg.eigvalsh(L)
        return float(min(2.0 / (lam[1] + lam[-1]), 1.0 / d_max))
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
        raise TopologyError(f"eps must be a positive number, got {eps!r}.")
    if eps * d_max > 1.0 + _TINY:
        i = int(np.argmax(deg))
        raise TopologyError(
            f"eps = {eps:g} makes W = I - eps L negative: node {i} has {d_max} neighbors, so its "
            f"self weight would be 1 - {eps:g} * {d_max} = {1.0 - eps * d_max:.6g}. "
            f"Choose eps <= 1/max_degree = {1.0 / d_max:.6g}, or eps=None for the best such value."
        )
    return float(eps)


def _build(n, rows, cols, vals, *, name, params, stochastic) -> Topology:
    """Topology from COO triplets, as a circulant (with shifts) whenever it is one."""
    keep = vals != 0.0
    rows, cols, vals = rows[keep], cols[keep], vals[keep]
    shifts = _circulant_shifts(n, rows, cols, vals)
    if shifts is not None:
        return Topology.from_circulant(n, shifts, name=name, params=params,
                                       stochastic=stochastic)
    return Topology.from_coo(n, rows, cols, vals, name=name, params=params, stochastic=stochastic)


def _circulant_shifts(n, rows, cols, vals) -> dict[int, float] | None:
    """``{s: w}`` if ``W[i, (i - s) % n] = w`` for every i and stored s, else None.

    Assumes distinct ``(rows, cols)`` pairs, so n entries with the same s cover every row."""
    s = (rows - cols) % n
    order = np.argsort(s, kind="stable")
    s, vals = s[order], vals[order]
    shifts, first, counts = np.unique(s, return_index=True, return_counts=True)
    if not np.all(counts == n):
        return None
    lo = np.minimum.reduceat(vals, first)
    hi = np.maximum.reduceat(vals, first)
    if not np.allclose(lo, hi, rtol=_TINY, atol=_TINY):
        return None
    return {int(k): float(w) for k, w in zip(shifts, lo)}
