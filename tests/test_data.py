"""declearn.problems.data: the digits dataset and per-node minibatches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from declearn.problems import NodeBatches, load_digits, partition


def test_load_digits_split_and_scaling():
    data = load_digits(test_size=300, seed=1)
    assert data.X_train.shape == (1797 - 300, 64) and data.X_test.shape == (300, 64)
    assert data.X_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert float(data.X_train.min()) == 0.0 and float(data.X_train.max()) == 1.0
    assert set(data.y_test.tolist()) == set(range(10)) and data.classes == 10
    again = load_digits(test_size=300, seed=1)
    assert torch.equal(again.X_test, data.X_test)  # the split depends only on the seed
    # no test image is also a training image
    train = {tuple(r) for r in data.X_train.tolist()}
    assert not any(tuple(r) in train for r in data.X_test.tolist())
    with pytest.raises(ValueError, match="test_size"):
        load_digits(test_size=0)


def test_node_batches_come_from_each_nodes_own_part_and_rows_match_per_node_draws():
    labels = load_digits().y_train.numpy()
    parts = partition(labels, 8, method="dirichlet", alpha=0.01, seed=0)
    all_nodes = NodeBatches(parts, 16, seed=3)
    one = [NodeBatches(parts, 16, seed=3, node=r) for r in range(8)]
    for _ in range(5):
        b = all_nodes()
        assert b.shape == (8, 16)
        for r in range(8):
            assert set(b[r].tolist()) <= set(parts[r].tolist())
            assert torch.equal(one[r](), b[r])
    # label skew survives: with alpha = 0.01 most nodes see one or two classes
    classes = [len(np.unique(labels[parts[r]])) for r in range(8)]
    assert np.median(classes) <= 2


def test_node_batches_bad_input():
    with pytest.raises(ValueError, match="batch_size"):
        NodeBatches([np.arange(3)], 0)
    with pytest.raises(ValueError, match="parts"):
        NodeBatches([np.arange(3), np.array([], dtype=int)], 2)
    with pytest.raises(ValueError, match="node"):
        NodeBatches([np.arange(3)] * 2, 2, node=2)
    with pytest.raises(ValueError, match=r"larger than node 1's shard \(2 examples"):
        NodeBatches([np.arange(5), np.arange(2), np.arange(4)], 3)
