r"""Image classifiers for decentralized deep learning: a small CNN and ResNet-20.

:func:`small_cnn` is two 5x5 convolutions (``width`` and ``2 width`` channels, each followed by
ReLU and 2x2 max pooling) and two linear layers, for 1x28x28 (MNIST, Fashion-MNIST) or 3x32x32
(CIFAR-10) inputs.

:func:`resnet20` is the CIFAR ResNet of He, Zhang, Ren & Sun (CVPR 2016, section 4.2) with
``n = 3``: a 3x3 convolution with 16 channels, three stages of three basic blocks (two 3x3
convolutions each) with 16, 32 and 64 channels, the first block of stages 2 and 3 halving the
side with stride 2, then global average pooling and one linear layer: ``6n + 2 = 20`` layers.
A block's shortcut is the identity, or where the shape changes "option A" of the paper:
subsample by 2 and pad the new channels with zeros (no parameters), so that with BatchNorm
the network has the paper's 0.27M parameters.

``norm`` chooses what follows each convolution, because BatchNorm's batch statistics are part
of what decentralized training with heterogeneous data must get right (every worker
normalises with its own skewed batches, and its running statistics are not averaged by
gossip on parameters):

* ``"batch"``: ``BatchNorm2d`` then ReLU (the paper's);
* ``"group"``: ``GroupNorm`` with ``groups`` groups (2 by default, as Hsieh et al. 2020 use
  for non-iid data) then ReLU; no buffers, so it runs in :class:`~declearn.optim.StackedModel`;
* ``"evonorm"``: EvoNorm-S0 (Liu, Brock, Simonyan & Le, NeurIPS 2020), which replaces the
  pair norm + activation: ``y = x sigmoid(v x) / sqrt(var_g(x) + eps) gamma + beta``, with
  ``var_g`` the variance over each sample's group of ``C / groups`` channels and all pixels,
  and ``v, gamma, beta`` one value per channel; no batch statistics at all. Where the
  paper's block has a norm with no activation (before the addition) we use the same layer
  without its ``sigmoid(v x)`` factor (our choice: where the EvoNorm paper puts its layers in
  a CIFAR ResNet-20 was not checked);
* ``"none"``: ReLU only.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["NORMS", "EvoNormS0", "small_cnn", "resnet20"]

#: The normalisations :func:`resnet20` accepts.
NORMS = ("batch", "group", "evonorm", "none")


class EvoNormS0(nn.Module):
    """EvoNorm-S0 over ``channels`` channels in ``groups`` groups (see the module docstring);
    ``nonlinear=False`` drops the ``sigmoid(v x)`` factor (a group-scaled affine layer)."""

    def __init__(self, channels: int, groups: int = 8, eps: float = 1e-5, *,
                 nonlinear: bool = True):
        super().__init__()
        if channels % groups:
            raise ValueError(f"EvoNorm-S0: {channels} channels do not split into {groups} "
                             "groups; pass groups= a divisor of the channel count.")
        self.groups, self.eps = groups, eps
        self.v = nn.Parameter(torch.ones(1, channels, 1, 1)) if nonlinear else None
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        grouped = x.reshape(n, self.groups, c // self.groups, h, w)
        var = grouped.var(dim=(2, 3, 4), unbiased=False, keepdim=True)
        std = (var + self.eps).sqrt().expand_as(grouped).reshape(n, c, h, w)
        num = x if self.v is None else x * torch.sigmoid(self.v * x)
        return num / std * self.weight + self.bias


def _norm_act(norm: str, channels: int, groups: int) -> nn.Module:
    if norm == "batch":
        return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU())
    if norm == "group":
        return nn.Sequential(nn.GroupNorm(groups, channels), nn.ReLU())
    if norm == "evonorm":
        return EvoNormS0(channels, groups)
    return nn.ReLU()


def _norm_only(norm: str, channels: int, groups: int) -> nn.Module:
    """The normalisation before a block's addition (no activation: ReLU follows the sum)."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(groups, channels)
    if norm == "evonorm":
        return EvoNormS0(channels, groups, nonlinear=False)
    return nn.Identity()


class _Block(nn.Module):
    """``relu(F(x) + shortcut(x))`` with ``F`` = conv, norm+act, conv, norm."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str, groups: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.act1 = _norm_act(norm, cout, groups)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = _norm_only(norm, cout, groups)
        self.stride, self.pad = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm2(self.conv2(self.act1(self.conv1(x))))
        short = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
        if self.pad:  # option A: the new channels of the shortcut are zeros
            short = nn.functional.pad(short, (0, 0, 0, 0, 0, self.pad))
        return torch.relu(out + short)


def _check(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return value


def resnet20(classes: int = 10, *, in_channels: int = 3, norm: str = "group",
             groups: int = 2) -> nn.Module:
    """ResNet-20 for ``in_channels`` x 32 x 32 images (28 x 28 works too), ``classes``
    outputs; ``norm`` one of :data:`NORMS`, ``groups`` the groups of GroupNorm/EvoNorm
    (a divisor of 16)."""
    _check("classes", classes, 2)
    _check("in_channels", in_channels)
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}.")
    if norm in ("group", "evonorm") and (_check("groups", groups) > 16 or 16 % groups):
        raise ValueError(f"groups must divide 16 (the narrowest stage's channels), got {groups}.")
    layers: list[nn.Module] = [nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False),
                               _norm_act(norm, 16, groups)]
    cin = 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        for b in range(3):
            layers.append(_Block(cin, cout, stride if b == 0 else 1, norm, groups))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, classes)]
    return nn.Sequential(*layers)


def small_cnn(classes: int = 10, *, in_channels: int = 1, side: int = 28,
              width: int = 32, hidden: int = 128) -> nn.Module:
    """conv5x5(width) - ReLU - maxpool2 - conv5x5(2 width) - ReLU - maxpool2 - linear(hidden)
    - ReLU - linear(classes), for ``in_channels`` x ``side`` x ``side`` images (padding 2
    keeps the side through each convolution)."""
    for name, value, low in (("classes", classes, 2), ("in_channels", in_channels, 1),
                             ("width", width, 1), ("hidden", hidden, 1)):
        _check(name, value, low)
    if _check("side", side, 4) % 4:
        raise ValueError(f"side must be a multiple of 4 (two 2x2 poolings), got {side}.")
    flat = 2 * width * (side // 4) ** 2
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, classes),
    )
