r"""The two kinds of topology: a static mixing matrix and a sequence of them.

Convention (one, everywhere in declearn): the mixing matrix ``W`` has **row i = receiver**,

.. math::  x_i \leftarrow \sum_j W_{ij}\, x_j ,

so node i receives from every j with ``W[i, j] > 0`` (its *in-neighbors*) and sends to every
j with ``W[j, i] > 0`` (its *out-neighbors*). BlueFog stores the transpose (row = sender);
:mod:`declearn.topology.convert` converts at that boundary.

``rho = ||W - 11^T/n||_2`` and ``spectral_gap = 1 - rho``.

Every topology answers ``.at(k)``: a static one returns itself, a dynamic one returns the
static :class:`Topology` used at iteration ``k``. Algorithms therefore never branch on
static vs dynamic.

Storage is sparse: ``W`` is kept as CSR arrays over receiver rows (``indptr``, ``indices``,
``data``), with the self weight stored like any other entry. Circulant topologies (ring,
exponential, one-peer exponential, ...) also record their ``shifts``: a mapping ``s -> w``
meaning ``W[i, (i - s) mod n] = w``, i.e. ``x_new = sum_s w * roll(x, s)``; the simulator
uses it to mix with shifted slices instead of a matrix product.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping

import numpy as np

from declearn.errors import TopologyError

__all__ = ["BaseTopology", "Topology", "DynamicTopology", "check_n"]

#: Tolerance for "rows (columns) sum to 1" and symmetry checks.
STOCHASTIC_ATOL = 1e-9


def check_n(n, *, minimum: int = 1, what: str = "n") -> int:
    """Return ``n`` as an int, or raise a TopologyError saying what a valid ``n`` is."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TopologyError(f"{what} must be an integer number of nodes, got {n!r}.")
    n = int(n)
    if n < minimum:
        raise TopologyError(f"{what} must be at least {minimum}, got {n}.")
    return n


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


class BaseTopology:
    """What static and dynamic topologies share: n, a name, ``at(k)``, rho and display."""

    n: int
    name: str
    _cache: dict

    @property
    def rho(self) -> float:
        """``||W - 11^T/n||_2`` for a static topology; the effective per-step contraction of a
        dynamic one (see :func:`declearn.topology.analysis.rho`)."""
        if "rho" not in self._cache:
            from declearn.topology.analysis import rho as _rho

            self._cache["rho"] = float(_rho(self))
        return self._cache["rho"]

    @property
    def spectral_gap(self) -> float:
        """``1 - rho``."""
        return 1.0 - self.rho

    def _repr_png_(self):
        from declearn.topology.draw import repr_png

        return repr_png(self)


class Topology(BaseTopology):
    """A static mixing pattern over nodes ``0..n-1``, given by its matrix ``W`` (row = receiver).

    Build one with a family function (``declearn.topology.ring(8)``), from a matrix
    (:meth:`from_matrix`), from shifts (:meth:`from_circulant`) or from networkx
    (:func:`declearn.topology.from_networkx`). Instances are immutable.
    """

    is_dynamic = False
    period = 1

    def __init__(
        self,
        n: int,
        indptr: np.ndarray,
        indices: np.ndarray,
        data: np.ndarray,
        *,
        name: str = "custom",
        params: Mapping | None = None,
        shifts: Mapping[int, float] | None = None,
    ):
        """Low-level constructor from canonical CSR arrays (sorted column indices per row,
        no duplicates, no explicit zeros). Prefer the ``from_*`` constructors."""
        self.n = check_n(n)
        self.indptr = _readonly(np.asarray(indptr, dtype=np.int64))
        self.indices = _readonly(np.asarray(indices, dtype=np.int64))
        self.data = _readonly(np.asarray(data, dtype=np.float64))
        self.name = str(name)
        self.params = dict(params or {})
        self.shifts = None if shifts is None else dict(sorted(shifts.items()))
        self._cache: dict = {}  # derived quantities and per-backend plans (see comm.sim)
        if self.indptr.shape != (self.n + 1,) or self.indices.shape != self.data.shape:
            raise TopologyError("Inconsistent CSR arrays for a topology; use Topology.from_matrix.")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_coo(
        cls,
        n: int,
        rows: Iterable[int],
        cols: Iterable[int],
        vals: Iterable[float],
        *,
        name: str = "custom",
        params: Mapping | None = None,
        shifts: Mapping[int, float] | None = None,
        weights: str | None = None,
        allow_disconnected: bool = True,
    ) -> Topology:
        """Build from triplets ``W[rows[k], cols[k]] += vals[k]`` (duplicates are summed).

        ``weights`` asks for a check: ``"receiver"`` (rows sum to 1), ``"sender"`` (columns
        sum to 1), ``"doubly"`` (both) or ``None`` (no check).
        """
        n = check_n(n)
        rows = np.asarray(list(rows) if not isinstance(rows, np.ndarray) else rows, dtype=np.int64)
        cols = np.asarray(list(cols) if not isinstance(cols, np.ndarray) else cols, dtype=np.int64)
        vals = np.asarray(list(vals) if not isinstance(vals, np.ndarray) else vals,
                          dtype=np.float64)
        if not (rows.shape == cols.shape == vals.shape) or rows.ndim != 1:
            raise TopologyError("rows, cols and vals must be 1-D sequences of the same length.")
        if rows.size and (rows.min() < 0 or rows.max() >= n or cols.min() < 0 or cols.max() >= n):
            raise TopologyError(f"Node indices must lie in 0..{n - 1} for n = {n}.")
        _check_values(vals)
        order = np.lexsort((cols, rows))
        rows, cols, vals = rows[order], cols[order], vals[order]
        if rows.size:
            key = rows * n + cols
            first = np.ones(key.size, dtype=bool)
            first[1:] = key[1:] != key[:-1]
            group = np.cumsum(first) - 1
            summed = np.zeros(int(first.sum()))
            np.add.at(summed, group, vals)
            rows, cols, vals = rows[first], cols[first], summed
            keep = vals != 0.0
            rows, cols, vals = rows[keep], cols[keep], vals[keep]
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.add.at(indptr, rows + 1, 1)
        indptr = np.cumsum(indptr)
        topo = cls(n, indptr, cols, vals, name=name, params=params, shifts=shifts)
        topo._check(weights=weights, allow_disconnected=allow_disconnected)
        return topo

    @classmethod
    def from_matrix(
        cls,
        W,
        *,
        name: str = "custom",
        params: Mapping | None = None,
        weights: str | None = "receiver",
        allow_disconnected: bool = False,
    ) -> Topology:
        """Build from a dense matrix (numpy, torch, nested lists) or a scipy sparse matrix.

        By default the rows must sum to 1 (``weights="receiver"``) and the graph must be
        strongly connected; pass ``weights="sender"`` for column-stochastic (push-sum) weights,
        ``"doubly"`` to require both, ``None`` to skip the check, and
        ``allow_disconnected=True`` for a matrix that is one step of a dynamic sequence.
        """
        if hasattr(W, "tocoo"):  # scipy sparse
            coo = W.tocoo()
            if coo.shape[0] != coo.shape[1]:
                raise TopologyError(f"W must be square (n x n), got shape {coo.shape}.")
            return cls.from_coo(
                coo.shape[0], coo.row, coo.col, coo.data, name=name, params=params,
                weights=weights, allow_disconnected=allow_disconnected,
            )
        if hasattr(W, "detach"):  # torch tensor
            W = W.detach().cpu().numpy()
        try:
            W = np.asarray(W, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TopologyError(f"W must be a numeric n x n matrix: {exc}") from None
        if W.ndim != 2 or W.shape[0] != W.shape[1] or W.shape[0] < 1:
            raise TopologyError(
                f"W must be a square n x n matrix with n >= 1, got shape {W.shape}.")
        _check_values(W.ravel())
        rows, cols = np.nonzero(W)
        return cls.from_coo(
            W.shape[0], rows, cols, W[rows, cols], name=name, params=params,
            weights=weights, allow_disconnected=allow_disconnected,
        )

    @classmethod
    def from_circulant(
        cls,
        n: int,
        shifts: Mapping[int, float],
        *,
        name: str = "circulant",
        params: Mapping | None = None,
        weights: str | None = None,
        allow_disconnected: bool = True,
    ) -> Topology:
        """Circulant W: ``W[i, (i - s) mod n] = w`` for every ``s -> w`` in ``shifts``.

        In words: node i receives from node i - s, so ``x_new = sum_s w * roll(x, s)``. Shifts
        are reduced mod n and equal ones are summed.
        """
        n = check_n(n)
        reduced: dict[int, float] = {}
        for s, w in shifts.items():
            s = int(s) % n
            reduced[s] = reduced.get(s, 0.0) + float(w)
        reduced = {s: w for s, w in reduced.items() if w != 0.0}
        _check_values(np.fromiter(reduced.values(), dtype=np.float64, count=len(reduced)))
        i = np.arange(n)
        rows = np.concatenate([i for _ in reduced]) if reduced else np.zeros(0, np.int64)
        cols = (
            np.concatenate([(i - s) % n for s in reduced]) if reduced else np.zeros(0, np.int64)
        )
        vals = (
            np.concatenate([np.full(n, w) for w in reduced.values()])
            if reduced else np.zeros(0)
        )
        return cls.from_coo(
            n, rows, cols, vals, name=name, params=params, shifts=reduced,
            weights=weights, allow_disconnected=allow_disconnected,
        )

    # ------------------------------------------------------------------ the matrix
    @property
    def W(self) -> np.ndarray:
        """Dense mixing matrix, row i = receiver (a read-only float64 array)."""
        if "W" not in self._cache:
            W = np.zeros((self.n, self.n))
            W[self.rows, self.indices] = self.data
            self._cache["W"] = _readonly(W)
        return self._cache["W"]

    @property
    def rows(self) -> np.ndarray:
        """Receiver index of every stored entry (COO rows matching ``indices``/``data``)."""
        if "rows" not in self._cache:
            self._cache["rows"] = _readonly(
                np.repeat(np.arange(self.n, dtype=np.int64), np.diff(self.indptr))
            )
        return self._cache["rows"]

    @property
    def nnz(self) -> int:
        return int(self.data.size)

    def at(self, k: int) -> Topology:
        """The topology used at iteration k: a static topology is the same at every k."""
        _check_iteration(k)
        return self

    # ------------------------------------------------------------------ neighbors
    def in_neighbors(self, i: int) -> np.ndarray:
        """Nodes j != i that i receives from (``W[i, j] > 0``), ascending."""
        i = self._node(i)
        cols = self.indices[self.indptr[i]:self.indptr[i + 1]]
        return cols[cols != i]

    def out_neighbors(self, i: int) -> np.ndarray:
        """Nodes j != i that i sends to (``W[j, i] > 0``), ascending."""
        i = self._node(i)
        return self._out_lists()[i]

    def in_weights(self, i: int) -> dict[int, float]:
        """``{j: W[i, j]}`` over in-neighbors j != i."""
        i = self._node(i)
        lo, hi = self.indptr[i], self.indptr[i + 1]
        return {int(j): float(w) for j, w in zip(self.indices[lo:hi], self.data[lo:hi]) if j != i}

    def self_weight(self, i: int) -> float:
        """``W[i, i]``."""
        i = self._node(i)
        lo, hi = self.indptr[i], self.indptr[i + 1]
        hit = np.nonzero(self.indices[lo:hi] == i)[0]
        return float(self.data[lo + hit[0]]) if hit.size else 0.0

    @property
    def in_degrees(self) -> np.ndarray:
        """Number of in-neighbors of each node, self excluded."""
        if "in_deg" not in self._cache:
            has_self = np.zeros(self.n, dtype=np.int64)
            has_self[self.rows[self.rows == self.indices]] = 1
            self._cache["in_deg"] = _readonly(np.diff(self.indptr) - has_self)
        return self._cache["in_deg"]

    @property
    def out_degrees(self) -> np.ndarray:
        """Number of out-neighbors of each node, self excluded."""
        if "out_deg" not in self._cache:
            off = self.rows != self.indices
            self._cache["out_deg"] = _readonly(
                np.bincount(self.indices[off], minlength=self.n).astype(np.int64)
            )
        return self._cache["out_deg"]

    @property
    def degree(self) -> int:
        """Messages sent per node per iteration by the busiest node (max out-degree)."""
        return int(self.out_degrees.max()) if self.n > 1 else 0

    # ------------------------------------------------------------------ properties
    @property
    def row_sums(self) -> np.ndarray:
        return np.bincount(self.rows, weights=self.data, minlength=self.n)

    @property
    def col_sums(self) -> np.ndarray:
        return np.bincount(self.indices, weights=self.data, minlength=self.n)

    @property
    def is_row_stochastic(self) -> bool:
        """Rows sum to 1: receiver-side weights, ``x_i`` becomes a convex combination."""
        return bool(np.allclose(self.row_sums, 1.0, rtol=0.0, atol=STOCHASTIC_ATOL))

    @property
    def is_column_stochastic(self) -> bool:
        """Columns sum to 1: sender-side weights, the sum ``sum_i x_i`` is conserved."""
        return bool(np.allclose(self.col_sums, 1.0, rtol=0.0, atol=STOCHASTIC_ATOL))

    @property
    def is_doubly_stochastic(self) -> bool:
        return self.is_row_stochastic and self.is_column_stochastic

    @property
    def is_symmetric(self) -> bool:
        if "sym" not in self._cache:
            a = self._coo_key()
            b = self.indices * self.n + self.rows
            order = np.argsort(b, kind="stable")
            self._cache["sym"] = bool(
                np.array_equal(a, b[order])
                and np.allclose(self.data, self.data[order], rtol=0.0, atol=STOCHASTIC_ATOL)
            )
        return self._cache["sym"]

    @property
    def is_connected(self) -> bool:
        """Whether information from every node reaches every other (strong connectivity)."""
        if "connected" not in self._cache:
            from scipy.sparse import csr_matrix
            from scipy.sparse.csgraph import connected_components

            A = csr_matrix((self.data, self.indices, self.indptr), shape=(self.n, self.n))
            k, _ = connected_components(A, directed=True, connection="strong")
            self._cache["connected"] = bool(k == 1)
        return self._cache["connected"]

    # ------------------------------------------------------------------ helpers
    def lazy(self) -> Topology:
        """The lazy topology ``(I + W) / 2``: same graph, eigenvalues moved into [0, 1]."""
        from declearn.topology.weights import lazy

        return lazy(self)

    def check_weights(self, weights: str = "receiver") -> Topology:
        """Raise a TopologyError unless the weights suit ``weights`` ("receiver": rows sum to
        1; "sender": columns sum to 1; "doubly": both). Returns self."""
        self._check(weights=weights, allow_disconnected=True)
        return self

    def draw(self, ax=None, **kwargs):
        """Draw the graph with n, degree and rho in the title; returns the matplotlib Figure."""
        from declearn.topology.draw import draw

        return draw(self, ax=ax, **kwargs)

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.params.items())
        return f"<Topology {self.name}(n={self.n}{extra}): degree {self.degree}, nnz {self.nnz}>"

    def _node(self, i) -> int:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral) or not 0 <= i < self.n:
            raise TopologyError(f"Node index must be an integer in 0..{self.n - 1}, got {i!r}.")
        return int(i)

    def _coo_key(self) -> np.ndarray:
        return self.rows * self.n + self.indices

    def _out_lists(self) -> list[np.ndarray]:
        if "out_lists" not in self._cache:
            off = self.rows != self.indices
            src, dst = self.indices[off], self.rows[off]
            order = np.lexsort((dst, src))
            src, dst = src[order], dst[order]
            bounds = np.searchsorted(src, np.arange(self.n + 1))
            self._cache["out_lists"] = [
                _readonly(dst[bounds[i]:bounds[i + 1]].copy()) for i in range(self.n)
            ]
        return self._cache["out_lists"]

    def _check(self, *, weights: str | None, allow_disconnected: bool) -> None:
        if weights not in (None, "receiver", "sender", "doubly"):
            raise TopologyError(
                f"weights must be 'receiver', 'sender', 'doubly' or None, got {weights!r}."
            )
        if weights in ("receiver", "doubly") and not self.is_row_stochastic:
            bad = np.nonzero(~np.isclose(self.row_sums, 1.0, rtol=0.0, atol=STOCHASTIC_ATOL))[0]
            raise TopologyError(
                f"Rows of W must sum to 1 for receiver-side weights, but row {bad[0]} of "
                f"{self.name} sums to {self.row_sums[bad[0]]:.6g} ({bad.size} rows are off). "
                "Normalise the rows, or pass weights='sender' if the columns sum to 1 (push-sum)."
            )
        if weights in ("sender", "doubly") and not self.is_column_stochastic:
            bad = np.nonzero(~np.isclose(self.col_sums, 1.0, rtol=0.0, atol=STOCHASTIC_ATOL))[0]
            raise TopologyError(
                f"Columns of W must sum to 1 for sender-side weights, but column {bad[0]} of "
                f"{self.name} sums to {self.col_sums[bad[0]]:.6g} ({bad.size} columns are off). "
                "Normalise the columns, or pass weights='receiver' if the rows sum to 1."
            )
        if not allow_disconnected and self.n > 1 and not self.is_connected:
            raise TopologyError(
                f"The graph of {self.name} (n={self.n}) is not connected: some nodes never hear "
                "from others, so they cannot agree. Add edges (or raise the edge probability or "
                "radius), or pass allow_disconnected=True for one step of a dynamic topology."
            )


class DynamicTopology(BaseTopology):
    """A sequence of topologies ``W(0), W(1), ...``; ``.at(k)`` gives the one of iteration k.

    Subclasses implement :meth:`_step` (which must be a pure function of ``k`` and the
    constructor's arguments, so that every MPI rank builds the same ``W(k)`` without talking)
    and set ``period`` (an int, or None for a random sequence).
    """

    is_dynamic = True

    def __init__(self, n: int, *, name: str, params: Mapping | None = None, period: int | None):
        self.n = check_n(n)
        self.name = str(name)
        self.params = dict(params or {})
        self.period = period
        self._steps: dict[int, Topology] = {}
        self._cache: dict = {}

    def at(self, k: int) -> Topology:
        """The static topology used at iteration ``k`` (k = 0, 1, 2, ...)."""
        k = _check_iteration(k)
        key = k % self.period if self.period else k
        topo = self._steps.get(key)
        if topo is None:
            topo = self._step(key)
            if self.period or len(self._steps) < 4096:
                self._steps[key] = topo
        return topo

    def _step(self, k: int) -> Topology:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def degree(self) -> int:
        """Messages sent per node per iteration by the busiest node, over one period (or the
        first 64 steps of a random sequence)."""
        if "degree" not in self._cache:
            steps = self.period or 64
            self._cache["degree"] = max(self.at(k).degree for k in range(steps))
        return self._cache["degree"]

    def product(self, start: int = 0, length: int | None = None) -> np.ndarray:
        """``W(start + length - 1) @ ... @ W(start)`` (length defaults to the period)."""
        from declearn.topology.analysis import product

        return product(self, start=start, length=length)

    def draw(self, ax=None, k: int = 0, **kwargs):
        from declearn.topology.draw import draw

        return draw(self, ax=ax, k=k, **kwargs)

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.params.items())
        per = f"period {self.period}" if self.period else "random sequence"
        return f"<DynamicTopology {self.name}(n={self.n}{extra}): {per}>"


def _check_iteration(k) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
        raise TopologyError(f"Iteration k must be a non-negative integer, got {k!r}.")
    return int(k)


def _check_values(vals: np.ndarray) -> None:
    if vals.size and not np.all(np.isfinite(vals)):
        raise TopologyError("W has NaN or infinite entries; mixing weights must be finite.")
    if vals.size and vals.min() < 0:
        raise TopologyError(
            f"W has a negative weight ({vals.min():.6g}); mixing weights must be >= 0. "
            "For Laplacian weights W = I - eps*L, choose eps <= 1/max_degree."
        )
