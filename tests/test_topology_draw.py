"""Drawing: figures come back, nothing is left open, pictures say what they show."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.collections import EllipseCollection, LineCollection, PolyCollection
from matplotlib.figure import Figure

from declearn.errors import TopologyError
from declearn.topology import Topology, od_equidyn, one_peer_exponential
from declearn.topology.draw import draw, layout_positions, repr_png


def ring(n):
    return Topology.from_circulant(n, {0: 1 / 3, 1: 1 / 3, -1: 1 / 3} if n > 2 else
                                   {s: 1 / n for s in range(n)}, name="ring")


def directed_exp(n):
    return Topology.from_circulant(n, {0: 0.25, 1: 0.25, 2: 0.25, 4: 0.25}, name="exp")


@pytest.fixture(autouse=True)
def no_open_figures():
    plt.close("all")
    yield
    assert plt.get_fignums() == []


def collections(fig, kind):
    return [c for c in fig.axes[0].collections if isinstance(c, kind)]


@pytest.mark.parametrize("n", [1, 2, 8])
def test_draw_small_graphs(n):
    fig = draw(ring(n))
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert not ax.images
    nodes = collections(fig, EllipseCollection)
    assert len(nodes) == 1 and len(nodes[0].get_offsets()) == n
    edges = collections(fig, LineCollection)
    assert sum(len(c.get_segments()) for c in edges) == (0 if n == 1 else 1 if n == 2 else n)
    assert not collections(fig, PolyCollection)  # symmetric: no arrowheads
    title = ax.get_title()
    assert "ring" in title and f"n={n}" in title and "rho=" in title


def test_draw_directed_graph_has_arrows_and_widths_follow_weights():
    W = np.array([[0.5, 0.5, 0.0], [0.0, 0.9, 0.1], [0.3, 0.0, 0.7]])
    fig = draw(Topology.from_matrix(W, name="directed"))
    heads = collections(fig, PolyCollection)
    assert len(heads) == 1 and len(heads[0].get_paths()) == 3  # one per directed edge
    (lines,) = collections(fig, LineCollection)
    widths = dict(zip([0.5, 0.1, 0.3], lines.get_linewidths()))
    assert widths[0.5] > widths[0.3] > widths[0.1]


def test_draw_large_n_is_a_heatmap():
    fig = draw(ring(100))
    ax = fig.axes[0]
    assert len(ax.images) == 1
    img = ax.images[0].get_array()
    np.testing.assert_allclose(img, ring(100).W)
    assert "n=100" in ax.get_title()
    big = draw(directed_exp(1500))  # binned: one pixel per block, still the total mass
    binned = big.axes[0].images[0].get_array()
    assert binned.shape == (512, 512)
    assert binned.sum() == pytest.approx(512.0)


def test_draw_dynamic_step():
    topo = one_peer_exponential(8)
    fig = draw(topo, k=4)
    title = fig.axes[0].get_title()
    assert "step 4 of period 3" in title and "n=8" in title and "rho=0" in title
    (lines,) = collections(fig, LineCollection)
    assert len(lines.get_segments()) == 8  # one message per node
    assert "random" in draw(od_equidyn(9), k=2).axes[0].get_title()


def test_draw_into_given_axes():
    fig = Figure()
    ax = fig.add_subplot()
    assert draw(ring(5), ax=ax) is fig
    assert ring(5).draw(ax=ax) is fig


def test_repr_png():
    for topo in (ring(6), ring(1), ring(90), one_peer_exponential(4), od_equidyn(5)):
        png = repr_png(topo)
        assert isinstance(png, bytes) and png.startswith(b"\x89PNG")
        assert topo._repr_png_().startswith(b"\x89PNG")


def test_layouts():
    n = 12
    circle = layout_positions(ring(n))
    np.testing.assert_allclose(np.linalg.norm(circle, axis=1), 1.0)
    assert circle[0, 1] == pytest.approx(1.0)  # node 0 on top
    grid = Topology.from_matrix(np.full((n, n), 1 / n), params={"shape": (3, 4)})
    pos = layout_positions(grid)
    assert len(np.unique(pos[:, 0].round(9))) == 4 and len(np.unique(pos[:, 1].round(9))) == 3
    chain = np.eye(5) * 0.5
    for i in range(4):
        chain[i, i + 1] = chain[i + 1, i] = 0.25
    chain[0, 0] = chain[4, 4] = 0.75
    tree = layout_positions(Topology.from_matrix(chain), "tree")
    assert np.all(np.diff(tree[:, 1]) < 0)  # each node below its parent
    explicit = np.arange(2 * n, dtype=float).reshape(n, 2)
    assert layout_positions(ring(n), explicit).shape == (n, 2)


def test_layout_errors():
    with pytest.raises(TopologyError, match="shape"):
        draw(ring(5), layout=np.zeros((4, 2)))
    with pytest.raises(TopologyError, match="Unknown layout"):
        draw(ring(5), layout="hexagon")
    with pytest.raises(TopologyError, match="node"):
        draw(ring(3), layout={0: (0, 0), 1: (1, 0)})
    with pytest.raises(TopologyError, match="Topology"):
        draw(np.eye(3))


def test_graph_geometry_arrowheads_touch_the_receivers():
    from declearn.topology.draw import graph_geometry

    W = np.array([[0.5, 0.5, 0.0], [0.0, 0.9, 0.1], [0.3, 0.0, 0.7]])
    step = Topology.from_matrix(W, name="directed")
    pos = np.array([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    geo = graph_geometry(step, pos)
    assert geo.directed and geo.links == 3 and geo.heads.shape == (3, 3, 2)
    seen = set()
    for seg, head in zip(geo.segments, geo.heads):
        tip = head[0]
        # The tip lies on the rim of one node, the segment starts on the rim of another.
        d_tip = np.linalg.norm(pos - tip, axis=1)
        d_start = np.linalg.norm(pos - seg[0], axis=1)
        i, j = int(np.argmin(d_tip)), int(np.argmin(d_start))
        assert d_tip[i] == pytest.approx(geo.radius) and d_start[j] == pytest.approx(geo.radius)
        seen.add((i, j))
        # The segment ends at the middle of the arrowhead's base.
        np.testing.assert_allclose(seg[1], (head[1] + head[2]) / 2, atol=1e-12)
    assert seen == {(0, 1), (1, 2), (2, 0)}  # W[i, j] > 0: an arrow from j into i
    order = np.argsort([W[np.argmin(np.linalg.norm(pos - h[0], axis=1)),
                         np.argmin(np.linalg.norm(pos - s[0], axis=1))]
                        for s, h in zip(geo.segments, geo.heads)])
    assert np.all(np.diff(geo.widths[order]) > 0)  # wider for a larger weight


def test_graph_geometry_symmetric_pairs_once_and_too_many_links():
    from declearn.topology import complete
    from declearn.topology.draw import graph_geometry

    topo = ring(8)
    geo = graph_geometry(topo, layout_positions(topo))
    assert not geo.directed and geo.links == 8 and geo.segments.shape == (8, 2, 2)
    assert geo.heads.shape == (0, 3, 2)
    big = complete(40)
    geo = graph_geometry(big, layout_positions(big), max_links=100)
    assert geo.links == 40 * 39 // 2 and not geo.drawn and geo.segments.shape == (0, 2, 2)


def test_two_way_links_of_a_directed_graph_are_shifted_apart():
    from declearn.topology.draw import graph_geometry

    W = np.array([[0.5, 0.25, 0.25], [0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])  # 0<->1 both ways
    geo = graph_geometry(Topology.from_matrix(W), np.array([[-1.0, 0], [1.0, 0], [0, 1.0]]))
    on_axis = [s for s in geo.segments if abs(s[0, 1]) < 0.5 and abs(s[1, 1]) < 0.5]
    assert len(on_axis) == 2
    ys = sorted(float(s[0, 1]) for s in on_axis)
    assert ys[0] == pytest.approx(-ys[1]) and ys[1] == pytest.approx(0.3 * geo.radius)


def test_node_colours_follow_the_diagonal_of_W():
    from declearn.topology.draw import node_colors, self_weights

    W = np.array([[0.5, 0.5, 0.0], [0.0, 0.9, 0.1], [0.3, 0.0, 0.7]])
    keep = self_weights(Topology.from_matrix(W))
    np.testing.assert_array_equal(keep, np.diag(W))
    c = node_colors(keep)
    assert c.shape == (3, 4) and c[1, 0] < c[2, 0] < c[0, 0]  # darker = keeps more


def test_large_graphs_without_a_natural_layout_go_on_a_circle():
    from declearn.topology import erdos_renyi, geometric

    small, large = erdos_renyi(40, p=0.3, seed=1), erdos_renyi(120, p=0.1, seed=1)
    assert not np.allclose(np.linalg.norm(layout_positions(small), axis=1), 1.0)  # spring
    np.testing.assert_allclose(np.linalg.norm(layout_positions(large), axis=1), 1.0)
    geo = geometric(120, radius=0.25, seed=2)
    assert not np.allclose(np.linalg.norm(layout_positions(geo), axis=1), 1.0)  # its points


def test_draw_graph_returns_what_it_added():
    from declearn.topology.draw import draw_graph

    fig = Figure()
    ax = fig.add_subplot()
    topo = directed_exp(8)
    art = draw_graph(ax, topo, layout_positions(topo), labels=True)
    assert set(map(id, ax.collections)) == {id(art.edges), id(art.heads), id(art.nodes)}
    assert [t.get_text() for t in art.labels] == [str(i) for i in range(8)]
    assert len(art.all) == 3 + 8


# ---------------------------------------------------------------------- the torus
def _grid_positions(nrow, ncol):
    """Node r * ncol + c at column c, row r (row 0 on top), scaled into [-1, 1]^2."""
    r, c = np.divmod(np.arange(nrow * ncol), ncol)
    pos = np.stack([c - (ncol - 1) / 2, (nrow - 1) / 2 - r], axis=1).astype(float)
    return pos / (max(nrow, ncol) - 1) * 2


def _drawn_links(geo):
    """{link id: (node at its first point, node at its last point)}, from the pieces."""
    ends = {}
    for k in np.unique(geo.piece_link):
        pieces = geo.segments[geo.piece_link == k]
        first, last = pieces[0, 0], pieces[-1, 1]
        ends[int(k)] = tuple(sorted(int(np.argmin(np.linalg.norm(geo.pos - p, axis=1)))
                                    for p in (first, last)))
    return ends


def test_torus_wrap_links_are_arcs_clear_of_the_grid_links_and_nodes():
    from declearn.topology import grid
    from declearn.topology.draw import graph_geometry

    nrow, ncol = 4, 4
    topo = grid(16, shape=(nrow, ncol), torus=True)
    geo = graph_geometry(topo, layout_positions(topo))
    np.testing.assert_allclose(geo.pos, _grid_positions(nrow, ncol), atol=1e-12)
    idx = np.arange(16).reshape(nrow, ncol)
    wraps = {tuple(sorted((int(idx[r, 0]), int(idx[r, -1])))) for r in range(nrow)}
    wraps |= {tuple(sorted((int(idx[0, c]), int(idx[-1, c])))) for c in range(ncol)}
    drawn = _drawn_links(geo)
    W = topo.W
    edges = {(int(j), int(i)) for i, j in zip(*np.nonzero(np.triu(W, 1).T))}
    assert sorted(drawn.values()) == sorted(edges)  # every link once, nothing else
    straight = [geo.segments[geo.piece_link == k][0] for k, e in drawn.items()
                if e not in wraps]
    assert len(straight) == 24 and all(
        (geo.piece_link == k).sum() == 1 for k, e in drawn.items() if e not in wraps)
    for k, (u, v) in drawn.items():
        if (u, v) not in wraps:
            continue
        pieces = geo.segments[geo.piece_link == k]
        assert len(pieces) > 1  # a curve, not the straight line along the row/column
        np.testing.assert_allclose(pieces[1:, 0], pieces[:-1, 1])  # one unbroken polyline
        others = np.delete(geo.pos, [u, v], axis=0)
        points = pieces.reshape(-1, 2)
        assert np.linalg.norm(points[:, None] - others[None], axis=-1).min() > geo.radius
        for piece in pieces:  # never runs along a grid link (crossing one is fine)
            d = piece[1] - piece[0]
            for seg in straight:
                e = seg[1] - seg[0]
                parallel = abs(d[0] * e[1] - d[1] * e[0]) < 0.05 * np.linalg.norm(d) * \
                    np.linalg.norm(e)
                t = np.clip(np.dot((piece[0] + piece[1]) / 2 - seg[0], e) / np.dot(e, e), 0, 1)
                near = np.linalg.norm((piece[0] + piece[1]) / 2 - (seg[0] + t * e))
                assert not (parallel and near < 0.5 * geo.radius), (u, v, piece, seg)


def _pixels(topo):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = draw(topo, title="")
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return fig, np.asarray(canvas.buffer_rgba())[..., :3].astype(int)


def test_the_torus_and_the_grid_of_the_same_size_look_different():
    from declearn.topology import grid

    _, grid_px = _pixels(grid(16, shape=(4, 4)))
    fig_t, torus_px = _pixels(grid(16, shape=(4, 4), torus=True))
    assert grid_px.shape == torus_px.shape
    assert (np.abs(grid_px - torus_px).sum(-1) > 60).sum() > 500
    # above the top row's nodes: white for the grid, the wrap arcs of the columns for the torus
    ax = fig_t.axes[0]
    r = 0.11
    (x0, y0), (x1, y1) = ax.transData.transform([(-0.9, 1 + 1.1 * r), (0.9, 1 + 1.8 * r)])
    h = torus_px.shape[0]
    band = (slice(int(h - y1), int(h - y0)), slice(int(x0), int(x1)))
    ink = lambda px: (px[band].sum(-1) < 600).sum()
    assert ink(grid_px) == 0 and ink(torus_px) > 20
