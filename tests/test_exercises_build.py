"""The build-it-yourself exercises (01.4 and the algorithm chapters' own): each chapter's
``tests/build_steps_chNN.py`` lists right student steps and plausible wrong ones. Under SimComm
every right step passes and every wrong one is refused with a verdict that names the first
differing iteration but no expected value; under a real ``mpiexec -n 4`` the same holds on
every rank, with the ranks agreeing (tests/mpi/exercise_build_checks.py)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import torch

from declearn.comm import SimComm
from declearn.exercises import Verdict
from declearn.exercises.build import compare_iterates

from mpi_helpers import needs_mpi, run_mpi  # tests/ is on sys.path

HERE = Path(__file__).resolve().parent
MODULES = sorted(p.stem for p in HERE.glob("build_steps_ch*.py"))
NUMBER = re.compile(r"[-+]?\d*\.\d+(e[-+]?\d+)?")


def _cases():
    for name in MODULES:
        cases = importlib.import_module(name)
        for step in cases.RIGHT:
            yield pytest.param(name, step, True, id=f"{name}-right-{step.__name__}")
        for label, step in cases.WRONG.items():
            yield pytest.param(name, step, False, id=f"{name}-wrong-{label}")


def test_every_build_it_exercise_has_cases():
    assert {f"build_steps_ch{c}" for c in ("01", "03", "05", "06", "07")} <= set(MODULES)


@pytest.mark.parametrize("n", [4, 7])
@pytest.mark.parametrize("name, step, ok", list(_cases()))
def test_build_check_under_simcomm(name, step, ok, n):
    check = importlib.import_module(name).CHECK
    verdict = check(step, SimComm(n))
    assert isinstance(verdict, Verdict)
    assert bool(verdict) is ok, verdict
    if not ok:  # never an expected value: only iteration numbers and orders of magnitude
        assert not NUMBER.search(verdict.message.split(":", 1)[-1].replace("1e", "")), verdict


@pytest.mark.parametrize("name", MODULES)
def test_build_check_not_yet_and_not_a_function(name):
    check = importlib.import_module(name).CHECK
    assert not check(None, SimComm(4))
    assert not check(42, SimComm(4))


def test_compare_iterates_names_the_first_differing_iteration():
    class Counter:  # a reference that adds 1 per iteration
        def __init__(self):
            self.iterate = torch.zeros(4, 2, dtype=torch.float64)

        def step(self):
            self.iterate = self.iterate + 1

    def student():
        x = torch.zeros(4, 2, dtype=torch.float64)
        for k in range(1, 100):
            x = x + 1
            if k == 3:
                x[2, 1] += 1e-3
            yield x.clone()

    v = compare_iterates("t", SimComm(4), student(), Counter(), steps=6, what="the counter")
    assert not v and "at iteration 3 (iterations 1 to 2 agreed)" in v.message
    assert "on 1 of 4 nodes" in v.message and "order 1e-04" in v.message

    def rounding():
        x = torch.zeros(4, 2, dtype=torch.float64)
        while True:
            x = x + 1
            yield x * (1 + 1e-14)

    assert compare_iterates("t", SimComm(4), rounding(), Counter(), steps=6, what="c")


@pytest.mark.mpi
@needs_mpi
def test_build_checks_under_mpiexec():
    out = run_mpi("exercise_build_checks.py", 4, *MODULES, timeout=240)
    assert out.count("BUILD-OK") == 4, out
