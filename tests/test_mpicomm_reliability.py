"""MPIComm under faults on purpose, under a real ``mpiexec -n 4`` (tests/mpi/reliability_checks.py):
a resync that a busy rank missed, random fault sequences and an interrupted resync, each followed
by one resync that every rank calls; an extra collective on one rank caught by its call site;
``tag=``; ranks at different iterations. Plus the pure-Python call-site words."""

from __future__ import annotations

import re

import numpy as np
import pytest

from declearn.comm.mpi.callsite import NO_SITE, call_site, describe_site, tag_site

from mpi_helpers import needs_mpi, run_mpi


@pytest.mark.mpi
@needs_mpi
def test_reliability_four_ranks():
    out = run_mpi("reliability_checks.py", 4, timeout=240)
    lines = re.findall(r"RELIABILITY-OK rank (\d+) of 4: (\d+) checks", out)
    assert sorted(int(r) for r, _ in lines) == [0, 1, 2, 3], out[-5000:]
    assert all(int(c) >= 30 for _, c in lines), "suspiciously few checks ran"


def _site_here():
    return call_site(1)


def test_call_site_names_the_calling_line():
    words = _site_here()
    line = _site_here.__code__.co_firstlineno + 1
    assert int(words[1]) == line
    assert describe_site(words) == f"test_mpicomm_reliability.py:{line} (`return call_site(1)`)"


def test_call_sites_differ_by_line_and_tags_by_name():
    a, b = _site_here(), call_site(1)
    assert not np.array_equal(a, b)
    assert np.array_equal(tag_site("w"), tag_site("w"))
    assert not np.array_equal(tag_site("w"), tag_site("v"))
    assert describe_site(tag_site("grads")) == "tag 'grads'"
    assert describe_site(NO_SITE) == "an unknown line"


def test_notebook_cells_are_named_by_content_not_by_process():
    from declearn.comm.mpi.callsite import _short_name

    assert _short_name("/tmp/ipykernel_1234/2890412.py") == "cell 2890412"
    assert _short_name("/tmp/ipykernel_99/2890412.py") == "cell 2890412"
    assert _short_name("<ipython-input-7-4f2a9c>") == "cell 4f2a9c"
    assert _short_name("/home/u/run.py") == "run.py"


def test_timeout_with_no_missing_rank_says_what_is_known():
    """A deadline passed in the data phase (every header had arrived): the error must not say
    "ranks unknown ranks did not arrive" but what is known."""
    from declearn.errors import CollectiveTimeoutError

    text = str(CollectiveTimeoutError("allreduce", (), 5.0, 2))
    assert "unknown" not in text
    assert "every rank it waited for had arrived, but the operation did not finish" in text
    assert "rank 3 did not arrive" in str(CollectiveTimeoutError("allreduce", (3,), 5.0, 2))
