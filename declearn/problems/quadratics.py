r"""The random quadratics of the RelaySGD paper (Vogels et al., NeurIPS 2021, appendix B.4).

    f_i(x) = 1/2 ||A_i x - b_i||^2,      grad f_i(x) = A_i^T (A_i x - b_i).

The paper's code writes ``f_i = ||A_i x - b_i||^2`` but uses the gradient above, without the
factor 2; we keep the factor 1/2 so that loss and gradient agree. Its gradients (hence its
``zeta^2``, learning rates and plateaus) are the same as ours; its losses are twice ours.
"""

from __future__ import annotations

import math

import torch

from declearn.problems.base import Problem, check_count, check_real, matvec

__all__ = ["RandomQuadratics"]


class RandomQuadratics(Problem):
    r"""Random quadratics with a prescribed heterogeneity ``zeta^2`` and initial distance ``r0``.

    Data (float64, from one ``torch.Generator`` seeded by ``seed``):

    * ``A_i`` (d x d) starts as a standard normal matrix. ``mu=None``: it is rescaled to
      spectral norm ``L``. Otherwise its *singular values* are replaced by
      ``linspace(mu, L, d)`` (its singular vectors kept). So ``mu`` and ``L`` are about the
      singular values of ``A_i``; the Hessian ``A_i^T A_i`` of ``f_i`` has eigenvalues
      ``linspace(mu, L, d)**2``: every ``f_i``, and ``f``, is ``L^2``-smooth and
      ``mu^2``-strongly convex (``smoothness = L**2``, ``strong_convexity = mu**2``; with
      ``mu=None`` the latter is the smallest eigenvalue of ``f``'s Hessian).
    * Directions ``o_i ~ N(0, I_d)``, re-centred to ``delta_i = o_i - xhat`` where ``xhat``
      minimises ``sum_i ||A_i (x - o_i)||^2``, so that ``sum_i A_i^T A_i delta_i = 0``.
    * ``x* = r0 u / ||u||`` with ``u ~ N(0, I_d)``, and ``b_i = A_i (x* + s delta_i)``: node
      i's own minimiser is ``x* + s delta_i``, the global one is ``x*``, and
      ``grad f_i(x*) = -s A_i^T A_i delta_i``. Since this is linear in ``s``, the scale that
      gives ``zeta^2 = (1/n) sum_i ||grad f_i(x*)||^2 = heterogeneity`` is closed-form:
      ``s = sqrt(heterogeneity / ((1/n) sum_i ||A_i^T A_i delta_i||^2))`` (the paper's code
      bisects for it). ``heterogeneity=0`` gives every node the minimiser ``x*``.

    The initial point is 0, so ``||x0 - x*|| = r0``. ``x_star`` is then re-solved from the
    stored ``A_i, b_i`` (so it is their minimiser to round-off); :attr:`heterogeneity` is
    ``zeta^2`` measured on the data. Gradient noise ``sigma`` is the base class's:
    ``sigma / sqrt(d) * N(0, I_d)`` per node and call, ``E||noise||^2 = sigma^2``.

    Oracles use the centred form ``grad f_i(x) = g_i* + H_i (x - x*)``, ``f_i(x) = f_i* +
    g_i*^T e + e^T H_i e / 2`` (``e = x - x*``, ``H_i = A_i^T A_i``): one d x d product per
    node, and ``f(x) - f*`` stays accurate down to round-off in ``e``.

    Data attributes: ``A`` (n, d, d), ``b`` (n, d), ``scale`` (the ``s`` above), ``zeta2``,
    ``mu``, ``L``, ``r0``.

    Paper settings: d=10, mu=0.5, L=1, r0 in {10, 100}, zeta^2 in {0, 0.01, 0.1, 1, 10},
    sigma in {0, 0.05, 0.1}.
    """

    name = "random quadratics"

    def __init__(self, n: int, d: int = 10, *, heterogeneity: float = 1.0, sigma: float = 0.0,
                 mu: float | None = None, L: float = 1.0, r0: float = 1.0, seed: int = 0):
        d = check_count(d, "d (the dimension of x)")
        super().__init__(n, (d,), sigma=sigma, seed=check_count(seed, "seed", 0))
        self.zeta2 = check_real(heterogeneity, "heterogeneity (zeta^2)")
        self.L = check_real(L, "L (largest singular value of A_i)", strict=True)
        if mu is not None:
            mu = check_real(mu, "mu (smallest singular value of A_i)", strict=True)
            if mu > self.L:
                raise ValueError(f"mu must be at most L={self.L:g}, got mu={mu:g}.")
        self.mu = mu
        self.r0 = check_real(r0, "r0 (distance from the initial point 0 to x*)")
        if self.n == 1 and self.zeta2 > 0:
            raise ValueError("A single node always has zero gradient at the optimum: use "
                             "heterogeneity=0 with n=1, or more nodes.")

        gen = torch.Generator().manual_seed(self.seed)
        f64 = torch.float64
        G = torch.randn((self.n, d, d), generator=gen, dtype=f64)
        if mu is None:
            A = G * (self.L / torch.linalg.matrix_norm(G, ord=2))[:, None, None]
        else:
            U, _, Vh = torch.linalg.svd(G)
            s = torch.linspace(self.L, mu, d, dtype=f64)  # descending, as svd orders them
            A = U * s @ Vh
        o = torch.randn((self.n, d), generator=gen, dtype=f64)
        u = torch.randn(d, generator=gen, dtype=f64)

        H = A.mT @ A
        hessian = H.mean(0)
        xhat = torch.linalg.solve(hessian, matvec(H, o).mean(0))
        delta = o - xhat
        pull = matvec(H, delta)  # -grad f_i(x*) per unit of scale
        spread2 = float(pull.pow(2).sum(-1).mean())
        scale = math.sqrt(self.zeta2 / spread2) if self.zeta2 > 0 else 0.0
        target = self.r0 * u / u.norm()
        self.A, self.b = A, matvec(A, target + scale * delta)
        self.scale = scale

        # x* from the stored data (normal equations, refined once on the true residual)
        x = target.clone()
        for _ in range(2):
            x = x - torch.linalg.solve(hessian, matvec(A.mT, matvec(A, x) - self.b).mean(0))
        self.x_star = x
        r = matvec(A, x.expand(self.n, d)) - self.b
        self._H, self._g_star = H, matvec(A.mT, r)
        self._f_nodes = 0.5 * r.pow(2).sum(-1)
        self.f_star = float(self._f_nodes.mean())
        self.smoothness = self.L ** 2
        self.strong_convexity = (mu ** 2 if mu is not None
                                 else float(torch.linalg.eigvalsh(hessian)[0]))

    def _data(self) -> dict[str, torch.Tensor]:
        return {"H": self._H, "g": self._g_star, "f": self._f_nodes, "x": self.x_star}

    def _grad(self, x: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        t = self._data_like(x)
        return self._rows(t["g"], nodes) + matvec(self._rows(t["H"], nodes), x - t["x"])

    def _loss(self, x: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        t = self._data_like(x)
        e = x - t["x"]
        quad = (self._rows(t["g"], nodes) + 0.5 * matvec(self._rows(t["H"], nodes), e)).mul(e)
        return self._rows(t["f"], nodes) + quad.sum(-1)

    def __repr__(self) -> str:
        mu = "None" if self.mu is None else f"{self.mu:g}"
        return (f"<RandomQuadratics n={self.n} d={self.shape[0]} zeta2={self.zeta2:g} "
                f"mu={mu} L={self.L:g} r0={self.r0:g} sigma={self.sigma:g}>")
