r"""Does W have the normalisation a method relies on? The one check, and what its errors say.

The three kinds (``Topology.require(kind)``, and the constructors' ``stochastic=kind``), with
row i of W = receiver i:

- ``"row"``: ``W 1 = 1``. Receiver-side weights: each receiver takes a convex combination of
  what it hears (``neighbor_allreduce(..., weights="receiver")``, the default).
- ``"column"``: ``1^T W = 1^T``. Sender-side weights: each sender splits what it holds, so
  ``sum_i x_i`` is kept (push-sum; ``neighbor_allreduce(..., weights="sender")``).
- ``"doubly"``: both, so the average over nodes is kept at every step (DGD, gradient tracking,
  exact diffusion, ...).

A sum counts as 1 within :data:`STOCHASTIC_ATOL`. This module reads only ``row_sums``,
``col_sums`` and ``name`` of a topology, so the topology classes can use it without an import
back.
"""

from __future__ import annotations

import numpy as np

from declearn.errors import TopologyError

__all__ = ["STOCHASTIC_ATOL", "KINDS", "OLD_NAMES", "check_kind", "stochastic_error"]

#: Tolerance for "rows (columns) sum to 1" and symmetry checks.
STOCHASTIC_ATOL = 1e-9
#: What ``Topology.require`` and ``stochastic=`` accept.
KINDS = ("row", "column", "doubly")
#: The kinds under their old ``weights=`` names (the deprecated keyword of the constructors).
OLD_NAMES = {"receiver": "row", "sender": "column", "doubly": "doubly"}

_DOUBLY_FIX = (
    "Metropolis weights (rule='metropolis', the default of grid, erdos_renyi, geometric and the "
    "trees; apply_weights(n, edges, 'metropolis') for your own graph) are doubly stochastic on "
    "any undirected graph. On a directed graph, use column-stochastic weights with a push-sum "
    "method (PushSumConsensus, PushDIGing)."
)


def check_kind(kind, *, what: str = "require()", none: bool = False) -> str:
    """``kind`` if it is one of :data:`KINDS`, else a TopologyError in this vocabulary that
    translates an old name (``"receiver"`` -> ``"row"``); ``none`` adds None to the words
    the message lists (for ``stochastic=``, where None means no check)."""
    if kind in KINDS:
        return kind
    allowed = "'row', 'column', 'doubly'" + (" or None" if none else "")
    hint = ""
    if isinstance(kind, str) and kind in OLD_NAMES:
        hint = f" ({kind!r} is the old name of {OLD_NAMES[kind]!r}.)"
    raise TopologyError(
        f"{what} takes {allowed}: which sums of W must be 1 (rows: receiver-side weights; "
        f"columns: sender-side, push-sum; doubly: both), got {kind!r}.{hint}"
    )


def stochastic_error(topology, kind: str) -> TopologyError | None:
    """None when W is ``kind``-stochastic, else the error to raise: which row or column is off,
    by how much, and what to use instead."""
    rows_ok = kind == "column" or _all_one(topology.row_sums)
    cols_ok = kind == "row" or _all_one(topology.col_sums)
    if rows_ok and cols_ok:
        return None
    axis, sums = ("row", topology.row_sums) if not rows_ok else ("column", topology.col_sums)
    off = np.nonzero(~_ones(sums))[0]
    where = (f"{axis} {off[0]} of {topology.name} sums to {sums[off[0]]:.6g} ({off.size} "
             f"{axis}s are off)")
    if kind == "doubly":
        return TopologyError(
            f"{axis.capitalize()}s of W must sum to 1 for a doubly stochastic W (require('doubly'):"
            f" rows and columns, so the average over nodes is kept), but {where}. {_DOUBLY_FIX}"
        )
    if kind == "row":
        return TopologyError(
            f"Rows of W must sum to 1 for receiver-side weights (require('row')), but {where}. "
            "Normalise the rows (W / W.sum(axis=1, keepdims=True)). If it is the columns that "
            "sum to 1, W is for sender-side mixing: declare it with stochastic='column' and mix "
            "with neighbor_allreduce(..., weights='sender') or a push-sum method "
            "(PushSumConsensus, PushDIGing)."
        )
    return TopologyError(
        f"Columns of W must sum to 1 for sender-side weights (require('column'), push-sum), but "
        f"{where}. Normalise the columns (W / W.sum(axis=0, keepdims=True)), or build W with "
        "rule='uniform_out' (each sender splits evenly). If it is the rows that sum to 1, W is "
        "for receiver-side mixing: declare it with stochastic='row' and mix with "
        "weights='receiver'."
    )


def _ones(sums: np.ndarray) -> np.ndarray:
    return np.isclose(sums, 1.0, rtol=0.0, atol=STOCHASTIC_ATOL)


def _all_one(sums: np.ndarray) -> bool:
    return bool(np.allclose(sums, 1.0, rtol=0.0, atol=STOCHASTIC_ATOL))
