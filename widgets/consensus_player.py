r"""ConsensusPlayer: watch n nodes agree on the average of their values, one gossip step at a time.

What it teaches. Every node i starts with a number ``x_i^0`` and, at each step, replaces it by
a weighted average of what its in-neighbours hold, ``x^{k+1} = W^{(k)} x^k`` (row i of W =
receiver i). With a doubly stochastic W the average ``x_bar^0`` never changes and every node
converges to it; the mean squared distance to it,

.. math::  e_k = \frac{1}{n} \sum_i (x_i^k - \bar{x}^0)^2 \;\le\; \rho^{2k} e_0,
           \qquad \rho = \|W - \tfrac{1}{n} 1 1^T\|_2,

falls at least as fast as ``rho^(2k)`` (drawn dashed for static topologies): a ring (rho close
to 1) crawls, an exponential graph runs, the one-peer exponential graph with n a power of two
is exact after log2(n) steps.

The push-sum mode moves to a *directed* graph whose out-degrees differ (a ring i -> i+1 plus
seeded one-way shortcuts). Plain averaging there (each receiver averages what it hears,
row-stochastic weights) still reaches a consensus, but on the *biased* value ``pi^T x^0``
(``pi``: the stationary distribution of W, ``pi^T W = pi^T``), not on the mean. Push-sum
(each sender splits its value, and a weight w, among itself and its out-neighbours:
column-stochastic weights) keeps the sum, and its ratio ``x_i / w_i`` converges to the true
mean. The player shows both numbers and both error curves. (Why a graph of its own: every
family declearn registers is doubly stochastic, the directed ones too (exponential,
D-EquiStatic, OD-EquiDyn, one-peer), and there push-sum and plain averaging coincide. Its
weights come from declearn's rules ``uniform_out`` and ``uniform``.)

Display: one PNG (an :class:`ipywidgets.Image`, rendered with matplotlib's Agg canvas from a
persistent Figure whose artists are updated in place), so it works headless and is easy to
test. The graph with node colours (a fixed colour scale from the initial min/max, colour bar
marking the true mean) sits beside the error curve on a log axis.

Three parts: the model, :class:`ConsensusModel` (pure: topology and ``x^0`` in, values and
curves out, iterates computed forward on demand and kept, so scrubbing back is free; ``pi`` from
:func:`declearn.topology.stationary_distribution`); the figure, :class:`PlayerFigure` (the graph
drawn by :func:`declearn.topology.draw.draw_graph`, as ``Topology.draw()`` draws it); the shell,
:class:`ConsensusPlayer` (the controls). Rendering runs in one background thread that always draws
the latest state (intermediate frames are dropped), so the kernel never queues up frames while
the Play widget runs; :meth:`ConsensusPlayer.wait_idle` waits for the image of the last change.
"""

from __future__ import annotations

import math
import time
import warnings
from typing import ClassVar

import ipywidgets
import numpy as np
import torch

from declearn.algorithms import AverageConsensus, PushSumConsensus
from declearn.comm import SimComm
from declearn.topology import apply_weights, family_info, stationary_distribution
from declearn.topology.draw import LABELLED_MAX_NODES, draw_graph, layout_positions
from widgets._base import WidgetShell
from widgets._render import blitted_png, error_html, new_figure

__all__ = [
    "INITS",
    "MODES",
    "ConsensusModel",
    "ConsensusPlayer",
    "ConsensusTrace",
    "PlayerFigure",
    "directed_demo_graph",
    "initial_values",
    "stationary_distribution",
]

#: How the initial values are drawn (see :func:`initial_values`).
INITS = ("random", "spike", "ramp")
#: The player's two modes: average consensus on the chosen topology, push-sum on a digraph.
MODES = ("average", "push_sum")
#: Iterates kept per trace at most (values, n x steps): 256 nodes x 2000 steps = 4 MB.
MAX_CACHED_VALUES = 512 * 2000
#: Errors below this are drawn at it (a log axis cannot show 0: exact averaging reaches 0).
ERROR_FLOOR = 1e-32

_AVERAGE_LABEL = "average consensus"
_PUSH_LABEL = "push-sum x/w"
_PLAIN_LABEL = "plain averaging"


# ============================================================================ model
def initial_values(n: int, kind: str = "random", seed: int = 0) -> np.ndarray:
    """Node values ``x^0`` (float64, shape (n,)): ``"random"`` standard normal from ``seed``;
    ``"spike"`` 1 at one node (chosen by ``seed``) and 0 elsewhere (watch it diffuse);
    ``"ramp"`` evenly spaced from -1 at node 0 to 1 at node n-1."""
    if kind not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {kind!r}.")
    if kind == "random":
        return np.random.default_rng(seed).standard_normal(n)
    if kind == "spike":
        x = np.zeros(n)
        x[int(seed) % n] = 1.0
        return x
    return np.linspace(-1.0, 1.0, n)


def directed_demo_graph(n: int, seed: int = 0, *, weights: str = "sender"):
    """A strongly connected directed graph with unequal degrees, for the push-sum demo.

    Node j always sends to ``j + 1`` (a directed ring, so information goes around); about one
    node in four also sends to 3 other nodes chosen at random (``seed``), so in- and
    out-degrees differ from node to node and plain averaging is visibly biased. ``weights="sender"``
    gives push-sum's column-stochastic weights (each sender splits its value evenly among
    itself and its out-neighbours, rule ``uniform_out``); ``"receiver"`` gives plain
    averaging's row-stochastic weights on the same links (each receiver averages what it
    hears, rule ``uniform``). The same ``(n, seed)`` always gives the same links.
    """
    if weights not in ("sender", "receiver"):
        raise ValueError(f"weights must be 'sender' or 'receiver', got {weights!r}.")
    rng = np.random.default_rng(seed)
    edges = [(j, (j + 1) % n) for j in range(n)]
    for j in range(n):
        extra = 3 if rng.random() < 0.25 else 0
        others = np.array([v for v in range(n) if v not in (j, (j + 1) % n)], dtype=np.int64)
        if extra and others.size:
            targets = rng.choice(others, size=min(extra, others.size), replace=False)
            edges.extend((j, int(v)) for v in targets)
    rule = "uniform_out" if weights == "sender" else "uniform"
    label = "push-sum weights" if weights == "sender" else "receiver averages"
    return apply_weights(n, edges, rule, directed=True,
                         name=f"directed ring + shortcuts ({label})")


class ConsensusTrace:
    """The iterates of one consensus algorithm, computed forward on demand and kept.

    ``values(k)`` is the algorithm's iterate after k steps (shape (n,)), ``errors(k)`` the
    curve ``(1/n) sum_i (x_i^j - target)^2`` for j = 0..k. At most ``capacity`` steps are
    kept (asking for more raises a ValueError).
    """

    def __init__(self, algorithm, target: float, capacity: int):
        self.algorithm = algorithm
        self.target = float(target)
        self.capacity = int(capacity)
        first = self._read()
        self._states = np.empty((self.capacity + 1, first.size))
        self._errors = np.empty(self.capacity + 1)
        self._states[0] = first
        self._errors[0] = np.mean((first - self.target) ** 2)
        self.reached = 0  # the furthest step computed so far

    def _read(self) -> np.ndarray:
        return self.algorithm.iterate.detach().cpu().numpy().reshape(-1).astype(np.float64)

    def advance(self, k: int) -> None:
        """Compute the iterates up to step ``k`` (nothing to do when already there)."""
        if not 0 <= k <= self.capacity:
            raise ValueError(f"step k must be in 0..{self.capacity}, got {k}.")
        while self.reached < k:
            self.algorithm.step()
            x = self._read()
            self._states[self.reached + 1] = x
            self._errors[self.reached + 1] = np.mean((x - self.target) ** 2)
            self.reached += 1  # last: a reader in another thread sees only filled rows

    def values(self, k: int) -> np.ndarray:
        self.advance(k)
        return self._states[k].copy()

    def errors(self, k: int | None = None) -> np.ndarray:
        """The error curve for steps 0..k (default: every step computed so far)."""
        k = self.reached if k is None else k
        self.advance(k)
        return self._errors[:k + 1].copy()


class ConsensusModel:
    """What the player shows, from a topology and initial values (no widgets here).

    Build it with :meth:`average` (average consensus on any declearn topology, static or
    dynamic) or :meth:`push_sum` (push-sum and plain averaging on :func:`directed_demo_graph`).

    Attributes: ``mode``, ``n``, ``x0``, ``true_mean`` (``mean(x0)``), ``graph`` (the topology
    drawn), ``traces`` (label -> :class:`ConsensusTrace`, the main one first), ``main`` (its
    label), ``rho`` (of a static topology in average mode, else None), ``biased_limit``
    (``pi^T x0`` of plain averaging, push-sum mode only), ``capacity`` (steps kept).
    """

    def __init__(self, mode, graph, x0, traces: dict, *, rho=None, biased_limit=None,
                 capacity: int):
        self.mode = mode
        self.graph = graph
        self.x0 = np.asarray(x0, dtype=np.float64)
        self.n = self.x0.size
        self.true_mean = float(self.x0.mean())
        self.traces = traces
        self.main = next(iter(traces))
        self.rho = rho
        self.biased_limit = biased_limit
        self.capacity = capacity

    @staticmethod
    def _x0_tensor(x0: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x0, dtype=np.float64).reshape(-1, 1))

    @classmethod
    def average(cls, topology, x0, *, capacity: int = 200) -> ConsensusModel:
        """Average consensus ``x^{k+1} = W^{(k)} x^k`` on ``topology`` (static or dynamic),
        run by declearn's :class:`~declearn.algorithms.AverageConsensus` under ``SimComm(n)``."""
        x0 = np.asarray(x0, dtype=np.float64).reshape(-1)
        capacity = _check_capacity(capacity, x0.size)
        alg = AverageConsensus(SimComm(x0.size), topology, cls._x0_tensor(x0))
        traces = {_AVERAGE_LABEL: ConsensusTrace(alg, x0.mean(), capacity)}
        rho = None if topology.is_dynamic else float(topology.rho)
        return cls("average", topology, x0, traces, rho=rho, capacity=capacity)

    @classmethod
    def push_sum(cls, x0, *, seed: int = 0, capacity: int = 200) -> ConsensusModel:
        """Push-sum (column-stochastic weights) and plain averaging (row-stochastic weights)
        on the same :func:`directed_demo_graph` ``(n, seed)``."""
        x0 = np.asarray(x0, dtype=np.float64).reshape(-1)
        n = x0.size
        capacity = _check_capacity(capacity, n)
        pushing = directed_demo_graph(n, seed, weights="sender")
        averaging = directed_demo_graph(n, seed, weights="receiver")
        push = PushSumConsensus(SimComm(n), pushing, cls._x0_tensor(x0))
        with warnings.catch_warnings():  # the bias it warns about is what this model shows
            warnings.filterwarnings("ignore", "The weights of .* not columns", UserWarning)
            plain = AverageConsensus(SimComm(n), averaging, cls._x0_tensor(x0))
        traces = {
            _PUSH_LABEL: ConsensusTrace(push, x0.mean(), capacity),
            _PLAIN_LABEL: ConsensusTrace(plain, x0.mean(), capacity),
        }
        limit = float(stationary_distribution(averaging.W) @ x0)
        model = cls("push_sum", pushing, x0, traces, biased_limit=limit, capacity=capacity)
        model.averaging_graph = averaging
        return model

    def advance(self, k: int) -> None:
        for trace in self.traces.values():
            trace.advance(k)

    def values(self, k: int, which: str | None = None) -> np.ndarray:
        """Node values after k steps of trace ``which`` (default: the main one)."""
        return self.traces[which or self.main].values(k)

    def curves(self, k: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """label -> (steps 0..k, error curve) for every trace."""
        ks = np.arange(k + 1)
        return {label: (ks, t.errors(k)) for label, t in self.traces.items()}

    def theory(self, k: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(steps 0..k, ``rho^(2j) e_0``), the bound of a static doubly stochastic W; None when
        it does not apply (dynamic topology, push-sum mode)."""
        if self.rho is None or self.mode != "average":
            return None
        ks = np.arange(k + 1)
        e0 = self.traces[self.main].errors(0)[0]
        return ks, e0 * self.rho ** (2.0 * ks)


def _check_capacity(capacity: int, n: int) -> int:
    capacity = int(capacity)
    if capacity < 1:
        raise ValueError(f"max_steps must be at least 1, got {capacity}.")
    return min(capacity, max(1, MAX_CACHED_VALUES // max(n, 1)))


# ============================================================================ drawing
class PlayerFigure:
    """One persistent Figure for the player: the graph with node colours, the error curves.

    :meth:`set_model` points it at a new model (new colour scale, graph, curves);
    :meth:`update` moves the artists to step k (``set_array`` for the node colours,
    ``set_data`` for the curves; for a dynamic topology the links of ``W(k)`` are redrawn when
    the step's matrix changes); :meth:`png` renders it. Frames are *blitted*: everything that
    does not change from step to step (axes, ticks, colour bar, legend, theory line) is drawn
    once into a background, and a frame only restores it and draws the moving artists. The
    background is redrawn when the model or the error axis' decades change.
    """

    CMAP = "coolwarm"
    COLORS: ClassVar[dict[str, str]] = {_AVERAGE_LABEL: "C0", _PUSH_LABEL: "C2",
                                        _PLAIN_LABEL: "C3"}

    def __init__(self, max_steps: int):
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize
        from matplotlib.ticker import LogLocator, NullLocator

        self.max_steps = max_steps
        self.model: ConsensusModel | None = None
        self.fig = new_figure(9.6, 3.9, layout="constrained")
        self.ax_graph, self.ax_err = self.fig.subplots(
            1, 2, gridspec_kw={"width_ratios": [1.0, 1.25]})
        self._mappable = ScalarMappable(Normalize(0.0, 1.0), self.CMAP)
        cbar = self.fig.colorbar(self._mappable, ax=self.ax_graph, shrink=0.85, pad=0.01)
        cbar.set_label("node value (fixed scale; mean: solid mark)", fontsize=8)
        cbar.ax.tick_params(labelsize=7)
        self._mean_mark = cbar.ax.axhline(0.5, color="k", lw=2)
        self._bias_mark = cbar.ax.axhline(0.5, color="k", lw=1.5, ls=":")

        ax = self.ax_err
        ax.set_yscale("log")
        ax.set_xlim(0, max_steps)
        # The layout is computed once, on the first frame: start with the widest tick labels
        # the axis will ever need, so that later frames' labels fit.
        ax.set_ylim(ERROR_FLOOR / 10.0, 10.0)
        ax.set_xlabel("step k", fontsize=9)
        ax.set_ylabel(r"$e_k = \frac{1}{n}\sum_i (x_i^k - \bar{x}^0)^2$", fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
        ax.tick_params(labelsize=8)
        # Major decades only: the minor ticks of a log axis cost a third of a full draw.
        ax.yaxis.set_major_locator(LogLocator(base=10.0, numticks=8))
        ax.yaxis.set_minor_locator(NullLocator())
        self._ahead, self._done, self._dot = {}, {}, {}
        for label, c in self.COLORS.items():
            (self._ahead[label],) = ax.plot([], [], color=c, alpha=0.25, lw=1.5)
            (self._done[label],) = ax.plot([], [], color=c, lw=2, label=label)
            (self._dot[label],) = ax.plot([], [], "o", color=c, ms=5)
        (self._theory,) = ax.plot([], [], "k--", lw=1)
        bias = r"plain averaging's bias$^2$ $(\pi^T x^0 - \bar{x}^0)^2$"
        self._bias_line = ax.axhline(1.0, color="C3", ls=":", lw=1, label=bias)
        # Titles at a fixed height (y=...) skip matplotlib's title placement on every draw.
        self.ax_graph.set_title(" ", fontsize=9, y=1.0)
        ax.set_title(" ", fontsize=9, y=1.0)
        self._moving = [self.ax_graph.title, ax.title]
        for group in (self._ahead, self._done, self._dot):
            self._moving.extend(group.values())
        for artist in self._moving:
            artist.set_animated(True)
        self._graph_artists: list = []
        self._moving_graph: list = []
        self._nodes = None
        self._drawn_step = None
        self._pos = None
        self._ylim = None
        self._background = None

    @property
    def node_values(self) -> np.ndarray | None:
        """The values the node colours of the current frame map (a copy), or None."""
        if self._nodes is None or self._nodes.get_array() is None:
            return None
        return np.array(self._nodes.get_array(), dtype=float)

    @property
    def norm(self):
        """The colour scale (a matplotlib Normalize; vmin/vmax = min/max of x0)."""
        return self._mappable.norm

    # ------------------------------------------------------------------ model
    def set_model(self, model: ConsensusModel) -> None:
        self.model = model
        lo, hi = float(model.x0.min()), float(model.x0.max())
        if hi - lo < 1e-12:
            lo, hi = lo - 0.5, hi + 0.5
        self._mappable.set_clim(lo, hi)  # the colour bar and the nodes share this norm
        self._mean_mark.set_ydata([model.true_mean, model.true_mean])
        biased = model.biased_limit
        self._bias_mark.set_visible(biased is not None)
        if biased is not None:
            self._bias_mark.set_ydata([biased, biased])
        for label in self.COLORS:
            shown = label in model.traces
            for group in (self._ahead, self._done, self._dot):
                group[label].set_visible(shown)
                group[label].set_data([], [])
        handles = [self._done[label] for label in model.traces]
        theory = model.theory(self.max_steps)
        self._theory.set_visible(theory is not None)
        if theory is not None:
            self._theory.set_data(theory[0], np.maximum(theory[1], ERROR_FLOOR))
            self._theory.set_label(rf"bound $\rho^{{2k}} e_0$, $\rho$ = {model.rho:.4g}")
            handles.append(self._theory)
        self._bias_line.set_visible(biased is not None)
        if biased is not None:
            self._bias_line.set_ydata([max((biased - model.true_mean) ** 2, ERROR_FLOOR)] * 2)
            handles.append(self._bias_line)
        self.ax_err.legend(handles=handles, fontsize=7, loc="upper right")
        self._pos = layout_positions(model.graph)
        self._drawn_step = None
        self._background = None

    def _draw_graph(self, k: int) -> None:
        graph = self.model.graph
        step = graph.at(k)
        if step is self._drawn_step:
            return
        for artist in self._graph_artists:
            artist.remove()
        drawn = draw_graph(self.ax_graph, step, self._pos,
                           labels=step.n <= LABELLED_MAX_NODES)
        self._graph_artists = drawn.all
        self._nodes = drawn.nodes
        # Moving artists are drawn per frame over the background: the node colours always,
        # the links too when they change with k (dynamic topology). A static graph's links,
        # up to thousands of segments, stay in the background.
        moving = drawn.all if graph.is_dynamic else [drawn.nodes, *drawn.labels]
        for artist in moving:
            artist.set_animated(True)
        self._moving_graph = moving
        self._nodes.set_cmap(self.CMAP)
        self._nodes.set_norm(self._mappable.norm)
        self._drawn_step = step

    # ------------------------------------------------------------------ frames
    def update(self, k: int, values: np.ndarray) -> None:
        model = self.model
        self._draw_graph(k)
        if self._nodes is not None:
            self._nodes.set_array(np.asarray(values))
        g = model.graph
        if g.is_dynamic:
            title = f"{g.name}, n={model.n}: links of W({k}), step k={k}"
        elif model.mode == "push_sum":
            title = f"directed ring + shortcuts, n={model.n}: step k={k}"
        else:
            title = f"{g.name}, n={model.n}: step k={k}"
        self.ax_graph.title.set_text(title)
        self.ax_err.title.set_text(f"mean squared distance to the true mean, step k={k}")
        lows, highs = [], []
        for label, trace in model.traces.items():
            full = np.maximum(trace.errors(), ERROR_FLOOR)
            ks = np.arange(full.size)
            self._ahead[label].set_data(ks, full)
            self._done[label].set_data(ks[:k + 1], full[:k + 1])
            self._dot[label].set_data([k], [full[k]])
            lows.append(full.min())
            highs.append(full.max())
        theory = model.theory(max(self._reached(), k))
        if theory is not None:
            lows.append(max(theory[1][-1], ERROR_FLOOR))
        if model.biased_limit is not None:
            lows.append(max((model.biased_limit - model.true_mean) ** 2, ERROR_FLOOR))
        # Whole decades, so the limits (and the background) change only now and then.
        bottom = 10.0 ** (math.floor(math.log10(max(min(lows), ERROR_FLOOR))) - 1)
        top = 10.0 ** math.ceil(math.log10(max(max(highs), ERROR_FLOOR) * 2.0))
        ylim = (bottom, max(top, bottom * 100))
        if ylim != self._ylim:
            self.ax_err.set_ylim(*ylim)
            self._ylim = ylim
            self._background = None

    def _reached(self) -> int:
        return max(t.reached for t in self.model.traces.values())

    def png(self) -> bytes:
        """The current frame as PNG bytes (a full draw only when the background changed)."""
        png, self._background = blitted_png(self.fig, self._background,
                                            self._moving + self._moving_graph)
        return png


# ============================================================================ the widget
class ConsensusPlayer(WidgetShell):
    """Average consensus, step by step: node values as colours on the graph, error curve beside.

    ``ConsensusPlayer()`` or ``ConsensusPlayer("exponential", n=32)``; display it as the last
    expression of a cell. Press play (or drag the step slider) and watch every node's colour
    drift to the colour of the mean (black mark on the colour bar) while the error falls like
    ``rho^(2k)``; switch to push-sum to see why directed graphs need it (see the module
    docstring for the maths).

    Parameters: ``family``, ``n`` and ``**params`` pick the topology (any declearn family,
    static or dynamic; changed later with the topology controls), ``seed`` seeds the initial
    values, the push-sum digraph and a random family (unless ``params`` has its own seed),
    ``algorithm`` is ``"average"`` or ``"push_sum"``,
    ``init`` one of :data:`INITS`, ``max_steps`` the length of the step slider (iterates up to
    it are kept, so scrubbing back costs nothing), ``interval`` the Play speed in ms per step.

    For tests and notebooks: :attr:`values` (the colours shown, shape (n,)), :attr:`error_curve`
    and :attr:`curves` (the error data up to the current step), :attr:`theory_curve`,
    :attr:`true_mean`, :attr:`biased_limit`, :attr:`x0`, :attr:`topology`, :attr:`step_slider`,
    :attr:`play`, :attr:`speed`, :attr:`image` (PNG), :attr:`figure` (its artists' data),
    :attr:`message` (errors, as text in the widget), :meth:`wait_idle`, :meth:`close`.
    """

    def __init__(self, family: str = "ring", n: int = 16, *, seed: int = 0,
                 algorithm: str = "average", init: str = "random", max_steps: int = 200,
                 interval: int = 300, **params):
        from widgets.picker import TopologyPicker

        if algorithm not in MODES:
            raise ValueError(f"algorithm must be one of {MODES}, got {algorithm!r}.")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}.")
        max_steps = int(max(1, min(int(max_steps), 2000)))
        self.max_steps = max_steps
        self.seed = int(seed)
        self._value_seed = int(seed)
        self.model: ConsensusModel | None = None
        self._figure: PlayerFigure | None = None
        self._values = np.zeros(0)
        self._curves: dict = {}
        self.rendered_k: int | None = None  # the step of the image now shown
        self.render_seconds: float | None = None  # how long the last frame took

        if "seed" in family_info(family).params:
            params.setdefault("seed", self.seed)  # a random family draws with the same seed
        self.picker = TopologyPicker(family, n, n_min=2, n_max=256, **params)
        self.mode = ipywidgets.ToggleButtons(
            options=[("average consensus", "average"), ("push-sum (directed graph)", "push_sum")],
            value=algorithm, description="algorithm", style={"button_width": "180px"})
        self.init = ipywidgets.Dropdown(
            options=[("random values", "random"), ("one spike", "spike"), ("ramp", "ramp")],
            value=init, description="start from")
        self.new_values = ipywidgets.Button(description="new initial values", icon="refresh")
        self.play = ipywidgets.Play(value=0, min=0, max=max_steps, step=1,
                                    interval=int(min(max(interval, 50), 2000)),
                                    description="play")
        self.step_slider = ipywidgets.IntSlider(value=0, min=0, max=max_steps,
                                                description="step k", continuous_update=True)
        self.speed = ipywidgets.IntSlider(value=self.play.interval, min=50, max=2000, step=50,
                                          description="ms / step", continuous_update=False)
        self.color_by = ipywidgets.ToggleButtons(
            options=[("colour by push-sum x/w", _PUSH_LABEL),
                     ("colour by plain averaging", _PLAIN_LABEL)],
            value=_PUSH_LABEL, style={"button_width": "190px"})
        self.image = ipywidgets.Image(format="png")
        self.info = ipywidgets.HTML()
        self.message = ipywidgets.HTML()
        self._links = [
            ipywidgets.link((self.play, "value"), (self.step_slider, "value")),
            ipywidgets.link((self.speed, "value"), (self.play, "interval")),
        ]
        self._frame = None  # (model, k, values) for the render thread; replaced, never mutated
        self._start_worker(self._render, name="ConsensusPlayer-render", errors=self.message)

        controls = ipywidgets.VBox([
            self.picker, self.mode,
            ipywidgets.HBox([self.init, self.new_values]),
            ipywidgets.HBox([self.play, self.step_slider, self.speed]),
            self.color_by,
        ])
        super().__init__([controls, self.message, self.image, self.info])

        self.picker.observe(self._on_rebuild, names=["topology", "error"])
        self.mode.observe(self._on_rebuild, names="value")
        self.init.observe(self._on_rebuild, names="value")
        self.new_values.on_click(self._on_new_values)
        self.step_slider.observe(self._on_step, names="value")
        self.color_by.observe(self._on_step, names="value")
        self._guard(self._rebuild)

    # ------------------------------------------------------------------ what is shown
    @property
    def values(self) -> np.ndarray:
        """The node values shown at the current step (a copy, shape (n,))."""
        return self._values.copy()

    @property
    def curves(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """label -> (steps 0..k, error ``(1/n) sum_i (x_i^j - mean(x^0))^2``) up to the
        current step k; one curve in average mode, push-sum's and plain averaging's in
        push-sum mode."""
        return {label: (ks.copy(), e.copy()) for label, (ks, e) in self._curves.items()}

    @property
    def error_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(steps, errors) of the main curve (average consensus, or push-sum's ratio)."""
        if self.model is None:
            return np.zeros(0, dtype=int), np.zeros(0)
        ks, e = self._curves[self.model.main]
        return ks.copy(), e.copy()

    @property
    def theory_curve(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(steps 0..k, ``rho^(2j) e_0``) for a static topology in average mode, else None."""
        if self.model is None:
            return None
        return self.model.theory(self.step_slider.value)

    @property
    def figure(self) -> PlayerFigure | None:
        """The :class:`PlayerFigure` behind the image (None before the first frame)."""
        return self._figure

    @property
    def true_mean(self) -> float | None:
        return None if self.model is None else self.model.true_mean

    @property
    def biased_limit(self) -> float | None:
        """``pi^T x^0``, where plain averaging on the digraph ends (push-sum mode), else None."""
        return None if self.model is None else self.model.biased_limit

    @property
    def topology(self):
        """The topology being run (the push-sum digraph in push-sum mode)."""
        return None if self.model is None else self.model.graph

    @property
    def x0(self) -> np.ndarray | None:
        return None if self.model is None else self.model.x0.copy()

    # ------------------------------------------------------------------ reactions
    def _on_rebuild(self, change=None) -> None:
        self._guard(self._rebuild)

    def _on_new_values(self, button=None) -> None:
        self._value_seed += 1
        self._guard(self._rebuild)

    def _on_step(self, change=None) -> None:
        self._guard(self._show)

    def _rebuild(self) -> None:
        """A new model (topology, mode or initial values changed), then show the current step."""
        push = self.mode.value == "push_sum"
        self.color_by.layout.display = None if push else "none"
        self.picker.family.disabled = push
        if push:
            n = int(self.picker.n.value)
            x0 = initial_values(n, self.init.value, self._value_seed)
            self.model = ConsensusModel.push_sum(x0, seed=self.seed, capacity=self.max_steps)
        else:
            topology = self.picker.topology
            if topology is None:
                self.model = None
                self.message.value = error_html(
                    self.picker.error or "No topology: pick a family and n.")
                return
            x0 = initial_values(topology.n, self.init.value, self._value_seed)
            self.model = ConsensusModel.average(topology, x0, capacity=self.max_steps)
        self.message.value = ""
        self._show()  # the render thread builds the new model's figure

    def _show(self) -> None:
        model = self.model
        if model is None:
            return
        k = min(int(self.step_slider.value), model.capacity)
        which = self.color_by.value if model.mode == "push_sum" else None
        model.advance(k)
        self._values = model.values(k, which)
        self._curves = model.curves(k)
        self.info.value = self._info_html(model, k)
        self._frame = (model, k, self._values)
        self._worker.request()

    def _render(self) -> None:
        """Runs in the render thread: draw the latest frame (older ones are skipped)."""
        if self._frame is None:
            return
        model, k, values = self._frame
        t0 = time.perf_counter()
        figure = self._figure
        if figure is None:
            figure = self._figure = PlayerFigure(self.max_steps)
        if figure.model is not model:
            figure.set_model(model)
        figure.update(k, values)
        png = figure.png()
        if self._frame[0] is not model:  # a newer model arrived meanwhile: do not show this one
            return
        self._show_png(self.image, png, figure.fig)
        self.rendered_k = k
        self.render_seconds = time.perf_counter() - t0

    def _info_html(self, model: ConsensusModel, k: int) -> str:
        err = {label: c[1][-1] for label, c in model.curves(k).items()}
        parts = [f"<b>step k = {k}</b>", f"true mean x&#772;<sup>0</sup> = {model.true_mean:.6g}"]
        if model.mode == "average":
            parts.append(f"error = {err[model.main]:.3e}")
            if model.rho is not None:
                e0 = model.traces[model.main].errors(0)[0]
                parts.append(f"&rho; = {model.rho:.4g}, bound &rho;<sup>2k</sup> e<sub>0</sub> = "
                             f"{e0 * model.rho ** (2 * k):.3e}")
            else:
                parts.append(f"dynamic topology {model.graph.name}: W changes every step")
        else:
            ratio = model.values(k, _PUSH_LABEL)
            plain = model.values(k, _PLAIN_LABEL)
            parts += [
                (f"plain averaging &rarr; &pi;<sup>T</sup>x<sup>0</sup> = "
                 f"{model.biased_limit:.6g} (biased by "
                 f"{model.biased_limit - model.true_mean:+.3g}); now "
                 f"{plain.min():.4g} .. {plain.max():.4g}"),
                f"push-sum x/w now {ratio.min():.4g} .. {ratio.max():.4g} &rarr; the true mean",
            ]
        return "<br>".join([" &nbsp;|&nbsp; ".join(parts[:3])] + parts[3:])
