"""Closed forms of rho (declearn.topology.closed_forms) against rho computed from the built
topology: ``make(family, n).rho`` (an eigensolve, an FFT or a period product), and for the
static families also a dense 2-norm of ``W - 11^T/n`` done here with numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from declearn.errors import TopologyError
from declearn.topology import CLOSED_FORMS, closed_form_rho, make, od_equidyn

NS = [2, 3, 4, 5, 6, 7, 8, 9, 12, 16, 20, 31, 32, 33, 48, 64, 100, 128]


def dense_rho(topology) -> float:
    W = topology.W
    return float(np.linalg.norm(W - 1.0 / W.shape[0], 2))


def test_the_seven_families_have_closed_forms():
    assert set(CLOSED_FORMS) == {"ring", "exponential", "one_peer_exponential", "od_equidyn",
                                 "hypercube", "star", "complete"}
    for form in CLOSED_FORMS.values():
        assert form.formula and form.holds
        assert "NeurIPS" in form.fn.__doc__ or "eigen" in form.fn.__doc__ or \
            form.family == "complete"  # each formula says where it comes from


@pytest.mark.parametrize("family", sorted(CLOSED_FORMS))
def test_closed_form_equals_rho_of_the_built_topology(family):
    values = closed_form_rho(family, NS)
    assert values.shape == (len(NS),)
    checked = 0
    for n, value in zip(NS, values):
        if math.isnan(value):
            continue
        topo = make(family, n)
        assert value == pytest.approx(topo.rho, rel=1e-9, abs=1e-12), (family, n)
        if not topo.is_dynamic:
            assert value == pytest.approx(dense_rho(topo), rel=1e-9, abs=1e-12), (family, n)
        checked += 1
    assert checked >= 4, f"{family}: the formula held at only {checked} of the n tried"


def test_where_the_formulas_do_not_hold():
    ns = np.array(NS)
    odd = ns % 2 == 1
    assert np.all(np.isnan(closed_form_rho("exponential", ns)[odd]))
    # ... and there the true rho is indeed different from the even-n formula.
    tau = math.ceil(math.log2(9))
    assert make("exponential", 9).rho < 1 - 2 / (tau + 1) - 0.1
    power = (ns & (ns - 1)) == 0
    for family in ("one_peer_exponential", "hypercube"):
        v = closed_form_rho(family, ns)
        assert np.all(np.isnan(v[~power])) and np.all(np.isfinite(v[power]))
    assert make("one_peer_exponential", 12).rho > 0.5  # not 0 off the powers of 2
    assert math.isnan(closed_form_rho("star", 2))


def test_od_equidyn_closed_form_takes_eta():
    for eta in (0.2, 0.5, 0.9):
        for n in (5, 16, 40):
            want = od_equidyn(n, eta=eta).rho
            assert closed_form_rho("od_equidyn", n, eta=eta) == pytest.approx(want, rel=1e-9)
    with pytest.raises(TopologyError, match="M=None"):
        closed_form_rho("od_equidyn", 16, M=2)


def test_closed_form_errors_say_what_to_do():
    with pytest.raises(TopologyError, match=r"no closed form .*grid.*\.rho"):
        closed_form_rho("grid", 16)
    with pytest.raises(TopologyError, match="takes no parameters"):
        closed_form_rho("ring", 16, rule="uniform")
    with pytest.raises(TopologyError, match="positive integers"):
        closed_form_rho("ring", [0, 4])
    with pytest.raises(TopologyError, match="positive integers"):
        closed_form_rho("ring", 4.5)
