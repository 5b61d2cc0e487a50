"""declearn.optim: the Local SGD family as torch optimizers over one flat buffer.

Under SimComm(n) the optimizers train n stacked models; their iterates must equal the
problem-level algorithms' (the same synchronisation rules) on the same least-squares data, and
their local step must equal torch.optim.SGD's. Under a real ``mpiexec -n 4`` a tiny network is
trained on four ranks: parameters identical across ranks right after each sync, and equal to
the stacked SimComm run (tests/mpi/algorithms_relay_checks.py --section optim).
"""

from __future__ import annotations

import pytest
import torch

import declearn.algorithms as A
import declearn.optim as O
from declearn.comm import SimComm
from declearn.problems.base import Problem

from mpi_helpers import needs_mpi, run_mpi


class LeastSquares(Problem):
    """``f_i(w) = 1/(2m) ||X_i w - y_i||^2`` with node-specific data."""

    name = "least_squares"

    def __init__(self, n, d=4, m=7, seed=0):
        super().__init__(n, (d,), seed=seed)
        gen = torch.Generator().manual_seed(seed)
        self.X = torch.randn(n, m, d, generator=gen, dtype=torch.float64)
        self.y = torch.randn(n, m, generator=gen, dtype=torch.float64) + torch.arange(n)[:, None]

    def initial_point(self):
        return torch.linspace(-1, 1, self.dim, dtype=torch.float64)

    def _loss(self, w, nodes):
        r = torch.einsum("nmd,nd->nm", self.X[nodes], w) - self.y[nodes]
        return 0.5 * r.pow(2).mean(-1)

    def _grad(self, w, nodes):
        X = self.X[nodes]
        r = torch.einsum("nmd,nd->nm", X, w) - self.y[nodes]
        return torch.einsum("nmd,nm->nd", X, r) / X.shape[1]


ALGOS = {
    "local_sgd": (lambda c, p, **k: A.LocalSGD(c, p, lr=0.1, tau=3, **k),
                  lambda ps, c: O.LocalSGD(ps, c, lr=0.1, tau=3)),
    "bmuf": (lambda c, p, **k: A.LocalSGD(c, p, lr=0.1, tau=3, gmf=0.5, **k),
             lambda ps, c: O.LocalSGD(ps, c, lr=0.1, tau=3, gmf=0.5)),
    "easgd": (lambda c, p, **k: A.EASGD(c, p, lr=0.1, tau=3, alpha=0.2, **k),
              lambda ps, c: O.EASGD(ps, c, lr=0.1, tau=3, alpha=0.2)),
    "overlap": (lambda c, p, **k: A.OverlapLocalSGD(c, p, lr=0.1, tau=3, alpha=0.5, gmf=0.3, **k),
                lambda ps, c: O.OverlapLocalSGD(ps, c, lr=0.1, tau=3, alpha=0.5, gmf=0.3)),
    "cocod": (lambda c, p, **k: A.CoCoDSGD(c, p, lr=0.1, tau=3, **k),
              lambda ps, c: O.CoCoDSGD(ps, c, lr=0.1, tau=3)),
}


def _stacked_params(problem, split=(1, 3)):
    """The model w (n, d) as two stacked parameters (to exercise the flat buffer)."""
    w0 = problem.initial_point().expand(problem.n, -1).clone()
    first, second = w0[:, :split[0]].clone(), w0[:, split[0]:].clone()
    return torch.nn.Parameter(first), torch.nn.Parameter(second)


@pytest.mark.parametrize("name", sorted(ALGOS))
def test_optimizer_equals_the_problem_level_algorithm(name):
    n, steps = 4, 3 * 5 + 1
    problem = LeastSquares(n, seed=3)
    build_alg, build_opt = ALGOS[name]
    alg = build_alg(SimComm(n), problem)
    for _ in range(steps):
        alg.step()
    comm = SimComm(n)
    p1, p2 = _stacked_params(problem)
    opt = build_opt([p1, p2], comm)
    for _ in range(steps):
        opt.zero_grad()
        w = torch.cat([p1, p2], dim=1)
        loss = problem._loss(w, problem.all_nodes).sum()  # node i's loss only touches w_i
        loss.backward()
        opt.step()
        opt.average()
    torch.testing.assert_close(torch.cat([p1, p2], 1).detach(), alg.x, rtol=0, atol=1e-12)
    assert comm.traffic.by_op.get("allreduce", {"calls": 5})["calls"] == 5  # one per sync


@pytest.mark.parametrize("kw", [
    dict(momentum=0.9), dict(momentum=0.9, nesterov=True, weight_decay=1e-2),
    dict(momentum=0.5, dampening=0.3), dict(weight_decay=0.1),
], ids=["momentum", "nesterov_wd", "dampening", "wd"])
def test_local_step_is_torch_sgd(kw):
    n = 3
    problem = LeastSquares(n, seed=5)
    ours = torch.nn.Parameter(problem.initial_point().expand(n, -1).clone())
    ref = torch.nn.Parameter(ours.detach().clone())
    opt = O.LocalSGD([ours], SimComm(n), lr=0.05, tau=10 ** 6, **kw)
    sgd = torch.optim.SGD([ref], lr=0.05, **kw)
    for _ in range(12):
        for p, o in ((ours, opt), (ref, sgd)):
            o.zero_grad()
            problem._loss(p, problem.all_nodes).sum().backward()
            o.step()
        opt.average()
    torch.testing.assert_close(ours.detach(), ref.detach(), rtol=0, atol=1e-14)


def test_parameters_are_views_of_one_buffer_and_start_from_node_0():
    n = 3
    a = torch.nn.Parameter(torch.randn(n, 2, 3, dtype=torch.float64))
    b = torch.nn.Parameter(torch.randn(n, 4, dtype=torch.float64))
    first = (a[0].detach().clone(), b[0].detach().clone())
    opt = O.LocalSGD([a, b], SimComm(n), lr=0.1, tau=2)
    assert a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    torch.testing.assert_close(a.detach(), first[0].expand(n, 2, 3), rtol=0, atol=0)
    torch.testing.assert_close(b.detach(), first[1].expand(n, 4), rtol=0, atol=0)
    opt.flat.flat.add_(1.0)
    assert float(a.detach().min()) == float(first[0].min()) + 1.0  # the buffer is the model


def test_grads_replaced_by_set_to_none_are_picked_up():
    n = 2
    p = torch.nn.Parameter(torch.zeros(n, 3, dtype=torch.float64))
    opt = O.LocalSGD([p], SimComm(n), lr=1.0, tau=5)
    p.grad = None  # what model.zero_grad() does by default
    (p * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)).sum().backward()
    opt.step()
    torch.testing.assert_close(p.detach(), -torch.tensor([[1.0, 2.0, 3.0]] * 2,
                                                         dtype=torch.float64))
    opt.zero_grad()
    opt.step()  # zero gradient: nothing moves
    assert float(p.detach()[0, 2]) == -3.0


def test_optimizer_bad_input():
    comm = SimComm(3)
    with pytest.raises(ValueError, match="node dim first"):
        O.LocalSGD([torch.nn.Parameter(torch.zeros(4, 2))], comm, lr=0.1, tau=2)
    p = torch.nn.Parameter(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="tau"):
        O.LocalSGD([p], comm, lr=0.1, tau=0)
    with pytest.raises(ValueError, match="alpha"):
        O.OverlapLocalSGD([p], comm, lr=0.1, tau=2, alpha=1.0)
    with pytest.raises(ValueError, match="step size"):
        O.CoCoDSGD([p], comm, lr=-0.1, tau=2)
    with pytest.raises(ValueError, match="one flat buffer"):
        O.LocalSGD([{"params": [p]}, {"params": [torch.nn.Parameter(torch.zeros(3))]}], comm,
                   lr=0.1, tau=2)
    with pytest.raises(TypeError, match="Communicator"):
        O.LocalSGD([p], "comm", lr=0.1, tau=2)
    with pytest.raises(ValueError, match="no parameters"):
        O.LocalSGD([], comm, lr=0.1, tau=2)


@pytest.mark.mpi
@needs_mpi
def test_optimizers_under_mpiexec_4():
    out = run_mpi("algorithms_relay_checks.py", 4, "--section", "optim", timeout=120)
    assert out.count("OPTIM-OK") == 4, out[-3000:]
