"""TopologyPicker, TopologyExplorer and SpectralGapExplorer, driven through their controls.

Every check compares what a widget shows with an independent computation done here:
``declearn.topology.make`` + ``rho`` / ``product`` / ``transient_iterations``, closed forms
written out in the test, or a dense-matrix count. Widgets redraw in a background thread;
``wait_idle()`` waits for the redraw before we read what is shown.
"""

from __future__ import annotations

import html
import inspect
import math
import re
import threading
import time

import numpy as np
import pytest

from declearn.errors import TopologyError
from declearn.topology import (
    families,
    family_info,
    make,
    product,
    registry,
    rho,
    transient_iterations,
)
from declearn.topology.draw import ARC_PIECES
from widgets import SpectralGapExplorer, TopologyExplorer, TopologyPicker
from widgets._render import RedrawWorker
from widgets.spectral_gap import n_grid, sweep

EMPTY = inspect.Parameter.empty


def shown_number(label: str) -> float:
    """The number at the end of a label such as ``rho = ||W - J||_2 = 0.946436``."""
    m = re.search(r"=\s*([-+0-9.eE]+|inf)\s*$", label)
    assert m, f"no number at the end of {label!r}"
    return float(m.group(1))


def max_out_degree(W: np.ndarray) -> int:
    """Messages sent per node per iteration by the busiest node: column j has a message to
    every i != j with W[i, j] > 0."""
    A = (W > 0) & ~np.eye(W.shape[0], dtype=bool)
    return int(A.sum(axis=0).max())


def links(W: np.ndarray) -> int:
    """Links drawn: unordered pairs for a symmetric W, ordered ones otherwise."""
    A = (W > 0) & ~np.eye(W.shape[0], dtype=bool)
    return int(np.triu(A).sum()) if np.allclose(W, W.T) else int(A.sum())


@pytest.fixture
def explorer():
    ex = TopologyExplorer()
    yield ex
    ex.close()


# ---------------------------------------------------------------------- picker
def test_picker_builds_what_make_builds_for_every_family():
    p = TopologyPicker(n_max=64)
    built, refused = set(), set()
    for family in families():
        p.family.value = family
        for n in (6, 8, 13):
            p.n.value = n
            kwargs = p.param_values()
            info = family_info(family)
            for name, default in info.params.items():  # the controls start at the defaults
                if default is not EMPTY and name in kwargs:
                    assert kwargs[name] == default, (family, name)
            try:
                expected = make(family, n, **kwargs)
            except TopologyError as exc:
                assert p.topology is None and p.error == str(exc), (family, n)
                assert html.escape(str(exc)) in p.error_label.value
                refused.add(family)
                continue
            assert p.error == "" and p.error_label.value == "", (family, n, p.error)
            got = p.topology
            assert got.is_dynamic == expected.is_dynamic and got.n == n
            if expected.is_dynamic:
                assert got.period == expected.period
                for k in range(3):
                    np.testing.assert_array_equal(got.at(k).W, expected.at(k).W)
            else:
                np.testing.assert_array_equal(got.W, expected.W)
            built.add(family)
    assert built == set(families())  # every family builds at some n with the defaults
    assert "hypercube" in refused  # 6 and 13 are not powers of 2


@pytest.mark.parametrize("family, n, params, fix, needle", [
    ("hypercube", 12, {}, ("n", 16), "power of 2"),
    ("ceca", 13, {"ports": 1}, ("ports", 2), "even n"),
    ("erdos_renyi", 16, {"p": 0.01}, ("p", 0.6), "not connected"),
    ("one_peer", 9, {"base": "star"}, ("base", "ring"), "regular"),
])
def test_picker_shows_a_message_where_make_refuses(family, n, params, fix, needle):
    p = TopologyPicker(n=n)
    p.family.value = family
    for name, value in params.items():
        p.params[name].value = value
    assert p.topology is None
    assert needle in p.error and needle in p.error_label.value
    assert "Traceback" not in p.error_label.value
    name, value = fix
    (p.n if name == "n" else p.params[name]).value = value
    assert p.error == "" and p.error_label.value == ""
    assert p.topology is not None


def test_picker_controls_follow_family_and_n():
    p = TopologyPicker("od_equidyn", 10)
    assert set(p.params) == {"eta", "M", "seed"}
    eta = p.params["eta"]
    assert 0 < eta.min <= eta.value == 0.5 <= eta.max == 1.0
    p.family.value = "ring"
    assert p.params == {} and p.param_box.children == ()
    p.family.value = "grid"
    p.n.value = 12
    assert "3 x 4" in p.params["shape"].options
    p.params["shape"].value = "3 x 4"
    assert p.topology.params["shape"] == (3, 4)
    p.n.value = 13  # prime: only 1 x 13 and 13 x 1 fit; back to auto
    assert p.params["shape"].value == "auto" and p.topology.params["shape"] == (1, 13)
    p.family.value = "star"
    p.params["center"].value = 12
    p.n.value = 8
    assert p.params["center"].max == 7 and p.topology is not None
    assert "Star" in p.summary.value
    # a family's weighting rule is one of the library's rules, and the topology follows it
    p.family.value = "grid"
    from declearn.topology import RULES

    assert set(RULES) <= set(p.params["rule"].options)
    p.params["rule"].value = "uniform"
    assert p.topology.params["rule"] == "uniform"
    degrees = np.count_nonzero(p.topology.W, axis=1)
    np.testing.assert_allclose(p.topology.W[p.topology.W > 0],
                               np.repeat(1.0 / degrees, degrees))


def test_picker_constructor_arguments():
    p = TopologyPicker("erdos_renyi", 32, families=["ring", "erdos_renyi"], p=0.3, seed=5)
    assert p.family.options == ("ring", "erdos_renyi")
    np.testing.assert_array_equal(p.topology.W, make("erdos_renyi", 32, p=0.3, seed=5).W)
    with pytest.raises(TopologyError, match="Did you mean"):
        TopologyPicker("rnig")
    with pytest.raises(TopologyError, match="no parameter"):
        TopologyPicker("ring", 8, eta=0.5)
    with pytest.raises(TopologyError, match="outside"):
        TopologyPicker("od_equidyn", 8, eta=1.5)
    with pytest.raises(TopologyError, match="n must be"):
        TopologyPicker("ring", 300)
    with pytest.raises(TopologyError, match="not among"):
        TopologyPicker("star", families=["ring"])


def test_picker_gives_a_new_parameter_a_control(monkeypatch):
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))
    calls = []

    @registry.family("toy")
    def toy(n, *, gamma: float = 0.25, hops: int = 3, lazy: bool = False, tag: str = "a",
            extra=None):
        """A toy family with parameters the picker has never seen."""
        calls.append({"gamma": gamma, "hops": hops, "lazy": lazy, "tag": tag, "extra": extra})
        return make("ring", n)

    @registry.family("toy_required")
    def toy_required(n, *, blob):
        """Needs a parameter no control can set."""
        return make("ring", n)

    p = TopologyPicker("toy", 8)
    assert set(p.params) == {"gamma", "hops", "lazy", "tag"}  # no control for extra=None
    g = p.params["gamma"]
    assert g.min <= 0.25 <= g.max and p.params["hops"].value == 3
    g.value = g.max
    p.params["lazy"].value = True
    assert calls[-1] == {"gamma": g.max, "hops": 3, "lazy": True, "tag": "a", "extra": None}
    assert p.error == ""
    p.family.value = "toy_required"
    assert p.topology is None and "blob" in p.error


def test_no_control_value_raises_or_leaves_an_inconsistent_state():
    """Sweep every control of every family over its range: never an exception, and always
    either a topology or a message."""
    p = TopologyPicker(n_max=64)
    for family in families():
        p.family.value = family
        for n in (p.n.min, 7, p.n.max):
            p.n.value = n
            assert (p.topology is None) == bool(p.error), (family, n)
        for name in list(p.params):
            w = p.params[name]
            if hasattr(w, "options"):
                values = [o[1] if isinstance(o, tuple) else o for o in w.options]
            elif isinstance(w.value, bool):
                values = [True, False]
            else:
                values = [w.min, (w.min + w.max) / 2 if isinstance(w.value, float)
                          else (w.min + w.max) // 2, w.max]
            for v in values:
                w.value = v
                assert (p.topology is None) == bool(p.error), (family, name, v)
                assert "Traceback" not in p.error


# ---------------------------------------------------------------------- explorer
@pytest.mark.parametrize("family, n, params", [
    ("ring", 16, {}),
    ("exponential", 12, {}),
    ("grid", 12, {"torus": True}),
    ("star", 9, {"center": 4}),
    ("erdos_renyi", 20, {"p": 0.4, "seed": 3}),
    ("u_equistatic", 24, {"M": 3}),
])
def test_explorer_shows_rho_gap_degree_and_W(explorer, family, n, params):
    ex = explorer
    before = bytes(ex.image.value)  # the default explorer's picture (ring, n = 16)
    ex.picker.family.value = family
    ex.picker.n.value = n
    for name, value in params.items():
        w = ex.picker.params[name]
        w.value = str(value) if name == "M" else value
    ex.wait_idle()
    topo = make(family, n, **params)
    r = rho(topo)
    assert shown_number(ex.rho_label.value) == pytest.approx(r, rel=1e-5, abs=1e-9)
    assert shown_number(ex.gap_label.value) == pytest.approx(1 - r, rel=1e-5, abs=1e-9)
    assert ex.values["rho"] == pytest.approx(r, rel=1e-12, abs=1e-15)
    assert shown_number(ex.degree_label.value) == max_out_degree(topo.W)
    np.testing.assert_array_equal(ex.heatmap_data, topo.W)
    wraps = 7 if family == "grid" else 0  # the 3 x 4 torus: 3 row and 4 column wrap arcs
    assert ex.graph_segments.shape == (links(topo.W) + (ARC_PIECES - 1) * wraps, 2, 2)
    assert ex.product_data is None and ex.k_box.layout.display == "none"
    png = bytes(ex.image.value)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (png == before) == (family == "ring")
    assert ex.message.value == ""


def test_explorer_dynamic_steps_and_products(explorer):
    ex = explorer
    ex.picker.family.value = "one_peer_exponential"
    ex.wait_idle()
    topo = make("one_peer_exponential", 16)
    assert ex.k_box.layout.display == "" and ex.k.max >= 7
    assert shown_number(ex.rho_label.value) == 0.0  # exact averaging every tau = 4 steps
    for k in range(8):
        ex.k.value = k
        ex.wait_idle()
        np.testing.assert_array_equal(ex.heatmap_data, topo.at(k).W)
        P = product(topo, 0, k + 1)
        np.testing.assert_allclose(ex.product_data, P, atol=1e-15)
        err = np.linalg.norm(P - 1 / 16, 2)
        assert shown_number(ex.product_label.value) == pytest.approx(err, rel=1e-5, abs=1e-12)
        assert (err < 1e-12) == (k >= 3)  # W(3)...W(0) = 11^T/n for n = 2^4
        assert shown_number(ex.degree_label.value) == 1
    ex.picker.n.value = 12  # not a power of 2: no exact averaging after tau = 4 steps
    ex.wait_idle()
    assert ex.k.value == 7
    assert shown_number(ex.product_label.value) > 1e-3


def test_explorer_random_dynamic_rate_and_products(explorer):
    ex = explorer
    ex.picker.family.value = "od_equidyn"
    ex.picker.n.value = 10
    ex.picker.params["eta"].value = 0.3
    ex.k.value = 5
    ex.wait_idle()
    topo = make("od_equidyn", 10, eta=0.3)
    # OD-EquiDyn (M=None): E||W x||^2 = ((1-eta)^2 + eta^2 (1 - 2/n)) ||x||^2 for x _|_ 1.
    expected = math.sqrt(0.7**2 + 0.09 * (1 - 2 / 10))
    assert shown_number(ex.rho_label.value) == pytest.approx(expected, rel=1e-5)
    np.testing.assert_array_equal(ex.heatmap_data, topo.at(5).W)
    np.testing.assert_allclose(ex.product_data, product(topo, 0, 6), atol=1e-15)
    ex.k.value = 2  # backwards: from the cache
    ex.wait_idle()
    np.testing.assert_allclose(ex.product_data, product(topo, 0, 3), atol=1e-15)


def test_explorer_error_is_a_message_then_recovers(explorer):
    ex = explorer
    ex.picker.family.value = "hypercube"
    ex.picker.n.value = 12
    ex.wait_idle()
    assert ex.topology is None and "power of 2" in ex.picker.error_label.value
    assert ex.image.layout.visibility == "hidden"
    assert "\u2014" in ex.rho_label.value and ex.values == {}
    ex.picker.n.value = 16
    ex.wait_idle()
    assert ex.image.layout.visibility == "visible" and ex.picker.error == ""
    assert shown_number(ex.rho_label.value) == pytest.approx(3 / 5)  # (d - 1)/(d + 1), d = 4


def test_explorer_draws_every_family_without_a_traceback(explorer):
    ex = explorer
    for family in families():
        ex.picker.family.value = family
        for n in (2, 17, 64):
            ex.picker.n.value = n
            ex.wait_idle()
            assert ex.message.value == "", (family, n, ex._worker.last_traceback)
            assert (ex.topology is None) == bool(ex.picker.error)
            if ex.topology is not None:
                np.testing.assert_array_equal(ex.heatmap_data, ex.topology.at(ex.k.value).W)


def test_explorer_constructor_and_many_links():
    ex = TopologyExplorer("complete", n=100, n_max=128)
    try:
        assert ex.graph_segments.shape[0] == 0  # 4950 links: nodes only, W still shown
        np.testing.assert_array_equal(ex.heatmap_data, make("complete", 100).W)
    finally:
        ex.close()
    ex = TopologyExplorer("ceca", 12, ports=1, k=2)
    try:
        topo = make("ceca", 12, ports=1)  # pairwise exchanges: not circulant, the SVD path
        assert ex.k.value == 2
        np.testing.assert_array_equal(ex.heatmap_data, topo.at(2).W)
        P = product(topo, 0, 3)
        np.testing.assert_allclose(ex.product_data, P, atol=1e-15)
        err = np.linalg.norm(P - 1 / 12, 2)
        assert shown_number(ex.product_label.value) == pytest.approx(err, rel=1e-5)
    finally:
        ex.close()
    # closing stops the thread and closes every control (twice is harmless)
    ports = ex.picker.params["ports"]
    ex.close()
    assert ex._worker.closed and ex.comm is None
    assert ex.k.comm is None and ex.picker.n.comm is None and ports.comm is None


# ---------------------------------------------------------------------- background worker
def test_redraw_worker_coalesces_waits_and_reports_errors():
    calls, errors = [], []
    gate = threading.Event()

    def slow():
        calls.append(time.perf_counter())
        gate.wait(5)

    w = RedrawWorker(slow, on_error=errors.append)
    w.request()
    time.sleep(0.05)
    for _ in range(10):  # arrive while the first run is blocked: merged into one more run
        w.request()
    with pytest.raises(TimeoutError):
        w.wait_idle(0.05)
    gate.set()
    w.wait_idle(5)
    assert len(calls) == 2
    w.close()
    w.request()  # closed: ignored
    assert not w.pending()

    def boom():
        raise ValueError("bad")

    w = RedrawWorker(boom, on_error=errors.append)
    w.request()
    w.wait_idle(5)
    w.close()
    assert isinstance(errors[-1], ValueError) and "ValueError" in w.last_traceback


def test_redraw_worker_thread_ends_when_idle_and_comes_back():
    runs = []
    w = RedrawWorker(lambda: runs.append(1), idle_exit=0.05, name="idle-exit-test")
    w.request()
    w.wait_idle(5)
    deadline = time.monotonic() + 5
    while any(t.name == "idle-exit-test" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the idle thread did not end"
        time.sleep(0.02)
    w.request()  # starts a new thread
    w.wait_idle(5)
    assert len(runs) == 2
    w.close()


# ---------------------------------------------------------------------- spectral gap
@pytest.fixture(scope="module")
def spectral():
    sg = SpectralGapExplorer(n_max=256)
    yield sg
    sg.close()


def test_n_grid_is_even_and_holds_the_powers_of_two():
    ns = n_grid(1024)
    assert np.all(ns % 2 == 0) and ns[0] == 4 and ns[-1] == 1024
    assert set(2 ** np.arange(2, 11)) <= set(ns.tolist())
    assert np.all(np.diff(ns) > 0) and 30 <= ns.size <= 60


def test_sweep_curves_equal_rho_computed_here(spectral):
    sg = spectral
    sg.quantity.value = "gap"
    sg.wait_idle()
    curves = sg.curves
    assert set(curves) == {"ring", "exponential", "one_peer_exponential", "od_equidyn"}
    for family, (ns, ys) in curves.items():
        for n in (4, 16, 52, 98, 256):
            i = int(np.nonzero(ns == n)[0][0])
            assert ys[i] == pytest.approx(1 - rho(make(family, n)), rel=1e-12, abs=1e-15)
    sg.quantity.value = "rho"
    sg.wait_idle()
    ns, ys = sg.curves["one_peer_exponential"]
    for i, n in enumerate(ns):
        r = rho(make("one_peer_exponential", int(n)))
        if n & (n - 1) == 0:
            assert r < 1e-12 and np.isnan(ys[i])  # rho = 0 has no place on a log axis
        else:
            assert ys[i] == pytest.approx(r, rel=1e-12)
    sg.quantity.value = "gap"
    sg.wait_idle()


def test_theory_curves_are_the_closed_forms(spectral):
    sg = spectral
    sg.wait_idle()
    theory, measured = sg.theory_curves, sg.curves
    ns, ys = theory["ring"]
    np.testing.assert_allclose(ys, 1 - (1 / 3 + 2 / 3 * np.cos(2 * np.pi / ns)), rtol=1e-12)
    np.testing.assert_allclose(measured["ring"][1], ys, rtol=1e-9)
    ns, ys = theory["exponential"]
    tau = np.array([math.ceil(math.log2(n)) for n in ns])
    np.testing.assert_allclose(ys, 2 / (tau + 1), rtol=1e-12)
    np.testing.assert_allclose(measured["exponential"][1], ys, rtol=1e-9)  # even n only
    ns, ys = theory["od_equidyn"]
    np.testing.assert_allclose(ys, 1 - np.sqrt(0.25 + 0.25 * (1 - 2 / ns)), rtol=1e-12)
    np.testing.assert_allclose(measured["od_equidyn"][1], ys, rtol=1e-9)
    ns, ys = theory["one_peer_exponential"]
    power = (ns & (ns - 1)) == 0
    assert np.all(ys[power] == 1.0) and np.all(np.isnan(ys[~power]))


@pytest.mark.parametrize("setting", ["iid", "heterogeneous"])
def test_cursor_shows_rho_gap_and_transient_iterations(spectral, setting):
    sg = spectral
    sg.setting.value = setting
    sg.n.value = 100
    sg.wait_idle()
    assert set(sg.cursor_rows) == set(sg.families.value)
    for family, row in sg.cursor_rows.items():
        topo = make(family, 100)
        assert row["rho"] == pytest.approx(topo.rho, rel=1e-12, abs=1e-15)
        assert row["spectral_gap"] == pytest.approx(1 - topo.rho, rel=1e-12, abs=1e-15)
        assert row["degree"] == topo.degree
        want = transient_iterations(topo, setting=setting)
        assert row["transient"] == pytest.approx(want, rel=1e-9)
        assert family in sg.table.value
    # The ordering the lecture is about: ring's transient stage dwarfs the exponential graph's.
    assert sg.cursor_rows["ring"]["transient"] > 1e3 * sg.cursor_rows["exponential"]["transient"]


def test_family_selection_computes_a_sweep_once(spectral):
    sg = spectral
    chosen = tuple(sg.families.value)
    sg.families.value = chosen + ("grid", "hypercube")
    sg.wait_idle()
    assert {"grid", "hypercube"} <= set(sg.curves)
    ns, ys = sg.curves["hypercube"]
    for i, n in enumerate(ns):
        if n & (n - 1):
            assert np.isnan(ys[i])  # a hypercube needs a power of 2: a gap in the curve
        else:
            assert ys[i] == pytest.approx(2 / (math.log2(n) + 1), rel=1e-9)
    s = sweep("grid", 256)
    assert sweep("grid", 256) is s  # cached: computed once
    sg.n.value = 100
    sg.wait_idle()
    assert "power of 2" in sg.cursor_rows["hypercube"]["error"]
    sg.families.value = chosen
    sg.wait_idle()
    assert set(sg.curves) == set(chosen) and "grid" not in sg.cursor_rows
    with pytest.raises(TopologyError, match="parameters without defaults"):
        SpectralGapExplorer(("erdos_renyi",))


# ---------------------------------------------------------------------- sharp pictures
def test_png_encoder_round_trips_through_pillow():
    import io

    from PIL import Image

    from widgets._render import encode_png

    rgba = np.random.default_rng(0).integers(0, 256, size=(7, 5, 4), dtype=np.uint8)
    png = encode_png(rgba)
    back = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    np.testing.assert_array_equal(back, rgba[..., :3])


def test_pictures_are_rendered_at_the_pixel_ratio_and_shown_at_css_size(explorer):
    import io

    from PIL import Image

    from widgets import _render

    ex = explorer
    ex.wait_idle()
    width, height = Image.open(io.BytesIO(ex.image.value)).size
    fig_w, fig_h = ex._panels[False].fig.get_size_inches()
    # The PNG has PIXEL_RATIO device pixels per CSS pixel; the layout shows it at CSS size,
    # never stretched to the output's width.
    assert width == round(fig_w * _render.DPI * _render.PIXEL_RATIO)
    assert height == round(fig_h * _render.DPI * _render.PIXEL_RATIO)
    assert ex.image.layout.width == f"{round(fig_w * _render.DPI)}px"
    assert ex.image.layout.height == "auto" and ex.image.layout.max_width == "100%"
    ex.picker.family.value = "one_peer_exponential"  # a wider figure: the layout follows
    ex.wait_idle()
    fig_w = ex._panels[True].fig.get_size_inches()[0]
    assert ex.image.layout.width == f"{round(fig_w * _render.DPI)}px"
    assert Image.open(io.BytesIO(ex.image.value)).size[0] == \
        round(fig_w * _render.DPI * _render.PIXEL_RATIO)


# ---------------------------------------------------------------------- models without widgets
def forbid_widgets(monkeypatch) -> None:
    """Make building any ipywidgets widget fail: what runs next is a model, not a widget."""
    import ipywidgets

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"a model built a widget ({type(self).__name__})")

    monkeypatch.setattr(ipywidgets.Widget, "__init__", refuse)


def test_spectral_view_is_a_model_of_numbers_only(monkeypatch):
    from widgets.spectral_gap import spectral_view

    forbid_widgets(monkeypatch)
    view = spectral_view(("ring", "exponential", "one_peer_exponential"), "gap", n=64,
                         setting="heterogeneous", n_max=256)
    ns, gap = view.curves["ring"]
    for n in (4, 16, 64, 256):
        i = int(np.nonzero(ns == n)[0][0])
        assert gap[i] == pytest.approx(1 - rho(make("ring", n)), rel=1e-12)
    ns, theory = view.theory["exponential"]
    tau = np.ceil(np.log2(ns))
    np.testing.assert_allclose(theory, 2 / (tau + 1), rtol=1e-12)
    row = view.rows["ring"]
    assert row["transient"] == pytest.approx(
        transient_iterations(make("ring", 64), setting="heterogeneous"), rel=1e-9)
    assert view.cursor["ring"] == pytest.approx(1 - rho(make("ring", 64)), rel=1e-12)
    lo, hi = view.ylim
    finite = np.concatenate([v[np.isfinite(v)] for _, v in view.curves.values()])
    assert lo < finite.min() and hi > finite.max()
    as_rho = spectral_view(("one_peer_exponential",), "rho", n=64, n_max=256)
    assert as_rho.zeros == ["one_peer_exponential"] and "rho = 0" in as_rho.note
    assert "Select" in spectral_view((), n_max=256).note


def test_explorer_view_is_a_model_of_numbers_only(monkeypatch):
    from widgets.topology_explorer import explorer_view

    forbid_widgets(monkeypatch)
    topo = make("one_peer_exponential", 8)
    view = explorer_view(topo, k=2)
    np.testing.assert_allclose(view.product, product(topo, 0, 3), atol=1e-15)
    assert view.consensus_error == pytest.approx(0.0, abs=1e-12)  # 3 steps average 8 nodes
    np.testing.assert_array_equal(view.W, topo.at(2).W)
