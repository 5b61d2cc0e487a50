"""What a run records, and its plot in one call.

Every :class:`~declearn.algorithms.base.Algorithm` appends one row per log point:

* ``iteration`` k;
* ``consensus_error`` = ``(1/n) sum_i ||x_i - x_bar||^2`` (how far the nodes disagree);
* ``suboptimality`` = ``f(x_bar) - f*`` (NaN when the problem's optimum is unknown);
* ``grad_norm`` = ``||grad f(x_bar)||`` (exact gradient; NaN without a problem);
* ``messages`` and ``bytes``: sent per node so far by the algorithm (mean over nodes;
  measurement traffic is not counted);
* ``wall_time``: seconds spent in ``run`` so far (on this process).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["History", "COLUMNS", "plot_histories"]

COLUMNS = (
    "iteration", "consensus_error", "suboptimality", "grad_norm", "messages", "bytes",
    "wall_time",
)

_LABELS = {
    "iteration": "iteration k",
    "consensus_error": r"consensus error $\frac{1}{n}\sum_i \|x_i - \bar{x}\|^2$",
    "suboptimality": r"$f(\bar{x}) - f^\star$",
    "grad_norm": r"$\|\nabla f(\bar{x})\|$",
    "messages": "messages sent per node",
    "bytes": "bytes sent per node",
    "wall_time": "wall time [s]",
}


class History:
    """Rows of metrics of one run (see the module docstring); ``h["suboptimality"]`` is a numpy
    array, ``h.last`` the latest row, ``h.plot()`` a figure."""

    def __init__(self, name: str, params: dict | None = None):
        self.name = name
        self.params = dict(params or {})
        self._rows: dict[str, list] = {c: [] for c in COLUMNS}

    def append(self, **row) -> None:
        unknown = set(row) - set(COLUMNS)
        if unknown:
            raise KeyError(f"Unknown history columns {sorted(unknown)}; known: {COLUMNS}.")
        for c in COLUMNS:
            self._rows[c].append(row.get(c, math.nan))

    def drop_after(self, k: int) -> None:
        """Drop the rows of iterations past ``k`` (after a roll-back to iteration k)."""
        keep = sum(1 for it in self._rows["iteration"] if it <= k)
        if keep < len(self):
            for column in self._rows.values():
                del column[keep:]

    def __len__(self) -> int:
        return len(self._rows["iteration"])

    def __getitem__(self, column: str) -> np.ndarray:
        if column not in self._rows:
            raise KeyError(f"Unknown history column {column!r}; known: {COLUMNS}.")
        return np.asarray(self._rows[column], dtype=float)

    @property
    def last(self) -> dict:
        """The latest row as a dict (empty before the first log point)."""
        return {c: v[-1] for c, v in self._rows.items()} if len(self) else {}

    def to_dict(self) -> dict:
        """Columns as lists, plus the run's name and parameters (JSON-friendly)."""
        return {"name": self.name, "params": dict(self.params),
                **{c: list(map(float, v)) for c, v in self._rows.items()}}

    def plot(self, y=("suboptimality", "consensus_error"), x: str = "iteration", ax=None,
             label: str | None = None, logy: bool = True):
        """Plot the columns ``y`` against ``x``; returns the matplotlib Figure."""
        return plot_histories([self], y=y, x=x, ax=ax, labels=[label] if label else None,
                              logy=logy)

    def __repr__(self) -> str:
        last = self.last
        if not last:
            return f"<History {self.name}: empty>"
        shown = ", ".join(
            f"{c}={last[c]:.3g}" for c in ("consensus_error", "suboptimality")
            if not math.isnan(last[c])
        )
        return f"<History {self.name}: {len(self)} rows, k={int(last['iteration'])}, {shown}>"


def plot_histories(histories, y=("suboptimality", "consensus_error"), x: str = "iteration",
                   ax=None, labels=None, logy: bool = True):
    """Several runs on shared axes, one panel per column of ``y``; returns the Figure.

    Columns that are NaN in every run (e.g. the suboptimality of a consensus run) are skipped.
    """
    from matplotlib.figure import Figure

    ys = [y] if isinstance(y, str) else list(y)
    ys = [c for c in ys if any(np.isfinite(h[c]).any() for h in histories)] or ys[:1]
    if ax is None:
        fig = Figure(figsize=(4.2 * len(ys), 3.2), layout="constrained")
        axes = fig.subplots(1, len(ys), squeeze=False)[0]
    else:
        axes = np.atleast_1d(ax)
        fig = axes[0].figure
    labels = labels or [h.name for h in histories]
    for a, col in zip(axes, ys):
        for h, lab in zip(histories, labels):
            vals = h[col]
            if logy:
                vals = np.where(vals > 0, vals, np.nan)  # log axes cannot show 0
            a.plot(h[x], vals, label=lab)
        if logy:
            a.set_yscale("log")
        a.set_xlabel(_LABELS.get(x, x))
        a.set_ylabel(_LABELS.get(col, col))
        a.grid(True, which="major", alpha=0.3)
    if len(histories) > 1 or labels != [h.name for h in histories]:
        axes[0].legend()
    return fig
