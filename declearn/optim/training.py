r"""One training loop for decentralized deep learning, the same on engines and in the simulator.

    log = train(model, opt, data, batches, steps=400, every=20)
    log.plot()

At each step every node draws its minibatch (``batches()``: node i's indices into
``data.X_train``, see :class:`~declearn.problems.NodeBatches`), takes a forward and backward
pass, and the optimizer's step (plus ``opt.average()`` for the optimizers of
:mod:`declearn.optim` that have one). Node i's loss is its mean cross-entropy
``l_i = (1/B) sum_b CE(f(x_i; a_b), y_b)``; under SimComm the n stacked models are trained
through ``sum_i l_i``, whose gradient row i is node i's own.

Every ``every`` steps (and after the last) a :class:`Record` is taken, with every node's
value on every rank (MPI: gathered, not counted as traffic):

* ``loss``: each node's training loss of that step's minibatch;
* ``accuracy``: each node's own model on the whole test set;
* ``mean_accuracy``: the average model ``x_bar = (1/n) sum_i x_i`` on the test set;
* ``consensus``: ``Xi = (1/n) sum_i ||x_i - x_bar||^2``, how far the models are apart.

``on_record(record)`` is called with each record (e.g. to publish it from an engine for a
live plot); ``progress=True`` shows a tqdm bar on the rank that reports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["Record", "TrainLog", "node_loss", "train"]


@dataclass(frozen=True)
class Record:
    """The state of the run after ``step`` steps (arrays over the n nodes)."""

    step: int
    loss: np.ndarray
    accuracy: np.ndarray
    mean_accuracy: float
    consensus: float

    def as_dict(self) -> dict:
        """Plain lists and floats (to publish or to save as JSON)."""
        return {"step": self.step, "loss": self.loss.tolist(),
                "accuracy": self.accuracy.tolist(), "mean_accuracy": self.mean_accuracy,
                "consensus": self.consensus}


@dataclass
class TrainLog:
    """The records of one run, in order."""

    records: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def column(self, name: str) -> np.ndarray:
        """One field over the records: ``(records,)`` or ``(records, n)``."""
        return np.array([getattr(r, name) for r in self.records])

    def plot(self, axes=None, *, title: str = ""):
        """Training loss, test accuracy (worst node, mean over nodes, average model) and
        consensus distance against the step; returns the three axes."""
        import matplotlib.pyplot as plt

        if axes is None:
            _, axes = plt.subplots(1, 3, figsize=(15, 3.8), layout="constrained")
        steps = self.column("step")
        axes[0].plot(steps, self.column("loss").mean(1))
        axes[0].set(xlabel="step", ylabel="training loss (mean over nodes)", yscale="log",
                    title=title)
        acc = 100 * self.column("accuracy")
        axes[1].plot(steps, acc.min(1), label="worst node's own model")
        axes[1].plot(steps, acc.mean(1), label="mean over nodes' own models")
        axes[1].plot(steps, 100 * self.column("mean_accuracy"), "k--",
                     label=r"average model $\bar x$")
        axes[1].set(xlabel="step", ylabel="test accuracy [%]", ylim=(0, 100))
        axes[1].legend()
        axes[2].semilogy(steps, np.maximum(self.column("consensus"), 1e-300))
        axes[2].set(xlabel="step", ylabel=r"$\Xi = \frac{1}{n}\sum_i \|x_i - \bar x\|^2$",
                    title="consensus distance")
        return axes


def node_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum over nodes of each node's mean cross-entropy (one node: its mean cross-entropy);
    ``out`` is ``(..., B, classes)``, ``y`` is ``(..., B)``."""
    return torch.nn.functional.cross_entropy(out.flatten(0, -2), y.flatten(),
                                             reduction="sum") / y.shape[-1]


def train(model: torch.nn.Module, opt, data, batches: Callable[[], torch.Tensor], steps: int, *,
          every: int = 0, on_record: Callable[[Record], None] | None = None,
          progress: bool = False) -> TrainLog:
    """Train ``model`` with ``opt`` for ``steps`` steps (module docstring); records every
    ``every`` steps (0: none)."""
    for name, value, low in (("steps", steps, 1), ("every", every, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    comm = getattr(opt, "comm", None)
    if comm is None:
        raise TypeError("train needs an optimizer of declearn.optim (it carries the "
                        "communicator); wrap a torch optimizer with declearn.optim."
                        "Decentralized.")
    average = getattr(opt, "average", None)
    log = TrainLog()
    bar = _bar(steps, comm) if progress else None
    device = data.X_train.device
    for step in range(1, steps + 1):
        idx = batches().to(device)
        opt.zero_grad()
        loss = node_loss(model(data.X_train[idx]), data.y_train[idx])
        loss.backward()
        opt.step()
        if average is not None:
            average()
        if bar is not None:
            bar.update()
        if every and (step % every == 0 or step == steps):
            record = _record(step, model, opt, data, idx)
            log.records.append(record)
            if on_record is not None:
                on_record(record)
    if bar is not None:
        bar.close()
    return log


def _bar(steps: int, comm):
    from tqdm.auto import tqdm

    return tqdm(total=steps, desc="training", disable=not comm.reports)


@torch.no_grad()
def _record(step: int, model, opt, data, idx) -> Record:
    comm = opt.comm
    X_test = data.X_test.expand(comm.size, *data.X_test.shape) if comm.node_dims \
        else data.X_test
    out = model(data.X_train[idx])
    y = data.y_train[idx]
    per_node_loss = torch.nn.functional.cross_entropy(
        out.flatten(0, -2), y.flatten(), reduction="none").reshape(y.shape).mean(-1)
    accuracy = (model(X_test).argmax(-1) == data.y_test).float().mean(-1)
    x = opt.x
    with comm.untracked():
        x_bar = comm.allreduce(x)
        spread = comm.allreduce(((x - x_bar) ** 2).sum(-1, keepdim=True))
        gathered = [comm.allgather(v.reshape(comm.node_dims + (1,)).to(torch.float64))
                    for v in (per_node_loss, accuracy)]
    mean_model = _mean_model(model, opt, comm.one_node(x_bar))
    mean_accuracy = float((mean_model(data.X_test).argmax(-1) == data.y_test).float().mean())
    loss, acc = (comm.one_node(g).reshape(-1).cpu().numpy() for g in gathered)
    return Record(step, loss, acc, mean_accuracy, float(comm.one_node(spread).reshape(-1)[0]))


def _mean_model(model, opt, x_bar: torch.Tensor):
    """The model with the flat averaged parameters ``x_bar`` (one node's vector)."""
    if hasattr(model, "mean_model"):  # StackedModel
        return model.mean_model()
    import copy

    twin = copy.deepcopy(model)
    starts, offset = {}, 0
    for p, size in zip(opt.flat.params, opt.flat.sizes):
        starts[id(p)] = offset
        offset += size
    for mine, theirs in zip(model.parameters(), twin.parameters()):
        if id(mine) in starts:
            a = starts[id(mine)]
            theirs.data = x_bar[a:a + mine.numel()].view_as(theirs).clone()
    return twin
