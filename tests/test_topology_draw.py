"""Drawing: figures come back, nothing is left open, pictures say what they show."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import EllipseCollection, LineCollection, PolyCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from declearn.errors import TopologyError  # noqa: E402
from declearn.topology import Topology, od_equidyn, one_peer_exponential  # noqa: E402
from declearn.topology.draw import draw, layout_positions, repr_png  # noqa: E402


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
