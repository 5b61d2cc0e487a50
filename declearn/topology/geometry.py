"""The geometry of a graph picture, apart from matplotlib: where each link is drawn (straight
segments, or arcs around the nodes a straight line would cross), how wide, and the
arrowheads of a directed graph; :mod:`declearn.topology.draw` paints it, and the widgets
update their pictures from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # a topology draws itself with this module: no import back at run time
    from declearn.topology.base import Topology

__all__ = [
    "ARC_PIECES",
    "GRAPH_MAX_NODES",
    "LABELLED_MAX_NODES",
    "GraphGeometry",
    "graph_geometry",
    "self_weights",
]

#: Beyond this many nodes ``draw`` shows the heatmap of W instead of the graph.
GRAPH_MAX_NODES = 64
#: Node numbers are written up to this many nodes (by default).
LABELLED_MAX_NODES = 32


@dataclass
class GraphGeometry:
    """Where the parts of a graph picture go, in layout coordinates (no matplotlib)."""

    pos: np.ndarray  # (n, 2) node centres
    radius: float  # node radius
    segments: np.ndarray  # (m, 2, 2) the pieces of the drawn links, from node rim to arrow base
    widths: np.ndarray  # (m,) line width of each piece in points, growing with the weight
    heads: np.ndarray  # (h, 3, 2) arrowhead triangles at the receivers (empty if symmetric)
    alpha: float  # opacity of the links (lower when there are many)
    links: int  # links in the graph (a symmetric pair counts once)
    drawn: bool  # False when there were more than ``max_links`` links: nodes only
    directed: bool
    piece_link: np.ndarray | None = None  # (m,) which drawn link each piece belongs to


#: Pieces of the polyline of a link drawn as an arc (one that would run through a node).
ARC_PIECES = 16
#: A straight link "runs through" a node whose centre lies on it, up to this (in node radii):
#: a torus's wrap-around links on its grid, a path's long links; not a spring layout's near miss.
THROUGH_NODE = 1e-3


def _through_other_nodes(pos: np.ndarray, a: np.ndarray, b: np.ndarray, src: np.ndarray,
                         dst: np.ndarray, r: float) -> np.ndarray:
    """Per link ``a -> b``: whether the straight segment passes over another node's centre
    (closer than ``THROUGH_NODE * r``), as a torus's wrap-around link does along its grid."""
    vec = b - a
    length2 = (vec ** 2).sum(1)
    rel = pos[None, :, :] - a[:, None, :]  # (links, n, 2)
    t = (rel * vec[:, None, :]).sum(-1) / np.where(length2 > 0, length2, 1.0)[:, None]
    closest = a[:, None, :] + np.clip(t, 0, 1)[..., None] * vec[:, None, :]
    near = np.linalg.norm(pos[None, :, :] - closest, axis=-1) < THROUGH_NODE * r
    inside = (t > 0) & (t < 1)
    ends = np.arange(len(pos))[None, :]
    near &= inside & (ends != src[:, None]) & (ends != dst[:, None])
    return near.any(axis=1)


def _arcs(pos: np.ndarray, a: np.ndarray, b: np.ndarray, r: float, spacing: float
          ) -> np.ndarray:
    """Polylines ``(k, ARC_PIECES + 1, 2)`` from node rim to node rim for links ``a -> b``
    that would run through other nodes: each leaves its ends steeply, on the side away from
    the centre of the picture, and runs parallel to the straight line at ``h = 1.4 r`` from it
    (profile ``h (1 - (1 - 2t)^p)``, ``p = max(8, 4 |b - a| / spacing)``: clear of the nodes
    it passes, and of the next row of a grid)."""
    vec = b - a
    length = np.linalg.norm(vec, axis=1, keepdims=True)
    normal = np.stack([vec[:, 1], -vec[:, 0]], axis=1) / np.where(length > 0, length, 1.0)
    outward = ((a + b) / 2 - pos.mean(axis=0)) * normal
    side = np.where(outward.sum(1, keepdims=True) < -1e-9, -1.0, 1.0)
    height = 1.4 * r
    power = np.maximum(8.0, np.round(4.0 * length / spacing))
    # the first and last pieces start at the rims: |p(t) - a| ~ t sqrt(L^2 + (2 p h)^2)
    t0 = r / np.sqrt(length ** 2 + (2 * power * height) ** 2)  # (k, 1)
    u = 0.5 - 0.5 * np.cos(np.pi * np.linspace(0.0, 1.0, ARC_PIECES + 1))  # dense at ends
    t = t0 + (1 - 2 * t0) * u[None, :]  # (k, P + 1)
    lift = height * (1 - np.abs(1 - 2 * t) ** power)
    return (a[:, None, :] + t[..., None] * vec[:, None, :]
            + (side * normal)[:, None, :] * lift[..., None])


def graph_geometry(step: Topology, pos: np.ndarray, *, max_links: int | None = None
                   ) -> GraphGeometry:
    """Segments, widths and arrowheads of the links of ``step`` at node positions ``pos``.

    Link ``j -> i`` for ``W[i, j] > 0`` (j sends to i): one segment per pair when W is
    symmetric; otherwise an arrowhead at the receiver, and a two-way pair gets two segments
    shifted sideways by ``0.3 r`` so neither hides the other. A link whose straight line would
    run through another node (a torus's wrap-around links on its grid) is drawn as an arc of
    ``ARC_PIECES`` segments instead (see :func:`_arcs`); ``piece_link`` tells which link each
    segment belongs to, and the straight links come first, in the order of their arrowheads,
    then the arcs. The node radius ``r`` is a share of the median nearest-neighbour distance
    (more room for links beyond 32 nodes), the line width
    ``(0.8 + 2.2 w / max w) * max(c, 0.4)`` with ``c = min(1, 6 / sqrt(links))``. Beyond
    ``max_links`` links (None: no limit) nothing is drawn but the nodes.
    """
    pos = np.asarray(pos, dtype=np.float64)
    n = step.n
    if n > 1:
        d2 = ((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1)
        np.fill_diagonal(d2, np.inf)
        spacing = float(np.median(np.sqrt(d2.min(axis=1))))
    else:
        spacing = 1.0
    share = 0.32 if n <= LABELLED_MAX_NODES else 0.2  # room for numbers, or for links
    r = float(np.clip(share * spacing, 0.008, 0.11))
    off = step.rows != step.indices
    dst, src, w = step.rows[off], step.indices[off], step.data[off]  # link src -> dst
    directed = not step.is_symmetric
    if not directed:
        keep = src < dst
        dst, src, w = dst[keep], src[keep], w[keep]
    links = int(w.size)
    crowd = min(1.0, 6.0 / math.sqrt(max(links, 1)))
    alpha = max(0.5, crowd)
    if links == 0 or (max_links is not None and links > max_links):
        return GraphGeometry(pos, r, np.zeros((0, 2, 2)), np.zeros(0), np.zeros((0, 3, 2)),
                             alpha, links, links == 0, directed, np.zeros(0, dtype=np.int64))
    widths = (0.8 + 2.2 * w / w.max()) * max(crowd, 0.4)
    a, b = pos[src], pos[dst]
    arced = (_through_other_nodes(pos, a, b, src, dst, r) if n <= GRAPH_MAX_NODES
             else np.zeros(links, dtype=bool))
    order = np.concatenate([np.nonzero(~arced)[0], np.nonzero(arced)[0]])
    a, b, src, dst, widths = a[order], b[order], src[order], dst[order], widths[order]
    straight = int(np.count_nonzero(~arced))
    both = np.zeros(links, dtype=bool)
    if directed:
        both = np.isin(dst * n + src, src * n + dst)  # the reverse link exists too
    vec = b - a
    length = np.linalg.norm(vec, axis=1, keepdims=True)
    unit = vec / np.where(length > 0, length, 1.0)
    normal = np.stack([unit[:, 1], -unit[:, 0]], axis=1)
    shift = normal * (0.3 * r) * both[:, None]
    paths = [np.stack([a[:straight] + shift[:straight] + unit[:straight] * r,
                       b[:straight] + shift[:straight] - unit[:straight] * r], axis=1)]
    if straight < links:
        paths_arc = _arcs(pos, a[straight:], b[straight:], r, spacing)
        paths_arc = paths_arc + shift[straight:, None, :]
        paths.append(paths_arc)
    heads = np.zeros((0, 3, 2))
    if directed:
        size = min(1.2 * r, 0.08)
        tips, dirs = [paths[0][:, 1]], [unit[:straight]]
        if straight < links:
            end = paths[1][:, -1] - paths[1][:, -2]
            dirs.append(end / np.linalg.norm(end, axis=1, keepdims=True))
            tips.append(paths[1][:, -1])
        tip, direction = np.concatenate(tips), np.concatenate(dirs)
        base = tip - direction * size
        side = np.stack([direction[:, 1], -direction[:, 0]], axis=1) * size * 0.45
        heads = np.stack([tip, base + side, base - side], axis=1)
        paths[0][:, 1] = base[:straight]
        if straight < links:
            paths[1][:, -1] = base[straight:]
    segments = [paths[0]]
    piece_link = [np.arange(straight)]
    if straight < links:
        segments.append(np.stack([paths[1][:, :-1], paths[1][:, 1:]], axis=2).reshape(-1, 2, 2))
        piece_link.append(np.repeat(np.arange(straight, links), ARC_PIECES))
    piece_link = np.concatenate(piece_link)
    return GraphGeometry(pos, r, np.concatenate(segments), widths[piece_link], heads, alpha,
                         links, True, directed, piece_link)


def self_weights(step: Topology) -> np.ndarray:
    """The diagonal of W (what each node keeps of its own value), shape (n,)."""
    diag = np.zeros(step.n)
    on = step.rows == step.indices
    diag[step.rows[on]] = step.data[on]
    return diag
