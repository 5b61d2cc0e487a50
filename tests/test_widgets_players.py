"""ConsensusPlayer and AlgorithmRace, driven by their controls and checked against independent
computations: dense matrix powers / products for the player, declearn's algorithms run here for
the race (same problem, topology and step size), and declearn's own divergence test."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from declearn.algorithms import DGD, ExactDiffusion, GradientTracking, RelaySGD
from declearn.comm import SimComm
from declearn.errors import DivergenceError
from declearn.problems import LeastSquares
from declearn.topology import make, rho, spanning_tree

pytest.importorskip("ipywidgets")

from widgets import AlgorithmRace, ConsensusPlayer
from widgets.consensus_player import directed_demo_graph

WAIT = 60.0  # generous: the test machine is shared


@pytest.fixture
def thread_errors(monkeypatch):
    """Exceptions that escape any thread (a widget's worker must never let one out)."""
    seen = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_value))
    return seen


@pytest.fixture
def player_factory():
    made = []

    def make_player(*args, **kwargs):
        p = ConsensusPlayer(*args, **kwargs)
        made.append(p)
        return p

    yield make_player
    for p in made:
        p.close()


@pytest.fixture
def race_factory():
    made = []

    def make_race(*args, **kwargs):
        r = AlgorithmRace(*args, **kwargs)
        made.append(r)
        r.wait_idle(WAIT)
        return r

    yield make_race
    for r in made:
        r.close()


def goto(player, k, wait=True):
    """Move the step slider; the values and curves are updated at once, the image by the
    render thread (``wait`` for it)."""
    player.step_slider.value = k
    if wait:
        player.wait_idle(WAIT)


def is_png(data: bytes) -> bool:
    return bytes(data[:8]) == b"\x89PNG\r\n\x1a\n"


# ============================================================================ player
@pytest.mark.parametrize("family, n", [("ring", 16), ("exponential", 12), ("grid", 12)])
def test_player_shows_powers_of_W_on_static_topologies(player_factory, family, n):
    p = player_factory(family, n=n, seed=3)
    W = make(family, n).W
    x0 = np.random.default_rng(3).standard_normal(n)  # documented: "random" from seed
    np.testing.assert_allclose(p.x0, x0, rtol=0, atol=0)
    for k in (0, 1, 7, 40):
        goto(p, k)
        expected = np.linalg.matrix_power(W, k) @ x0
        np.testing.assert_allclose(p.values, expected, rtol=1e-12, atol=1e-12)
        # the picture colours the nodes with exactly these values, on the fixed scale
        np.testing.assert_allclose(p.figure.node_values, expected, rtol=1e-12, atol=1e-12)
        assert p.rendered_k == k and is_png(p.image.value)
    assert p.figure.norm.vmin == x0.min() and p.figure.norm.vmax == x0.max()


@pytest.mark.parametrize("family, params", [("one_peer_exponential", {}),
                                            ("od_equidyn", {"seed": 4}),
                                            ("ou_equidyn", {"seed": 1, "eta": 0.75})])
def test_player_follows_the_product_of_the_steps_of_a_dynamic_topology(
        player_factory, family, params):
    n = 16
    p = player_factory(family, n=n, **params)  # seed: the values' and the family's
    assert p.picker.param_values().get("seed") == params.get("seed")
    topo = make(family, n, **params)
    x = p.x0
    for k in range(13):
        goto(p, k, wait=False)
        np.testing.assert_allclose(p.values, x, rtol=1e-12, atol=1e-12)
        x = topo.at(k).W @ x
    p.wait_idle(WAIT)
    assert p.rendered_k == 12
    if family == "one_peer_exponential":  # n = 2^4: exact average after 4 steps
        goto(p, 4)
        np.testing.assert_allclose(p.values, np.full(n, p.x0.mean()), atol=1e-14)
    assert p.theory_curve is None  # the rho^(2k) bound is drawn for static topologies only


def test_player_error_curve_matches_dense_computation_and_theory(player_factory):
    n, k = 16, 60
    p = player_factory("ring", n=n, seed=2)
    goto(p, k)
    W, x0 = make("ring", n).W, p.x0
    expected = []
    x = x0.copy()
    for _ in range(k + 1):
        expected.append(np.mean((x - x0.mean()) ** 2))
        x = W @ x
    ks, errs = p.error_curve
    np.testing.assert_array_equal(ks, np.arange(k + 1))
    np.testing.assert_allclose(errs, expected, rtol=1e-10, atol=1e-15)
    r = rho(make("ring", n))
    _, bound = p.theory_curve
    np.testing.assert_allclose(bound, expected[0] * r ** (2 * np.arange(k + 1)), rtol=1e-12)
    assert np.all(errs <= bound * (1 + 1e-9))  # the rho^(2k) guarantee holds
    assert f"{r:.4g}" in p.info.value


def test_player_scrubbing_back_reuses_the_cached_iterates(player_factory):
    p = player_factory("ring", n=16)
    goto(p, 80)
    trace = p.model.traces[p.model.main]
    assert trace.algorithm.k == 80
    goto(p, 5)
    assert trace.algorithm.k == 80  # nothing recomputed
    W = make("ring", 16).W
    np.testing.assert_allclose(p.values, np.linalg.matrix_power(W, 5) @ p.x0, atol=1e-12)
    assert p.error_curve[1].size == 6


def test_play_widget_drives_the_step_and_speed(player_factory):
    p = player_factory("exponential", n=8)
    p.play.value = 7
    p.wait_idle(WAIT)
    assert p.step_slider.value == 7 and p.rendered_k == 7
    W = make("exponential", 8).W
    np.testing.assert_allclose(p.values, np.linalg.matrix_power(W, 7) @ p.x0, atol=1e-12)
    p.speed.value = 800
    assert p.play.interval == 800
    assert p.play.max == p.step_slider.max == p.max_steps


def test_new_initial_values_restart_from_new_values(player_factory):
    p = player_factory("ring", n=10, seed=0)
    goto(p, 5)
    before = p.x0
    image_before = bytes(p.image.value)
    p.new_values.click()
    p.wait_idle(WAIT)
    assert not np.allclose(p.x0, before)
    np.testing.assert_allclose(p.values, np.linalg.matrix_power(make("ring", 10).W, 5) @ p.x0,
                               atol=1e-12)
    assert bytes(p.image.value) != image_before


def test_push_sum_reaches_the_mean_where_plain_averaging_is_biased(player_factory):
    n, seed = 16, 0
    p = player_factory("ring", n=n, seed=seed, algorithm="push_sum", max_steps=300)
    # The digraph: directed, column-stochastic (push-sum), not row-stochastic.
    push = p.topology
    assert not push.is_symmetric and push.is_column_stochastic and not push.is_row_stochastic
    assert push.is_connected
    # Plain averaging's limit pi^T x0, pi from an eigendecomposition (independent of the widget).
    W_row = directed_demo_graph(n, seed, weights="receiver").W
    assert np.array_equal(W_row > 0, push.W > 0)  # same links, other weights
    vals, vecs = np.linalg.eig(W_row.T)
    pi = np.real(vecs[:, np.argmin(np.abs(vals - 1))])
    pi /= pi.sum()
    x0 = p.x0
    limit, mean = float(pi @ x0), float(x0.mean())
    assert abs(limit - mean) > 0.05  # visibly biased for this seed
    assert p.true_mean == pytest.approx(mean, abs=1e-15)
    assert p.biased_limit == pytest.approx(limit, abs=1e-10)
    goto(p, 300)
    np.testing.assert_allclose(p.values, mean, atol=1e-9)  # push-sum's ratio x/w
    p.color_by.value = "plain averaging"
    p.wait_idle(WAIT)
    np.testing.assert_allclose(p.values, limit, atol=1e-9)  # consensus, on the wrong value
    assert np.all(np.abs(p.values - mean) > 0.04)
    curves = p.curves
    assert set(curves) == {"push-sum x/w", "plain averaging"}
    assert curves["push-sum x/w"][1][-1] < 1e-18
    assert curves["plain averaging"][1][-1] == pytest.approx((limit - mean) ** 2, rel=1e-6)
    assert "biased" in p.info.value


def test_push_sum_values_follow_the_dense_push_sum_recursion(player_factory):
    n = 9
    p = player_factory("ring", n=n, seed=5, algorithm="push_sum")
    A = p.topology.W
    x, w = p.x0.copy(), np.ones(n)
    for k in range(12):
        goto(p, k, wait=False)
        np.testing.assert_allclose(p.values, x / w, rtol=1e-12, atol=1e-12)
        x, w = A @ x, A @ w


def test_player_shows_a_message_not_a_traceback(player_factory, thread_errors):
    p = player_factory("ring", n=16)
    p.picker.family.value = "hypercube"
    p.picker.n.value = 12
    p.wait_idle(WAIT)
    assert "power of 2" in p.message.value
    p.picker.n.value = 16
    p.wait_idle(WAIT)
    assert p.message.value == ""
    np.testing.assert_allclose(p.values, p.x0, atol=0)  # step 0 of the new topology
    p.mode.value = "push_sum"
    p.picker.n.value = 2  # the smallest digraph: a 2-cycle
    p.step_slider.value = p.max_steps
    p.mode.value = "average"
    p.picker.family.value = "ceca"
    p.wait_idle(WAIT)
    assert p._worker.last_error is None and not thread_errors


# ============================================================================ race
def test_race_curves_are_the_algorithms_run_here(race_factory):
    n, steps = 16, 120
    r = race_factory("least_squares", n=n, family="ring", heterogeneity=1.0, lr=0.3,
                     steps=steps)
    problem = LeastSquares(n, d=10, m=20, heterogeneity=1.0, seed=0)
    topo = make("ring", n)
    lr = 0.3 / problem.smoothness
    assert r.step_size == pytest.approx(lr, rel=1e-15)
    assert r.log_every == 1
    tree = spanning_tree(topo)
    runs = {
        "DGD": DGD(SimComm(n), problem, topo, lr=lr),
        "gradient tracking": GradientTracking(SimComm(n), problem, topo, lr=lr),
        "exact diffusion": ExactDiffusion(SimComm(n), problem, topo, lr=lr),
        "RelaySGD": RelaySGD(SimComm(n), problem, tree, lr=lr),
    }
    curves = r.curves
    assert list(curves) == list(runs)
    for name, alg in runs.items():
        h = alg.run(steps, log_every=1, progress=False)
        c = curves[name]
        assert c.status == "done"
        np.testing.assert_array_equal(c.iterations, h["iteration"].astype(int))
        for col in ("suboptimality", "consensus_error"):
            np.testing.assert_allclose(getattr(c, col), h[col], rtol=1e-9, atol=1e-300,
                                       err_msg=f"{name} {col}")
    assert f"diameter {tree.diameter}" in r.info.value and "spanning tree" in r.info.value
    assert is_png(r.image.value)
    for name, c in curves.items():  # the picture draws these very numbers
        x, y = r.figure.curve_data("suboptimality", name)
        np.testing.assert_array_equal(x, c.iterations)
        drawn = np.isfinite(y)
        np.testing.assert_array_equal(y[drawn], c.suboptimality[drawn])
        assert drawn.sum() >= c.iterations.size - 5


def test_heterogeneity_moves_dgd_plateau_not_gradient_tracking_limit(race_factory):
    r = race_factory("least_squares", n=16, family="hypercube", heterogeneity=0.0, lr=0.5,
                     steps=400, algorithms=["DGD", "gradient tracking"])
    final = {}
    for h in (0.0, 1.0, 2.0):
        r.heterogeneity.value = h
        r.wait_idle(WAIT)
        final[h] = {name: c.suboptimality[-1] for name, c in r.curves.items()}
    assert final[0.0]["DGD"] < 1e-20  # b^2 = 0: no bias, DGD converges exactly
    assert final[1.0]["DGD"] > 1e-6  # a plateau ...
    assert final[2.0]["DGD"] == pytest.approx(4 * final[1.0]["DGD"], rel=0.05)  # ... ~ b^2
    for h in final:  # same limit f* for every h (up to the round-off of f(x) - f*)
        assert final[h]["gradient tracking"] < 1e-10


def test_a_diverging_step_size_shows_the_message(race_factory):
    n, steps, lr_L = 16, 100, 3.0
    r = race_factory("least_squares", n=n, family="ring", lr=lr_L, steps=steps,
                     algorithms=["DGD", "exact diffusion"])
    problem = LeastSquares(n, d=10, m=20, heterogeneity=1.0, seed=0)
    alg = ExactDiffusion(SimComm(n), problem, make("ring", n), lr=lr_L / problem.smoothness)
    with pytest.raises(DivergenceError) as info:
        alg.run(steps, log_every=1, progress=False)
    c = r.curves["exact diffusion"]
    assert c.status == "diverged" and c.diverged_at == info.value.iteration
    assert (f"exact diffusion diverged at iteration {info.value.iteration}: lower the step size"
            in r.message.value)
    assert r.curves["DGD"].status == "done"
    r.lr.value = 0.1
    r.wait_idle(WAIT)
    assert "diverged" not in r.message.value
    assert r.curves["exact diffusion"].status == "done"


def test_race_skips_what_cannot_run_and_never_raises(race_factory, thread_errors):
    r = race_factory("quadratics", n=16, family="one_peer_exponential", steps=60)
    c = r.curves["exact diffusion"]
    assert c.status == "skipped" and "static" in c.note
    assert "exact diffusion skipped" in r.message.value
    assert r.curves["gradient tracking"].status == "done"
    assert "one period" in r.tree_description
    # Impossible or odd combinations through the controls: messages, never a traceback.
    r.picker.family.value = "hypercube"
    r.picker.n.value = 12
    r.wait_idle(WAIT)
    assert "power of 2" in r.message.value and r.curves == {}
    for box in r.checks.values():
        box.value = False
    r.picker.n.value = 8
    r.wait_idle(WAIT)
    assert r.curves == {} and "No algorithm is checked" in r.message.value
    r.checks["RelaySGD"].value = True
    r.picker.family.value = "star"
    r.lr.value = r.lr.max
    r.steps.value = r.steps.min
    r.problem.value = "least_squares"
    r.wait_idle(WAIT)
    assert set(r.curves) == {"RelaySGD"}
    assert r._worker.last_error is None and not thread_errors


def test_race_recomputes_only_new_racers_and_updates_the_image(race_factory):
    r = race_factory("least_squares", n=8, family="ring", steps=60, algorithms=["DGD"])
    dgd = r.curves["DGD"]
    image = bytes(r.image.value)
    r.checks["gradient tracking"].value = True
    r.wait_idle(WAIT)
    assert set(r.curves) == {"DGD", "gradient tracking"}
    np.testing.assert_array_equal(r.curves["DGD"].suboptimality, dgd.suboptimality)
    assert bytes(r.image.value) != image


def test_the_models_build_no_widget(monkeypatch):
    import ipywidgets

    from declearn.topology import stationary_distribution
    from widgets.consensus_player import ConsensusModel, initial_values
    from widgets.race import make_problem, run_race

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"a model built a widget ({type(self).__name__})")

    monkeypatch.setattr(ipywidgets.Widget, "__init__", refuse)
    x0 = initial_values(12, "random", 1)
    model = ConsensusModel.push_sum(x0, seed=3, capacity=50)
    W = model.averaging_graph.W
    vals, vecs = np.linalg.eig(W.T)  # pi: numpy's left eigenvector for eigenvalue 1
    pi = np.real(vecs[:, np.argmin(np.abs(vals - 1))])
    pi /= pi.sum()
    np.testing.assert_allclose(stationary_distribution(W), pi, rtol=1e-10)
    assert model.biased_limit == pytest.approx(pi @ x0, rel=1e-10)
    curves = run_race(make_problem("least_squares", 8, 1.0), make("ring", 8), ["DGD"], 0.05, 40)
    assert curves["DGD"].status == "done" and curves["DGD"].iterations[-1] == 40
