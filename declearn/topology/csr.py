r"""A mixing matrix as the canonical CSR arrays a :class:`~declearn.topology.Topology` stores.

Canonical means: rows are receivers, column indices sorted within each row, no duplicate
``(row, col)`` pair (duplicates are summed) and no explicit zero. The three ways in are
triplets ``W[rows[k], cols[k]] += vals[k]`` (:func:`canonical_csr`), a dense or scipy sparse
matrix (:func:`matrix_triplets`) and circulant shifts ``s -> w`` meaning
``W[i, (i - s) mod n] = w`` (:func:`circulant_triplets`). Every weight must be finite and
``>= 0``; a bad input raises a TopologyError that says what to do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from declearn.errors import TopologyError

__all__ = ["canonical_csr", "matrix_triplets", "circulant_triplets", "check_values", "readonly"]


def canonical_csr(
    n: int, rows: Iterable[int], cols: Iterable[int], vals: Iterable[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(indptr, indices, data)`` of ``W[rows[k], cols[k]] += vals[k]`` over n nodes."""
    r, c, v = _array(rows, np.int64), _array(cols, np.int64), _array(vals, np.float64)
    if not (r.shape == c.shape == v.shape) or r.ndim != 1:
        raise TopologyError("rows, cols and vals must be 1-D sequences of the same length.")
    if r.size and (r.min() < 0 or r.max() >= n or c.min() < 0 or c.max() >= n):
        raise TopologyError(f"Node indices must lie in 0..{n - 1} for n = {n}.")
    check_values(v)
    order = np.lexsort((c, r))
    r, c, v = r[order], c[order], v[order]
    if r.size:
        key = r * n + c
        first = np.ones(key.size, dtype=bool)
        first[1:] = key[1:] != key[:-1]
        summed = np.zeros(int(first.sum()))
        np.add.at(summed, np.cumsum(first) - 1, v)
        r, c, v = r[first], c[first], summed
        keep = v != 0.0
        r, c, v = r[keep], c[keep], v[keep]
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.add.at(indptr, r + 1, 1)
    return np.cumsum(indptr), c, v


def matrix_triplets(W) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """``(n, rows, cols, vals)`` of the nonzeros of a square numpy array, torch tensor, nested
    list or scipy sparse matrix."""
    if hasattr(W, "tocoo"):  # scipy sparse
        coo = W.tocoo()
        if coo.shape[0] != coo.shape[1]:
            raise TopologyError(f"W must be square (n x n), got shape {coo.shape}.")
        return coo.shape[0], coo.row, coo.col, coo.data
    if hasattr(W, "detach"):  # torch tensor
        W = W.detach().cpu().numpy()
    try:
        W = np.asarray(W, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TopologyError(f"W must be a numeric n x n matrix: {exc}") from None
    if W.ndim != 2 or W.shape[0] != W.shape[1] or W.shape[0] < 1:
        raise TopologyError(f"W must be a square n x n matrix with n >= 1, got shape {W.shape}.")
    check_values(W.ravel())
    rows, cols = np.nonzero(W)
    return W.shape[0], rows, cols, W[rows, cols]


def circulant_triplets(
    n: int, shifts: Mapping[int, float]
) -> tuple[dict[int, float], np.ndarray, np.ndarray, np.ndarray]:
    """``(reduced, rows, cols, vals)``: the shifts reduced mod n (equal ones summed, zeros
    dropped) and the triplets ``W[i, (i - s) mod n] = w`` of every ``s -> w``."""
    reduced: dict[int, float] = {}
    for s, w in shifts.items():
        s = int(s) % n
        reduced[s] = reduced.get(s, 0.0) + float(w)
    reduced = {s: w for s, w in reduced.items() if w != 0.0}
    check_values(np.fromiter(reduced.values(), dtype=np.float64, count=len(reduced)))
    if not reduced:
        return reduced, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    i = np.arange(n)
    rows = np.concatenate([i for _ in reduced])
    cols = np.concatenate([(i - s) % n for s in reduced])
    vals = np.concatenate([np.full(n, w) for w in reduced.values()])
    return reduced, rows, cols, vals


def check_values(vals: np.ndarray) -> None:
    """A TopologyError unless every weight is finite and ``>= 0``."""
    if vals.size and not np.all(np.isfinite(vals)):
        raise TopologyError("W has NaN or infinite entries; mixing weights must be finite.")
    if vals.size and vals.min() < 0:
        raise TopologyError(
            f"W has a negative weight ({vals.min():.6g}); mixing weights must be >= 0. "
            "For Laplacian weights W = I - eps*L, choose eps <= 1/max_degree."
        )


def readonly(a: np.ndarray) -> np.ndarray:
    """``a``, made read-only (a topology's arrays are shared by every user of it)."""
    a.flags.writeable = False
    return a


def _array(x, dtype) -> np.ndarray:
    return np.asarray(x if isinstance(x, np.ndarray) else list(x), dtype=dtype)
