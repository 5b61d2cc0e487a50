r"""Checks for chapter 10, *Decentralized deep learning: heterogeneous data, gossip and relays*.

Each check computes the right value here with plain Python (not with declearn.optim,
declearn.comm or torch, so a bug there cannot make a wrong answer look right) and answers with
a :class:`~declearn.exercises.Verdict`: a hint when the answer is wrong, "not yet" when it is
still ``None``. Every question has one exact answer, accepted up to float round-off only
(relative ``1e-9``).

* :func:`check_bytes` (10.1): bytes one node sends in one step of DSGD on a ring, and in one
  ring allreduce of the model, for the chapter's 64-32-10 float32 MLP on 16 nodes (counted like
  ``comm.traffic``: a node sends its model to each neighbour; a ring allreduce sends
  ``2 (n - 1)`` chunks of ``1/n`` of the model).
* :func:`check_prediction` (10.2): which of the chapter's four methods loses the most
  worst-worker accuracy from Dirichlet ``alpha = 1`` to ``alpha = 0.01``, read from the
  published Table 2 of Vogels et al. (NeurIPS 2021), stored here (privately) as
  ``_PAPER_WORST``.
* :func:`check_loss_scale` (10.3): the factor by which every node's effective learning rate
  changes when the loss of ``n`` stacked models is the mean over all ``n * B`` samples instead
  of the sum over nodes of each node's mean loss.
"""

from __future__ import annotations

import math
from itertools import pairwise

from declearn.exercises.base import Verdict, check_equal, is_number, not_yet

__all__ = [
    "BYTES_SETTING",
    "LOSS_SETTING",
    "METHODS",
    "check_bytes",
    "check_loss_scale",
    "check_prediction",
]

EX1 = "10.1 bytes per step"
EX2 = "10.2 prediction"
EX3 = "10.3 loss of stacked models"
_RTOL = 1e-9  # float round-off only: every answer of this chapter is exact

#: Exercise 10.1: layer widths of the MLP (with biases), nodes, bytes per number (float32).
BYTES_SETTING = {"layers": (64, 32, 10), "n": 16, "itemsize": 4}
#: Exercise 10.3: nodes and minibatch per node.
LOSS_SETTING = {"n": 32, "batch": 16}
#: Exercise 10.2: the four methods of the chapter's section 4, as the notebook names them.
METHODS = ("all-reduce", "DSGD, ring", "RelaySGD, chain", "RelaySGD, double trees")
# Table 2 of Vogels et al. (NeurIPS 2021; the chain row from the authors' figure notebooks):
# test accuracy [%] of the worst worker's own model, mean of 3 seeds, Cifar-10, VGG-11,
# 16 workers, for alpha = 1, 0.1, 0.01 (rows without momentum).
_PAPER_WORST = {
    "all-reduce": (87.0, 87.0, 87.0),
    "DSGD, ring": (87.4, 79.9, 53.9),
    "RelaySGD, chain": (87.3, 87.2, 86.5),
    "RelaySGD, double trees": (87.4, 86.9, 84.6),
}

# Spellings accepted for each method (compared lower-case, letters and digits only).
_ALIASES = {
    "allreduce": "all-reduce", "parallelsgd": "all-reduce", "localsgd": "all-reduce",
    "dsgd": "DSGD, ring", "dsgdring": "DSGD, ring", "dpsgd": "DSGD, ring",
    "dpsgdring": "DSGD, ring", "gossip": "DSGD, ring", "decentralizedsgd": "DSGD, ring",
    "relaysgdchain": "RelaySGD, chain", "relaychain": "RelaySGD, chain",
    "relaysgddoubletrees": "RelaySGD, double trees", "relaysgdtrees": "RelaySGD, double trees",
    "relaysgddoublebinarytrees": "RelaySGD, double trees",
    "relaysgdbinarytrees": "RelaySGD, double trees", "relaytrees": "RelaySGD, double trees",
}


def _wrong(exercise: str, hint: str) -> Verdict:
    return Verdict(False, exercise, hint)


def _same(a: float, b: float, rtol: float = _RTOL) -> bool:
    return math.isclose(a, b, rel_tol=rtol, abs_tol=1e-15)


# ---------------------------------------------------------------------- 10.1
def _mlp_parameters(layers) -> int:
    """Weights and biases of a fully connected network with these layer widths:
    ``sum(a * b + b)`` over consecutive widths ``(a, b)``."""
    return sum(a * b + b for a, b in pairwise(layers))


def _step_bytes(layers=BYTES_SETTING["layers"], n: int = BYTES_SETTING["n"],
               itemsize: int = BYTES_SETTING["itemsize"]) -> tuple[float, float]:
    """``(DSGD on a ring, one ring allreduce)``: bytes one node sends per step. On a ring
    (n >= 3) a node sends its whole model to its 2 neighbours; a ring allreduce sends
    ``2 (n - 1)`` chunks of ``1/n`` of the model."""
    model = _mlp_parameters(layers) * itemsize
    return 2.0 * model, 2.0 * (n - 1) / n * model


def check_bytes(answer) -> Verdict:
    """Exercise 10.1: ``(dsgd_bytes, allreduce_bytes)`` one node sends in one step of DSGD on a
    ring of 16, and in one ring allreduce, for the 64-32-10 MLP with biases in float32.
    One exact pair."""
    if answer is None:
        return not_yet(EX1, "a pair (bytes per DSGD step, bytes per allreduce)")
    if isinstance(answer, (str, bytes, dict)):
        return Verdict(False, EX1, "give a pair of numbers, e.g. (1000, 900).")
    try:
        dsgd, allreduce = answer
    except (TypeError, ValueError):
        return Verdict(False, EX1, "give a pair of numbers, e.g. (1000, 900).")
    if not (is_number(dsgd) and is_number(allreduce)):
        return Verdict(False, EX1, "give a pair of numbers, e.g. (1000, 900).")
    s = BYTES_SETTING
    expected = _step_bytes(**s)
    near = lambda a, e: math.isclose(a, e, rel_tol=1e-3)
    if _same(dsgd, expected[0]) and _same(allreduce, expected[1]):
        return Verdict(True, EX1, "two whole models to the two neighbours, against 2 (n - 1) "
                                  "chunks of 1/n of the model.")
    if near(dsgd, expected[1]) and near(allreduce, expected[0]):
        return _wrong(EX1, "The two numbers are swapped: which one sends whole models?")
    if all(abs(a - e) <= 0.01 * e for a, e in zip((dsgd, allreduce), expected)):
        return _wrong(EX1, "Close, but these are exact counts of bytes: count the parameters "
                           "(weights and biases) exactly, then multiply without rounding.")
    ratio_d, ratio_a = dsgd / expected[0], allreduce / expected[1]
    weights_only = sum(a * b for a, b in pairwise(s["layers"]))
    bias_ratio = weights_only / _mlp_parameters(s["layers"])
    if near(ratio_d, ratio_a):  # both off by the same factor: the model size is wrong
        if near(ratio_d, 1 / s["itemsize"]):
            hint = "You counted numbers; a float32 number is 4 bytes."
        elif near(ratio_d, 8 / s["itemsize"]):
            hint = "The chapter trains in float32 (4 bytes a number), not float64."
        elif near(ratio_d, bias_ratio):
            hint = "Each layer also has one bias per output unit: count those too."
        else:
            hint = ("Both numbers are off by the same factor, so the model size is: count the "
                    "weights and biases of both layers, then bytes.")
        return _wrong(EX1, f"not it. {hint}")
    hints = []
    if not near(dsgd, expected[0]):
        if near(ratio_d, 0.5):
            hints.append("DSGD: a node on a ring has two neighbours, and each gets the model.")
        elif near(ratio_d, 1.5):
            hints.append("DSGD: a node does not send its model to itself.")
        else:
            hints.append("DSGD: count how many neighbours a ring node sends its whole model to.")
    if not near(allreduce, expected[1]):
        if near(ratio_a, s["n"] / (2 * (s["n"] - 1))):
            hints.append("Allreduce: a ring allreduce does not send the model once; each node "
                         "sends 2 (n - 1) chunks of 1/n of it.")
        elif near(ratio_a, s["n"] / (s["n"] - 1)):
            hints.append("Allreduce: 2 (n - 1) chunks of 1/n of the model is a little less than "
                         "two models.")
        elif near(ratio_a, 0.5):
            hints.append("Allreduce: it has two phases (reduce-scatter, then allgather), "
                         "each n - 1 chunks.")
        else:
            hints.append("Allreduce: each node sends 2 (n - 1) chunks of 1/n of the model.")
    return _wrong(EX1, "not it. " + " ".join(hints))


# ---------------------------------------------------------------------- 10.2
def _largest_drop(table=None) -> str:
    """The method whose worst-worker accuracy falls most from the first to the last column of
    ``table`` (default: ``_PAPER_WORST``, alpha = 1 then 0.01)."""
    table = _PAPER_WORST if table is None else table
    return max(table, key=lambda name: table[name][0] - table[name][-1])


def _method_of(answer) -> str | None:
    key = "".join(ch for ch in answer.lower() if ch.isalnum())
    for name in METHODS:
        if key == "".join(ch for ch in name.lower() if ch.isalnum()):
            return name
    return _ALIASES.get(key)


def check_prediction(answer) -> Verdict:
    """Exercise 10.2: which of :data:`METHODS` sees its worst worker lose the most test accuracy
    from alpha = 1 to alpha = 0.01 (Table 2 of the RelaySGD paper)?"""
    choices = ", ".join(f'"{m}"' for m in METHODS)
    if answer is None:
        return not_yet(EX2, f"one of {choices}", name="prediction")
    if not isinstance(answer, str):
        return Verdict(False, EX2, f"give the method's name as a string, one of {choices}.")
    method = _method_of(answer)
    if method is None:
        hint = ("RelaySGD ran on a chain and on double trees: say which."
                if "relay" in answer.lower() else f"use one of {choices}.")
        return Verdict(False, EX2, f"{answer!r} is not one of the four methods; {hint}")
    expected = _largest_drop()
    hints = {
        "all-reduce": ("All-reduce replaces every model by the exact average at every step. "
                       "With equal-sized shards its step is, in expectation, the full-data "
                       "gradient step whatever the split: only its noise changes."),
        "RelaySGD, chain": ("A relay hands every node every worker's model with weight exactly "
                            "1/n, late by a number of steps that grows with their distance in "
                            "the tree; the chain's long delays slow it down but do not bias it "
                            "towards a node's own classes. Which method never forms that exact "
                            "average?"),
        "RelaySGD, double trees": ("A relay hands every node every worker's model with weight "
                                   "exactly 1/n, a few steps late. Which method never forms "
                                   "that exact average?"),
    }
    if method == expected:
        return Verdict(True, EX2, "gossip on a ring never forms the exact average, so its "
                                  "worst worker drops the most (Table 2: 87.4 % -> 53.9 %).")
    return check_equal(EX2, method, expected, hint=hints.get(method, ""))


# ---------------------------------------------------------------------- 10.3
def _loss_scale(n: int = LOSS_SETTING["n"], batch: int = LOSS_SETTING["batch"]) -> float:
    """Node i's gradient of ``(1 / (n B)) sum_{i, b} loss_{i b}`` over its gradient of
    ``sum_i (1 / B) sum_b loss_{i b}``: node i's parameters only enter its own term, so the
    factor is ``1 / n`` (``batch`` does not matter: the mean over B is in both)."""
    return (1.0 / (n * batch)) / (1.0 / batch)


def check_loss_scale(answer) -> Verdict:
    """Exercise 10.3: the factor by which every node's effective learning rate changes when the
    loss of n = 32 stacked models (B = 16 samples each) is the mean over all n B samples
    instead of the sum of the nodes' mean losses. One exact number."""
    if answer is None:
        return not_yet(EX3, "a number (1 means no change)")
    if not is_number(answer):
        return Verdict(False, EX3, "give one number, the factor (1 means no change).")
    s = LOSS_SETTING
    n, b = s["n"], s["batch"]
    expected = _loss_scale(n, b)
    if _same(answer, expected):
        return Verdict(True, EX3, "node i's parameters enter only its own term, which the mean "
                                  "divides by n.")
    hint = ("Write both losses as sums over nodes and ask which terms contain node i's "
            "parameters, then compare node i's gradients.")
    if math.isclose(answer, 1 / expected, rel_tol=1e-3):
        hint = ("That is the size of the change but in the wrong direction: is the mean over "
                "all samples larger or smaller than the sum of the nodes' means?")
    elif math.isclose(answer, 1.0, rel_tol=1e-3):
        hint = ("The two losses are not equal: one is a sum over nodes, the other an average. "
                "The gradient of node i's parameters sees the difference.")
    elif math.isclose(answer, 1 / (n * b), rel_tol=1e-3) or math.isclose(answer, n * b,
                                                                        rel_tol=1e-3):
        hint = ("Both losses already average over a node's B samples; only the factor in "
                "front of the sum over nodes differs.")
    elif math.isclose(answer, 1 / b, rel_tol=1e-3) or math.isclose(answer, b, rel_tol=1e-3):
        hint = ("The minibatch size B is in both losses (each node's own mean); what differs "
                "is how the nodes' terms are combined.")
    elif abs(answer - expected) <= 0.05 * expected:
        hint = "Close, but the factor is exact: give it as a fraction, not a rounded decimal."
    return _wrong(EX3, f"not it. {hint}")
