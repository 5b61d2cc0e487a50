r"""SpectralGapExplorer: how the spectral gap of each topology family scales with n.

What it teaches: the gap ``1 - rho`` (``rho = ||W - 11^T/n||_2``; for a dynamic family the
effective per-step rate) decides how many gossip steps averaging takes, and it scales very
differently with n:

- ring (weights 1/3): ``rho = 1/3 + 2/3 cos(2 pi / n)``, so ``1 - rho ~ 4 pi^2 / (3 n^2)``;
- static exponential graph: ``rho = 1 - 2/(tau + 1)``, ``tau = ceil(log2 n)``, for even n
  (smaller for odd n), i.e. a gap of order ``1/log n`` for ``log n`` messages per node;
- one-peer exponential graph: ``rho = 0`` when n is a power of 2 (the product of tau steps is
  exactly ``11^T/n``), not otherwise;
- OD-EquiDyn (``M=None``): root-mean-square rate ``sqrt((1-eta)^2 + eta^2 (1 - 2/n))``, about
  ``1/sqrt(2)`` for ``eta = 1/2`` whatever n, with one message per node per step.

The cursor n turns rho into DSGD's transient stage, the iterations before decentralized SGD
enjoys the linear speedup of parallel SGD (non-convex, Koloskova et al. 2020 / Ying et al.
2021): of order ``rho^4 n^3 / (1-rho)^2`` with i.i.d. data and ``rho^4 n^3 / (1-rho)^4`` with
heterogeneous data (:func:`declearn.topology.transient_iterations`; orders of growth with all
constants set to 1, for comparing topologies, not iteration counts).

The sweep of a family (rho at every n of an even log grid, plus the powers of 2) is computed
once per process and cached; the figure is persistent, only line data change.
"""

from __future__ import annotations

import html
import inspect
import math
import threading
from dataclasses import dataclass

import ipywidgets
import numpy as np

from declearn.errors import TopologyError
from declearn.topology import families as registered_families
from declearn.topology import family_info, make, transient_iterations
from widgets._render import (
    RedrawWorker,
    blitted_png,
    close_descendants,
    describe_error,
    error_html,
    fmt,
    new_figure,
    note_html,
)

__all__ = [
    "DEFAULT_FAMILIES",
    "THEORY_LABELS",
    "SpectralGapExplorer",
    "Sweep",
    "cursor_row",
    "family_point",
    "n_grid",
    "sweep",
    "sweepable_families",
    "theory_rho",
]

DEFAULT_FAMILIES = ("ring", "exponential", "one_peer_exponential", "od_equidyn")
#: rho at or below this counts as exact averaging (rho = 0): e.g. 6e-17 for the complete graph.
EXACT_ZERO = 1e-12
_SETTINGS = ("iid", "heterogeneous")


# ---------------------------------------------------------------------- model
def n_grid(n_max: int, points: int = 40) -> np.ndarray:
    """Even n from 4 to ``n_max`` on a log scale (about ``points`` of them) plus every power
    of 2: even n because the exponential graph's closed form holds for even n, powers of 2
    because one-peer exponential graphs and hypercubes are special there. (n = 2 is left
    out: two nodes averaging with weights 1/2 give rho = 0 for almost every family.)"""
    if isinstance(n_max, bool) or not isinstance(n_max, int) or n_max < 4:
        raise TopologyError(f"n_max must be an integer >= 4, got {n_max!r}.")
    logs = np.linspace(2.0, math.log2(n_max), points)
    even = 2 * np.round(2.0**logs / 2.0).astype(np.int64)
    powers = 2 ** np.arange(2, int(math.log2(n_max)) + 1)
    ns = np.unique(np.concatenate([even, powers]))
    return ns[(ns >= 4) & (ns <= n_max)]


def sweepable_families() -> list[str]:
    """Registered families that ``make(name, n)`` builds from n alone (every parameter has a
    default): the ones a sweep over n can show."""
    empty = inspect.Parameter.empty
    return [f for f in registered_families()
            if all(v is not empty for v in family_info(f).params.values())]


_POINTS: dict[tuple[str, int], tuple[float, float, str]] = {}
_SWEEPS: dict[tuple[str, int, int], Sweep] = {}
_LOCK = threading.RLock()


def family_point(family: str, n: int) -> tuple[float, float, str]:
    """``(rho, degree, error)`` of ``make(family, n)`` with default parameters, cached for the
    process; ``(nan, nan, message)`` when the family cannot take n (a hypercube at n = 12)."""
    key = (family, int(n))
    with _LOCK:
        hit = _POINTS.get(key)
    if hit is not None:
        return hit
    try:
        topo = make(family, int(n))
        point = (float(topo.rho), float(topo.degree), "")
    except Exception as exc:  # noqa: BLE001 - shown as a message and a gap in the curve
        point = (math.nan, math.nan, describe_error(exc, f"{family}(n={n})"))
    with _LOCK:
        _POINTS[key] = point
    return point


@dataclass(frozen=True)
class Sweep:
    """rho (and degree) of one family over the n of :func:`n_grid`; NaN where it fails."""

    family: str
    ns: np.ndarray
    rho: np.ndarray
    degree: np.ndarray

    @property
    def gap(self) -> np.ndarray:
        return 1.0 - self.rho


def sweep(family: str, n_max: int = 1024, points: int = 40) -> Sweep:
    """The sweep of ``family`` over ``n_grid(n_max, points)``: computed once per process (the
    same object is returned afterwards)."""
    family_info(family)
    key = (family, int(n_max), int(points))
    with _LOCK:
        hit = _SWEEPS.get(key)
        if hit is not None:
            return hit
        ns = n_grid(n_max, points)
        vals = [family_point(family, int(n)) for n in ns]
        rho = np.array([v[0] for v in vals])
        deg = np.array([v[1] for v in vals])
        for a in (ns, rho, deg):
            a.flags.writeable = False
        result = _SWEEPS[key] = Sweep(family, ns, rho, deg)
        return result


def _default(family: str, name: str):
    return family_info(family).params[name]


def _ring(ns):
    ns = np.asarray(ns, dtype=np.float64)
    return np.where(ns >= 3, 1.0 / 3.0 + 2.0 / 3.0 * np.cos(2.0 * np.pi / ns), 0.0)


def _exponential(ns):
    tau = np.array([(int(n) - 1).bit_length() for n in ns], dtype=np.float64)
    return 1.0 - 2.0 / (tau + 1.0)


def _power_of_two(ns):
    ns = np.asarray(ns, dtype=np.int64)
    return (ns & (ns - 1)) == 0


def _one_peer_exponential(ns):
    return np.where(_power_of_two(ns), 0.0, np.nan)


def _od_equidyn(ns):
    eta = _default("od_equidyn", "eta")
    ns = np.asarray(ns, dtype=np.float64)
    return np.sqrt((1.0 - eta) ** 2 + eta**2 * (1.0 - 2.0 / ns))


def _hypercube(ns):
    d = np.log2(np.asarray(ns, dtype=np.float64))
    return np.where(_power_of_two(ns), (d - 1.0) / (d + 1.0), np.nan)


def _star(ns):
    return 1.0 - 1.0 / np.asarray(ns, dtype=np.float64)


def _complete(ns):
    return np.zeros(len(ns))


_THEORY = {
    "ring": _ring,
    "exponential": _exponential,
    "one_peer_exponential": _one_peer_exponential,
    "od_equidyn": _od_equidyn,
    "hypercube": _hypercube,
    "star": _star,
    "complete": _complete,
}

#: Legend text of each theory curve (the closed form of rho).
THEORY_LABELS = {
    "ring": "1/3 + 2/3 cos(2\u03c0/n)",
    "exponential": "1 - 2/(\u03c4+1), \u03c4 = \u2308log\u2082n\u2309",
    "one_peer_exponential": "0 at n = 2^\u03c4",
    "od_equidyn": "\u221a((1-\u03b7)\u00b2 + \u03b7\u00b2(1-2/n)), \u03b7 = 1/2",
    "hypercube": "(d-1)/(d+1), n = 2^d",
    "star": "1 - 1/n",
    "complete": "0",
}


def theory_rho(family: str, ns) -> np.ndarray | None:
    """Closed-form rho of ``family`` (default parameters) at the given n, NaN where the
    formula does not apply, or None when we know no closed form (see :data:`THEORY_LABELS`).
    """
    fn = _THEORY.get(family)
    return None if fn is None else fn(np.asarray(ns))


def cursor_row(family: str, n: int, setting: str = "iid") -> dict:
    """What the cursor shows for ``family`` at ``n``: rho, the gap, the degree and DSGD's
    transient-iteration estimate in ``setting`` ("iid" or "heterogeneous")."""
    if setting not in _SETTINGS:
        raise TopologyError(f"setting must be 'iid' or 'heterogeneous', got {setting!r}.")
    rho, degree, error = family_point(family, n)
    transient = math.nan
    if not error:
        transient = transient_iterations(max(rho, 0.0), n=int(n), setting=setting)
    return {"family": family, "n": int(n), "rho": rho, "spectral_gap": 1.0 - rho,
            "degree": degree, "transient": transient, "setting": setting, "error": error}


# ---------------------------------------------------------------------- the widget
class SpectralGapExplorer(ipywidgets.VBox):
    """``1 - rho`` (or rho) against n on log axes for the chosen families, with the closed
    forms of theory dashed, and a cursor n showing, per family, rho, the gap, the degree and
    DSGD's transient-iteration estimate (iid or heterogeneous data).

    ``SpectralGapExplorer()`` or ``SpectralGapExplorer(("ring", "grid"), n_max=256)``.
    ``families`` are the ones selected at first (any family buildable from n alone can be
    added with the multi-select ``.families``); ``quantity`` is "gap" or "rho"; ``setting``
    "iid" or "heterogeneous"; ``n`` the cursor.

    For tests and notebooks: ``.curves`` / ``.theory_curves`` (family -> (ns, values) as
    plotted), ``.cursor_rows`` (family -> dict of the cursor's numbers), ``.table`` (HTML),
    ``.image`` (PNG); controls ``.families``, ``.quantity``, ``.n``, ``.setting``. Sweeps run in
    a background thread: ``wait_idle()`` waits, ``close()`` stops it.
    """

    def __init__(self, families=DEFAULT_FAMILIES, n_max: int = 1024, *, n: int = 64,
                 quantity: str = "gap", setting: str = "iid"):
        offered = sweepable_families()
        chosen = [families] if isinstance(families, str) else list(families)
        for f in chosen:
            family_info(f)  # unknown names raise with suggestions
            if f not in offered:
                raise TopologyError(
                    f"{f!r} needs parameters without defaults, so it has no sweep over n; "
                    f"choose among {', '.join(offered)}."
                )
        if quantity not in ("gap", "rho"):
            raise TopologyError(f"quantity must be 'gap' or 'rho', got {quantity!r}.")
        if setting not in _SETTINGS:
            raise TopologyError(f"setting must be 'iid' or 'heterogeneous', got {setting!r}.")
        self.n_max = int(n_max)
        self.ns = n_grid(self.n_max)
        if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= self.n_max:
            raise TopologyError(f"n must be an integer in 2..{self.n_max}, got {n!r}.")
        self._colors = {f: f"C{i % 10}" for i, f in enumerate(offered)}
        self.families = ipywidgets.SelectMultiple(
            options=offered, value=tuple(chosen), rows=min(8, len(offered)),
            description="families", style={"description_width": "70px"},
            layout=ipywidgets.Layout(width="300px"),
        )
        self.quantity = ipywidgets.ToggleButtons(
            options=[("1 - rho (gap)", "gap"), ("rho", "rho")], value=quantity,
            description="show", style={"description_width": "70px", "button_width": "120px"},
        )
        self.n = ipywidgets.IntSlider(
            value=n, min=2, max=self.n_max, description="cursor n", continuous_update=True,
            style={"description_width": "70px"}, layout=ipywidgets.Layout(width="420px"),
        )
        self.setting = ipywidgets.ToggleButtons(
            options=[("iid data", "iid"), ("heterogeneous", "heterogeneous")], value=setting,
            description="DSGD", style={"description_width": "70px", "button_width": "120px"},
            tooltips=["transient ~ rho^4 n^3 / (1-rho)^2",
                      "transient ~ rho^4 n^3 / (1-rho)^4"],
        )
        self.table = ipywidgets.HTML("")
        self.status = ipywidgets.HTML("")
        self.image = ipywidgets.Image(format="png", layout=ipywidgets.Layout(width="auto"))
        self.cursor_rows: dict[str, dict] = {}
        self._lines: dict[str, tuple] = {}  # family -> (measured, theory, cursor) Line2D
        self._build_figure()
        controls = ipywidgets.VBox([self.quantity, self.n, self.setting, self.status])
        super().__init__([ipywidgets.HBox([self.families, controls]), self.image, self.table])
        self._worker = RedrawWorker(self._redraw, on_error=self._on_error,
                                    name="SpectralGapExplorer")
        for w in (self.families, self.quantity, self.n, self.setting):
            w.observe(self._on_change, names="value")
        self._worker.run_now()

    # ------------------------------------------------------------------ API
    @property
    def curves(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """family -> (ns, values) of the measured curves drawn (values: 1 - rho or rho, NaN
        where not drawn)."""
        return {f: (np.asarray(m.get_xdata()), np.asarray(m.get_ydata()))
                for f, (m, _, _) in self._lines.items() if m.get_visible()}

    @property
    def theory_curves(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """family -> (ns, values) of the closed forms drawn (families with one, selected)."""
        return {f: (np.asarray(t.get_xdata()), np.asarray(t.get_ydata()))
                for f, (_, t, _) in self._lines.items() if t is not None and t.get_visible()}

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Return when no sweep or redraw is pending (TimeoutError after ``timeout`` s)."""
        self._worker.wait_idle(timeout)

    def close(self) -> None:
        """Stop the background thread and close the controls (again: nothing)."""
        if self.comm is None:
            return
        worker = getattr(self, "_worker", None)  # absent if the constructor failed
        if worker is not None:
            worker.close()
        close_descendants(self)
        super().close()

    # ------------------------------------------------------------------ events
    def _on_change(self, change) -> None:
        self._worker.request()

    def _on_error(self, exc: BaseException) -> None:
        self.status.value = error_html(describe_error(exc, "could not draw"))

    # ------------------------------------------------------------------ drawing (worker)
    def _build_figure(self) -> None:
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        self.fig = fig = new_figure(9.0, 4.0)
        self.ax = ax = fig.add_axes((0.08, 0.13, 0.56, 0.78))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlim(1.8, self.n_max * 1.15)
        ax.xaxis.set_major_locator(LogLocator(base=2))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("n (number of nodes)", fontsize=9)
        # Fixed label coordinates and title height skip matplotlib's placement passes (they
        # measure every tick label) on each draw.
        ax.xaxis.set_label_coords(0.5, -0.09)
        ax.yaxis.set_label_coords(-0.095, 0.5)
        ax.tick_params(labelsize=8)
        ax.grid(True, which="major", color="0.9", linewidth=0.6)
        # The cursor is animated: moving it redraws only the cursor over a saved background.
        self.cursor_line = ax.axvline(self.n.value, color="0.35", linewidth=1.0, linestyle=":",
                                      animated=True)
        self._background = None
        self._background_key = None
        self.title = ax.set_title("", fontsize=10, y=1.0)

    def _y_ticks(self, quantity: str) -> None:
        """Decades for the gap (it spans many); plain numbers for rho (it lives in (0, 1])."""
        from matplotlib.ticker import FuncFormatter, LogFormatterSciNotation, NullFormatter

        y = self.ax.yaxis
        if quantity == "gap":
            y.set_major_formatter(LogFormatterSciNotation())
            y.set_minor_formatter(NullFormatter())
        else:
            plain = FuncFormatter(lambda v, _: f"{v:.2g}")
            y.set_major_formatter(plain)
            y.set_minor_formatter(plain)

    def _lines_for(self, family: str):
        if family not in self._lines:
            c = self._colors.get(family, "k")
            (m,) = self.ax.plot([], [], "-o", color=c, markersize=2.5, linewidth=1.4,
                                label=family)
            t = None
            if family in _THEORY:
                style = "x" if family in ("one_peer_exponential", "hypercube") else "--"
                (t,) = self.ax.plot([], [], style, color=c, linewidth=1.0, markersize=6,
                                    alpha=0.8, label=f"theory: rho = {THEORY_LABELS[family]}")
            (cur,) = self.ax.plot([], [], "o", color=c, markersize=7, markeredgecolor="k",
                                  zorder=5, animated=True)  # drawn over a saved background
            self._lines[family] = (m, t, cur)
        return self._lines[family]

    def _redraw(self) -> None:
        chosen = list(self.families.value)
        quantity, n, setting = self.quantity.value, self.n.value, self.setting.value
        todo = [f for f in chosen if (f, self.n_max, 40) not in _SWEEPS]
        if todo:
            self.status.value = note_html(
                f"computing rho for n = 2 .. {self.n_max}: {', '.join(todo)} (once per session)"
            )
        sweeps = {f: sweep(f, self.n_max) for f in chosen}

        def shown(rho):
            rho = np.asarray(rho, dtype=np.float64)
            if quantity == "gap":
                return np.where(1.0 - rho > 0.0, 1.0 - rho, np.nan)
            return np.where(rho > EXACT_ZERO, rho, np.nan)  # rho = 0 has no place on log axes

        ymin, ymax = math.inf, -math.inf
        zeros = []
        for f in set(self._lines) - set(chosen):
            for art in self._lines[f]:
                if art is not None:
                    art.set_visible(False)
        rows = {}
        for f in chosen:
            m, t, cur = self._lines_for(f)
            s = sweeps[f]
            y = shown(s.rho)
            m.set_data(s.ns, y)
            m.set_visible(True)
            vals = [y]
            if t is not None:
                ty = shown(theory_rho(f, s.ns))
                t.set_data(s.ns, ty)
                t.set_visible(True)
                vals.append(ty)
            if quantity == "rho" and np.any(s.rho <= EXACT_ZERO):
                zeros.append(f)
            row = cursor_row(f, n, setting)
            rows[f] = row
            cy = shown([row["rho"]])[0]
            cur.set_data([n], [cy])
            cur.set_visible(bool(np.isfinite(cy)))
            vals.append([cy])
            for v in vals:
                v = np.asarray(v, dtype=np.float64)
                v = v[np.isfinite(v) & (v > 0)]
                if v.size:
                    ymin, ymax = min(ymin, float(v.min())), max(ymax, float(v.max()))
        if ymin < math.inf:
            if quantity == "gap":
                self.ax.set_ylim(ymin / 1.6, ymax * 1.6)
            else:
                self.ax.set_ylim(ymin / 1.25, min(ymax * 1.25, 1.2))
        self.cursor_line.set_xdata([n, n])
        self.ax.set_ylabel("1 - rho (spectral gap)" if quantity == "gap" else
                           "rho = ||W - J||_2 (per step)", fontsize=9)
        self._y_ticks(quantity)
        self.title.set_text(("spectral gap" if quantity == "gap" else "rho") +
                            " against n (log-log); dashed / x: theory")
        # Everything but the cursor depends only on this key: a cursor move keeps the picture.
        key = (tuple(chosen), quantity, self.ax.get_ylim())
        if key != self._background_key:
            handles = [a for f in chosen for a in self._lines[f][:2] if a is not None]
            if self.ax.get_legend() is not None:
                self.ax.get_legend().remove()
            if handles:
                self.ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                               fontsize=7.5, frameon=False)
            self._background, self._background_key = None, key
        cursor = [self.cursor_line] + [self._lines[f][2] for f in chosen]
        png, self._background = blitted_png(self.fig, self._background,
                                            [a for a in cursor if a.get_visible()])
        note = ""
        if zeros:
            note = (f"rho = 0 (exact averaging) is not drawn on log axes: {', '.join(zeros)} "
                    "at some n.")
        if not chosen:
            note = "Select one or more families (ctrl/shift-click)."
        self.cursor_rows = rows
        self.image.value = png
        self.table.value = self._table_html(rows, n, setting)
        self.status.value = note_html(note)

    @staticmethod
    def _table_html(rows: dict, n: int, setting: str) -> str:
        if not rows:
            return ""
        power = "2" if setting == "iid" else "4"
        head = (f"<tr><th>family (n = {n})</th><th>degree</th><th>rho</th><th>1 - rho</th>"
                f"<th>DSGD transient ~ rho<sup>4</sup>n<sup>3</sup>/(1-rho)<sup>{power}</sup>"
                f" ({html.escape(setting)})</th></tr>")
        body = []
        for f, r in rows.items():
            if r["error"]:
                body.append(f"<tr><td>{html.escape(f)}</td><td colspan=4 style='color:#8a1c1c'>"
                            f"{html.escape(r['error'])}</td></tr>")
                continue
            body.append(
                f"<tr><td>{html.escape(f)}</td><td>{fmt(r['degree'])}</td>"
                f"<td>{fmt(r['rho'], 6)}</td><td>{fmt(r['spectral_gap'], 6)}</td>"
                f"<td>{fmt(r['transient'], 3)}</td></tr>"
            )
        style = ("<style>.dl-sg td,.dl-sg th{padding:2px 10px;text-align:right}"
                 ".dl-sg td:first-child,.dl-sg th:first-child{text-align:left}</style>")
        return f"{style}<table class='dl-sg'>{head}{''.join(body)}</table>"
