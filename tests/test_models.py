"""declearn.problems.models: ResNet-20 and the small CNN against counts and formulas written
here, EvoNorm-S0 against its formula evaluated element by element, and the buffer-free
normalisations inside StackedModel against one model per node."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from declearn.optim import StackedModel
from declearn.problems.models import NORMS, EvoNormS0, resnet20, small_cnn


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_resnet20_with_batchnorm_has_the_papers_parameter_count():
    # He et al. 2016 (CIFAR ResNets, option A shortcuts): 0.27M for n = 3; the exact count
    # of this architecture is 269,722
    assert count(resnet20(norm="batch")) == 269_722
    assert count(resnet20(norm="group")) == 269_722  # GroupNorm: the same affine parameters
    # EvoNorm adds v (one per channel) to every norm+activation: the stem's and the first of
    # each block's two, 1 + 9 layers of widths 16, 3 x 16, 3 x 32, 3 x 64
    assert count(resnet20(norm="evonorm")) == 269_722 + 16 + 3 * (16 + 32 + 64)
    # 19 norm layers of 2 C parameters each are gone without normalisation
    assert count(resnet20(norm="none")) == 269_722 - 2 * (16 + 6 * (16 + 32 + 64))


def test_resnet20_has_20_weighted_layers_and_takes_both_image_sizes():
    model = resnet20(norm="group")
    weighted = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    assert len(weighted) == 20
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, 10)
    assert resnet20(7, in_channels=1)(torch.randn(2, 1, 28, 28)).shape == (2, 7)


def test_small_cnn_parameter_count_is_the_closed_form():
    w, h, side, c = 32, 128, 28, 1
    expected = (c * w * 25 + w) + (w * 2 * w * 25 + 2 * w) + \
        (2 * w * (side // 4) ** 2 * h + h) + (h * 10 + 10)
    assert count(small_cnn()) == expected
    model = small_cnn(in_channels=3, side=32, width=8, hidden=16)
    assert model(torch.randn(4, 3, 32, 32)).shape == (4, 10)


def test_evonorm_s0_is_its_formula_element_by_element():
    torch.manual_seed(0)
    layer = EvoNormS0(4, groups=2)
    with torch.no_grad():
        layer.v.uniform_(0.5, 1.5)
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-1, 1)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float32)
    X, v = x.numpy().astype(np.float64), layer.v.detach().numpy().ravel()
    g, b = layer.weight.detach().numpy().ravel(), layer.bias.detach().numpy().ravel()
    out = np.empty_like(X)
    for s in range(2):
        for grp in range(2):
            chans = [2 * grp, 2 * grp + 1]
            values = X[s, chans].ravel()
            std = np.sqrt(np.mean((values - values.mean()) ** 2) + 1e-5)
            for ch in chans:
                z = X[s, ch]
                out[s, ch] = z / (1 + np.exp(-v[ch] * z)) / std * g[ch] + b[ch]
    np.testing.assert_allclose(layer(x).detach().numpy(), out, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm", ["group", "evonorm", "none"])
def test_buffer_free_norms_run_in_stacked_model_like_one_model_per_node(norm):
    torch.manual_seed(1)
    model = resnet20(norm=norm)
    stacked = StackedModel(model, 3)
    with torch.no_grad():  # make the nodes differ
        for p in stacked.parameters():
            p.add_(0.01 * torch.randn_like(p))
    x = torch.randn(3, 2, 3, 32, 32)
    out = stacked(x)
    for i in range(3):
        torch.testing.assert_close(out[i], stacked.node(i)(x[i]), rtol=1e-4, atol=1e-5)


def test_batchnorm_is_refused_by_stacked_model_with_the_alternatives():
    with pytest.raises(ValueError, match="GroupNorm"):
        StackedModel(resnet20(norm="batch"), 2)


def test_a_few_sgd_steps_fit_a_tiny_batch():
    torch.manual_seed(2)
    model = small_cnn(in_channels=1, side=12, width=4, hidden=16)
    x, y = torch.randn(16, 1, 12, 12), torch.randint(0, 10, (16,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss = torch.nn.functional.cross_entropy
    first = loss(model(x), y).item()
    for _ in range(60):
        opt.zero_grad()
        loss(model(x), y).backward()
        opt.step()
    assert loss(model(x), y).item() < 0.2 * first


@pytest.mark.parametrize("make, match", [
    (lambda: resnet20(norm="layer"), "norm must be one of"),
    (lambda: resnet20(groups=3), "divide 16"),
    (lambda: resnet20(classes=1), "classes"),
    (lambda: small_cnn(side=30), "multiple of 4"),
    (lambda: small_cnn(width=0), "width"),
    (lambda: EvoNormS0(6, groups=4), "groups= a divisor"),
])
def test_bad_input_says_what_to_pass(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_norms_constant_lists_every_option():
    assert NORMS == ("batch", "group", "evonorm", "none")
