r"""AlgorithmRace: DGD, gradient tracking, exact diffusion and RelaySGD on one problem, live.

What it teaches. Every node i holds its own ``f_i`` and the network minimises
``f = (1/n) sum_i f_i``. With a constant step size:

* **DGD** stalls on a *plateau*: at ``x_i = x*`` each node still follows its own gradient
  ``grad f_i(x*)``, which is not 0 when the data differ. The plateau grows with the step size
  and with the heterogeneity ``b^2 = (1/n) sum_i ||grad f_i(x*)||^2`` (for ATC-DGD the mean
  squared distance to x* is ``O(lr^2 rho^2 b^2 / (1 - rho)^2)``), and vanishes at ``b^2 = 0``;
* **gradient tracking** and **exact diffusion** correct the bias and reach ``f*`` (to
  round-off) whatever the heterogeneity; exact diffusion needs a static symmetric W;
* **RelaySGD** averages exactly over a spanning tree with delays (a tree of the chosen graph:
  see the info line for which one), so its speed depends on the tree's diameter, not on rho;
* too large a step diverges: the curve ends with a cross and the widget says where.

Curves: ``f(x_bar) - f*`` and the consensus error ``(1/n) sum_i ||x_i - x_bar||^2`` against the
iteration, on log axes, as recorded in each algorithm's :class:`~declearn.algorithms.History`.
Each algorithm is declearn's own, run under ``SimComm(n)`` with the same problem, topology and
step size ``lr = (lr x L) / L`` (the slider is in units of ``1/L``, ``L`` the smoothness).

Responsiveness: a control change only marks the race stale; a background thread (debounced)
rebuilds it and runs the algorithms in round-robin chunks, redrawing the curves as they grow,
and drops a run as soon as a newer change arrives. :meth:`AlgorithmRace.wait_idle` waits for the
last run to finish. Three parts: the model (:func:`run_race`, :class:`RaceCurve`: declearn's
algorithms, no widgets), the figure (:class:`RaceFigure`, a persistent Figure rendered to PNG)
and the shell (:class:`AlgorithmRace`, the controls, on :class:`widgets._base.WidgetShell`).
"""

from __future__ import annotations

import html
import math
import threading
import time
from dataclasses import dataclass, field, replace

import ipywidgets
import numpy as np

from declearn.algorithms import DGD, ExactDiffusion, GradientTracking, RelaySGD
from declearn.comm import SimComm
from declearn.errors import DivergenceError
from declearn.problems import LeastSquares, RandomQuadratics
from declearn.topology import family_info, spanning_tree
from widgets._base import WidgetShell
from widgets._render import blitted_png, error_html, fmt, new_figure, note_html

__all__ = [
    "ALGORITHMS",
    "PROBLEMS",
    "AlgorithmRace",
    "RaceCurve",
    "make_algorithm",
    "make_problem",
    "relay_tree",
    "run_race",
]

#: The racers, in the order of the checkboxes.
ALGORITHMS = ("DGD", "gradient tracking", "exact diffusion", "RelaySGD")
#: Problems offered: declearn's least squares and the RelaySGD paper's random quadratics.
PROBLEMS = ("least_squares", "quadratics")
#: Values below this are drawn at it (log axes cannot show 0).
FLOOR = 1e-32
_COLORS = dict(zip(ALGORITHMS, ("C0", "C1", "C2", "C3")))


# ============================================================================ model
def make_problem(problem: str, n: int, heterogeneity: float, seed: int = 0):
    """The race's problem. ``"least_squares"``: ``LeastSquares(n, d=10, m=20,
    heterogeneity=h, seed=seed)`` (h: spread of the node minimisers); ``"quadratics"``:
    ``RandomQuadratics(n, d=10, heterogeneity=h, mu=0.5, L=1, r0=10, seed=seed)`` (the
    RelaySGD paper's setting; h is zeta^2)."""
    if problem == "least_squares":
        return LeastSquares(n, d=10, m=20, heterogeneity=heterogeneity, seed=seed)
    if problem == "quadratics":
        return RandomQuadratics(n, d=10, heterogeneity=heterogeneity, mu=0.5, L=1.0, r0=10.0,
                                seed=seed)
    raise ValueError(f"problem must be one of {PROBLEMS}, got {problem!r}.")


def relay_tree(topology):
    """``(tree, description)``: the spanning tree RelaySGD runs on for ``topology``.

    A static graph gives its breadth-first spanning tree from node 0 (a tree topology, such as
    chain or binary_tree, is its own); a dynamic one the breadth-first tree of the union of
    its links over one period (the first 64 steps of a random sequence)."""
    if not topology.is_dynamic:
        tree = spanning_tree(topology)
        what = f"breadth-first spanning tree of {topology.name} from node 0"
    else:
        import networkx as nx

        steps = topology.period or 64
        G = nx.Graph()
        G.add_nodes_from(range(topology.n))
        for k in range(steps):
            step = topology.at(k)
            off = step.rows != step.indices
            G.add_edges_from(zip(step.rows[off].tolist(), step.indices[off].tolist()))
        tree = spanning_tree(G)
        span = f"one period ({steps} steps)" if topology.period else f"its first {steps} steps"
        what = f"breadth-first spanning tree of the links {topology.name} uses over {span}"
    return tree, f"{what}: diameter {tree.diameter}, max degree {tree.degree}"


def make_algorithm(name: str, comm, problem, topology, tree, lr: float):
    """One racer, built with declearn's defaults: ATC-DGD, ATC gradient tracking, exact
    diffusion (static symmetric W only: a TopologyError otherwise), RelaySGD on ``tree``
    (``fill="initial"``)."""
    if name == "DGD":
        return DGD(comm, problem, topology, lr=lr)
    if name == "gradient tracking":
        return GradientTracking(comm, problem, topology, lr=lr)
    if name == "exact diffusion":
        return ExactDiffusion(comm, problem, topology, lr=lr)
    if name == "RelaySGD":
        return RelaySGD(comm, problem, tree, lr=lr)
    raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {name!r}.")


@dataclass
class RaceCurve:
    """One racer's curves: ``iterations``, ``suboptimality`` (``f(x_bar) - f*``) and
    ``consensus_error`` (from its History), and its ``status``: ``"running"``, ``"done"``,
    ``"diverged"`` (at iteration ``diverged_at``) or ``"skipped"`` (``note`` says why)."""

    name: str
    iterations: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    suboptimality: np.ndarray = field(default_factory=lambda: np.zeros(0))
    consensus_error: np.ndarray = field(default_factory=lambda: np.zeros(0))
    status: str = "running"
    diverged_at: int | None = None
    note: str = ""

    @classmethod
    def from_history(cls, name: str, history, **kw) -> RaceCurve:
        return cls(name, history["iteration"].astype(int), history["suboptimality"],
                   history["consensus_error"], **kw)

    def copy(self) -> RaceCurve:
        return replace(self, iterations=self.iterations.copy(),
                       suboptimality=self.suboptimality.copy(),
                       consensus_error=self.consensus_error.copy())


def _short(exc: BaseException) -> str:
    """The first sentence of an error message (for a one-line note)."""
    text = str(exc).strip() or type(exc).__name__
    first = text.split(". ")[0].rstrip(".")
    return (first[:240] + " ..." if len(first) > 240 else first) + "."


def run_race(problem, topology, names, lr: float, steps: int, *, log_every: int | None = None,
             tree=None, on_progress=None, cancelled=None, first_chunk: int = 5):
    """Run the racers ``names`` on ``problem`` over ``topology`` for ``steps`` iterations each,
    in round-robin chunks (the first of about ``first_chunk`` iterations, then doubling).

    After every round ``on_progress(curves)`` gets the curves so far; when ``cancelled()`` turns
    true the race stops and returns None. Otherwise returns ``{name: RaceCurve}``. Metrics are
    logged every ``log_every`` iterations (default ``max(1, steps // 200)``) and at the end,
    exactly as ``algorithm.run(steps, log_every=log_every)`` would. A racer that cannot run on
    this topology is ``"skipped"``; one whose metrics blow up (declearn's DivergenceError) is
    ``"diverged"``, its curve ending at the iteration where it was caught.
    """
    steps = int(steps)
    log_every = max(1, steps // 200) if log_every is None else int(log_every)
    if tree is None and "RelaySGD" in names:
        tree, _ = relay_tree(topology)
    curves: dict[str, RaceCurve] = {}
    running = {}
    for name in names:
        try:
            running[name] = make_algorithm(name, SimComm(problem.n), problem, topology, tree, lr)
            curves[name] = RaceCurve(name)
        except (ValueError, TypeError) as exc:  # TopologyError is a ValueError
            curves[name] = RaceCurve(name, status="skipped", note=_short(exc))
    chunk = max(log_every, math.ceil(first_chunk / log_every) * log_every)
    while running:
        for name in list(running):
            alg = running[name]
            todo = min(chunk, steps - alg.k)
            try:
                alg.run(todo, log_every=log_every, progress=False)
            except DivergenceError as exc:
                curves[name] = RaceCurve.from_history(name, alg.history, status="diverged",
                                                      diverged_at=exc.iteration)
                del running[name]
                continue
            done = alg.k >= steps
            curves[name] = RaceCurve.from_history(name, alg.history,
                                                  status="done" if done else "running")
            if done:
                del running[name]
            if cancelled is not None and cancelled():
                return None
        if on_progress is not None:
            on_progress(curves)
        chunk *= 2
    return curves


# ============================================================================ drawing
class RaceFigure:
    """Persistent Figure: suboptimality and consensus error against the iteration, log axes,
    one line per racer and a cross where a racer diverged.

    Frames are blitted: axes, ticks and legend are drawn once into a background, and a frame
    restores it and draws only the curves. The background is redrawn when the axes' limits
    or the legend change; ``update(..., sticky=True)`` (used while a run streams) only ever
    widens the y-limits, in whole decades, so most frames of a run reuse the background."""

    def __init__(self):
        from matplotlib.ticker import LogLocator, NullLocator

        self.fig = new_figure(9.6, 3.6, layout="constrained")
        self.axes = dict(zip(("suboptimality", "consensus_error"), self.fig.subplots(1, 2)))
        labels = {"suboptimality": r"$f(\bar{x}) - f^\star$",
                  "consensus_error": r"$\frac{1}{n}\sum_i \|x_i - \bar{x}\|^2$"}
        self.lines, self.ends = {}, {}
        for col, ax in self.axes.items():
            ax.set_yscale("log")
            ax.set_ylim(FLOOR, 1e3)  # widest tick labels for the one layout pass
            ax.set_xlim(0, 100)
            ax.set_xlabel("iteration k", fontsize=9)
            ax.set_ylabel(labels[col], fontsize=9)
            ax.tick_params(labelsize=8)
            ax.grid(True, which="major", alpha=0.3)
            ax.yaxis.set_major_locator(LogLocator(base=10.0, numticks=8))
            ax.yaxis.set_minor_locator(NullLocator())
            for name in ALGORITHMS:
                (self.lines[col, name],) = ax.plot([], [], color=_COLORS[name], lw=1.8,
                                                   label=name, animated=True)
                (self.ends[col, name],) = ax.plot([], [], "X", color=_COLORS[name], ms=10,
                                                  mec="k", mew=0.8, animated=True)
        self.axes["suboptimality"].set_title("suboptimality", fontsize=9, y=1.0)
        self.axes["consensus_error"].set_title("consensus error", fontsize=9, y=1.0)
        self._legend_key = None
        self._limits = None
        self._background = None

    def curve_data(self, col: str, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of a drawn line (y as plotted: capped, NaN where not positive)."""
        x, y = self.lines[col, name].get_data()
        return np.asarray(x), np.asarray(y, dtype=float)

    def update(self, curves: dict[str, RaceCurve], steps: int, *, sticky: bool = False) -> None:
        shown = [name for name in ALGORITHMS
                 if name in curves and curves[name].iterations.size > 0]
        limits = {}
        for col in self.axes:
            lows, highs = [], []
            for name in ALGORITHMS:
                line, end = self.lines[col, name], self.ends[col, name]
                curve = curves.get(name)
                if curve is None or curve.iterations.size == 0:
                    line.set_data([], [])
                    end.set_data([], [])
                    continue
                y = np.array(getattr(curve, col), dtype=float)
                # A diverging curve leaves through the top: cap it where declearn's own
                # divergence test starts from (its first value, at least 1), times 1e3.
                first = y[0] if y.size and math.isfinite(y[0]) else 1.0
                cap = 1e3 * max(abs(first), 1.0)
                y[~np.isfinite(y)] = cap
                y = np.minimum(y, cap)
                y[y <= 0] = np.nan  # exact 0 or round-off below it: a log axis shows a gap
                line.set_data(curve.iterations, y)
                if curve.status == "diverged":
                    end.set_data([curve.iterations[-1]], [cap if np.isnan(y[-1]) else y[-1]])
                else:
                    end.set_data([], [])
                positive = y[np.isfinite(y)]
                if positive.size:
                    lows.append(max(positive.min(), FLOOR))
                    highs.append(positive.max())
            if lows:  # whole decades
                bottom = 10.0 ** (math.floor(math.log10(min(lows))) - 1)
                top = 10.0 ** math.ceil(math.log10(max(highs) * 2.0))
                top = max(top, bottom * 100)
            else:
                bottom, top = 1e-12, 1e2
            if sticky and self._limits is not None:
                old = self._limits[1][col]
                bottom, top = min(bottom, old[0]), max(top, old[1])
            limits[col] = (bottom, top)
        key = (steps, tuple(sorted(limits.items())), tuple(shown))
        if self._limits is None or key != self._limits[0]:
            for col, ax in self.axes.items():
                ax.set_xlim(0, steps)
                ax.set_ylim(*limits[col])
            if tuple(shown) != self._legend_key:
                ax = self.axes["suboptimality"]
                handles = [self.lines["suboptimality", name] for name in shown]
                if ax.get_legend() is not None:
                    ax.get_legend().remove()
                if handles:
                    ax.legend(handles=handles, fontsize=8, loc="lower left")
                self._legend_key = tuple(shown)
            self._limits = (key, limits)
            self._background = None

    def png(self) -> bytes:
        png, self._background = blitted_png(
            self.fig, self._background, list(self.lines.values()) + list(self.ends.values()))
        return png


# ============================================================================ the widget
class AlgorithmRace(WidgetShell):
    """DGD, gradient tracking, exact diffusion and RelaySGD racing on one problem.

    ``AlgorithmRace()`` or ``AlgorithmRace("quadratics", n=32, family="exponential")``; display
    it as the last expression of a cell. Raise the heterogeneity and watch DGD's plateau rise
    while gradient tracking and exact diffusion still reach f*; raise the step size until a
    curve ends in a cross (see the module docstring for the maths).

    Parameters: ``problem`` (one of :data:`PROBLEMS`), ``n``, ``family`` and ``**params`` (the
    topology, changed later with the topology controls), ``heterogeneity`` (least squares: the
    spread of the node minimisers; quadratics: zeta^2), ``lr`` (the step size in units of
    ``1/L``: the algorithms get ``lr / L``), ``steps`` (iterations), ``algorithms`` (the racers
    checked at first; default all), ``seed`` (the problem's data, and a random family's draw
    unless ``params`` has its own seed), ``delay`` (debounce, s).

    For tests and notebooks: :attr:`curves` (``{name: RaceCurve}`` of the last finished run),
    :attr:`step_size` (the lr the algorithms get), :attr:`problem_instance`, :attr:`topology`,
    :attr:`tree` and :attr:`tree_description` (RelaySGD's tree), :attr:`log_every`,
    :attr:`figure` (the drawn lines), :attr:`message` (divergence and errors, as text in the
    widget), :meth:`wait_idle`, :meth:`close`, :meth:`refresh`.
    """

    def __init__(self, problem: str = "least_squares", n: int = 16, *, family: str = "ring",
                 heterogeneity: float = 1.0, lr: float = 0.3, steps: int = 300,
                 algorithms=None, seed: int = 0, delay: float = 0.03, **params):
        from widgets.picker import TopologyPicker

        if problem not in PROBLEMS:
            raise ValueError(f"problem must be one of {PROBLEMS}, got {problem!r}.")
        chosen = ALGORITHMS if algorithms is None else tuple(algorithms)
        unknown = [a for a in chosen if a not in ALGORITHMS]
        if unknown:
            raise ValueError(f"unknown algorithm(s) {unknown}; choose among {ALGORITHMS}.")
        self.seed = int(seed)
        self._lock = threading.Lock()
        self._generation = 0
        self._curves: dict[str, RaceCurve] = {}
        self._cache: dict = {}  # the settings, and the finished RaceCurve of each racer
        self._figure: RaceFigure | None = None
        self.problem_instance = None
        self.tree = None
        self.tree_description = ""
        self.log_every = 1
        self.rendered_generation = None  # the settings the image shows
        self.first_image_seconds: float | None = None  # change -> first curves of a run
        self.run_seconds: float | None = None  # change -> finished run

        if "seed" in family_info(family).params:
            params.setdefault("seed", self.seed)  # a random family draws with the same seed
        self.picker = TopologyPicker(family, n, n_min=2, n_max=256, **params)
        self.problem = ipywidgets.Dropdown(
            options=[("least squares", "least_squares"), ("random quadratics", "quadratics")],
            value=problem, description="problem")
        self.heterogeneity = ipywidgets.FloatSlider(
            value=float(min(max(heterogeneity, 0.0), 5.0)), min=0.0, max=5.0, step=0.1,
            description="heterogeneity", continuous_update=False,
            style={"description_width": "90px"})
        self.lr = ipywidgets.FloatLogSlider(
            value=float(min(max(lr, 1e-3), 4.0)), base=10, min=-3, max=math.log10(4.0),
            step=0.05, description="lr \u00d7 L", readout_format=".3g",
            continuous_update=False, style={"description_width": "90px"})
        self.steps = ipywidgets.IntSlider(
            value=int(min(max(steps, 20), 2000)), min=20, max=2000, step=20,
            description="iterations", continuous_update=False,
            style={"description_width": "90px"})
        self.checks = {name: ipywidgets.Checkbox(value=name in chosen, description=name,
                                                 indent=False,
                                                 layout=ipywidgets.Layout(width="150px"))
                       for name in ALGORITHMS}
        self.image = ipywidgets.Image(format="png")
        self.message = ipywidgets.HTML()
        self.info = ipywidgets.HTML()
        self._start_worker(self._compute, name="AlgorithmRace-compute", errors=self.message,
                           delay=delay)
        controls = ipywidgets.VBox([
            self.picker,
            ipywidgets.HBox([self.problem, self.heterogeneity]),
            ipywidgets.HBox([self.lr, self.steps]),
            ipywidgets.HBox(list(self.checks.values())),
        ])
        super().__init__([controls, self.message, self.image, self.info])
        self.picker.observe(self._on_change, names=["topology", "error"])
        for w in (self.problem, self.heterogeneity, self.lr, self.steps,
                  *self.checks.values()):
            w.observe(self._on_change, names="value")
        self.refresh()

    # ------------------------------------------------------------------ what is shown
    @property
    def curves(self) -> dict[str, RaceCurve]:
        """``{name: RaceCurve}`` of the checked racers (copies), as last drawn."""
        with self._lock:
            return {name: c.copy() for name, c in self._curves.items()}

    @property
    def step_size(self) -> float | None:
        """The step size the algorithms get: ``lr x L`` (the slider) divided by ``L``."""
        p = self.problem_instance
        return None if p is None else self.lr.value / p.smoothness

    @property
    def topology(self):
        return self.picker.topology

    @property
    def figure(self) -> RaceFigure | None:
        """The :class:`RaceFigure` behind the image (its lines hold the data drawn)."""
        return self._figure

    @property
    def algorithms(self) -> list[str]:
        """The checked racers."""
        return [name for name, box in self.checks.items() if box.value]

    # ------------------------------------------------------------------ lifecycle
    def refresh(self) -> None:
        """Recompute the race with the current control values (in the background)."""
        with self._lock:
            self._generation += 1
            self._changed_at = time.perf_counter()
        self._worker.request()

    def _stop(self) -> None:
        with self._lock:
            self._generation += 1  # a run in progress stops at its next chunk

    # ------------------------------------------------------------------ reactions
    def _on_change(self, change=None) -> None:
        self._guard(self.refresh)

    def _settings(self) -> dict:
        return {
            "problem": self.problem.value, "n": self.picker.n.value,
            "heterogeneity": float(self.heterogeneity.value), "lr_L": float(self.lr.value),
            "steps": int(self.steps.value), "seed": self.seed,
        }

    def _compute(self) -> None:
        """Runs in the worker thread: rebuild and run the race of the current settings."""
        with self._lock:
            generation, started = self._generation, self._changed_at
        topology = self.picker.topology
        if topology is None:
            with self._lock:
                self._curves = {}
            self.message.value = error_html(self.picker.error or "No topology: pick one.")
            return
        s = self._settings()
        names = self.algorithms
        problem = make_problem(s["problem"], s["n"], s["heterogeneity"], s["seed"])
        lr = s["lr_L"] / problem.smoothness
        steps = s["steps"]
        log_every = max(1, steps // 200)
        tree, tree_text = (None, "") if "RelaySGD" not in names else relay_tree(topology)
        self.problem_instance, self.tree, self.tree_description = problem, tree, tree_text
        self.log_every = log_every
        if self._cache.get("topology") is not topology or self._cache.get("settings") != s:
            self._cache = {"topology": topology, "settings": s}  # finished curves by name
        cached = {name: self._cache[name] for name in names if name in self._cache}
        todo = [name for name in names if name not in cached]

        def stale() -> bool:
            return self._generation != generation

        first = [True]
        last_draw = [0.0]

        def progress(curves) -> None:
            now = time.perf_counter()
            if first[0] or now - last_draw[0] > 0.25:
                self._publish({**cached, **curves}, names, steps, generation, problem, lr,
                              topology, sticky=True)
                if first[0]:
                    self.first_image_seconds = time.perf_counter() - started
                first[0] = False
                last_draw[0] = time.perf_counter()

        curves = run_race(problem, topology, todo, lr, steps, log_every=log_every, tree=tree,
                          on_progress=progress, cancelled=stale) if todo else {}
        if curves is None or stale():
            return  # newer settings: the worker runs again
        for name, curve in curves.items():
            self._cache[name] = curve
        self._publish({**cached, **curves}, names, steps, generation, problem, lr, topology)
        if first[0]:
            self.first_image_seconds = time.perf_counter() - started
        self.run_seconds = time.perf_counter() - started

    def _publish(self, curves, names, steps, generation, problem, lr, topology, *,
                 sticky: bool = False) -> None:
        """Show ``curves``: data for tests, the picture, the messages."""
        if self._generation != generation:
            return
        ordered = {name: curves[name] for name in names if name in curves}
        with self._lock:
            self._curves = {name: c.copy() for name, c in ordered.items()}
        if self._figure is None:
            self._figure = RaceFigure()
        self._figure.update(ordered, steps, sticky=sticky)
        png = self._figure.png()
        if self._generation != generation:
            return
        self._show_png(self.image, png, self._figure.fig)
        self.rendered_generation = generation
        self.message.value = self._messages(ordered)
        self.info.value = self._info(problem, lr, topology, names)

    def _messages(self, curves: dict[str, RaceCurve]) -> str:
        if not curves:
            return note_html("No algorithm is checked: tick at least one box to race.")
        lines = []
        for name, c in curves.items():
            if c.status == "diverged":
                lines.append(error_html(f"{name} diverged at iteration {c.diverged_at}: lower "
                                        "the step size."))
            elif c.status == "skipped":
                lines.append(note_html(f"{name} skipped: {c.note}"))
        return "".join(lines)

    def _info(self, problem, lr, topology, names) -> str:
        b2 = problem.heterogeneity
        parts = [
            (f"<b>{html.escape(problem.name)}</b>, n = {problem.n}, d = {problem.dim}: "
             f"L = {fmt(problem.smoothness, 4)}, heterogeneity at the optimum b&sup2; = "
             f"(1/n)&Sigma;&#8214;&nabla;f<sub>i</sub>(x*)&#8214;&sup2; = {fmt(b2, 4)}"),
            (f"step size lr = {fmt(self.lr.value, 3)} / L = {fmt(lr, 4)}; topology "
             f"{html.escape(topology.name)}, &rho; = {fmt(topology.rho, 4)}"),
        ]
        if "RelaySGD" in names and self.tree_description:
            parts.append(f"RelaySGD runs on the {html.escape(self.tree_description)} "
                         "(same lr, no delay correction).")
        return "<div style='font-size:90%;line-height:1.4'>" + "<br>".join(parts) + "</div>"
