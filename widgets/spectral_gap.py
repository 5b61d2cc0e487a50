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
once per process and cached; the closed forms are declearn's
(:func:`declearn.topology.closed_form_rho`). Three parts: the model (:func:`sweep`,
:func:`spectral_view`: numbers only), the figure (:class:`SpectralGapFigure`, persistent, only
line data change) and the shell (:class:`SpectralGapExplorer`, the controls).
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
from declearn.topology import (
    CLOSED_FORMS,
    closed_form_rho,
    family_info,
    make,
    transient_iterations,
)
from declearn.topology import families as registered_families
from widgets._base import WidgetShell
from widgets._render import blitted_png, describe_error, fmt, new_figure, note_html

__all__ = [
    "DEFAULT_FAMILIES",
    "THEORY_LABELS",
    "SpectralGapExplorer",
    "SpectralGapFigure",
    "SpectralView",
    "Sweep",
    "cursor_row",
    "family_point",
    "n_grid",
    "spectral_view",
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


#: Legend text of each theory curve (the closed form of rho, from declearn.topology).
THEORY_LABELS = {family: form.formula for family, form in CLOSED_FORMS.items()}


def theory_rho(family: str, ns) -> np.ndarray | None:
    """Closed-form rho of ``family`` (default parameters) at the given n, NaN where the
    formula does not apply, or None when we know no closed form (see
    :func:`declearn.topology.closed_form_rho`)."""
    form = CLOSED_FORMS.get(family)
    if form is None:
        return None
    defaults = family_info(family).params
    return closed_form_rho(family, np.asarray(ns),
                           **{p: defaults[p] for p in form.params if p in defaults})


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


def _shown(rho, quantity: str) -> np.ndarray:
    """What a log axis shows of rho: the gap ``1 - rho`` (NaN where not positive) or rho
    (NaN at exact averaging, rho = 0)."""
    rho = np.asarray(rho, dtype=np.float64)
    if quantity == "gap":
        return np.where(1.0 - rho > 0.0, 1.0 - rho, np.nan)
    return np.where(rho > EXACT_ZERO, rho, np.nan)


@dataclass
class SpectralView:
    """What the explorer shows for a choice of families, quantity, cursor n and setting."""

    families: list[str]
    quantity: str  # "gap" or "rho"
    n: int
    setting: str
    curves: dict[str, tuple[np.ndarray, np.ndarray]]  # family -> (ns, values as plotted)
    theory: dict[str, tuple[np.ndarray, np.ndarray]]  # the families with a closed form
    rows: dict[str, dict]  # family -> cursor_row
    cursor: dict[str, float]  # family -> the cursor's value as plotted (NaN: not drawn)
    ylim: tuple[float, float] | None  # None when nothing is drawn
    zeros: list[str]  # families with rho = 0 somewhere (not drawn on a log axis of rho)

    @property
    def note(self) -> str:
        if not self.families:
            return "Select one or more families (ctrl/shift-click)."
        if self.zeros:
            return (f"rho = 0 (exact averaging) is not drawn on log axes: "
                    f"{', '.join(self.zeros)} at some n.")
        return ""


def spectral_view(families, quantity: str = "gap", n: int = 64, setting: str = "iid",
                  n_max: int = 1024) -> SpectralView:
    """The curves, cursor rows and y-range of the explorer (sweeps computed once per process)."""
    chosen = list(families)
    curves, theory, rows, cursor, zeros = {}, {}, {}, {}, []
    values = []
    for f in chosen:
        s = sweep(f, n_max)
        curves[f] = (s.ns, _shown(s.rho, quantity))
        values.append(curves[f][1])
        t = theory_rho(f, s.ns)
        if t is not None:
            theory[f] = (s.ns, _shown(t, quantity))
            values.append(theory[f][1])
        if quantity == "rho" and np.any(s.rho <= EXACT_ZERO):
            zeros.append(f)
        rows[f] = cursor_row(f, n, setting)
        cursor[f] = float(_shown([rows[f]["rho"]], quantity)[0])
        values.append([cursor[f]])
    flat = np.concatenate([np.asarray(v, dtype=np.float64) for v in values]) if values else \
        np.zeros(0)
    flat = flat[np.isfinite(flat) & (flat > 0)]
    ylim = None
    if flat.size:
        lo, hi = float(flat.min()), float(flat.max())
        ylim = (lo / 1.6, hi * 1.6) if quantity == "gap" else (lo / 1.25, min(hi * 1.25, 1.2))
    return SpectralView(chosen, quantity, int(n), setting, curves, theory, rows, cursor, ylim,
                        zeros)


def table_html(rows: dict, n: int, setting: str) -> str:
    """The cursor's table: per family, degree, rho, the gap and DSGD's transient stage."""
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


# ---------------------------------------------------------------------- the figure
class SpectralGapFigure:
    """The persistent figure: one measured line, one theory line and one cursor dot per
    family (made on first use), the cursor line. Everything but the cursor is drawn into a
    saved background, redrawn only when the families, the quantity or the y-range change."""

    def __init__(self, n_max: int, colors: dict[str, str]):
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        self.colors = colors
        self.fig = fig = new_figure(9.0, 4.0)
        self.ax = ax = fig.add_axes((0.08, 0.13, 0.56, 0.78))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlim(1.8, n_max * 1.15)
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
        self.cursor_line = ax.axvline(1.8, color="0.35", linewidth=1.0, linestyle=":",
                                      animated=True)
        self.lines: dict[str, tuple] = {}  # family -> (measured, theory, cursor) Line2D
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
        if family not in self.lines:
            c = self.colors.get(family, "k")
            (m,) = self.ax.plot([], [], "-o", color=c, markersize=2.5, linewidth=1.4,
                                label=family)
            t = None
            if family in CLOSED_FORMS:
                style = "x" if family in ("one_peer_exponential", "hypercube") else "--"
                (t,) = self.ax.plot([], [], style, color=c, linewidth=1.0, markersize=6,
                                    alpha=0.8, label=f"theory: rho = {THEORY_LABELS[family]}")
            (cur,) = self.ax.plot([], [], "o", color=c, markersize=7, markeredgecolor="k",
                                  zorder=5, animated=True)  # drawn over a saved background
            self.lines[family] = (m, t, cur)
        return self.lines[family]

    def show(self, view: SpectralView) -> None:
        """Point the artists at ``view``."""
        chosen = view.families
        for f in set(self.lines) - set(chosen):
            for art in self.lines[f]:
                if art is not None:
                    art.set_visible(False)
        for f in chosen:
            m, t, cur = self._lines_for(f)
            m.set_data(*view.curves[f])
            m.set_visible(True)
            if t is not None:
                t.set_data(*view.theory[f])
                t.set_visible(True)
            cy = view.cursor[f]
            cur.set_data([view.n], [cy])
            cur.set_visible(bool(np.isfinite(cy)))
        if view.ylim is not None:
            self.ax.set_ylim(*view.ylim)
        self.cursor_line.set_xdata([view.n, view.n])
        gap = view.quantity == "gap"
        self.ax.set_ylabel("1 - rho (spectral gap)" if gap else "rho = ||W - J||_2 (per step)",
                           fontsize=9)
        self._y_ticks(view.quantity)
        self.title.set_text(("spectral gap" if gap else "rho") +
                            " against n (log-log); dashed / x: theory")
        # Everything but the cursor depends only on this key: a cursor move keeps the picture.
        key = (tuple(chosen), view.quantity, self.ax.get_ylim())
        if key != self._background_key:
            handles = [a for f in chosen for a in self.lines[f][:2] if a is not None]
            if self.ax.get_legend() is not None:
                self.ax.get_legend().remove()
            if handles:
                self.ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                               fontsize=7.5, frameon=False)
            self._background, self._background_key = None, key
        self._moving = [self.cursor_line] + [self.lines[f][2] for f in chosen]

    def png(self) -> bytes:
        png, self._background = blitted_png(self.fig, self._background,
                                            [a for a in self._moving if a.get_visible()])
        return png


# ---------------------------------------------------------------------- the widget
class SpectralGapExplorer(WidgetShell):
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

    WAIT_TIMEOUT = 30.0

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
        self.image = ipywidgets.Image(format="png")
        self.cursor_rows: dict[str, dict] = {}
        self.figure = SpectralGapFigure(
            self.n_max, {f: f"C{i % 10}" for i, f in enumerate(offered)})
        self.fig, self.ax = self.figure.fig, self.figure.ax
        controls = ipywidgets.VBox([self.quantity, self.n, self.setting, self.status])
        super().__init__([ipywidgets.HBox([self.families, controls]), self.image, self.table])
        self._start_worker(self._redraw, name="SpectralGapExplorer", errors=self.status,
                           what="could not draw")
        for w in (self.families, self.quantity, self.n, self.setting):
            w.observe(self._on_change, names="value")
        self._worker.run_now()

    # ------------------------------------------------------------------ API
    @property
    def curves(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """family -> (ns, values) of the measured curves drawn (values: 1 - rho or rho, NaN
        where not drawn)."""
        return {f: (np.asarray(m.get_xdata()), np.asarray(m.get_ydata()))
                for f, (m, _, _) in self.figure.lines.items() if m.get_visible()}

    @property
    def theory_curves(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """family -> (ns, values) of the closed forms drawn (families with one, selected)."""
        return {f: (np.asarray(t.get_xdata()), np.asarray(t.get_ydata()))
                for f, (_, t, _) in self.figure.lines.items()
                if t is not None and t.get_visible()}

    # ------------------------------------------------------------------ events
    def _on_change(self, change) -> None:
        self._worker.request()

    # ------------------------------------------------------------------ drawing (worker)
    def _redraw(self) -> None:
        chosen = list(self.families.value)
        todo = [f for f in chosen if (f, self.n_max, 40) not in _SWEEPS]
        if todo:
            self.status.value = note_html(
                f"computing rho for n = 2 .. {self.n_max}: {', '.join(todo)} (once per session)"
            )
        view = spectral_view(chosen, self.quantity.value, self.n.value, self.setting.value,
                             self.n_max)
        self.figure.show(view)
        png = self.figure.png()
        self.cursor_rows = view.rows
        self._show_png(self.image, png, self.fig)
        self.table.value = table_html(view.rows, view.n, view.setting)
        self.status.value = note_html(view.note)
