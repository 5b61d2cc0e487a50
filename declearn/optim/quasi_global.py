r"""Quasi-global momentum (Lin, Karimireddy, Stich & Jaggi, ICML 2021, "Quasi-Global Momentum:
Accelerating Decentralized Deep Learning on Heterogeneous Data"), the QG-DSGDm of
``Decentralized(torch.optim.SGD(..., momentum=mu), comm, topology, quasi_global=True)``.

With heterogeneous data, a node's local momentum buffer accumulates its *own* gradients and
pulls its model away from its neighbours'. The quasi-global buffer ``m_hat_i`` accumulates
instead how node i's model actually moved, gossip included, which is close to the global
direction. With ``lr``, ``mu``, ``weight_decay``, ``dampening`` and ``nesterov`` of node i's
parameter group and ``W = topology.at(k)``:

    d_i     = g_i + weight_decay x_i
    m_i     = mu m_hat_i + (1 - dampening) d_i        (the buffer is not overwritten)
    x_i^+   = x_i - lr (d_i + mu m_i  if nesterov  else  m_i)
    x_i'    = sum_j W[i, j] x_j^+                    (the gossip of adapt-then-combine)
    m_hat_i <- mu m_hat_i + (1 - mu) (x_i - x_i') / lr

``m_hat`` starts at 0. This is the recursion of the authors' ``decentralized_qg_sgd``
optimizer (their repository epfml/quasi-global-momentum, read), whose buffer update uses a
factor 0.1 by default, i.e. ``1 - mu`` at the ``mu = 0.9`` of their experiments; we write
``1 - mu`` for every ``mu``. The paper's text was not read here.
"""

from __future__ import annotations

import torch

__all__ = ["QuasiGlobalMomentum"]


class QuasiGlobalMomentum:
    """The buffer ``m_hat`` over a :class:`~declearn.optim.flat.FlatParameters` and the
    hyperparameters of a ``torch.optim.SGD`` (read live, so schedulers work)."""

    def __init__(self, optimizer: torch.optim.Optimizer, flat):
        if type(optimizer) is not torch.optim.SGD:
            raise ValueError(
                f"quasi_global=True replaces the momentum of torch.optim.SGD (QG-DSGDm); got "
                f"{type(optimizer).__name__}. Wrap torch.optim.SGD(..., momentum=0.9).")
        if any(g["momentum"] <= 0 for g in optimizer.param_groups):
            raise ValueError("quasi_global=True needs momentum > 0 in every parameter group "
                             "(e.g. torch.optim.SGD(params, lr=0.1, momentum=0.9)).")
        if any(g.get("maximize") for g in optimizer.param_groups):
            raise ValueError("quasi_global=True does not support maximize=True.")
        self.optimizer, self.flat = optimizer, flat
        self.m_hat = torch.zeros_like(flat.flat)
        where = {id(p): i for i, p in enumerate(flat.params)}
        views = []
        offset = 0
        starts = []
        for size in flat.sizes:
            starts.append(offset)
            offset += size
        for group in optimizer.param_groups:
            for p in group["params"]:
                i = where[id(p)]
                views.append((group, slice(starts[i], starts[i] + flat.sizes[i])))
        self._views = views

    @torch.no_grad()
    def local_step(self) -> None:
        """``x <- x - lr (...)`` of the module docstring, parameter group by group."""
        x, g, m_hat = self.flat.flat, self.flat.grad, self.m_hat
        for group, cols in self._views:
            xv, gv, mv = x[..., cols], g[..., cols], m_hat[..., cols]
            d = gv.add(xv, alpha=group["weight_decay"]) if group["weight_decay"] else gv
            m = mv.mul(group["momentum"]).add_(d, alpha=1 - group["dampening"])
            step = d.add(m, alpha=group["momentum"]) if group["nesterov"] else m
            xv.add_(step, alpha=-group["lr"])

    @torch.no_grad()
    def absorb(self, before: torch.Tensor) -> None:
        """``m_hat <- mu m_hat + (1 - mu) (before - x) / lr`` after the gossip."""
        x, m_hat = self.flat.flat, self.m_hat
        for group, cols in self._views:
            mu = group["momentum"]
            moved = (before[..., cols] - x[..., cols]).div_(group["lr"])
            m_hat[..., cols].mul_(mu).add_(moved, alpha=1 - mu)
