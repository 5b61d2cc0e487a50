"""declearn.optim.Decentralized: any torch optimizer plus decentralized communication.

The oracle is written here: n separate models, each with its own torch optimizer, and the
mixing done with a dense numpy W on their flattened parameters. The wrapper runs one optimizer
over n stacked models under SimComm; under ``mpiexec -n 4`` each rank wraps its own optimizer
(tests/mpi/optim_wrap_checks.py)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from declearn.algorithms.local_sgd import ModelAveraging
from declearn.comm import SimComm
from declearn.errors import TopologyError
from declearn.optim import Decentralized, DecentralizedSGD, LocalSGD, StackedModel
from declearn.topology import Topology, exponential, one_peer_exponential, ring

from mpi_helpers import needs_mpi, run_mpi

N, STEPS = 4, 7
F64 = torch.float64


def base_model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.Tanh(),
                               torch.nn.Linear(6, 3)).to(F64)


def batches(seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(N, 8, 5, generator=gen, dtype=F64),
             torch.randint(0, 3, (N, 8), generator=gen)) for _ in range(STEPS)]


def loss_of(out, y):
    return torch.nn.functional.cross_entropy(out.reshape(-1, 3), y.reshape(-1),
                                             reduction="sum") / y.shape[-1]


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def set_flat(model, v):
    off = 0
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(v[off:off + p.numel()].view_as(p))
            off += p.numel()


def oracle(make_opt, topo, mode, *, tau=1, scheduler=None):
    """n models, n optimizers, dense mixing: (n, P) parameters after STEPS steps."""
    models = [base_model() for _ in range(N)]
    opts = [make_opt(m) for m in models]
    scheds = [scheduler(o) for o in opts] if scheduler else []
    for k, (x, y) in enumerate(batches()):
        for i, (m, o) in enumerate(zip(models, opts)):
            o.zero_grad()
            loss_of(m(x[i]), y[i]).backward()
        if mode == "allreduce":
            for ps in zip(*(m.parameters() for m in models)):
                mean = sum(p.grad for p in ps) / N
                for p in ps:
                    p.grad.copy_(mean)
        before = np.stack([flat(m).numpy() for m in models])
        for o in opts:
            o.step()
        for s in scheds:
            s.step()
        after = np.stack([flat(m).numpy() for m in models])
        if mode in ("atc", "awc") and (k + 1) % tau == 0:
            W = np.asarray(topo.at(k // tau).W)
            after = W @ after if mode == "atc" else W @ before + (after - before)
        for m, v in zip(models, after):
            set_flat(m, torch.from_numpy(v))
    return np.stack([flat(m).numpy() for m in models])


def wrapped(make_opt, topo, mode, *, tau=1, scheduler=None):
    stacked = StackedModel(base_model(), N)
    inner = make_opt(stacked)
    opt = Decentralized(inner, SimComm(N), topo, mode=mode, tau=tau, model=stacked)
    sched = scheduler(inner) if scheduler else None
    for x, y in batches():
        opt.zero_grad()
        loss_of(stacked(x), y).backward()
        opt.step()
        if sched:
            sched.step()
    return opt.x.detach().numpy().copy()


OPTIMIZERS = {
    "sgd-momentum": lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9,
                                              weight_decay=1e-3),
    "adam": lambda m: torch.optim.Adam(m.parameters(), lr=0.01),
    "adamw": lambda m: torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1),
    "rmsprop": lambda m: torch.optim.RMSprop(m.parameters(), lr=0.01, momentum=0.5),
}


@pytest.mark.parametrize("mode", ["atc", "awc", "allreduce"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_stacked_wrapper_equals_n_optimizers_and_dense_mixing(name, mode):
    topo = None if mode == "allreduce" else ring(N)
    got = wrapped(OPTIMIZERS[name], topo, mode)
    want = oracle(OPTIMIZERS[name], topo or ring(N), mode)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    if mode != "allreduce":  # gossip is not exact: the nodes really differ
        assert not np.allclose(got[0], got[1])


def test_allreduce_keeps_every_node_on_the_same_model():
    got = wrapped(OPTIMIZERS["adam"], None, "allreduce")
    np.testing.assert_allclose(got, np.broadcast_to(got[0], got.shape), rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["atc", "awc"])
def test_dynamic_topology_and_local_steps(mode):
    topo = one_peer_exponential(N)
    got = wrapped(OPTIMIZERS["adam"], topo, mode, tau=2)
    np.testing.assert_allclose(got, oracle(OPTIMIZERS["adam"], topo, mode, tau=2),
                               rtol=1e-10, atol=1e-12)


def test_param_groups_and_a_scheduler_work_as_usual():
    def make(m):
        first, *rest = list(m.parameters())
        return torch.optim.SGD([{"params": [first], "lr": 0.3},
                                {"params": rest, "lr": 0.05, "momentum": 0.9}], lr=0.1)

    def sched(o):
        return torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5)

    got = wrapped(make, exponential(N), "atc", scheduler=sched)
    np.testing.assert_allclose(got, oracle(make, exponential(N), "atc", scheduler=sched),
                               rtol=1e-10, atol=1e-12)


def test_with_sgd_it_is_decentralized_sgd_and_with_a_rule_local_sgd():
    def run(build):
        stacked = StackedModel(base_model(), N)
        opt, average = build(stacked)
        for x, y in batches():
            opt.zero_grad()
            loss_of(stacked(x), y).backward()
            opt.step()
            average()
        return opt.x.detach().clone()

    comm = SimComm(N)
    sgd = dict(lr=0.1, momentum=0.9)

    def ours(stacked, **kw):
        opt = Decentralized(torch.optim.SGD(stacked.parameters(), **sgd), comm, **kw)
        return opt, lambda: None

    def theirs(cls, stacked, **kw):
        opt = cls(stacked.parameters(), comm, **sgd, **kw)
        return opt, opt.average

    torch.testing.assert_close(run(lambda s: ours(s, topology=ring(N))),
                               run(lambda s: theirs(DecentralizedSGD, s, topology=ring(N))),
                               rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(run(lambda s: ours(s, rule=ModelAveraging(comm, 3))),
                               run(lambda s: theirs(LocalSGD, s, tau=3)),
                               rtol=1e-12, atol=1e-14)


def test_a_resumed_wrapper_equals_the_uninterrupted_run():
    def run(cut=None):
        stacked = StackedModel(base_model(), N)
        opt = Decentralized(torch.optim.Adam(stacked.parameters(), lr=0.01), SimComm(N),
                            one_peer_exponential(N), mode="awc")
        for k, (x, y) in enumerate(batches()):
            if k == cut:
                state = opt.state_dict()
                stacked = StackedModel(base_model(seed=5), N)  # another start: overwritten
                opt = Decentralized(torch.optim.Adam(stacked.parameters(), lr=0.01),
                                    SimComm(N), one_peer_exponential(N), mode="awc")
                opt.load_state_dict(state)
            opt.zero_grad()
            loss_of(stacked(x), y).backward()
            opt.step()
        return opt.x.detach().clone()

    torch.testing.assert_close(run(cut=3), run(), rtol=0, atol=0)


def test_state_dict_is_a_snapshot_and_refuses_another_setup():
    stacked = StackedModel(base_model(), N)
    opt = Decentralized(torch.optim.Adam(stacked.parameters(), lr=0.01), SimComm(N), ring(N))
    x, y = batches()[0]
    loss_of(stacked(x), y).backward()
    opt.step()
    state = opt.state_dict()
    saved = state["x"].clone()
    opt.step()
    assert torch.equal(state["x"], saved)
    other = Decentralized(torch.optim.Adam(stacked.parameters(), lr=0.01), SimComm(N),
                          ring(N), mode="awc")
    with pytest.raises(ValueError, match="mode: saved 'atc', here 'awc'"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="not a Decentralized"):
        other.load_state_dict({"x": 1})


def test_bad_input_says_what_to_do():
    stacked = StackedModel(base_model(), N)
    adam = torch.optim.Adam(stacked.parameters(), lr=0.01)
    comm = SimComm(N)
    with pytest.raises(TypeError, match=r"torch\.optim\.Optimizer"):
        Decentralized(stacked.parameters(), comm, ring(N))
    with pytest.raises(ValueError, match="pass topology="):
        Decentralized(adam, comm)
    with pytest.raises(ValueError, match="takes no topology"):
        Decentralized(adam, comm, ring(N), mode="allreduce")
    with pytest.raises(ValueError, match="mode must be one of"):
        Decentralized(adam, comm, ring(N), mode="gossip")
    with pytest.raises(ValueError, match="tau must be"):
        Decentralized(adam, comm, ring(N), tau=0)
    with pytest.raises(ValueError, match="not both"):
        Decentralized(adam, comm, ring(N), rule=ModelAveraging(comm, 2))
    with pytest.raises(ValueError, match=re.escape("LBFGS would update the n stacked")):
        Decentralized(torch.optim.LBFGS(stacked.parameters()), comm, ring(N))
    first = next(iter(stacked.parameters()))
    with pytest.raises(ValueError, match="do not cover the model: p1"):
        Decentralized(torch.optim.Adam([first], lr=0.1), comm, ring(N), model=stacked)
    W = 0.5 * np.eye(N) + 0.5 * np.eye(N, k=-1)  # node i hears node i - 1 ...
    W[0, N - 1] = W[0, N - 2] = 0.25  # ... and node 0 two nodes: rows sum to 1, columns not
    with pytest.raises(TopologyError, match="doubly"):
        Decentralized(adam, comm, Topology.from_matrix(W), mode="atc")


@needs_mpi
@pytest.mark.mpi
def test_same_parameters_under_mpiexec_and_simcomm():
    out = run_mpi("optim_wrap_checks.py", 4, timeout=180)
    lines = re.findall(r"WRAP-OK rank (\d+) of 4: (\d+) checks", out)
    assert sorted(int(r) for r, _ in lines) == [0, 1, 2, 3], out[-3000:]
    assert all(int(c) >= 8 for _, c in lines), out


# ---------------------------------------------------------------------- quasi-global momentum
def qgm_oracle(lrs, mu, nesterov, wd, topo):
    """QG-DSGDm written per node from its recursion, with numpy (two parameter groups: the
    first layer's weight at lrs[0], the rest at lrs[1])."""
    models = [base_model() for _ in range(N)]
    sizes = [p.numel() for p in models[0].parameters()]
    lr_vec = np.concatenate([np.full(s, lrs[0] if i == 0 else lrs[1])
                             for i, s in enumerate(sizes)])
    X = np.stack([flat(m).numpy() for m in models])
    M = np.zeros_like(X)
    for k, (xb, yb) in enumerate(batches()):
        G = []
        for i, m in enumerate(models):
            set_flat(m, torch.from_numpy(X[i]))
            m.zero_grad()
            loss_of(m(xb[i]), yb[i]).backward()
            G.append(torch.cat([p.grad.reshape(-1) for p in m.parameters()]).numpy())
        D = np.stack(G) + wd * X
        Mk = mu * M + D
        step = D + mu * Mk if nesterov else Mk
        X_new = np.asarray(topo.at(k).W) @ (X - lr_vec * step)
        M = mu * M + (1 - mu) * (X - X_new) / lr_vec
        X = X_new
    return X


@pytest.mark.parametrize("nesterov, wd", [(False, 0.0), (True, 1e-2)])
def test_quasi_global_momentum_is_its_recursion(nesterov, wd):
    topo = one_peer_exponential(N)
    stacked = StackedModel(base_model(), N)
    first, *rest = list(stacked.parameters())
    sgd = torch.optim.SGD([{"params": [first], "lr": 0.2}, {"params": rest}], lr=0.05,
                          momentum=0.9, nesterov=nesterov, weight_decay=wd)
    opt = Decentralized(sgd, SimComm(N), topo, quasi_global=True)
    for x, y in batches():
        opt.zero_grad()
        loss_of(stacked(x), y).backward()
        opt.step()
    want = qgm_oracle((0.2, 0.05), 0.9, nesterov, wd, topo)
    np.testing.assert_allclose(opt.x.detach().numpy(), want, rtol=1e-9, atol=1e-11)
    plain = wrapped(lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9), topo,
                    "atc")
    assert not np.allclose(plain, want, atol=1e-6)  # it is not local momentum


def test_quasi_global_momentum_resumes_and_refuses_what_it_cannot_do():
    def run(cut=None):
        stacked = StackedModel(base_model(), N)
        make = lambda: Decentralized(
            torch.optim.SGD(stacked.parameters(), lr=0.05, momentum=0.9), SimComm(N), ring(N),
            quasi_global=True)
        opt = make()
        for k, (x, y) in enumerate(batches()):
            if k == cut:
                state = opt.state_dict()
                opt = make()
                opt.load_state_dict(state)
            opt.zero_grad()
            loss_of(stacked(x), y).backward()
            opt.step()
        return opt.x.detach().clone()

    torch.testing.assert_close(run(cut=4), run(), rtol=0, atol=0)
    stacked = StackedModel(base_model(), N)
    comm = SimComm(N)
    with pytest.raises(ValueError, match=r"torch\.optim\.SGD"):
        Decentralized(torch.optim.Adam(stacked.parameters()), comm, ring(N), quasi_global=True)
    with pytest.raises(ValueError, match="momentum > 0"):
        Decentralized(torch.optim.SGD(stacked.parameters(), lr=0.1), comm, ring(N),
                      quasi_global=True)
    with pytest.raises(ValueError, match="mode='atc'"):
        Decentralized(torch.optim.SGD(stacked.parameters(), lr=0.1, momentum=0.9), comm,
                      ring(N), mode="awc", quasi_global=True)


# ---------------------------------------------------------------------- gradient tracking
def test_tracking_with_sgd_is_the_gradient_tracking_algorithm():
    from declearn.algorithms import GradientTracking
    from declearn.problems import LeastSquares

    problem = LeastSquares(N, d=5, m=8, heterogeneity=1.5, seed=1)
    A, b = problem.A.expand(N, -1, -1), problem.b.expand(N, -1)
    lr, topo = 0.5 / problem.smoothness, one_peer_exponential(N)
    alg = GradientTracking(SimComm(N), problem, topo, lr=lr, variant="atc",
                           x0=torch.zeros(N, 5, dtype=F64))

    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(5, dtype=F64))

        def forward(self, a):
            return a @ self.w

    stacked = StackedModel(Linear(), N)
    opt = Decentralized(torch.optim.SGD(stacked.parameters(), lr=lr), SimComm(N), topo,
                        mode="tracking")
    for _ in range(12):
        opt.zero_grad()
        ((stacked(A) - b) ** 2).sum().div(2 * problem.m).backward()
        opt.step()
        alg.run(1)
        torch.testing.assert_close(opt.x, alg.x, rtol=1e-12, atol=1e-13)


def tracking_oracle(make_opt, topo):
    """Gradient tracking per node around each node's own optimizer, dense numpy mixing."""
    models = [base_model() for _ in range(N)]
    opts = [make_opt(m) for m in models]
    X = np.stack([flat(m).numpy() for m in models])
    Y = G_prev = None
    for k, (xb, yb) in enumerate(batches()):
        G = []
        for i, m in enumerate(models):
            set_flat(m, torch.from_numpy(X[i]))
            opts[i].zero_grad()
            loss_of(m(xb[i]), yb[i]).backward()
            G.append(torch.cat([p.grad.reshape(-1) for p in m.parameters()]).numpy())
        G = np.stack(G)
        Y = G.copy() if Y is None else np.asarray(topo.at(k - 1).W) @ (Y + G - G_prev)
        G_prev = G
        for i, (m, o) in enumerate(zip(models, opts)):
            off = 0
            for p in m.parameters():
                p.grad.copy_(torch.from_numpy(Y[i, off:off + p.numel()]).view_as(p))
                off += p.numel()
            o.step()
        X = np.asarray(topo.at(k).W) @ np.stack([flat(m).numpy() for m in models])
    return X


def test_tracking_around_adam_is_tracking_per_node():
    topo = one_peer_exponential(N)
    got = wrapped(OPTIMIZERS["adam"], topo, "tracking")
    np.testing.assert_allclose(got, tracking_oracle(OPTIMIZERS["adam"], topo), rtol=1e-10,
                               atol=1e-12)
    with pytest.raises(ValueError, match="tau must be 1"):
        stacked = StackedModel(base_model(), N)
        Decentralized(torch.optim.Adam(stacked.parameters()), SimComm(N), topo,
                      mode="tracking", tau=2)


# ---------------------------------------------------------------------- overlap with backward
@pytest.mark.parametrize("bucket_bytes", [1, 200, 1 << 20])
def test_overlapped_allreduce_gives_the_same_numbers(bucket_bytes):
    def make(m):
        return torch.optim.Adam(m.parameters(), lr=0.01)

    stacked = StackedModel(base_model(), N)
    opt = Decentralized(make(stacked), SimComm(N), mode="allreduce", overlap=True,
                        bucket_bytes=bucket_bytes)
    buckets = opt.buckets
    assert buckets.bounds[0][0] == 0 and buckets.bounds[-1][1] == opt.x.shape[-1]
    assert all(a[1] == b[0] for a, b in zip(buckets.bounds, buckets.bounds[1:]))
    if bucket_bytes == 1:
        assert len(buckets.bounds) == 4  # one parameter per bucket
    for x, y in batches():
        opt.zero_grad()
        loss_of(stacked(x), y).backward()
        assert all(p is not None for p in buckets.pending)  # started during backward
        opt.step()
    np.testing.assert_allclose(opt.x.detach().numpy(), oracle(make, ring(N), "allreduce"),
                               rtol=1e-10, atol=1e-12)


def test_overlap_copes_with_unused_parameters_and_replaced_gradients():
    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.body = torch.nn.Linear(5, 3).to(F64)
            self.unused = torch.nn.Linear(5, 3).to(F64)

        def forward(self, a):
            return self.body(a)

    stacked = StackedModel(TwoHeads(), N)
    opt = Decentralized(torch.optim.SGD(stacked.parameters(), lr=0.1), SimComm(N),
                        mode="allreduce", overlap=True, bucket_bytes=1)
    x, y = batches()[0]
    for p in stacked.parameters():
        p.grad = None  # backward then makes new tensors, outside the flat buffer
    loss_of(stacked(x), y).backward()
    assert opt.buckets.pending == [None] * 4
    before = opt.x.clone()
    opt.step()
    moved = (opt.x - before).abs().amax(0)
    assert bool((moved[:18] > 0).all()) and bool((moved[18:] == 0).all())  # body moved only
    np.testing.assert_allclose(opt.x.numpy(), np.broadcast_to(opt.x[0].numpy(), opt.x.shape))
    with pytest.raises(ValueError, match="mode 'atc' does not overlap"):
        Decentralized(torch.optim.SGD(stacked.parameters(), lr=0.1), SimComm(N), ring(N),
                      overlap=True)


@pytest.mark.parametrize("topo", [ring(N), one_peer_exponential(N)])
def test_awc_averaging_in_flight_gives_the_same_numbers_and_resumes(topo):
    def run(overlap, cut=None):
        stacked = StackedModel(base_model(), N)

        def make():
            return Decentralized(torch.optim.Adam(stacked.parameters(), lr=0.01), SimComm(N),
                                 topo, mode="awc", overlap=overlap)

        opt = make()
        for k, (x, y) in enumerate(batches()):
            if k == cut:
                state = opt.state_dict()
                opt.finish()
                opt = make()
                opt.load_state_dict(state)
            opt.zero_grad()
            loss_of(stacked(x), y).backward()
            opt.step()
        opt.finish()
        assert opt.background is None or not opt.background.overlapping  # SimComm
        return opt.x.detach().numpy().copy()

    want = oracle(OPTIMIZERS["adam"], topo, "awc")
    np.testing.assert_allclose(run(True), want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(run(True, cut=3), run(False), rtol=0, atol=0)
    stacked = StackedModel(base_model(), N)
    with pytest.raises(ValueError, match="tau must be 1"):
        Decentralized(torch.optim.Adam(stacked.parameters()), SimComm(N), topo, mode="awc",
                      overlap=True, tau=2)
