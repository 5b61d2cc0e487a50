"""A failed step leaves the state of its iteration, ``roll_back()`` undoes one step, and
``recover()`` brings every rank back to the last iteration all of them completed.

Under SimComm (this file): for every algorithm class, a step that fails (a gradient that
raises, or any one of the step's communications) leaves exactly the state of an identical
twin that never failed, and both then go on with bit-identical iterates (the noise of
stochastic gradients included); ``roll_back()`` after a step gives the twin's state one
iteration earlier. Under a real ``mpiexec -n 4`` (tests/mpi/algorithm_recovery_checks.py): a
one-rank failure (DGD on ring(4), the gradient raises once on rank 1 in step 3): the next step
raises IterationMismatchError instead of going on with ranks at different iterations, and
after ``recover()`` on every rank the run matches an uninterrupted one.
"""

from __future__ import annotations

import math
import re
import traceback

import numpy as np
import pytest
import torch

from declearn.algorithms import (
    CECA,
    CHOCOSGD,
    D2,
    DGD,
    EASGD,
    EXTRA,
    AsyncGossip,
    AverageConsensus,
    CHOCOGossip,
    CoCoDSGD,
    CompressedGossip,
    EagerSGD,
    ExactDiffusion,
    GossipPGA,
    GradientTracking,
    LocalSGD,
    OverlapLocalSGD,
    ParallelSGD,
    PushDIGing,
    PushSumConsensus,
    RelaySGD,
    RelaySGDGrad,
    RelaySumConsensus,
)
from declearn.algorithms.base import Algorithm
from declearn.comm import SimComm
from declearn.compress import QSGD, RandK, TopK
from declearn.errors import DivergenceError
from declearn.problems import LeastSquares
from declearn.topology import apply_weights, chain, double_binary_trees, ring

from mpi_helpers import needs_mpi, run_mpi

N = 5


class InjectedFault(RuntimeError):
    """The failure these tests cause on purpose."""


class FlakySimComm(SimComm):
    """SimComm whose ``fail_at``-th communication after :meth:`arm` raises InjectedFault
    (before doing anything), once."""

    OPS = ("allreduce", "broadcast", "allgather", "neighbor_allreduce", "neighbor_allgather",
           "neighbor_alltoall")

    def __init__(self, n):
        super().__init__(n)
        self.fail_at = None
        self.seen = 0
        self.fired = False

    def arm(self, fail_at: int) -> None:
        self.fail_at, self.seen, self.fired = fail_at, 0, False

    def _maybe_fail(self, op):
        if self.fail_at is None:
            return
        self.seen += 1
        if self.seen == self.fail_at:
            self.fail_at, self.fired = None, True
            raise InjectedFault(f"{op} failed on purpose")


for _op in FlakySimComm.OPS:
    def _flaky(self, *args, _op=_op, **kwargs):
        self._maybe_fail(_op)
        return getattr(SimComm, _op)(self, *args, **kwargs)

    setattr(FlakySimComm, _op, _flaky)


def _problem():
    return LeastSquares(N, 3, 8, sigma=0.3, seed=4)  # stochastic: the noise must replay too


def _x0():
    return torch.randn(N, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)


def _directed_push():
    edges = [(j, (j + 1) % N) for j in range(N)] + [(0, 2), (2, 4)]
    return apply_weights(N, edges, "uniform_out", directed=True, name="push")


ALGORITHMS = {
    "dgd-atc": lambda c: DGD(c, _problem(), ring(N), lr=0.05),
    "dgd-awc": lambda c: DGD(c, _problem(), ring(N), lr=0.05, variant="awc"),
    "dgd-cta": lambda c: DGD(c, _problem(), ring(N), lr=0.05, variant="cta"),
    "gt-atc": lambda c: GradientTracking(c, _problem(), ring(N), lr=0.05),
    "gt-diging": lambda c: GradientTracking(c, _problem(), ring(N), lr=0.05, variant="diging"),
    "push-diging": lambda c: PushDIGing(c, _problem(), _directed_push(), lr=0.02),
    "exact-diffusion": lambda c: ExactDiffusion(c, _problem(), ring(N), lr=0.05),
    "d2": lambda c: D2(c, _problem(), ring(N), lr=0.05),
    "extra": lambda c: EXTRA(c, _problem(), ring(N), lr=0.05),
    "parallel-sgd": lambda c: ParallelSGD(c, _problem(), lr=0.05),
    "gossip-pga": lambda c: GossipPGA(c, _problem(), ring(N), lr=0.05, period=2),
    "choco-gossip": lambda c: CHOCOGossip(c, ring(N), _x0(), compressor=RandK(2), gamma=None),
    "choco-sgd": lambda c: CHOCOSGD(c, _problem(), ring(N), lr=0.05, compressor=QSGD(4),
                                    gamma=None),
    "compressed-gossip": lambda c: CompressedGossip(c, ring(N), _x0(), compressor=TopK(1)),
    "local-sgd": lambda c: LocalSGD(c, _problem(), lr=0.05, tau=2),
    "bmuf": lambda c: LocalSGD(c, _problem(), lr=0.05, tau=2, gmf=0.5),
    "easgd": lambda c: EASGD(c, _problem(), lr=0.05, tau=2, alpha=0.1),
    "overlap": lambda c: OverlapLocalSGD(c, _problem(), lr=0.05, tau=2, alpha=0.5),
    "overlap-gmf": lambda c: OverlapLocalSGD(c, _problem(), lr=0.05, tau=2, alpha=0.5,
                                             gmf=0.5),
    "cocod": lambda c: CoCoDSGD(c, _problem(), lr=0.05, tau=2),
    "average-consensus": lambda c: AverageConsensus(c, ring(N), _x0()),
    "push-sum": lambda c: PushSumConsensus(c, _directed_push(), _x0()),
    "ceca": lambda c: CECA(c, _x0()),
    "relaysum-consensus": lambda c: RelaySumConsensus(c, chain(N), _x0()),
    "relaysgd": lambda c: RelaySGD(c, _problem(), chain(N), lr=0.05),
    "relaysgd-own": lambda c: RelaySGD(c, _problem(), chain(N), lr=0.05, fill="own"),
    "relaysgd-pair": lambda c: RelaySGD(c, _problem(), double_binary_trees(N), lr=0.05),
    "relaysgd-grad": lambda c: RelaySGDGrad(c, _problem(), chain(N), lr=0.05),
}


def _tensors(alg) -> dict:
    """What the test compares: every tensor, int and None attribute of the algorithm and of
    its sync rule, and the oracle's call count (the position in the noise stream); not the
    roll-back machinery's own bookkeeping (what it can undo differs by construction)."""
    out = {}
    parts = [("", alg)] + ([("rule.", alg.rule)] if hasattr(alg, "rule") else [])
    for prefix, obj in parts:
        for name, value in vars(obj).items():
            if name in ("_undo", "_unrestorable"):
                continue
            if isinstance(value, torch.Tensor) or value is None or (
                    isinstance(value, int) and not isinstance(value, bool)):
                out[prefix + name] = value
    if alg.oracle is not None:
        out["oracle.calls"] = alg.oracle.calls
    return out


def _assert_same_state(got, want, what):
    a, b = _tensors(got), _tensors(want)
    assert sorted(a) == sorted(b), what
    for name in a:
        x, y = a[name], b[name]
        if isinstance(x, torch.Tensor):
            assert isinstance(y, torch.Tensor) and torch.equal(x, y), f"{what}: {name} differs"
        else:
            assert x == y, f"{what}: {name} is {x!r}, should be {y!r}"


def _assert_same_future(got, want, what, steps=6):
    """Both go on for ``steps`` steps with bit-identical iterates."""
    for _ in range(steps):
        got.step()
        want.step()
        assert got.k == want.k
        assert torch.equal(got.iterate, want.iterate), f"{what}: iterates differ at k={got.k}"


def _fail_step(alg, comm, point):
    """One step of ``alg`` that fails at ``point`` ("grad": right after the real gradient,
    whose noise is drawn; an int j: at the step's j-th communication). Returns False when the
    step has fewer than j communications (it then completed)."""
    if point == "grad":
        real = alg.oracle.grad

        def grad(x):
            real(x)
            raise InjectedFault("the gradient failed on purpose")

        alg.oracle.grad = grad
        try:
            with pytest.raises(InjectedFault):
                alg.step()
        finally:
            del alg.oracle.grad
        return True
    comm.arm(point)
    try:
        alg.step()
    except InjectedFault:
        return True
    finally:
        comm.fail_at = None
    assert not comm.fired
    return False


# --------------------------------------------------------------------------- failed steps
@pytest.mark.parametrize("name", sorted(ALGORITHMS))
@pytest.mark.parametrize("k_fail", [2, 3])
def test_a_failed_step_leaves_the_state_of_its_iteration(name, k_fail):
    make = ALGORITHMS[name]
    points = (["grad"] if make(SimComm(N)).oracle is not None else []) + [1, 2, 3]
    failed = 0
    for point in points:
        comm = FlakySimComm(N)
        alg, twin = make(comm), make(SimComm(N))
        for _ in range(k_fail):
            alg.step()
            twin.step()
        if not _fail_step(alg, comm, point):
            break
        failed += 1
        what = f"{name}, failure at {point} in step {k_fail}"
        assert alg.k == twin.k == k_fail, what
        _assert_same_state(alg, twin, what)
        _assert_same_future(alg, twin, what)
    assert failed >= 1
    if k_fail == 3:  # the 4th step syncs for tau = 2: every method communicates in it
        assert failed >= 1 + (alg.oracle is not None), f"{name}: no communication failed"


def test_the_error_of_a_failed_step_says_the_state_was_kept():
    comm = FlakySimComm(N)
    alg = DGD(comm, _problem(), ring(N), lr=0.05)
    alg.run(3, progress=False)
    comm.arm(1)
    with pytest.raises(InjectedFault) as err:
        alg.step()
    text = "".join(traceback.format_exception(err.value))
    assert "step 3 -> 4" in text and "iteration 3" in text, text


# --------------------------------------------------------------------------- roll back
@pytest.mark.parametrize("name", sorted(ALGORITHMS))
@pytest.mark.parametrize("k", [1, 3, 4])
def test_roll_back_returns_to_the_state_one_step_earlier(name, k):
    make = ALGORITHMS[name]
    alg, twin = make(SimComm(N)), make(SimComm(N))
    for _ in range(k):
        twin.step()
    for _ in range(k + 1):
        alg.step()
    assert alg.roll_back() == k
    what = f"{name} rolled back to {k}"
    _assert_same_state(alg, twin, what)
    _assert_same_future(alg, twin, what)


def test_roll_back_undoes_one_step_only_and_trims_the_history():
    alg = DGD(SimComm(N), _problem(), ring(N), lr=0.05)
    twin = DGD(SimComm(N), _problem(), ring(N), lr=0.05)
    with pytest.raises(RuntimeError, match="no completed step to undo"):
        alg.roll_back()
    alg.run(5, log_every=1, progress=False)
    alg.roll_back()
    assert list(alg.history["iteration"]) == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError, match="one step"):
        alg.roll_back()
    alg.run(3, log_every=1, progress=False)
    twin.run(7, log_every=1, progress=False)
    for col in ("iteration", "consensus_error", "suboptimality", "grad_norm"):
        assert np.array_equal(alg.history[col], twin.history[col]), col


def test_recover_under_simcomm_keeps_the_iteration_of_a_failed_step():
    comm = FlakySimComm(N)
    alg, twin = DGD(comm, _problem(), ring(N), lr=0.05), DGD(SimComm(N), _problem(), ring(N),
                                                           lr=0.05)
    alg.run(3, log_every=1, progress=False)
    twin.run(3, log_every=1, progress=False)
    comm.arm(1)
    with pytest.raises(InjectedFault):
        alg.run(4, log_every=1, progress=False)
    assert alg.recover() == 3
    alg.run(4, log_every=1, progress=False)
    twin.run(4, log_every=1, progress=False)
    assert torch.equal(alg.x, twin.x)
    assert np.array_equal(alg.history["suboptimality"], twin.history["suboptimality"])


def test_a_step_that_modifies_its_state_in_place_cannot_be_undone_and_says_so():
    class InPlace(Algorithm):
        name = "in_place"

        def _step(self):
            self.x.mul_(0.5)
            self.x = self.comm.allreduce(self.x, "mean")

    comm = FlakySimComm(N)
    alg = InPlace(comm, None, x0=_x0())
    alg.step()
    with pytest.raises(RuntimeError, match=r"in place.*x"):
        alg.roll_back()
    comm.arm(1)
    with pytest.raises(InjectedFault) as err:
        alg.step()
    assert "in place" in "".join(traceback.format_exception(err.value))
    with pytest.raises(RuntimeError, match="in place"):
        alg.step()  # never goes on from a half-updated state


def test_eager_sgd_and_async_gossip_refuse_to_roll_back_and_say_why():
    eager = EagerSGD(SimComm(N), _problem(), lr=0.05, staleness=2)
    twin = EagerSGD(SimComm(N), _problem(), lr=0.05, staleness=2)
    for _ in range(3):
        eager.step()
        twin.step()
    _fail_step(eager, None, "grad")  # before the round: the state stays exact
    _assert_same_state(eager, twin, "eager-sgd")
    _assert_same_future(eager, twin, "eager-sgd")
    with pytest.raises(RuntimeError, match=r"cannot roll back.*EagerSGD"):
        eager.roll_back()
    gossip = AsyncGossip(SimComm(N), ring(N), _x0())
    gossip.step()
    with pytest.raises(RuntimeError, match=r"cannot roll back.*AsyncGossip"):
        gossip.roll_back()


# --------------------------------------------------------------------------- under mpiexec
@pytest.mark.mpi
@needs_mpi
def test_recovery_under_mpiexec_4():
    out = run_mpi("algorithm_recovery_checks.py", 4, timeout=150)
    lines = re.findall(r"RECOVERY-OK rank (\d+) of 4: (\d+) checks", out)
    assert sorted(int(r) for r, _ in lines) == [0, 1, 2, 3], out[-4000:]


# --------------------------------------------------------------------------- part 7
def test_average_consensus_warns_when_w_does_not_keep_the_average():
    edges = [(j, (j + 1) % N) for j in range(N)] + [(0, 2), (0, 3)]
    W = apply_weights(N, edges, "uniform", directed=True, name="receivers average")
    assert W.is_row_stochastic and not W.is_column_stochastic
    with pytest.warns(UserWarning, match=r"not the mean.*Metropolis.*PushSumConsensus"):
        AverageConsensus(SimComm(N), W, _x0())
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AverageConsensus(SimComm(N), ring(N), _x0())  # doubly stochastic: silent


def test_average_consensus_warning_names_the_limit_it_converges_to():
    edges = [(j, (j + 1) % N) for j in range(N)] + [(0, 2), (0, 3)]
    W = apply_weights(N, edges, "uniform", directed=True, name="receivers average")
    x0 = _x0()
    with pytest.warns(UserWarning) as record:
        alg = AverageConsensus(SimComm(N), W, x0)
    message = str(record[0].message)
    vals, vecs = np.linalg.eig(W.W.T)  # the left Perron vector, independently
    pi = np.real(vecs[:, np.argmin(np.abs(vals - 1))])
    pi /= pi.sum()
    alg.run(400, progress=False)
    limit = pi @ x0.numpy()
    assert np.allclose(alg.x.numpy(), limit, atol=1e-9)
    assert "pi" in message and "left" in message


def test_a_nan_gradient_at_x0_is_not_blamed_on_the_step_size():
    def grad(x):
        return torch.full_like(x, math.nan)

    alg = DGD(SimComm(N), grad, ring(N), lr=0.1, x0=_x0())
    with pytest.raises(DivergenceError) as err:
        alg.run(5, progress=False)
    text = str(err.value)
    assert err.value.iteration == 0
    assert "x0" in text and "step size" not in text.replace("no step size", ""), text


def test_a_divergence_later_still_suggests_a_smaller_step():
    alg = DGD(SimComm(N), _problem(), ring(N), lr=50.0)
    with pytest.raises(DivergenceError, match=r"smaller step size.*lr=50"):
        alg.run(200, log_every=1, progress=False)


@pytest.mark.parametrize("bad", [-1, 0, 1, 0.5, math.nan, "big", True, None])
def test_run_refuses_a_divergence_factor_that_is_not_above_1(bad):
    alg = DGD(SimComm(N), _problem(), ring(N), lr=0.05)
    with pytest.raises(ValueError, match=r"divergence must be a number > 1"):
        alg.run(3, divergence=bad, progress=False)
    assert alg.k == 0 and len(alg.history) == 0


def test_run_accepts_an_infinite_divergence_factor():
    alg = DGD(SimComm(N), _problem(), ring(N), lr=0.05)
    alg.run(3, divergence=math.inf, progress=False)
    assert alg.k == 3
