r"""Decentralized gradient descent (DGD) and its stochastic form (DSGD).

Each node takes gradient steps on its own ``f_i`` and averages with its neighbors. With a
constant step the nodes do *not* reach the minimiser of ``f = (1/n) sum_i f_i``: at
``x_i = x*`` for all i the mixed step moves them by ``-lr sum_j W[i, j] grad f_j(x*)``, which
is not zero when the data differ. The plateau grows with ``lr`` and with the heterogeneity
``b^2 = (1/n) sum_i ||grad f_i(x*)||^2`` (for strongly convex f, the mean squared distance to
x* is ``O(lr^2 rho^2 b^2 / (1 - rho)^2)`` for ATC and ``O(lr^2 b^2 / (1 - rho)^2)`` for AWC).
For quadratic problems :meth:`DGD.fixed_point` gives the exact point where a constant step
stops (one linear solve). A diminishing step (:func:`declearn.algorithms.diminishing`) removes
the bias, slowly; the bias correction methods (:mod:`~declearn.algorithms.tracking`,
:mod:`~declearn.algorithms.diffusion`) remove it with a constant step.
"""

from __future__ import annotations

import numpy as np
import torch

from declearn.algorithms.mixing import GossipMethod
from declearn.errors import TopologyError
from declearn.problems.base import Problem
from declearn.topology.base import Topology

__all__ = ["DGD", "DGD_VARIANTS"]

#: The orderings of DGD's two operations.
DGD_VARIANTS = ("atc", "awc", "cta")


class DGD(GossipMethod):
    r"""Decentralized gradient descent, three orderings (``g = grad`` of the node's own f_i,
    ``W = W^(k)``, ``lr = lr(k)``):

    * ``variant="atc"`` (adapt then combine, diffusion): ``x <- W (x - lr g(x))``;
    * ``variant="awc"`` (adapt with combine, Nedic-Ozdaglar DGD, D-PSGD):
      ``x <- W x - lr g(x)``: the gradient does not wait for the communication;
    * ``variant="cta"`` (combine then adapt): ``phi = W x``, ``x <- phi - lr g(phi)``.

    One ``neighbor_allreduce`` and one gradient per iteration. On a problem with gradient
    noise (``sigma > 0``) this is decentralized SGD (DSGD). A constant ``lr`` stalls at a
    bias that grows with lr (see the module docstring); ``lr=diminishing(lr0)`` converges.
    W must be row-stochastic (doubly stochastic for the average of the f_i).
    """

    name = "dgd"
    _assigns_new_tensors = True

    def __init__(self, comm, problem, topology, *, lr, variant: str = "atc", x0=None):
        if variant not in DGD_VARIANTS:
            raise ValueError(
                f"variant must be one of {DGD_VARIANTS} (adapt-then-combine, "
                f"adapt-with-combine, combine-then-adapt), got {variant!r}."
            )
        self.variant = variant
        self.name = f"dgd-{variant}"
        super().__init__(comm, problem, topology, lr=lr, x0=x0)

    def _params(self) -> dict:
        return {**super()._params(), "variant": self.variant}

    def _step(self) -> None:
        lr = self.lr()
        if self.variant == "atc":
            self.x = self.mix(torch.add(self.x, self.grad(self.x), alpha=-lr))
        elif self.variant == "awc":
            mixed = self.mix(self.x)
            self.x = mixed.sub_(self.grad(self.x), alpha=lr)
        else:
            phi = self.mix(self.x)
            self.x = phi.sub_(self.grad(phi), alpha=lr)

    def fixed_point(self) -> torch.Tensor:
        r"""Where this DGD stops: the node-local ``x_inf`` with ``step(x_inf) = x_inf``, for a
        quadratic problem (affine gradients ``g_i(x) = c_i + H_i x``), a static topology and
        a constant step. Stacked over nodes (``W`` acting on the node index, ``H = diag(H_i)``)
        it solves one linear system of size ``n * dim``:

        * ATC: ``(I - W + lr W H) x = -lr W c``;
        * AWC: ``(I - W + lr H) x = -lr c``;
        * CTA: ``(I - (I - lr H) W) x = -lr c``.

        ``H_i`` and ``c_i`` are read off the problem's exact gradients at ``0`` and at the
        ``dim`` unit vectors, and a gradient at a seeded random point checks that they are
        affine. Gradient noise plays no part (``x_inf`` is the noise-free limit). The problem
        is global, so every rank solves the same system and keeps its own row."""
        p, n, lr = self.problem, self.comm.size, self._constant_lr("fixed_point()")
        if not isinstance(self.topology, Topology):
            raise TopologyError("fixed_point() needs a static topology: with a changing W the "
                                "iteration has no fixed point in general.")
        if not isinstance(p, Problem) or n * p.dim > _FIXED_POINT_MAX:
            raise ValueError(f"fixed_point() needs a declearn Problem with n * dim <= "
                             f"{_FIXED_POINT_MAX} (a dense solve), got {p!r}.")
        dim = p.dim
        c, H = _affine_gradients(p, n, dim)
        W = torch.tensor(np.asarray(self.topology.W, dtype=float))
        M, eye = torch.kron(W, torch.eye(dim, dtype=W.dtype)), torch.eye(n * dim, dtype=W.dtype)
        Hb = torch.block_diag(*H)
        A = {"atc": eye - M + lr * M @ Hb, "awc": eye - M + lr * Hb,
             "cta": eye - (eye - lr * Hb) @ M}[self.variant]
        rhs = -lr * (M @ c.reshape(-1) if self.variant == "atc" else c.reshape(-1))
        x = torch.linalg.solve(A, rhs).reshape((n,) + tuple(p.shape))
        return x[self.comm.rank].to(device=self.x.device, dtype=self.x.dtype)  # node-local

    def _constant_lr(self, who: str) -> float:
        constant = None if self.step_size is None else self.step_size.constant
        if constant is None:
            raise ValueError(f"{who} needs a constant step size: with a schedule the "
                             "iteration changes at every step.")
        return constant


#: Largest n * dim for which DGD.fixed_point builds and solves the dense system.
_FIXED_POINT_MAX = 4096


def _affine_gradients(problem, n: int, dim: int):
    """``(c, H)``: ``c`` (n, dim) and ``H`` (n, dim, dim) with ``grad f_i(x) = c_i + H_i x``,
    from ``dim + 1`` exact gradient calls for all nodes; a ValueError if not affine."""
    shape, nodes = tuple(problem.shape), problem.all_nodes
    at = lambda v: problem._grad(v.reshape(shape).expand((n,) + shape).clone(),
                                 nodes).reshape(n, dim).to(torch.float64)
    eye = torch.eye(dim, dtype=torch.float64)
    c = at(torch.zeros(dim, dtype=torch.float64))
    H = torch.stack([at(eye[j]) - c for j in range(dim)], dim=-1)  # H[i, :, j]
    z = torch.randn(dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got, affine = at(z), c + H @ z
    if not torch.allclose(got, affine, rtol=1e-8, atol=1e-10 * float(affine.abs().max())):
        raise ValueError("fixed_point() needs a quadratic problem (affine gradients, e.g. "
                         "LeastSquares or RandomQuadratics).")
    return c, H
