r"""Classification data for the deep-learning chapter: a real small dataset, and minibatches
drawn per node from the node's own samples.

:func:`load_digits` returns the UCI handwritten digits (1797 grey 8x8 images, 10 classes, via
scikit-learn, bundled with it: nothing is downloaded) as tensors, pixels scaled to [0, 1],
split into a training and a test set with a fixed seed.

:class:`NodeBatches` draws, at every call, ``batch_size`` indices for each of the n nodes, node
i's from ``parts[i]`` (e.g. :func:`~declearn.problems.partition.partition`'s Dirichlet split),
uniformly with replacement, as one ``(n, batch_size)`` tensor. Every MPI rank draws the same
matrix from the same seed and keeps its own row (``node=rank``), so a run on engines sees
exactly the batches of the same run under SimComm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Dataset", "load_digits", "NodeBatches"]


@dataclass(frozen=True)
class Dataset:
    """Training and test tensors: ``X_*`` of shape (N, features) or, for images, (N, C, H, W);
    ``y_*`` int64 labels."""

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    classes: int
    name: str

    def to(self, device) -> Dataset:
        """The same data on ``device`` (e.g. an engine's ``device``)."""
        return Dataset(self.X_train.to(device), self.y_train.to(device),
                       self.X_test.to(device), self.y_test.to(device), self.classes, self.name)


def load_digits(*, test_size: int = 360, seed: int = 0,
                dtype: torch.dtype = torch.float32) -> Dataset:
    """The UCI handwritten digits as a :class:`Dataset`: 64 pixel features in [0, 1], labels
    0..9; ``test_size`` images (chosen with ``seed``) held out for testing."""
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:  # pragma: no cover - scikit-learn is a dependency
        raise ImportError(
            "load_digits needs scikit-learn (pip install scikit-learn); it ships the dataset."
        ) from None
    raw = sklearn_digits()
    if not 0 < test_size < len(raw.target):
        raise ValueError(f"test_size must be in 1..{len(raw.target) - 1}, got {test_size!r}.")
    order = np.random.default_rng(seed).permutation(len(raw.target))
    test, train = order[:test_size], order[test_size:]
    X = torch.tensor(raw.data / 16.0, dtype=dtype)
    y = torch.tensor(raw.target, dtype=torch.int64)
    return Dataset(X[train], y[train], X[test], y[test], classes=10, name="digits")


class NodeBatches:
    """``batches()`` -> minibatch indices, node i's drawn from ``parts[i]``.

    ``parts``: n index arrays (cut to the smallest size, so every node samples from the same
    number of its own examples). Returns a ``(n, batch_size)`` int64 tensor, or with ``node=r``
    the ``(batch_size,)`` row of node r (the same numbers: every caller draws the whole matrix
    from the same generator).
    """

    def __init__(self, parts, batch_size: int, *, seed: int = 0, node: int | None = None):
        parts = [np.asarray(p) for p in parts]
        if not parts or any(p.ndim != 1 or p.size == 0 for p in parts):
            raise ValueError("parts must be non-empty 1-D index arrays, one per node "
                             "(e.g. from declearn.problems.partition).")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}.")
        self.n = len(parts)
        if node is not None and not 0 <= node < self.n:
            raise ValueError(f"node must be in 0..{self.n - 1} (this node's rank), got {node!r}.")
        self.per_node = min(p.size for p in parts)
        if batch_size > self.per_node:
            small = min(range(len(parts)), key=lambda i: parts[i].size)
            raise ValueError(
                f"batch_size {batch_size} is larger than node {small}'s shard "
                f"({self.per_node} examples; every node samples from that many of its own): "
                "a minibatch would repeat examples. Lower batch_size, or give the nodes more "
                "data (fewer nodes, or a balanced partition).")
        self.index = torch.tensor(np.stack([p[:self.per_node] for p in parts]), dtype=torch.int64)
        self.batch_size = batch_size
        self.node = node
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self) -> torch.Tensor:
        pick = torch.randint(0, self.per_node, (self.n, self.batch_size),
                             generator=self.generator)
        rows = torch.gather(self.index, 1, pick)
        return rows if self.node is None else rows[self.node]
