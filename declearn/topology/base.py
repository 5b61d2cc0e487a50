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

Whatever is derived from a topology (its spectrum, a passed check, a backend's communication
plan) is computed once and kept on it with :meth:`BaseTopology.memo`; the stochasticity a
method relies on is checked with :meth:`Topology.require`.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterable, Mapping

import numpy as np

from declearn._deprecation import renamed_keyword
from declearn.errors import TopologyError
from declearn.topology import spectral
from declearn.topology.csr import canonical_csr, circulant_triplets, matrix_triplets, readonly
from declearn.topology.memo import memoized
from declearn.topology.stochastic import (
    OLD_NAMES,
    STOCHASTIC_ATOL,
    check_kind,
    stochastic_error,
)

__all__ = ["BaseTopology", "Topology", "DynamicTopology", "LazyDynamicTopology", "check_n"]

#: The constructors' ``weights=`` is now ``stochastic=``, with the kinds' new names.
_OLD_STOCHASTIC = renamed_keyword("weights", "stochastic", values=OLD_NAMES)


def check_n(n, *, minimum: int = 1, what: str = "n") -> int:
    """Return ``n`` as an int, or raise a TopologyError saying what a valid ``n`` is."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TopologyError(f"{what} must be an integer number of nodes, got {n!r}.")
    n = int(n)
    if n < minimum:
        raise TopologyError(f"{what} must be at least {minimum}, got {n}.")
    return n


class BaseTopology:
    """What static and dynamic topologies share: n, a name, ``at(k)``, rho and display."""

    n: int
    name: str
    _cache: dict

    @memoized("rho")
    def rho(self) -> float:
        """``||W - 11^T/n||_2`` for a static topology; the effective per-step contraction of a
        dynamic one (see :func:`declearn.topology.analysis.rho`)."""
        return float(spectral.rho(self))

    @property
    def spectral_gap(self) -> float:
        """``1 - rho``."""
        return 1.0 - self.rho

    def memo(self, key, build):
        """The value kept under ``key``, made by ``build()`` the first time it is asked for.

        Topologies are immutable, so whatever is derived from one (its spectrum, a backend's
        communication plan, a passed check) is computed once and kept here. This is the one
        way other modules store things on a topology: name keys after the owner
        (``"sim.plan"``, ``"mpi.plan"``), and never write the cache directly. If ``build``
        raises, nothing is kept (the next call tries again)."""
        cache = self._cache
        try:
            return cache[key]
        except KeyError:
            value = cache[key] = build()
            return value

    def recall(self, key, default=None):
        """What :meth:`memo` keeps under ``key``, or ``default``: never builds it (e.g. a
        picture's caption shows rho only if it is known)."""
        return self._cache.get(key, default)

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
        self.indptr = readonly(np.asarray(indptr, dtype=np.int64))
        self.indices = readonly(np.asarray(indices, dtype=np.int64))
        self.data = readonly(np.asarray(data, dtype=np.float64))
        self.name = str(name)
        self.params = dict(params or {})
        self.shifts = None if shifts is None else dict(sorted(shifts.items()))
        self._cache: dict = {}  # derived quantities and per-backend plans (see comm.sim)
        if self.indptr.shape != (self.n + 1,) or self.indices.shape != self.data.shape:
            raise TopologyError("Inconsistent CSR arrays for a topology; use Topology.from_matrix.")

    # ------------------------------------------------------------------ constructors
    @classmethod
    @_OLD_STOCHASTIC
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
        stochastic: str | None = None,
        allow_disconnected: bool = True,
    ) -> Topology:
        """Build from triplets ``W[rows[k], cols[k]] += vals[k]`` (duplicates are summed).

        ``stochastic`` declares W's normalisation, checked here: ``"row"`` (rows sum to 1),
        ``"column"`` (columns sum to 1), ``"doubly"`` (both) or ``None`` (no check). It was
        called ``weights=`` (``"receiver"``, ``"sender"``, ``"doubly"``), still accepted with a
        DeprecationWarning.
        """
        n = check_n(n)
        indptr, cols, vals = canonical_csr(n, rows, cols, vals)
        topo = cls(n, indptr, cols, vals, name=name, params=params, shifts=shifts)
        topo._check(stochastic=stochastic, allow_disconnected=allow_disconnected)
        return topo

    @classmethod
    @_OLD_STOCHASTIC
    def from_matrix(
        cls,
        W,
        *,
        name: str = "custom",
        params: Mapping | None = None,
        stochastic: str | None = "row",
        allow_disconnected: bool = False,
    ) -> Topology:
        """Build from a dense matrix (numpy, torch, nested lists) or a scipy sparse matrix.

        By default the rows must sum to 1 (``stochastic="row"``) and the graph must be
        strongly connected; pass ``stochastic="column"`` for column-stochastic (push-sum)
        weights, ``"doubly"`` to require both, ``None`` to skip the check, and
        ``allow_disconnected=True`` for a matrix that is one step of a dynamic sequence.
        (``weights="receiver"``/``"sender"``/``"doubly"`` is the deprecated old spelling.)
        """
        n, rows, cols, vals = matrix_triplets(W)
        return cls.from_coo(
            n, rows, cols, vals, name=name, params=params,
            stochastic=stochastic, allow_disconnected=allow_disconnected,
        )

    @classmethod
    @_OLD_STOCHASTIC
    def from_circulant(
        cls,
        n: int,
        shifts: Mapping[int, float],
        *,
        name: str = "circulant",
        params: Mapping | None = None,
        stochastic: str | None = None,
        allow_disconnected: bool = True,
    ) -> Topology:
        """Circulant W: ``W[i, (i - s) mod n] = w`` for every ``s -> w`` in ``shifts``.

        In words: node i receives from node i - s, so ``x_new = sum_s w * roll(x, s)``. Shifts
        are reduced mod n and equal ones are summed. ``stochastic`` as in :meth:`from_coo`.
        """
        n = check_n(n)
        reduced, rows, cols, vals = circulant_triplets(n, shifts)
        return cls.from_coo(
            n, rows, cols, vals, name=name, params=params, shifts=reduced,
            stochastic=stochastic, allow_disconnected=allow_disconnected,
        )

    # ------------------------------------------------------------------ the matrix
    @memoized("W")
    def W(self) -> np.ndarray:
        """Dense mixing matrix, row i = receiver (a read-only float64 array)."""
        W = np.zeros((self.n, self.n))
        W[self.rows, self.indices] = self.data
        return readonly(W)

    @memoized("rows")
    def rows(self) -> np.ndarray:
        """Receiver index of every stored entry (COO rows matching ``indices``/``data``)."""
        return readonly(np.repeat(np.arange(self.n, dtype=np.int64), np.diff(self.indptr)))

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

    @memoized("in_deg")
    def in_degrees(self) -> np.ndarray:
        """Number of in-neighbors of each node, self excluded."""
        has_self = np.zeros(self.n, dtype=np.int64)
        has_self[self.rows[self.rows == self.indices]] = 1
        return readonly(np.diff(self.indptr) - has_self)

    @memoized("out_deg")
    def out_degrees(self) -> np.ndarray:
        """Number of out-neighbors of each node, self excluded."""
        off = self.rows != self.indices
        return readonly(np.bincount(self.indices[off], minlength=self.n).astype(np.int64))

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

    @memoized("sym")
    def is_symmetric(self) -> bool:
        a = self._coo_key()
        b = self.indices * self.n + self.rows
        order = np.argsort(b, kind="stable")
        return bool(
            np.array_equal(a, b[order])
            and np.allclose(self.data, self.data[order], rtol=0.0, atol=STOCHASTIC_ATOL)
        )

    @memoized("connected")
    def is_connected(self) -> bool:
        """Whether information from every node reaches every other (strong connectivity)."""
        from scipy.sparse.csgraph import connected_components

        k, _ = connected_components(spectral.csr(self), directed=True, connection="strong")
        return bool(k == 1)

    # ------------------------------------------------------------------ helpers
    def lazy(self) -> Topology:
        """The lazy topology ``(I + W) / 2``: same graph, eigenvalues of a symmetric W moved
        into ``[0, 1]``; a circulant keeps its shifts (see :func:`declearn.topology.lazy`)."""
        name, params = f"lazy({self.name})", dict(self.params)
        if self.shifts is not None:
            shifts = {s: w / 2.0 for s, w in self.shifts.items()}
            shifts[0] = shifts.get(0, 0.0) + 0.5
            return Topology.from_circulant(self.n, shifts, name=name, params=params)
        diag = np.arange(self.n)
        return Topology.from_coo(
            self.n,
            np.concatenate([self.rows, diag]),
            np.concatenate([self.indices, diag]),
            np.concatenate([self.data / 2.0, np.full(self.n, 0.5)]),
            name=name, params=params,
        )

    def require(self, kind: str) -> Topology:
        """This topology, once its W is known to be ``kind``-stochastic, else a TopologyError
        saying which row or column is off and what to use instead. Remembered per topology.

        ``kind`` is ``"row"`` (every row of W sums to 1: receivers average what they get,
        ``neighbor_allreduce(..., weights="receiver")``), ``"column"`` (every column sums to 1:
        senders split what they hold, ``weights="sender"``, push-sum) or ``"doubly"`` (both:
        the average over nodes is kept)."""
        kind = check_kind(kind)

        def passes() -> bool:
            error = stochastic_error(self, kind)
            if error is not None:
                raise error
            if kind == "doubly":  # which says that rows and columns pass
                self.memo(("require", "row"), lambda: True)
                self.memo(("require", "column"), lambda: True)
            return True

        self.memo(("require", kind), passes)
        return self

    def check_weights(self, weights: str = "receiver") -> Topology:
        """Deprecated spelling of :meth:`require`: ``"receiver"`` is ``require("row")``,
        ``"sender"`` is ``require("column")``, ``"doubly"`` is ``require("doubly")``."""
        if weights not in OLD_NAMES:
            raise TopologyError(
                f"check_weights() takes 'receiver', 'sender' or 'doubly', got {weights!r}; "
                "it is the old name of require('row' | 'column' | 'doubly')."
            )
        warnings.warn(f"check_weights({weights!r}) is deprecated: write "
                      f"require({OLD_NAMES[weights]!r}).", DeprecationWarning, stacklevel=2)
        return self.require(OLD_NAMES[weights])

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
        return self._out_neighbor_lists

    @memoized("out_lists")
    def _out_neighbor_lists(self) -> list[np.ndarray]:
        off = self.rows != self.indices
        src, dst = self.indices[off], self.rows[off]
        order = np.lexsort((dst, src))
        src, dst = src[order], dst[order]
        bounds = np.searchsorted(src, np.arange(self.n + 1))
        return [readonly(dst[bounds[i]:bounds[i + 1]].copy()) for i in range(self.n)]

    def _check(self, *, stochastic: str | None, allow_disconnected: bool) -> None:
        """The constructors' checks: the declared normalisation, then connectivity."""
        if stochastic is not None:
            self.require(check_kind(stochastic, what="stochastic=", none=True))
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

    @memoized("degree")
    def degree(self) -> int:
        """Messages sent per node per iteration by the busiest node, over one period (or the
        first 64 steps of a random sequence)."""
        return max(self.at(k).degree for k in range(self.period or 64))

    def product(self, start: int = 0, length: int | None = None) -> np.ndarray:
        """``W(start + length - 1) @ ... @ W(start)`` (length defaults to the period)."""
        return spectral.product(self, start=start, length=length)

    def lazy(self) -> LazyDynamicTopology:
        """The sequence of lazy steps ``(I + W(k)) / 2`` (same period)."""
        return LazyDynamicTopology(self)

    def _exact_mean_square_contraction(self) -> float | None:
        """``lambda_max(P E[W^T W] P)`` of a random sequence when its family has a closed form
        (EquiDyn does); None means: estimate it from sampled steps."""
        return None

    def draw(self, ax=None, k: int = 0, **kwargs):
        from declearn.topology.draw import draw

        return draw(self, ax=ax, k=k, **kwargs)

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self.params.items())
        per = f"period {self.period}" if self.period else "random sequence"
        return f"<DynamicTopology {self.name}(n={self.n}{extra}): {per}>"


class LazyDynamicTopology(DynamicTopology):
    """``W(k) = (I + B(k)) / 2`` for a dynamic base topology ``B`` (same period)."""

    def __init__(self, base: DynamicTopology):
        super().__init__(base.n, name=f"lazy({base.name})", params=base.params, period=base.period)
        self.base = base

    def _step(self, k: int) -> Topology:
        return self.base.at(k).lazy()


def _check_iteration(k) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
        raise TopologyError(f"Iteration k must be a non-negative integer, got {k!r}.")
    return int(k)
