"""Live training: the LiveTraining widget against records written by hand and a real simulator
run, and declearn.cluster.live on a real 2-engine cluster (records published by the engines
while train runs, followed by the client, errors raised naming the rank)."""

from __future__ import annotations

import threading
import time
import warnings

import numpy as np
import pytest
import torch
from ipyparallel import interactive

import declearn.cluster.live as live_mod
from declearn.cluster.live import EngineRunError, follow, publish_record

pytest.importorskip("ipywidgets")

from widgets import LiveTraining
from widgets.live_training import LiveTrainingFigure, LiveTrainingModel

WAIT = 60.0

HAND = [  # three records of a 3-worker run, written by hand
    {"step": 10, "loss": [2.0, 1.5, 0.0], "accuracy": [0.10, 0.25, 0.40],
     "mean_accuracy": 0.30, "consensus": 0.5},
    {"step": 20, "loss": [1.0, 0.8, 0.6], "accuracy": [0.50, 0.55, 0.60],
     "mean_accuracy": 0.65, "consensus": 0.05},
    {"step": 30, "loss": [0.5, 0.4, 0.3], "accuracy": [0.70, 0.75, 0.80],
     "mean_accuracy": 0.85, "consensus": 0.002},
]


@pytest.fixture
def widget_factory():
    made = []

    def make(*args, **kwargs):
        w = LiveTraining(*args, **kwargs)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()


# ============================================================================ model
def test_model_turns_records_into_arrays():
    m = LiveTrainingModel(steps=30)
    assert len(m) == 0 and m.n is None and m.summary() == ""
    for r in HAND:
        m.add(r)
    a = m.arrays()
    np.testing.assert_array_equal(a["step"], [10, 20, 30])
    np.testing.assert_array_equal(a["loss"], [[2.0, 1.5, 0.0], [1.0, 0.8, 0.6],
                                              [0.5, 0.4, 0.3]])
    np.testing.assert_array_equal(a["accuracy"][:, 2], [0.40, 0.60, 0.80])
    np.testing.assert_array_equal(a["mean_accuracy"], [0.30, 0.65, 0.85])
    np.testing.assert_array_equal(a["consensus"], [0.5, 0.05, 0.002])
    assert m.n == 3 and m.last_step == 30
    text = m.summary()
    assert "step 30 / 30" in text and "training loss 0.4 " in text  # mean of 0.5, 0.4, 0.3
    assert "70% (worst worker)" in text and "80% (best)" in text and "85%" in text
    m.clear(steps=5)
    assert len(m) == 0 and m.total_steps == 5


def test_model_refuses_bad_records():
    m = LiveTrainingModel()
    m.add(HAND[1])
    with pytest.raises(ValueError, match="steps must increase; call clear"):
        m.add(HAND[0])
    with pytest.raises(ValueError, match="2 workers, the earlier ones 3: call clear"):
        m.add({**HAND[2], "loss": [1.0, 2.0], "accuracy": [0.1, 0.2]})
    with pytest.raises(ValueError, match="one loss and one accuracy per worker"):
        m.add({**HAND[2], "accuracy": [0.1]})
    with pytest.raises(ValueError, match="step must be an integer >= 1"):
        m.add({**HAND[2], "step": 0})
    with pytest.raises(TypeError, match=r"declearn\.optim\.Record"):
        m.add([1, 2, 3])
    with pytest.raises(ValueError, match="steps must be"):
        LiveTrainingModel(steps=0)
    assert len(m) == 1


# ============================================================================ figure
def test_figure_draws_the_records():
    m = LiveTrainingModel(steps=40)
    for r in HAND:
        m.add(r)
    fig = LiveTrainingFigure(40)
    fig.update(m.arrays(), 40)
    loss = fig.line_data("loss")
    assert len(loss) == 3
    np.testing.assert_array_equal(loss[0][0], [10, 20, 30])
    np.testing.assert_array_equal(loss[1][1], [1.5, 0.8, 0.4])
    assert np.isnan(loss[2][1][0]) and loss[2][1][2] == 0.3  # a loss of 0: a gap on log axes
    acc = fig.line_data("accuracy")
    assert len(acc) == 4  # three workers, then the average model
    np.testing.assert_allclose(acc[0][1], [10, 50, 70])
    np.testing.assert_allclose(acc[3][1], [30, 65, 85])
    np.testing.assert_array_equal(fig.line_data("consensus")[0][1], [0.5, 0.05, 0.002])
    assert fig.axes["loss"].get_xlim() == (0, 40)  # the run's length
    assert fig.axes["loss"].get_ylim() == pytest.approx((0.1, 10.0))  # decades around 0.3..2
    assert fig.axes["consensus"].get_ylim() == pytest.approx((1e-3, 1.0))
    png = fig.png()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    fig.update(m.arrays(), None)  # length unknown: 1, 2 or 5 times a power of ten
    assert fig.axes["accuracy"].get_xlim() == (0, 50)
    assert fig.xi_note.get_text() == ""
    m.add({**HAND[2], "step": 40, "consensus": 0.0})  # equal models: said, not plotted
    fig.update(m.arrays(), 40)
    assert "exact consensus" in fig.xi_note.get_text()
    assert np.isnan(fig.line_data("consensus")[0][1][-1])


# ============================================================================ the widget
def test_widget_shows_every_record_and_the_progress(widget_factory, thread_errors):
    w = widget_factory(steps=30, min_interval=0.0)
    assert w.image.value[:8] == b"\x89PNG\r\n\x1a\n"  # empty axes at once
    for r in HAND:
        w.update(r)
    w.wait_idle(WAIT)
    np.testing.assert_array_equal(w.figure.line_data("consensus")[0][1], [0.5, 0.05, 0.002])
    assert w.bar.value == 30 and w.bar.max == 30
    assert "step 30 / 30" in w.status.value
    assert [r["step"] for r in w.records] == [10, 20, 30]
    assert w.message.value == "" and not thread_errors
    w.close()
    w.update(HAND[0])  # after close: ignored
    assert len(w.model) == 3


def test_redraws_are_throttled_and_the_last_record_is_drawn(widget_factory):
    w = widget_factory(steps=200, min_interval=0.3)
    start = time.perf_counter()
    for k in range(1, 201):
        w.update({"step": k, "loss": [1.0 / k, 2.0 / k], "accuracy": [0.5, 0.6],
                  "mean_accuracy": 0.7, "consensus": 1.0 / k ** 2})
        time.sleep(0.002)
    fed = time.perf_counter() - start
    w.wait_idle(WAIT)
    assert w.draws <= fed / 0.3 + 2, (w.draws, fed)
    x, y = w.figure.line_data("loss")[1]
    assert x[-1] == 200 and y[-1] == pytest.approx(0.01) and x.size == 200
    assert w.bar.value == 200


def test_widget_refuses_bad_settings():
    with pytest.raises(ValueError, match="min_interval"):
        LiveTraining(min_interval=-1)
    with pytest.raises(ValueError, match="steps must be"):
        LiveTraining(steps=2.5)


@pytest.fixture
def thread_errors(monkeypatch):
    seen = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_value))
    return seen


# ============================================================================ simulator
def _mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))


def test_simulator_run_feeds_the_widget(widget_factory):
    from declearn.comm import SimComm
    from declearn.optim import Decentralized, StackedModel, train
    from declearn.problems import NodeBatches, load_digits, partition
    from declearn.topology import ring

    n, steps = 4, 24
    data = load_digits(test_size=200)
    parts = partition(data.y_train.numpy(), n, method="dirichlet", alpha=0.5, seed=0)
    stacked = StackedModel(_mlp(), n)
    opt = Decentralized(torch.optim.Adam(stacked.parameters(), lr=0.01),
                        SimComm(n, dtype=torch.float32), ring(n))
    w = widget_factory(steps=steps, min_interval=0.05)
    log = train(stacked, opt, data, NodeBatches(parts, 8, seed=1), steps, every=4,
                on_record=w.update)
    w.wait_idle(WAIT)
    a = w.model.arrays()
    np.testing.assert_array_equal(a["step"], [4, 8, 12, 16, 20, 24])
    np.testing.assert_array_equal(a["loss"], log.column("loss"))
    np.testing.assert_array_equal(a["consensus"], log.column("consensus"))
    acc = w.figure.line_data("accuracy")
    np.testing.assert_allclose(acc[-1][1], 100 * log.column("mean_accuracy"))
    np.testing.assert_allclose(acc[2][1], 100 * log.column("accuracy")[:, 2])
    assert w.bar.value == steps


# ============================================================================ outside engines
def test_publish_record_outside_an_engine_does_nothing_and_says_so(monkeypatch):
    monkeypatch.setattr(live_mod, "_warned_outside", False)
    with pytest.warns(RuntimeWarning, match="outside an ipyparallel engine"):
        assert publish_record(HAND[0]) is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert publish_record(HAND[1]) is False  # warned once


def test_follow_refuses_bad_input(widget_factory):
    with pytest.raises(TypeError, match="apply_async"):
        follow([1, 2])
    w = widget_factory()
    with pytest.raises(TypeError, match="AsyncResult"):
        w.follow("not a result")
    assert "AsyncResult" in w.message.value


# ============================================================================ engines
@interactive
def _one():
    return 1


@interactive
def _engine_train(steps, every, fail_rank, pause):
    """Runs on every engine: train an MLP on the digits over MPIComm, publishing each record
    (pausing after it, so the run lasts); rank ``fail_rank`` then raises."""
    import time

    import numpy as np
    import torch

    from declearn.cluster.live import publish_record
    from declearn.comm import MPIComm
    from declearn.optim import Decentralized, train
    from declearn.problems import NodeBatches, load_digits, partition
    from declearn.topology import Topology

    torch.set_num_threads(1)
    comm = MPIComm(timeout=60)
    n, me = comm.size, comm.rank
    data = load_digits(test_size=200)
    parts = partition(data.y_train.numpy(), n, method="dirichlet", alpha=0.5, seed=0)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 10))
    lazy = Topology.from_matrix(np.full((n, n), 0.5 / n) + 0.5 * np.eye(n), name="lazy")
    opt = Decentralized(torch.optim.SGD(model.parameters(), lr=0.2), comm, lazy)

    def on_record(record):
        publish_record(record)
        time.sleep(pause)

    log = train(model, opt, data, NodeBatches(parts, 8, seed=1, node=me), steps, every=every,
                on_record=on_record)
    if me == fail_rank:
        raise ValueError(f"rank {me} fails on purpose")
    return [r.as_dict() for r in log.records]


@pytest.fixture(scope="module")
def cluster2(tmp_path_factory):
    from cluster_helpers import processes_mentioning

    import declearn.cluster as dc

    root = tmp_path_factory.mktemp("live")
    cluster = dc.start(2, profile_dir=str(root / "profile_live"), timeout=120, activate=False)
    try:
        yield cluster
    finally:
        cluster.stop()
        assert not processes_mentioning(str(root))


def _same(received, returned):
    assert [r.step for r in received] == [d["step"] for d in returned]
    for r, d in zip(received, returned):
        np.testing.assert_array_equal(r.loss, d["loss"])
        np.testing.assert_array_equal(r.accuracy, d["accuracy"])
        assert r.mean_accuracy == d["mean_accuracy"] and r.consensus == d["consensus"]


@pytest.mark.cluster
@pytest.mark.timeout(300)
def test_follow_delivers_the_records_while_the_engines_train(cluster2):
    ar = cluster2.view.apply_async(_engine_train, 30, 3, None, 0.15)
    seen = []
    wall, cpu = time.perf_counter(), time.process_time()
    received = follow(ar, lambda r: seen.append((r.step, ar.ready())), steps=30,
                      interval=0.1)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert wall > 1.4 and cpu < 0.3 * wall, (wall, cpu)  # it waits, it does not spin
    returned = ar.get()
    assert returned[0] == returned[1]  # every rank holds the same records
    assert all(d["consensus"] > 0 for d in returned[0])  # a lazy W: the models differ
    _same(received, returned[0])
    assert [s for s, _ in seen] == [3, 6, 9, 12, 15, 18, 21, 24, 27, 30]
    assert any(not done for _, done in seen), "no record arrived while the run was going"


@pytest.mark.cluster
@pytest.mark.timeout(300)
def test_follow_a_px_cell(cluster2):
    """What ``%%px --noblock -o ar`` sends: an execute request on the cluster's view."""
    cluster2.view.push({"engine_train": _engine_train})
    ar = cluster2.view.execute("records = engine_train(12, 3, None, 0.05)", block=False)
    received = follow(ar, steps=12, progress=False, interval=0.1)
    returned = cluster2.view.pull("records")
    _same(received, returned[1])
    ar = cluster2.view.execute("records = engine_train(4, 2, 0, 0.0)", block=False)
    with pytest.raises(EngineRunError, match="rank 0 raised ValueError") as info:
        follow(ar, progress=False, interval=0.1)
    assert info.value.ranks == [0]


@pytest.mark.cluster
@pytest.mark.timeout(300)
def test_widget_follows_a_run_on_the_engines(cluster2, widget_factory):
    w = widget_factory(steps=20, min_interval=0.1)
    ar = cluster2.view.apply_async(_engine_train, 20, 5, None, 0.1)
    received = w.follow(ar, interval=0.1)
    returned = ar.get()[0]
    _same(received, returned)
    np.testing.assert_array_equal(w.figure.line_data("consensus")[0][1],
                                  [d["consensus"] for d in returned])
    assert w.bar.value == 20 and w.message.value == ""


@pytest.mark.cluster
@pytest.mark.timeout(300)
def test_an_engine_error_is_raised_naming_the_rank(cluster2, widget_factory):
    w = widget_factory(steps=6, min_interval=0.0)
    ar = cluster2.view.apply_async(_engine_train, 6, 2, 1, 0.05)
    with pytest.raises(EngineRunError, match="rank 1 raised ValueError: rank 1 fails") as info:
        w.follow(ar, interval=0.1)
    assert info.value.ranks == [1]
    assert "ValueError" in info.value._render_traceback_()[0]
    assert [r["step"] for r in w.records] == [2, 4, 6]  # delivered before the error
    assert "rank 1" in w.message.value  # and shown in the widget
    assert cluster2.view.apply_sync(_one) == [1, 1]  # the engines serve again
