"""``Topology.require(kind)``, the one stochasticity check, and ``memo``, the one cache.

require() is checked against numpy's row and column sums of hand-made matrices (row- and
column-normalised random ones, doubly stochastic ones built as convex combinations of
permutation matrices, Birkhoff's theorem); its errors must name the row or column that is
off, its sum, and what to use instead.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from declearn.errors import TopologyError
from declearn.topology import Topology, apply_weights, ring

KINDS = ("row", "column", "doubly")


def _topology(W) -> Topology:
    return Topology.from_matrix(W, stochastic=None, allow_disconnected=True)


def _birkhoff(n: int, k: int, rng) -> np.ndarray:
    """A doubly stochastic matrix: a convex combination of k random permutation matrices."""
    lam = rng.dirichlet(np.ones(k))
    return sum(w * np.eye(n)[rng.permutation(n)] for w in lam)


def _matrices():
    rng = np.random.default_rng(12)
    out = {}
    for n in (1, 2, 5, 9):
        A = rng.random((n, n)) * (rng.random((n, n)) < 0.6) + np.eye(n)
        out[f"rows n={n}"] = A / A.sum(axis=1, keepdims=True)
        out[f"columns n={n}"] = A / A.sum(axis=0, keepdims=True)
        out[f"doubly n={n}"] = _birkhoff(n, 3, rng)
        out[f"neither n={n}"] = A
    W = _birkhoff(6, 4, rng)
    out["doubly, off by 1e-12"] = W + 1e-12 * np.eye(6)  # within the tolerance: passes
    out["doubly, off by 1e-6"] = W + 1e-6 * np.eye(6)  # outside it: fails both ways
    return out


def _numpy_says(W: np.ndarray, kind: str) -> bool:
    rows = np.all(np.abs(W.sum(axis=1) - 1.0) <= 1e-9)
    cols = np.all(np.abs(W.sum(axis=0) - 1.0) <= 1e-9)
    return {"row": rows, "column": cols, "doubly": rows and cols}[kind]


@pytest.mark.parametrize("name, kind", list(itertools.product(_matrices(), KINDS)))
def test_require_agrees_with_numpy_sums(name, kind):
    W = _matrices()[name]
    topo = _topology(W)
    if _numpy_says(W, kind):
        assert topo.require(kind) is topo
    else:
        with pytest.raises(TopologyError, match="must sum to 1"):
            topo.require(kind)


def test_the_test_matrices_cover_every_case():
    verdicts = {tuple(_numpy_says(W, k) for k in KINDS) for W in _matrices().values()}
    assert verdicts == {(True, False, False), (False, True, False), (True, True, True),
                        (False, False, False)}


def test_row_error_names_the_row_its_sum_and_the_sender_side_alternative():
    W = np.array([[0.5, 0.1, 0.6], [0.5, 0.1, 0.2], [0.0, 0.8, 0.2]])  # columns sum to 1
    sums = W.sum(axis=1)
    bad = int(np.nonzero(np.abs(sums - 1.0) > 1e-9)[0][0])
    with pytest.raises(TopologyError) as info:
        _topology(W).require("row")
    msg = str(info.value)
    assert msg.startswith("Rows of W must sum to 1") and "receiver-side" in msg
    assert f"row {bad} of custom sums to {sums[bad]:.6g}" in msg
    assert "(2 rows are off)" in msg
    assert "stochastic='column'" in msg and "weights='sender'" in msg
    assert "PushSumConsensus" in msg and "W / W.sum(axis=1, keepdims=True)" in msg


def test_column_error_names_the_column_and_the_receiver_side_alternative():
    W = apply_weights(4, [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2)], "uniform", directed=True)
    sums = W.W.sum(axis=0)
    bad = int(np.nonzero(np.abs(sums - 1.0) > 1e-9)[0][0])
    with pytest.raises(TopologyError) as info:
        W.require("column")
    msg = str(info.value)
    assert msg.startswith("Columns of W must sum to 1") and "push-sum" in msg
    assert f"column {bad} of custom sums to {sums[bad]:.6g}" in msg
    assert "rule='uniform_out'" in msg and "weights='receiver'" in msg
    assert "stochastic='row'" in msg


def test_doubly_error_points_to_metropolis_and_push_sum():
    W = apply_weights(4, [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2)], "uniform", directed=True)
    assert W.require("row") is W  # rows are fine, the columns are not
    with pytest.raises(TopologyError) as info:
        W.require("doubly")
    msg = str(info.value)
    assert msg.startswith("Columns of W must sum to 1 for a doubly stochastic W")
    assert "rule='metropolis'" in msg and "PushDIGing" in msg
    assert apply_weights(4, [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2)]).require("doubly")


@pytest.mark.parametrize("kind, hint", [
    ("receiver", "'receiver' is the old name of 'row'"),
    ("sender", "'sender' is the old name of 'column'"),
    ("rows", "takes 'row', 'column', 'doubly'"),
    (None, "takes 'row', 'column', 'doubly'"),
])
def test_require_refuses_other_words_and_names_its_vocabulary(kind, hint):
    with pytest.raises(TopologyError, match=hint):
        ring(4).require(kind)


def test_check_weights_is_the_old_spelling_of_require():
    col = _topology(np.array([[0.5, 1.0], [0.5, 0.0]]))
    with pytest.warns(DeprecationWarning, match=r"write require\('column'\)"):
        assert col.check_weights("sender") is col
    with pytest.warns(DeprecationWarning), pytest.raises(TopologyError,
                                                         match="Rows of W must sum to 1"):
        col.check_weights("receiver")
    with pytest.warns(DeprecationWarning), pytest.raises(TopologyError,
                                                         match="Rows of W must sum to 1"):
        col.check_weights()  # the default was "receiver"
    with pytest.raises(TopologyError, match=r"old name of require\('row'"):
        col.check_weights("row")


class _CountingSums(Topology):
    """A Topology that counts how often its row and column sums are computed."""

    sums_computed = 0

    @property
    def row_sums(self):
        type(self).sums_computed += 1
        return super().row_sums

    @property
    def col_sums(self):
        type(self).sums_computed += 1
        return super().col_sums


def test_require_is_remembered_once_it_passes_and_not_when_it_fails():
    W = np.array([[0.5, 0.5], [0.25, 0.75]])  # rows sum to 1, columns do not
    topo = _CountingSums.from_matrix(W, stochastic=None)
    _CountingSums.sums_computed = 0
    topo.require("row")
    first = _CountingSums.sums_computed
    assert first >= 1
    for _ in range(3):
        topo.require("row")
    assert _CountingSums.sums_computed == first  # not recomputed
    for attempt in range(2):
        with pytest.raises(TopologyError, match="Columns of W"):
            topo.require("column")
        assert _CountingSums.sums_computed > first + attempt  # a refusal is not remembered


def test_a_passed_doubly_check_answers_row_and_column_too():
    W = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5]])
    topo = _CountingSums.from_matrix(W, stochastic=None)
    topo.require("doubly")
    _CountingSums.sums_computed = 0
    assert topo.require("row") is topo and topo.require("column") is topo
    assert _CountingSums.sums_computed == 0


def test_memo_builds_once_and_keeps_nothing_when_the_build_fails():
    topo = ring(5)
    calls = []

    def build():
        calls.append(1)
        return np.arange(3)

    assert topo.recall("test.value") is None and topo.recall("test.value", 7) == 7
    first = topo.memo("test.value", build)
    assert topo.memo("test.value", build) is first and topo.recall("test.value") is first
    assert len(calls) == 1
    other = ring(5)  # another object: its own memory
    other.memo("test.value", build)
    assert len(calls) == 2

    def fails():
        calls.append(1)
        raise RuntimeError("no")

    for expected in (3, 4):
        with pytest.raises(RuntimeError):
            topo.memo("test.failing", fails)
        assert len(calls) == expected and topo.recall("test.failing") is None


def test_derived_quantities_go_through_memo():
    topo = Topology.from_matrix(np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5]]))
    assert topo.recall("rho") is None
    r = topo.rho
    assert topo.recall("rho") == r == pytest.approx(
        np.linalg.norm(topo.W - 1.0 / 3.0, 2), abs=1e-12)
    assert topo.recall("W") is topo.W
    with pytest.raises(AttributeError):
        topo.W = np.eye(3)  # derived and read-only, as before
