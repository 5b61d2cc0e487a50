r"""TopologyExplorer: a topology's graph, its mixing matrix W, rho, the spectral gap and its cost.

What it teaches: one gossip step ``x <- W x`` (row i of W = receiver i) moves every node towards
the average at the rate ``rho = ||W - 11^T/n||_2``; the **spectral gap** ``1 - rho`` is the
speed, the **degree** (messages sent per node per iteration) the price. Sparse graphs are cheap
but slow (ring: gap ~ 4 pi^2 / (3 n^2)), exponential graphs buy a gap of ``2/(tau+1)`` with
``tau = ceil(log2 n)`` messages, and dynamic one-peer graphs send one message per step yet mix
fast *over several steps*: the explorer shows, for step k, the matrix ``W(k)`` and the product
``W(k) ... W(0)`` with its consensus error ``||W(k) ... W(0) - 11^T/n||_2``, which reaches 0
after ``tau`` steps for the one-peer exponential graph when n is a power of 2.

Three parts: the model, :func:`explorer_view` (a pure function of the topology and k: what is
shown) with :class:`ProductCache`; the figure, :class:`ExplorerFigure` (persistent, artists
updated in place, the graph's geometry and layout from :mod:`declearn.topology.draw`, as
``Topology.draw()`` draws it); the shell, :class:`TopologyExplorer` (the controls).
"""

from __future__ import annotations

from dataclasses import dataclass

import ipywidgets
import numpy as np

from declearn.topology import DynamicTopology, Topology
from declearn.topology.draw import (
    LABELLED_MAX_NODES,
    GraphGeometry,
    graph_geometry,
    layout_positions,
    node_colors,
)
from widgets._base import WidgetShell
from widgets._render import blitted_png, fmt, new_figure
from widgets.picker import TopologyPicker

__all__ = [
    "ExplorerFigure",
    "ExplorerView",
    "GraphGeometry",
    "ProductCache",
    "TopologyExplorer",
    "explorer_view",
    "graph_geometry",
    "k_range",
]

#: Beyond this many links the graph panel draws the nodes only (the heatmap still shows W).
MAX_DRAWN_LINKS = 4000
#: Node numbers are written up to this many nodes (as in ``Topology.draw()``).
MAX_LABELLED_NODES = LABELLED_MAX_NODES
#: Steps offered by the k slider for a random (non-periodic) sequence.
RANDOM_STEPS = 32
#: Products kept per topology (dense n x n each) before the cache stops growing.
PRODUCT_CACHE_BYTES = 64 * 2**20


# ---------------------------------------------------------------------- model
def k_range(topology) -> int:
    """Largest step k the explorer offers: two periods (at least 8 steps) of a periodic
    topology, ``RANDOM_STEPS - 1`` for a random sequence, 0 for a static one."""
    if topology is None or not topology.is_dynamic:
        return 0
    if topology.period is None:
        return RANDOM_STEPS - 1
    return min(63, max(2 * topology.period, 8) - 1)


class ProductCache:
    """Products ``P(k) = W(k) @ ... @ W(0)`` of one topology, computed incrementally
    (``P(k) = W(k) P(k-1)``, sparse times dense) and kept while they fit in
    :data:`PRODUCT_CACHE_BYTES`."""

    def __init__(self, topology):
        self.topology = topology
        self._products: dict[int, np.ndarray] = {}
        self._errors: dict[int, float] = {}

    def product(self, k: int) -> np.ndarray:
        from scipy.sparse import csr_matrix

        have = [j for j in self._products if j <= k]
        j = max(have) if have else -1
        P = self._products[j] if have else np.eye(self.topology.n)
        budget = PRODUCT_CACHE_BYTES // max(P.nbytes, 1)
        while j < k:
            j += 1
            s = self.topology.at(j)
            P = csr_matrix((s.data, s.indices, s.indptr), shape=(s.n, s.n)) @ P
            P = np.asarray(P)
            if len(self._products) < budget:
                self._products[j] = P
        return P

    def consensus_error(self, k: int) -> float:
        """``||P(k) - 11^T/n||_2``: from the spectrum when every step is circulant (FFT, no
        LAPACK), else from the SVD of the dense product."""
        if k not in self._errors:
            lam = self.circulant_spectrum(k)
            if lam is not None:
                err = max(abs(lam[0] - 1.0), float(np.abs(lam[1:]).max(initial=0.0)))
            else:
                P = self.product(k)
                err = np.linalg.norm(P - 1.0 / P.shape[0], 2)
            self._errors[k] = float(err)
        return self._errors[k]

    def circulant_spectrum(self, k: int) -> np.ndarray | None:
        """Eigenvalues of ``P(k)`` when ``W(0) .. W(k)`` are all circulant, else None.

        Circulant matrices share the Fourier eigenvectors, so ``P(k)`` is circulant (hence
        normal) with eigenvalues ``prod_j lambda_f(W(j))``; for a normal matrix whose
        eigenvalue at f = 0 (the all-ones vector) is ``lambda_0``, ``||P - J||_2`` is
        ``max(|lambda_0 - 1|, max_{f != 0} |lambda_f|)``. This is exact and costs one FFT per
        step, where an SVD of a 256 x 256 product takes 5-10 ms (and far longer when the BLAS
        threads compete with other processes)."""
        from declearn.topology import circulant_spectrum

        lam = np.ones(self.topology.n, dtype=np.complex128)
        for j in range(k + 1):
            s = self.topology.at(j)
            if s.shifts is None:
                return None
            lam = lam * circulant_spectrum(s)
        return lam


@dataclass
class ExplorerView:
    """What the explorer shows for a topology at step k (numbers as floats, matrices dense)."""

    topology: object
    k: int
    step: Topology  # W(k); the topology itself when static
    W: np.ndarray  # the heatmap: W(k)
    rho: float  # ||W - J||_2, or the effective per-step rate of a dynamic topology
    spectral_gap: float
    degree: int  # messages per node per iteration (busiest node; max over a period)
    step_degree: int  # the same for W(k) alone
    product: np.ndarray | None  # W(k) ... W(0) for a dynamic topology
    consensus_error: float | None  # ||product - J||_2


def explorer_view(topology, k: int = 0, products: ProductCache | None = None) -> ExplorerView:
    """The numbers and matrices the explorer shows for ``topology`` at step ``k``.

    ``products`` (a :class:`ProductCache` of the same topology) saves recomputing the
    product of the first k steps when only k changes."""
    if not isinstance(topology, (Topology, DynamicTopology)):
        raise TypeError(f"expected a Topology or DynamicTopology, got {type(topology).__name__}")
    k = int(k) if topology.is_dynamic else 0
    step = topology.at(k)
    rho = float(topology.rho)
    product = error = None
    if topology.is_dynamic:
        if products is None or products.topology is not topology:
            products = ProductCache(topology)
        product = products.product(k)
        error = products.consensus_error(k)
    return ExplorerView(
        topology=topology, k=k, step=step, W=np.asarray(step.W), rho=rho,
        spectral_gap=1.0 - rho, degree=int(topology.degree), step_degree=int(step.degree),
        product=product, consensus_error=error,
    )


# ---------------------------------------------------------------------- the figure
class ExplorerFigure:
    """The persistent figure of the explorer: a graph panel and one or two heatmaps (W, and
    the product for a dynamic topology). Only artist data change between redraws."""

    def __init__(self, dynamic: bool):
        from matplotlib.collections import EllipseCollection, LineCollection, PolyCollection

        self.dynamic = dynamic
        width = 11.6 if dynamic else 8.0
        self.fig = fig = new_figure(width, 3.7)
        h = 3.7
        gw = 3.3 / width  # a square graph panel
        self.graph = fig.add_axes((0.01, 0.03, gw, 3.3 / h))
        g = self.graph
        g.set_xlim(-1.2, 1.2)  # a torus's wrap-around arcs reach about 1.154
        g.set_ylim(-1.2, 1.2)
        g.set_aspect("equal")
        g.set_axis_off()
        self.edges = LineCollection([], colors="0.45", zorder=1)
        self.heads = PolyCollection([], facecolors="0.25", edgecolors="none", zorder=2)
        self.nodes = EllipseCollection([], [], [], units="xy", offsets=np.zeros((0, 2)),
                                       offset_transform=g.transData, edgecolors="0.15",
                                       linewidths=0.8, zorder=3)
        for art in (self.edges, self.heads, self.nodes):
            g.add_collection(art)
        self.labels = [g.text(0, 0, "", ha="center", va="center", zorder=4, visible=False)
                       for _ in range(MAX_LABELLED_NODES)]
        self.note = g.text(0, -1.13, "", ha="center", va="bottom", fontsize=8, color="0.3")
        # Titles at a fixed height and axis labels at fixed coordinates skip matplotlib's
        # placement passes (they measure every tick label) on each draw: ~20% of a redraw.
        self.graph_title = g.set_title("", fontsize=9, y=1.0)
        x0 = gw + 0.06
        hw = 2.55 / width
        self.w_ax, self.w_im, self.w_cbar = self._heatmap(x0, hw, "W")
        moving = [self.edges, self.heads, self.nodes, *self.labels, self.note, self.graph_title,
                  self.w_im, self.w_ax.title, self.w_cbar.ax]
        if dynamic:
            self.p_ax, self.p_im, self.p_cbar = self._heatmap(x0 + hw + 0.1, hw, "product")
            moving += [self.p_im, self.p_ax.title, self.p_cbar.ax]
        # Everything but the heatmaps' frames, tick labels and axis labels is animated: they
        # depend only on n, so a new k, eta, seed or family at the same n redraws the animated
        # artists over a saved background (a new n draws everything).
        self.moving = moving
        for artist in moving:
            artist.set_animated(True)
        self._background = None
        self._background_n = None  # the n the background was drawn for

    def _heatmap(self, x0: float, w: float, what: str):
        from matplotlib.ticker import MaxNLocator

        ax = self.fig.add_axes((x0, 0.14, w, 0.72))
        im = ax.imshow(np.zeros((2, 2)), cmap="viridis", interpolation="nearest",
                       vmin=0.0, vmax=1.0)
        cax = self.fig.add_axes((x0 + w + 0.008, 0.14, 0.012, 0.72))
        cbar = self.fig.colorbar(im, cax=cax, ticks=MaxNLocator(nbins=4))
        cbar.ax.tick_params(labelsize=7)
        ax.set_xlabel("sender j", fontsize=8)
        ax.xaxis.set_label_coords(0.5, -0.12)
        ax.tick_params(labelsize=7)
        if what == "W":
            ax.set_ylabel("receiver i", fontsize=8)
            ax.yaxis.set_label_coords(-0.14, 0.5)
        else:  # the product's rows are W's rows: its labels would only repeat them (and text
            ax.tick_params(labelleft=False)  # is most of a full redraw's time)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(MaxNLocator(nbins=4, integer=True))
        return ax, im, cbar

    def png(self, n: int) -> bytes:
        """The figure as PNG: only the animated artists are drawn again while ``n`` is the n
        of the saved background, else a full draw."""
        if n != self._background_n:
            self._background, self._background_n = None, n
        png, self._background = blitted_png(self.fig, self._background,
                                            [a for a in self.moving if a.get_visible()])
        return png

    @staticmethod
    def _show_matrix(ax, im, M: np.ndarray, title: str, vmin: float = 0.0) -> None:
        n = M.shape[0]
        im.set_data(M)
        im.set_extent((-0.5, n - 0.5, n - 0.5, -0.5))
        top = float(M.max()) if M.size else 1.0
        clim = (vmin, top if top > vmin else vmin + 1.0)
        if tuple(im.get_clim()) != clim:  # a new clim redraws the colorbar (~15 ms)
            im.set_clim(*clim)
        ax.set_xlim(-0.5, n - 0.5)
        ax.set_ylim(n - 0.5, -0.5)
        ax.set_title(title, fontsize=9, y=1.0)

    def show(self, view: ExplorerView, geo: GraphGeometry) -> None:
        topo, n = view.topology, view.step.n
        # graph
        self.edges.set_segments(list(geo.segments))
        self.edges.set_linewidths(geo.widths if geo.widths.size else [1.0])
        self.edges.set_alpha(geo.alpha)
        self.heads.set_verts(list(geo.heads))
        diam = np.full(n, 2.0 * geo.radius)
        self.nodes.set_widths(diam)
        self.nodes.set_heights(diam)
        self.nodes.set_angles(np.zeros(n))
        self.nodes.set_offsets(geo.pos)
        self.nodes.set_facecolors(node_colors(np.diag(view.W)))  # darker: keeps more
        labelled = n <= MAX_LABELLED_NODES
        size = float(np.clip(geo.radius * 90, 5, 10))
        for i, txt in enumerate(self.labels):
            if labelled and i < n:
                txt.set_position(geo.pos[i])
                txt.set_text(str(i))
                txt.set_fontsize(size)
                txt.set_visible(True)
            else:
                txt.set_visible(False)
        self.note.set_text("" if geo.drawn else
                           f"{geo.links} links: too many to draw (see W)")
        if topo.is_dynamic:
            self.graph_title.set_text(f"{topo.name}, n={n}: who talks at step k={view.k}")
        else:
            self.graph_title.set_text(f"{topo.name}, n={n}")
        # heatmaps
        what = f"W({view.k})" if topo.is_dynamic else "W"
        self._show_matrix(self.w_ax, self.w_im, view.W, f"{what}, row i = receiver")
        if self.dynamic:
            self._show_matrix(self.p_ax, self.p_im, view.product,
                              f"W({view.k}) \u00b7\u00b7\u00b7 W(0)  (all 1/n = averaged)")


# ---------------------------------------------------------------------- the widget
class TopologyExplorer(WidgetShell):
    """Pick a topology and see its graph, its weight matrix W (row i = receiver) as a heatmap,
    ``rho = ||W - 11^T/n||_2``, the spectral gap ``1 - rho`` and the degree (messages per node
    per iteration); for a dynamic topology, a step slider k shows ``W(k)`` and the product
    ``W(k) ... W(0)`` with its consensus error ``||W(k) ... W(0) - 11^T/n||_2``.

    ``TopologyExplorer()`` or ``TopologyExplorer("exponential", n=32)``; ``families``,
    ``n_max`` and parameters (``eta=0.3``, ``seed=1``, ...) go to the
    :class:`~widgets.picker.TopologyPicker` (``.picker``).

    For tests and notebooks: ``.topology`` (the current one, None on error), ``.k`` (the step
    slider, hidden for a static topology), ``.rho_label``/``.gap_label``/``.degree_label``/
    ``.product_label`` (Labels), ``.values`` (the numbers shown), ``.heatmap_data`` (the array
    shown as W), ``.product_data`` (the product shown, dynamic only), ``.image`` (the PNG).
    Redraws run in a background thread: ``wait_idle()`` waits for them, ``close()`` stops it.
    """

    def __init__(self, family: str = "ring", n: int = 16, *, families: list[str] | None = None,
                 n_max: int = 256, k: int = 0, **params):
        self.picker = TopologyPicker(family, n, families=families, n_max=n_max, **params)
        self.k = ipywidgets.IntSlider(
            value=0, min=0, max=7, description="step k", continuous_update=True,
            style={"description_width": "70px"}, layout=ipywidgets.Layout(width="340px"),
        )
        self.play = ipywidgets.Play(value=0, min=0, max=7, interval=700, description="play k")
        self._link = ipywidgets.jslink((self.play, "value"), (self.k, "value"))
        self.k_box = ipywidgets.HBox([self.play, self.k])
        # One Layout per label: a Layout is shared state, hiding one label would hide all.
        self.rho_label = ipywidgets.Label(layout=ipywidgets.Layout(width="auto"))
        self.gap_label = ipywidgets.Label(layout=ipywidgets.Layout(width="auto"))
        self.degree_label = ipywidgets.Label(layout=ipywidgets.Layout(width="auto"))
        self.product_label = ipywidgets.Label(layout=ipywidgets.Layout(width="auto"))
        self.message = ipywidgets.HTML("")
        self.image = ipywidgets.Image(format="png")
        self.values: dict = {}
        self._view: ExplorerView | None = None
        self._panels: dict[bool, ExplorerFigure] = {}
        self._products: ProductCache | None = None
        self._geometry: tuple | None = None  # (step, GraphGeometry) last drawn
        self._positions: tuple | None = None  # (topology, positions)
        stats = ipywidgets.VBox([self.rho_label, self.gap_label, self.degree_label,
                                 self.product_label, self.k_box, self.message],
                                layout=ipywidgets.Layout(padding="0 0 0 16px"))
        super().__init__([ipywidgets.HBox([self.picker, stats]), self.image])
        self._links = [self._link]
        self._start_worker(self._redraw, name="TopologyExplorer", errors=self.message,
                           what="could not draw")
        self._follow_topology(self.picker.topology)
        if k:
            self.k.value = k
        self.picker.observe(self._on_topology, names="topology")
        self.k.observe(self._on_k, names="value")
        self._worker.run_now()

    # ------------------------------------------------------------------ API
    @property
    def topology(self):
        """The topology shown (the picker's), or None when it could not be built."""
        return self.picker.topology

    @property
    def heatmap_data(self) -> np.ndarray | None:
        """The matrix drawn as the W heatmap (``W(k)`` for a dynamic topology)."""
        panels = self._current_panels()
        return None if panels is None else np.array(panels.w_im.get_array())

    @property
    def product_data(self) -> np.ndarray | None:
        """The matrix drawn as the product ``W(k) ... W(0)`` (None for a static topology)."""
        panels = self._current_panels()
        if panels is None or not panels.dynamic:
            return None
        return np.array(panels.p_im.get_array())

    @property
    def graph_segments(self) -> np.ndarray:
        """The link segments drawn in the graph panel, shape (m, 2, 2)."""
        panels = self._current_panels()
        if panels is None:
            return np.zeros((0, 2, 2))
        segs = panels.edges.get_segments()
        return np.array(segs).reshape(-1, 2, 2) if segs else np.zeros((0, 2, 2))

    # ------------------------------------------------------------------ events
    def _follow_topology(self, topo) -> None:
        """Main thread: fit the k slider to the new topology."""
        kmax = k_range(topo)
        dynamic = topo is not None and topo.is_dynamic
        self.k.max = max(kmax, 1)
        self.play.max = max(kmax, 1)
        self.k_box.layout.display = "" if dynamic else "none"
        self.product_label.layout.display = "" if dynamic else "none"

    def _on_topology(self, change) -> None:
        try:
            self._follow_topology(change["new"])
        except Exception as exc:  # noqa: BLE001 - a message in the widget, never a traceback
            self._show_error(exc)
        self._worker.request()

    def _on_k(self, change) -> None:
        self._worker.request()

    # ------------------------------------------------------------------ drawing (worker)
    def _current_panels(self) -> ExplorerFigure | None:
        view = self._view
        if view is None:
            return None
        return self._panels.get(bool(view.topology.is_dynamic))

    def _redraw(self) -> None:
        topo = self.picker.topology
        k = self.k.value
        if topo is None:
            self._view = None
            self.values = {}
            dash = "\u2014"
            self.rho_label.value = f"rho = {dash}"
            self.gap_label.value = f"spectral gap 1 - rho = {dash}"
            self.degree_label.value = f"degree = {dash}"
            self.product_label.value = ""
            self.image.layout.visibility = "hidden"
            self.message.value = ""
            return
        if self._products is None or self._products.topology is not topo:
            self._products = ProductCache(topo) if topo.is_dynamic else None
        view = explorer_view(topo, k, self._products)
        if self._positions is None or self._positions[0] is not topo:
            self._positions = (topo, layout_positions(topo))
        step = view.step
        if self._geometry is None or self._geometry[0] is not step:
            geo = graph_geometry(step, self._positions[1], max_links=MAX_DRAWN_LINKS)
            self._geometry = (step, geo)
        panels = self._panels.get(topo.is_dynamic)
        if panels is None:
            panels = self._panels[topo.is_dynamic] = ExplorerFigure(topo.is_dynamic)
        panels.show(view, self._geometry[1])
        png = panels.png(view.step.n)
        self._view = view
        self.values = {
            "rho": view.rho, "spectral_gap": view.spectral_gap, "degree": view.degree,
            "step_degree": view.step_degree, "k": view.k,
            "consensus_error": view.consensus_error,
        }
        labels = self._label_texts(view)
        self.rho_label.value, self.gap_label.value = labels[0], labels[1]
        self.degree_label.value, self.product_label.value = labels[2], labels[3]
        self._show_png(self.image, png, panels.fig)
        self.image.layout.visibility = "visible"
        self.message.value = ""

    @staticmethod
    def _label_texts(view: ExplorerView) -> tuple[str, str, str, str]:
        topo = view.topology
        if not topo.is_dynamic:
            rho = f"rho = ||W - J||_2 = {fmt(view.rho)}"
            degree = f"degree (messages per node per iteration) = {view.degree}"
            product = ""
        else:
            how = "root mean square" if topo.period is None else f"over a period of {topo.period}"
            rho = f"rho (per step, {how}) = {fmt(view.rho)}"
            degree = (f"degree (messages per node per iteration; step k: {view.step_degree}) "
                      f"= {view.degree}")
            product = f"consensus error ||W({view.k})...W(0) - J||_2 = {fmt(view.consensus_error)}"
        gap = f"spectral gap 1 - rho = {fmt(view.spectral_gap)}"
        return rho, gap, degree, product
