r"""Parallel (mini-batch) SGD with an allreduce: the centralized reference.

* :class:`ParallelSGD`: ``x <- x - lr * (1/n) sum_j g_j``; every node applies the same
  averaged gradient, so nodes that start together stay identical.
"""

from __future__ import annotations

import torch

from declearn.algorithms.base import Algorithm

__all__ = ["ParallelSGD"]


class ParallelSGD(Algorithm):
    r"""``x_i <- x_i - lr * allreduce_mean(g)``, with ``g_j = grad f_j(x_j)`` (stochastic if
    the problem says so): what one server averaging n workers' gradients would do."""

    name = "parallel_sgd"
    _assigns_new_tensors = True

    def __init__(self, comm, problem, *, lr, x0=None):
        super().__init__(comm, problem, x0=x0, lr=lr)

    def _step(self) -> None:
        g = self.comm.allreduce(self.grad(self.x), "mean")
        self.x = torch.add(self.x, g, alpha=-self.lr())
