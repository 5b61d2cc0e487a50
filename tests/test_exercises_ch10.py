"""declearn.exercises.ch10: the right answers pass, plausible wrong answers (each computed here
independently) are refused with a hint (and never the answer), ``None`` says "not yet"; and the
values the checks compute on their own agree with what declearn's optimizers, communicators and
stacked models do."""

from __future__ import annotations

import inspect
from itertools import pairwise

import numpy as np
import pytest
import torch

from declearn.comm import SimComm
from declearn.exercises import Verdict, ch10
from declearn.optim import DecentralizedSGD, StackedModel
from declearn.topology import ring

JUNK = ["three", [1, 2, 3], {"a": 1}, float("nan"), True, -1, (1, "two")]


def _not_yet(verdict, name="answer") -> bool:
    return isinstance(verdict, Verdict) and not verdict and f"replace `{name} = None`" in \
        verdict.message


def _mlp(layers=(64, 32, 10), seed=0):
    torch.manual_seed(seed)
    mods = []
    for a, b in pairwise(layers):
        mods += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    return torch.nn.Sequential(*mods[:-1])


# The questions' data, written out: a 64-32-10 MLP with biases, float32, 16 nodes; 32 nodes of 16.
P = 64 * 32 + 32 + 32 * 10 + 10                    # 2410 parameters
MODEL = 4 * P                                      # 9640 bytes
DSGD, ALLREDUCE = 2 * MODEL, 2 * 15 * MODEL // 16  # (19280, 18075), exact integers
N_LOSS, B_LOSS = 32, 16


def test_public_names_are_checks_and_question_data():
    assert set(ch10.__all__) == {"BYTES_SETTING", "LOSS_SETTING", "METHODS", "check_bytes",
                                 "check_loss_scale", "check_prediction"}
    own = [name for name, obj in vars(ch10).items() if not name.startswith("_")
           and inspect.isfunction(obj) and obj.__module__ == ch10.__name__]
    assert sorted(own) == ["check_bytes", "check_loss_scale", "check_prediction"]
    assert ch10.BYTES_SETTING == {"layers": (64, 32, 10), "n": 16, "itemsize": 4}
    assert ch10.LOSS_SETTING == {"n": N_LOSS, "batch": B_LOSS}


# ---------------------------------------------------------------------- 10.1
def test_bytes_right_answers_pass():
    assert (DSGD, ALLREDUCE) == (19280, 18075) and 2 * 15 * MODEL % 16 == 0
    assert ch10.check_bytes((19280, 18075))
    assert ch10.check_bytes([19280.0, 18075.0])
    assert ch10.check_bytes(np.array([DSGD, ALLREDUCE]))
    assert ch10.check_bytes((2 * MODEL, 2 * 15 / 16 * MODEL))
    assert "correct" in str(ch10.check_bytes((DSGD, ALLREDUCE)))


@pytest.mark.parametrize("answer, hint", [
    ((ALLREDUCE, DSGD), "swapped"),
    ((DSGD / 4, ALLREDUCE / 4), "4 bytes"),                 # numbers, not bytes
    ((DSGD * 2, ALLREDUCE * 2), "float32"),                 # float64
    ((2 * 2368 * 4, 2 * 15 / 16 * 2368 * 4), "bias"),       # weights only
    ((MODEL, ALLREDUCE), "two neighbours"),                 # one neighbour
    ((3 * MODEL, ALLREDUCE), "to itself"),                  # itself included
    ((DSGD, MODEL), "does not send the model once"),        # allreduce = one model
    ((DSGD, 2 * MODEL), "a little less than two"),          # allreduce = two models (large n)
    ((DSGD, ALLREDUCE / 2), "two phases"),                  # only the reduce-scatter
    ((100, ALLREDUCE), "how many neighbours"),
    ((DSGD, 1000), "2 (n - 1) chunks"),
    ((1928, 1807.5), "same factor"),
    ((19285, 18080), "exact counts"),                       # the old 0.1 % band accepted this
    ((DSGD + 1, ALLREDUCE), "exact counts"),                # off by one byte
    ((DSGD, ALLREDUCE - 1), "exact counts"),
])
def test_bytes_wrong_answers_get_hints_not_the_answer(answer, hint):
    verdict = ch10.check_bytes(answer)
    assert not verdict and hint in verdict.message, verdict.message
    assert "19280" not in verdict.message and "18075" not in verdict.message


def test_bytes_are_what_comm_traffic_counts():
    """The check's own count equals comm.traffic for DSGD on stacked 64-32-10 MLPs and for one
    allreduce of the same flat vector."""
    s = ch10.BYTES_SETTING
    n, model = s["n"], _mlp(s["layers"])
    assert sum(p.numel() for p in model.parameters()) == ch10._mlp_parameters(s["layers"]) == P
    stacked = StackedModel(model, n)
    comm = SimComm(n, dtype=torch.float32)
    opt = DecentralizedSGD(stacked.parameters(), comm, ring(n), lr=0.1)
    steps = 3
    for _ in range(steps):
        opt.zero_grad()
        stacked(torch.randn(n, 4, 64)).square().sum().backward()
        opt.step()
        opt.average()
    dsgd, allreduce = ch10._step_bytes(**s)
    assert (dsgd, allreduce) == (DSGD, ALLREDUCE)
    np.testing.assert_allclose(comm.traffic.bytes, steps * dsgd)
    probe = SimComm(n, dtype=torch.float32)
    probe.allreduce(torch.zeros(n, opt.flat.flat.shape[1]))
    np.testing.assert_allclose(probe.traffic.bytes, allreduce)


# ---------------------------------------------------------------------- 10.2
@pytest.mark.parametrize("answer", ["DSGD, ring", "dsgd ring", "DSGD", "DP-SGD", "gossip"])
def test_prediction_right_answers_pass(answer):
    assert ch10.check_prediction(answer)


def test_prediction_comes_from_the_paper_table():
    # Table 2 of Vogels et al. (NeurIPS 2021), worst worker, rows without momentum, written out
    paper = {"all-reduce": (87.0, 87.0, 87.0), "DSGD, ring": (87.4, 79.9, 53.9),
             "RelaySGD, chain": (87.3, 87.2, 86.5), "RelaySGD, double trees": (87.4, 86.9, 84.6)}
    assert paper == ch10._PAPER_WORST
    drops = {name: row[0] - row[-1] for name, row in paper.items()}
    assert max(drops, key=drops.get) == "DSGD, ring" == ch10._largest_drop()
    assert set(ch10._PAPER_WORST) == set(ch10.METHODS)
    flipped = {name: row[::-1] for name, row in ch10._PAPER_WORST.items()}  # a rise, not a drop
    assert ch10._largest_drop(flipped) != "DSGD, ring"


@pytest.mark.parametrize("answer, hint", [
    ("all-reduce", "exact average at every step"),
    ("allreduce", "exact average at every step"),
    ("RelaySGD, chain", "weight exactly"),
    ("relaysgd double trees", "weight exactly"),
    ("RelaySGD", "say which"),
    ("SGP", "one of"),
])
def test_prediction_wrong_answers_get_hints(answer, hint):
    verdict = ch10.check_prediction(answer)
    assert not verdict and hint in verdict.message, verdict.message


# ---------------------------------------------------------------------- 10.3
def test_loss_scale_right_answers_pass():
    assert ch10.check_loss_scale(1 / 32)
    assert ch10.check_loss_scale(0.03125)
    assert ch10.check_loss_scale(1 / N_LOSS)
    assert ch10.check_loss_scale(np.float64(1) / 32)


@pytest.mark.parametrize("answer, hint", [
    (N_LOSS, "wrong direction"),                  # n instead of 1/n
    (1, "not equal"),                             # no change
    (1 / B_LOSS, "minibatch size B"),
    (B_LOSS, "minibatch size B"),
    (1 / (N_LOSS * B_LOSS), "already average"),   # 1/(nB)
    (N_LOSS * B_LOSS, "already average"),
    (0.031, "exact"),                             # rounded: the old 1 % band accepted it
    (0.0313, "exact"),
    (1 / 31, "exact"),                            # 1/(n - 1)
    (0.5, "which terms contain"),
])
def test_loss_scale_wrong_answers_get_hints_not_the_answer(answer, hint):
    verdict = ch10.check_loss_scale(answer)
    assert not verdict and hint in verdict.message, verdict.message
    assert "0.031" not in verdict.message and "1/32" not in verdict.message


@pytest.mark.parametrize("n, batch", [(ch10.LOSS_SETTING["n"], ch10.LOSS_SETTING["batch"]),
                                      (5, 3)])
def test_loss_scale_is_what_stacked_gradients_show(n, batch):
    """Node i's gradient of the mean over all n * B samples is loss_scale() times its gradient
    of the sum over nodes of each node's mean loss."""
    stacked = StackedModel(_mlp((6, 5, 3)), n)
    with torch.no_grad():  # make the copies differ
        for p in stacked.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x, y = torch.randn(n, batch, 6), torch.randint(0, 3, (n, batch))
    grads = []
    for reduce in ("sum of node means", "mean over all"):
        stacked.zero_grad()
        out = stacked(x)
        ce = torch.nn.functional.cross_entropy(out.reshape(-1, 3), y.reshape(-1), reduction="none")
        loss = ce.reshape(n, batch).mean(1).sum() if reduce == "sum of node means" else ce.mean()
        loss.backward()
        grads.append(torch.cat([p.grad.flatten(1) for p in stacked.parameters()], 1))
    torch.testing.assert_close(grads[1], ch10._loss_scale(n, batch) * grads[0])
    torch.testing.assert_close(grads[1], grads[0] / n)


# ---------------------------------------------------------------------- all
@pytest.mark.parametrize("check", [ch10.check_bytes, ch10.check_prediction,
                                   ch10.check_loss_scale])
def test_none_is_not_yet_and_junk_is_refused(check):
    # the name the notebook's cell uses: `prediction = None` in exercise 10.2
    assert _not_yet(check(None), "prediction" if check is ch10.check_prediction else "answer")
    for junk in JUNK:
        verdict = check(junk)
        assert isinstance(verdict, Verdict) and not verdict
