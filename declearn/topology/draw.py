"""Pictures of topologies: the graph for small n, the matrix W as a heatmap for large n.

``draw(topology)`` returns a matplotlib ``Figure`` built without pyplot, so no figure is left
open and nothing is shown twice in a notebook; ``repr_png(topology)`` renders it to PNG bytes
(how a topology displays itself in Jupyter).

Picture conventions: an edge ``j -> i`` is drawn when ``W[i, j] > 0`` (j sends to i), its width
grows with the weight, and it carries an arrowhead at the receiver when W is not symmetric.
Layouts: circulant and dynamic topologies on a circle (node 0 on top, clockwise), grids on
their grid, trees top-down from the root, stars around their center, geometric graphs at their
points, anything else with a spring layout of fixed seed (same picture every time) up to 96
nodes and on a circle beyond.

The picture's parts are computed apart from matplotlib, so that the widgets draw exactly what
``draw`` draws: :func:`layout_positions` (where the nodes go),
:func:`~declearn.topology.geometry.graph_geometry` (link segments, widths, arrowheads, node
radius; in :mod:`declearn.topology.geometry`), :func:`node_colors`; :func:`draw_graph` paints them
into an Axes and returns the artists.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from declearn.errors import TopologyError
from declearn.topology.geometry import (
    ARC_PIECES,
    GRAPH_MAX_NODES,
    LABELLED_MAX_NODES,
    GraphGeometry,
    graph_geometry,
    self_weights,
)

if TYPE_CHECKING:  # a topology draws itself with this module: no import back at run time
    from declearn.topology.base import Topology

__all__ = [
    "ARC_PIECES",
    "GRAPH_MAX_NODES",
    "LABELLED_MAX_NODES",
    "GraphArtists",
    "GraphGeometry",
    "draw",
    "draw_graph",
    "graph_geometry",
    "layout_positions",
    "node_colors",
    "repr_png",
    "self_weights",
]

#: Beyond this many nodes the heatmap sums W over square blocks (one pixel per block).
HEATMAP_MAX_PIXELS = 512
#: Beyond this many nodes a graph without a natural layout goes on a circle: a spring
#: layout costs about 0.1 s at n = 256 and tangles that many nodes anyway.
SPRING_MAX_NODES = 96
LAYOUTS = ("circle", "grid", "tree", "star", "spring")


def draw(
    topology,
    ax=None,
    k: int = 0,
    layout=None,
    *,
    heatmap: bool | None = None,
    labels: bool | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (4.2, 4.4),
):
    """Draw ``topology`` (step ``k`` of a dynamic one) and return the matplotlib Figure.

    ``ax``: draw into this Axes (its figure is returned) instead of a new Figure.
    ``layout``: None (automatic), one of ``"circle"``, ``"grid"``, ``"tree"``, ``"star"``,
    ``"spring"``, or node positions (an ``(n, 2)`` array or a ``{node: (x, y)}`` dict).
    ``heatmap``: draw W as an image (default: when ``n > 64``). ``labels``: write node
    numbers (default: when ``n <= 32``). ``title``: replaces the default title (name, n,
    degree, rho; "step k of period p" for a dynamic topology).
    """
    if not _is_topology(topology):
        raise TopologyError(
            f"draw() takes a Topology or DynamicTopology, got {type(topology).__name__}."
        )
    step = topology.at(k)
    if ax is None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize, layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    if heatmap is None:
        heatmap = step.n > GRAPH_MAX_NODES
    if heatmap:
        _draw_heatmap(ax, step, fig)
    else:
        pos = layout_positions(topology, layout, k=k)
        draw_graph(ax, step, pos,
                   labels=step.n <= LABELLED_MAX_NODES if labels is None else bool(labels))
    ax.set_title(_title(topology, k) if title is None else title, fontsize=9)
    return fig


def _is_topology(obj) -> bool:
    """A Topology or DynamicTopology (what ``draw`` needs of one: n, at(k), is_dynamic)."""
    return all(hasattr(obj, name) for name in ("n", "at", "is_dynamic", "params", "recall"))


def repr_png(topology, **kwargs) -> bytes:
    """PNG bytes of :func:`draw` ``(topology, **kwargs)`` (Agg renderer, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = draw(topology, **kwargs)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


# ---------------------------------------------------------------------- layouts
def layout_positions(topology, layout=None, *, k: int = 0) -> np.ndarray:
    """Node positions, an ``(n, 2)`` array scaled into ``[-1, 1]^2`` (see :func:`draw`)."""
    step = topology.at(k)
    n = step.n
    if layout is not None and not isinstance(layout, str):
        pos = _explicit_positions(layout, n)
    else:
        if layout is None:
            layout = _auto_layout(topology, step)
        if layout not in LAYOUTS and layout != "cached":
            raise TopologyError(
                f"Unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}, or pass node "
                "positions as an (n, 2) array."
            )
        pos = {
            "cached": lambda: np.asarray(_cached_pos(topology, step), dtype=np.float64),
            "circle": lambda: _circle(n),
            "grid": lambda: _grid(step),
            "tree": lambda: _tree(step),
            "star": lambda: _star(step),
            "spring": lambda: _spring(step),
        }[layout]()
    return _normalise(pos)


def _auto_layout(topology, step: Topology) -> str:
    if _cached_pos(topology, step) is not None:
        return "cached"
    if getattr(step, "parent", None) is not None:
        return "tree"
    if "shape" in step.params or "shape" in topology.params:
        return "grid"
    if topology.is_dynamic or step.shifts is not None or step.n <= 3:
        return "circle"
    if _star_center(step) is not None:
        return "star"
    return "spring" if step.n <= SPRING_MAX_NODES else "circle"


def _cached_pos(topology, step):
    for t in (step, topology):
        pos = t.recall("pos")
        if pos is not None:
            return pos
    return None


def _explicit_positions(layout, n: int) -> np.ndarray:
    if isinstance(layout, dict):
        missing = [i for i in range(n) if i not in layout]
        if missing:
            raise TopologyError(f"layout misses the position of node(s) {missing[:5]}.")
        layout = [layout[i] for i in range(n)]
    pos = np.asarray(layout, dtype=np.float64)
    if pos.shape != (n, 2):
        raise TopologyError(f"layout positions must have shape ({n}, 2), got {pos.shape}.")
    return pos


def _circle(n: int) -> np.ndarray:
    theta = np.pi / 2 - 2 * np.pi * np.arange(n) / n  # node 0 on top, clockwise
    return np.stack([np.cos(theta), np.sin(theta)], axis=1) if n > 1 else np.zeros((1, 2))


def _grid(step: Topology) -> np.ndarray:
    n = step.n
    shape = step.params.get("shape")
    if shape is None:
        nrow = max(r for r in range(1, math.isqrt(n) + 1) if n % r == 0)
        shape = (nrow, n // nrow)
    nrow, ncol = (int(v) for v in shape)
    if nrow * ncol != n:
        raise TopologyError(f"grid layout shape {shape} does not hold n = {n} nodes.")
    r, c = np.divmod(np.arange(n), ncol)
    return np.stack([c, -r], axis=1).astype(np.float64)


def _tree(step: Topology) -> np.ndarray:
    """Top-down tree: leaves evenly spaced in depth-first order, parents above the mean of
    their children. Uses ``step.parent`` if present, else a BFS tree from node 0."""
    n = step.n
    parent = getattr(step, "parent", None)
    if parent is None:
        from scipy.sparse import csr_matrix
        from scipy.sparse.csgraph import breadth_first_order

        A = csr_matrix((step.data, step.indices, step.indptr), shape=(n, n))
        _, pred = breadth_first_order(A + A.T, 0, directed=False, return_predecessors=True)
        parent = np.where(pred < 0, -1, pred)
        if np.count_nonzero(parent < 0) != 1:
            return _spring(step)
    parent = np.asarray(parent)
    children: list[list[int]] = [[] for _ in range(n)]
    for c in np.nonzero(parent >= 0)[0]:
        children[int(parent[c])].append(int(c))
    root = int(np.nonzero(parent < 0)[0][0])
    x, y = np.zeros(n), np.zeros(n)
    next_leaf = 0
    stack = [(root, 0, False)]
    while stack:  # iterative post-order: place leaves, then parents
        node, depth, done = stack.pop()
        y[node] = -depth
        if done:
            x[node] = np.mean([x[c] for c in children[node]])
        elif children[node]:
            stack.append((node, depth, True))
            stack.extend((c, depth + 1, False) for c in reversed(children[node]))
        else:
            x[node], next_leaf = next_leaf, next_leaf + 1
    # Fill the square: spread leaves over the width and levels over the height.
    return np.stack([_spread(x), _spread(y)], axis=1)


def _spread(v: np.ndarray) -> np.ndarray:
    lo, hi = v.min(), v.max()
    return 2.0 * (v - lo) / (hi - lo) - 1.0 if hi > lo else np.zeros_like(v)


def _star_center(step: Topology) -> int | None:
    n = step.n
    if n < 4:
        return None
    deg = np.maximum(step.in_degrees, step.out_degrees)
    center = int(np.argmax(deg))
    others = np.delete(deg, center)
    return center if deg[center] == n - 1 and np.all(others == 1) else None


def _star(step: Topology) -> np.ndarray:
    center = _star_center(step)
    if center is None:
        return _spring(step)
    n = step.n
    pos = np.zeros((n, 2))
    leaves = np.delete(np.arange(n), center)
    pos[leaves] = _circle(n - 1)
    return pos


def _spring(step: Topology) -> np.ndarray:
    import networkx as nx

    G = nx.Graph()
    G.add_nodes_from(range(step.n))
    off = step.rows != step.indices
    G.add_edges_from(zip(step.rows[off].tolist(), step.indices[off].tolist()))
    pos = nx.spring_layout(G, seed=0)
    return np.array([pos[i] for i in range(step.n)], dtype=np.float64)


def _normalise(pos: np.ndarray) -> np.ndarray:
    pos = pos - (pos.max(axis=0) + pos.min(axis=0)) / 2.0
    span = np.abs(pos).max()
    return pos / span if span > 0 else pos


# ---------------------------------------------------------------------- node colours
def node_colors(keep: np.ndarray) -> np.ndarray:
    """RGBA node colours: light blue, darker for a node that keeps more of its own value
    (``keep``: the self-weights, clipped to [0, 1])."""
    t = np.clip(np.asarray(keep, dtype=np.float64), 0.0, 1.0)[:, None]
    light, dark = np.array([0.88, 0.93, 1.0, 1.0]), np.array([0.55, 0.70, 0.93, 1.0])
    return light + (dark - light) * t


# ---------------------------------------------------------------------- painting
@dataclass
class GraphArtists:
    """The matplotlib artists :func:`draw_graph` added (to update or animate them)."""

    edges: object | None  # LineCollection (None without links)
    heads: object | None  # PolyCollection of the arrowheads (None when W is symmetric)
    nodes: object  # EllipseCollection
    labels: list  # Text of each node number (empty without labels)

    @property
    def all(self) -> list:
        return [a for a in (self.edges, self.heads, self.nodes) if a is not None] + self.labels


def draw_graph(ax, step: Topology, pos: np.ndarray, *, labels: bool,
               max_links: int | None = None) -> GraphArtists:
    """Draw the graph of ``step`` into ``ax`` at positions ``pos`` (see
    :func:`graph_geometry`); returns the artists it added."""
    from matplotlib.collections import EllipseCollection, LineCollection, PolyCollection

    geo = graph_geometry(step, pos, max_links=max_links)
    n, r = step.n, geo.radius
    edges = heads = None
    if geo.segments.size:
        if geo.directed:
            heads = PolyCollection(geo.heads, facecolors="0.25", edgecolors="none", zorder=2)
            ax.add_collection(heads)
        edges = LineCollection(geo.segments, linewidths=geo.widths, colors="0.45", zorder=1,
                               alpha=geo.alpha)
        ax.add_collection(edges)
    nodes = EllipseCollection(
        np.full(n, 2 * r), np.full(n, 2 * r), np.zeros(n), units="xy", offsets=geo.pos,
        offset_transform=ax.transData, facecolors=node_colors(self_weights(step)),
        edgecolors="0.15", linewidths=0.8, zorder=3,
    )
    ax.add_collection(nodes)
    texts = []
    if labels:
        size = float(np.clip(r * 90, 5, 10))
        texts = [ax.text(x, y, str(i), ha="center", va="center", fontsize=size, zorder=4)
                 for i, (x, y) in enumerate(geo.pos)]
    reach = float(np.abs(geo.segments).max()) if geo.segments.size else 1.0
    pad = max(r + 0.08, reach - 1 + 0.04)  # arcs of a torus go around its outer rows
    ax.set_xlim(-1 - pad, 1 + pad)
    ax.set_ylim(-1 - pad, 1 + pad)
    ax.set_aspect("equal")
    ax.set_axis_off()
    return GraphArtists(edges, heads, nodes, texts)


def _draw_heatmap(ax, step: Topology, fig) -> None:
    n = step.n
    if n <= HEATMAP_MAX_PIXELS:
        img = step.W
        label = "W[i, j]"
    else:
        bins = HEATMAP_MAX_PIXELS
        img = np.zeros((bins, bins))
        np.add.at(img, (step.rows * bins // n, step.indices * bins // n), step.data)
        img /= (n / bins)  # mean row mass per pixel row
        label = f"W summed over {n / bins:.3g} x {n / bins:.3g} blocks (per row)"
    im = ax.imshow(img, cmap="viridis", interpolation="nearest", extent=(-0.5, n - 0.5, n - 0.5,
                                                                           -0.5))
    ax.set_xlabel("sender j")
    ax.set_ylabel("receiver i")
    fig.colorbar(im, ax=ax, shrink=0.8, label=label)


def _title(topology, k: int) -> str:
    n = topology.n
    r = _cheap_rho(topology)
    rho_s = "rho=?" if r is None else f"rho={r:.3g}"
    if topology.is_dynamic:
        when = (f"step {k} of period {topology.period}" if topology.period
                else f"step {k} (random)")
        deg = topology.at(k).degree
        return f"{topology.name}: {when}\nn={n}, degree={deg}, {rho_s} (per step, effective)"
    return f"{topology.name}\nn={n}, degree={topology.degree}, {rho_s}"


def _cheap_rho(topology) -> float | None:
    """rho when it is cached or quick to get (circulant, or small n); else None."""
    known = topology.recall("rho")
    if known is not None:
        return known
    cheap = topology.n <= 1024 or (not topology.is_dynamic and topology.shifts is not None)
    if topology.is_dynamic and topology.period and topology.period > 64:
        cheap = False
    try:
        return float(topology.rho) if cheap else None
    except (ArithmeticError, RuntimeError, np.linalg.LinAlgError):
        return None  # e.g. Lanczos did not converge: a picture must not fail for its caption
