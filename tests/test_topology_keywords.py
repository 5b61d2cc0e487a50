"""The topology package's renamed keywords: ``rule=`` (a family's weight rule) and
``stochastic=`` (a declared normalisation), with the old ``weights=`` still accepted.

The old keyword must give the same topology as the new one, with a DeprecationWarning that
points at the caller's line and says what to write.
"""

from __future__ import annotations

import inspect
import warnings

import networkx as nx
import numpy as np
import pytest

from declearn.errors import TopologyError
from declearn.topology import (
    Topology,
    binary_tree,
    chain,
    double_binary_trees,
    erdos_renyi,
    families,
    family_info,
    from_networkx,
    geometric,
    grid,
    make,
    spanning_tree,
)
from declearn.topology.trees import TreeTopology

RULE_CALLS = {
    "grid": lambda **kw: grid(12, **kw),
    "erdos_renyi": lambda **kw: erdos_renyi(12, p=0.5, seed=1, **kw),
    "geometric": lambda **kw: geometric(12, radius=0.6, seed=2, **kw),
    "chain": lambda **kw: chain(6, **kw),
    "binary_tree": lambda **kw: binary_tree(7, **kw),
    "spanning_tree": lambda **kw: spanning_tree(nx.petersen_graph(), **kw),
    "from_parents": lambda **kw: TreeTopology.from_parents([-1, 0, 0, 1], **kw),
    "from_networkx": lambda **kw: from_networkx(nx.cycle_graph(5), **kw),
    "double_binary_trees": lambda **kw: double_binary_trees(8, **kw).first,
    "union": lambda **kw: double_binary_trees(8).union(**kw),
}


def _old_keyword(call, **kw):
    with pytest.warns(DeprecationWarning) as record:
        topo = call(**kw)
    assert len(record) == 1
    return topo, record[0]


@pytest.mark.parametrize("name", RULE_CALLS)
@pytest.mark.parametrize("rule", ["uniform", "max_degree"])
def test_weights_is_the_old_name_of_rule(name, rule):
    new = RULE_CALLS[name](rule=rule)
    old, warning = _old_keyword(RULE_CALLS[name], weights=rule)
    np.testing.assert_array_equal(old.W, new.W)
    assert old.params == new.params and "weights" not in new.params
    assert f"(weights=...) is deprecated: write rule={rule!r}" in str(warning.message)
    assert warning.filename == __file__  # it points at the caller


def test_make_takes_the_old_name_too_and_warns_from_the_callers_line():
    new = make("grid", 12, rule="laplacian")
    old, warning = _old_keyword(make, name="grid", n=12, weights="laplacian")
    np.testing.assert_array_equal(old.W, new.W)
    assert new.params["rule"] == "laplacian" and warning.filename == __file__
    with pytest.raises(TopologyError, match="has no parameter colour"):
        make("grid", 12, colour="red")


def test_signatures_and_the_registry_show_only_the_new_names():
    for name in families():
        assert "weights" not in family_info(name).params, name
    assert "rule" in family_info("grid").params
    assert "rule" in inspect.signature(grid).parameters
    assert "stochastic" in inspect.signature(Topology.from_matrix).parameters
    assert "weights" not in inspect.signature(Topology.from_coo).parameters


def test_both_names_at_once_is_an_error():
    with pytest.raises(TypeError, match="both weights= and rule="):
        grid(12, weights="uniform", rule="uniform")
    with pytest.raises(TypeError, match="both weights= and stochastic="):
        Topology.from_matrix(np.eye(2), weights=None, stochastic=None)


COLUMNS_ONLY = np.array([[0.5, 1.0], [0.5, 0.0]])


@pytest.mark.parametrize("old, new", [("receiver", "row"), ("sender", "column"),
                                      ("doubly", "doubly"), (None, None)])
def test_weights_is_the_old_name_of_stochastic(old, new):
    builders = {
        "from_matrix": lambda **kw: Topology.from_matrix(COLUMNS_ONLY, **kw),
        "from_coo": lambda **kw: Topology.from_coo(2, [0, 0, 1], [0, 1, 0], [0.5, 1.0, 0.5],
                                                   **kw),
        "from_circulant": lambda **kw: Topology.from_circulant(3, {0: 0.5, 1: 0.5}, **kw),
    }
    for build in builders.values():
        try:
            expected = build(stochastic=new)
        except TopologyError as err:  # the old name must refuse the same W, the same way
            with pytest.warns(DeprecationWarning, match=f"write stochastic={new!r}"), \
                    pytest.raises(TopologyError) as info:
                build(weights=old)
            assert str(info.value) == str(err)
            continue
        got, warning = _old_keyword(build, weights=old)
        np.testing.assert_array_equal(got.W, expected.W)
        assert f"write stochastic={new!r}" in str(warning.message)


def test_stochastic_refuses_the_old_words_and_says_the_new_ones():
    with pytest.raises(TopologyError, match="'sender' is the old name of 'column'"):
        Topology.from_matrix(COLUMNS_ONLY, stochastic="sender")
    with pytest.raises(TopologyError, match=r"stochastic= takes 'row', 'column', 'doubly' or None"):
        Topology.from_matrix(COLUMNS_ONLY, stochastic="both")


def test_the_new_names_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grid(12, rule="uniform")
        make("erdos_renyi", 12, p=0.5, rule="max_degree")
        Topology.from_matrix(COLUMNS_ONLY, stochastic="column")
        from_networkx(nx.cycle_graph(5), rule="metropolis").lazy().rho  # noqa: B018
