"""declearn.optim.train: the loop and its records against n separate models trained by hand
(their own torch SGD, mixing with a dense numpy W), on the shipped digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from declearn.comm import SimComm
from declearn.optim import Decentralized, DecentralizedSGD, StackedModel, train
from declearn.problems import NodeBatches, load_digits, partition
from declearn.topology import ring

N, B, STEPS, EVERY, LR = 4, 8, 9, 3, 0.2


def mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))


@pytest.fixture(scope="module")
def setting():
    data = load_digits(test_size=200)
    parts = partition(data.y_train.numpy(), N, method="dirichlet", alpha=0.5, seed=0)
    return data, parts


def by_hand(data, parts):
    """(step, per-node loss, per-node accuracy, average-model accuracy, Xi) at each record."""
    models = [mlp() for _ in range(N)]
    opts = [torch.optim.SGD(m.parameters(), lr=LR) for m in models]
    W = np.asarray(ring(N).W)
    batches = NodeBatches(parts, B, seed=3)
    out = []
    for step in range(1, STEPS + 1):
        idx = batches()
        losses = []
        for i, (m, o) in enumerate(zip(models, opts)):
            o.zero_grad()
            loss = torch.nn.functional.cross_entropy(m(data.X_train[idx[i]]),
                                                     data.y_train[idx[i]])
            loss.backward()
            o.step()
            losses.append(loss.item())
        X = np.stack([torch.cat([p.detach().reshape(-1) for p in m.parameters()]).numpy()
                      for m in models]).astype(np.float64)
        X = W @ X
        for m, row in zip(models, X):
            off = 0
            with torch.no_grad():
                for p in m.parameters():
                    p.copy_(torch.from_numpy(row[off:off + p.numel()]).view_as(p))
                    off += p.numel()
        if step % EVERY == 0:
            with torch.no_grad():
                post = [torch.nn.functional.cross_entropy(m(data.X_train[idx[i]]),
                                                          data.y_train[idx[i]]).item()
                        for i, m in enumerate(models)]
                acc = [(m(data.X_test).argmax(-1) == data.y_test).float().mean().item()
                       for m in models]
                avg = mlp()
                off, mean = 0, X.mean(0)
                for p in avg.parameters():
                    p.copy_(torch.from_numpy(mean[off:off + p.numel()]).view_as(p))
                    off += p.numel()
                avg_acc = (avg(data.X_test).argmax(-1) == data.y_test).float().mean().item()
            xi = float(((X - X.mean(0)) ** 2).sum(1).mean())
            out.append((step, post, acc, avg_acc, xi))
    return out


@pytest.mark.parametrize("which", ["wrapper", "DecentralizedSGD"])
def test_records_equal_a_hand_written_run(setting, which):
    data, parts = setting
    stacked = StackedModel(mlp(), N)
    comm = SimComm(N, dtype=torch.float32)
    if which == "wrapper":
        opt = Decentralized(torch.optim.SGD(stacked.parameters(), lr=LR), comm, ring(N))
    else:
        opt = DecentralizedSGD(stacked.parameters(), comm, ring(N), lr=LR)
    seen = []
    log = train(stacked, opt, data, NodeBatches(parts, B, seed=3), STEPS, every=EVERY,
                on_record=seen.append)
    want = by_hand(data, parts)
    assert [r.step for r in log.records] == [w[0] for w in want] == [3, 6, 9]
    assert seen == log.records
    for r, (_, loss, acc, avg_acc, xi) in zip(log.records, want):
        np.testing.assert_allclose(r.loss, loss, rtol=1e-4)
        np.testing.assert_allclose(r.accuracy, acc, atol=1e-6)
        assert r.mean_accuracy == pytest.approx(avg_acc, abs=1e-6)
        assert r.consensus == pytest.approx(xi, rel=1e-3)
    assert log.column("loss").shape == (3, N) and log.column("consensus").shape == (3,)
    assert comm.traffic.by_op.keys() == {"neighbor_allreduce"}  # records are not traffic


def test_last_step_is_recorded_and_plot_draws(setting):
    data, parts = setting
    stacked = StackedModel(mlp(), N)
    opt = Decentralized(torch.optim.Adam(stacked.parameters(), lr=0.01),
                        SimComm(N, dtype=torch.float32), ring(N))
    log = train(stacked, opt, data, NodeBatches(parts, B, seed=3), 7, every=5)
    assert [r.step for r in log.records] == [5, 7]
    assert set(log.records[0].as_dict()) == {"step", "loss", "accuracy", "mean_accuracy",
                                             "consensus"}
    import matplotlib

    matplotlib.use("Agg")
    axes = log.plot(title="t")
    assert len(axes) == 3 and axes[2].get_yscale() == "log"
    assert len(train(stacked, opt, data, NodeBatches(parts, B, seed=3), 2)) == 0


def test_bad_input(setting):
    data, parts = setting
    stacked = StackedModel(mlp(), N)
    opt = Decentralized(torch.optim.SGD(stacked.parameters(), lr=LR), SimComm(N), ring(N))
    with pytest.raises(ValueError, match="steps must be"):
        train(stacked, opt, data, NodeBatches(parts, B), 0)
    with pytest.raises(ValueError, match="every must be"):
        train(stacked, opt, data, NodeBatches(parts, B), 3, every=-1)
    with pytest.raises(TypeError, match="Decentralized"):
        train(stacked, torch.optim.SGD(stacked.parameters(), lr=LR), data, NodeBatches(parts, B),
              3)
