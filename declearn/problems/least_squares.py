r"""Distributed least squares: the workhorse of the DGD chapter.

Node i holds ``m`` samples ``(A_i, b_i)``, ``A_i`` of shape ``(m, d)``, and

    f_i(x) = 1/(2m) ||A_i x - b_i||^2,      grad f_i(x) = A_i^T (A_i x - b_i) / m.
"""

from __future__ import annotations

import math

import torch

from declearn.problems.base import Problem, check_choice, check_count, check_real, matvec

__all__ = ["LeastSquares", "SPLITS"]

SPLITS = ("heterogeneous", "identical")


class LeastSquares(Problem):
    r"""``f(x) = (1/n) sum_i 1/(2m) ||A_i x - b_i||^2`` with data drawn from ``seed``.

    How the data is made (everything float64, from one ``torch.Generator`` seeded by ``seed``,
    so every MPI rank builds the same problem):

    * ``A_i`` has i.i.d. standard normal entries;
    * a common centre ``x_c ~ N(0, I_d)``, and node i's own minimiser
      ``xhat_i = x_c + heterogeneity * v_i`` with ``v_i ~ N(0, I_d / d)``, so ``heterogeneity``
      is the root-mean-square distance of the node minimisers from the centre;
    * ``b_i = A_i xhat_i + e_i`` where ``e_i`` is ``N(0, noise^2 I_m)`` label noise with its
      component in the column space of ``A_i`` removed: the noise is the part of the labels
      *no* model explains, so it raises ``f*`` but moves no minimiser (``f_i(x) =
      1/(2m) ||A_i (x - xhat_i)||^2 + ||e_i||^2 / (2m)``; with ``m <= d`` it vanishes).

    Consequently the gradients at the optimum are linear in the knob: ``b^2`` (the
    :attr:`heterogeneity` property, ``(1/n) sum_i ||grad f_i(x*)||^2``) is exactly
    ``heterogeneity**2`` times a constant fixed by the seed, and is 0 at ``heterogeneity=0``
    (every node then minimised by ``x_c``). The knob itself is kept as ``spread``.

    ``split="identical"``: every node holds node 0's data (stored once and shared), so
    ``b^2 = 0`` and ``heterogeneity`` is ignored; this needs ``m >= d`` for a unique ``x*``.

    ``x_star`` solves the normal equations of the stacked problem (Cholesky, refined twice
    on the true residual); ``smoothness = max_i ||A_i||_2^2 / m`` and ``strong_convexity`` is the
    smallest eigenvalue of the Hessian ``(1/(n m)) sum_i A_i^T A_i``.

    Oracles: with ``d <= m`` the gradient uses the cheaper centred form ``grad f_i(x) =
    g_i* + H_i (x - x*)`` with ``H_i = A_i^T A_i / m`` and ``g_i* = grad f_i(x*)`` (one
    d x d product per node; the loss in the same form keeps ``f(x) - f*`` accurate down to
    round-off in ``x - x*``); otherwise it uses ``A_i`` directly (two m x d products).

    Data attributes: ``A`` (k, m, d), ``b`` (k, m) and ``minimisers`` (k, d: the ``xhat_i``),
    with k = n, or k = 1 for the identical split (one copy every node shares).
    """

    name = "least squares"

    def __init__(self, n: int, d: int = 10, m: int = 20, *, heterogeneity: float = 1.0,
                 split: str = "heterogeneous", noise: float = 0.1, sigma: float = 0.0,
                 seed: int = 0):
        d = check_count(d, "d (the dimension of x)")
        super().__init__(n, (d,), sigma=sigma, seed=check_count(seed, "seed", 0))
        self.m = check_count(m, "m (samples per node)")
        self.spread = check_real(heterogeneity, "heterogeneity (spread of the node minimisers)")
        self.split = check_choice(split, "split", SPLITS)
        self.noise = check_real(noise, "noise (label noise std)")
        if self.split == "identical" and self.m < d:
            raise ValueError(
                f"With split='identical' every node holds the same m={self.m} samples, fewer "
                f"than d={d}: x* is not unique. Use m >= d, or split='heterogeneous'."
            )

        gen = torch.Generator().manual_seed(self.seed)
        k = self.n if self.split == "heterogeneous" else 1  # nodes with their own data
        f64 = torch.float64
        A = torch.randn((k, self.m, d), generator=gen, dtype=f64)
        center = torch.randn(d, generator=gen, dtype=f64)
        v = torch.randn((k, d), generator=gen, dtype=f64) / math.sqrt(d)
        e = torch.randn((k, self.m), generator=gen, dtype=f64) * self.noise
        Q = torch.linalg.qr(A).Q  # (k, m, min(m, d)): an orthonormal basis of range(A_i)
        e = e - matvec(Q, matvec(Q.mT, e))
        shared = self.split == "identical"
        self.minimisers = center.expand(1, d).clone() if shared else center + self.spread * v
        self.A, self.b = A, matvec(A, self.minimisers) + e
        self._solve()

    # ----------------------------------------------------------------- optimum
    def _solve(self) -> None:
        A, b, (d,) = self.A, self.b, self.shape
        rows, rhs = A.reshape(-1, d), b.reshape(-1)
        gram = rows.T @ rows / rows.shape[0]  # the Hessian of f
        eig = torch.linalg.eigvalsh(gram)
        if not eig[0] > 1e-10 * eig[-1]:
            raise ValueError(
                f"The {rows.shape[0]} samples in total do not determine x* in dimension {d} "
                "(the Hessian is singular): use more samples per node (m) or more nodes."
            )
        chol = torch.linalg.cholesky(gram)
        x = torch.zeros(d, dtype=gram.dtype)
        for _ in range(3):  # normal equations, then iterative refinement on the true residual
            step = rows.T @ (rows @ x - rhs) / rows.shape[0]
            x = x - torch.cholesky_solve(step.unsqueeze(-1), chol).squeeze(-1)
        self.x_star = x
        self.strong_convexity = float(eig[0])
        self.smoothness = float(torch.linalg.matrix_norm(A, ord=2).max() ** 2 / self.m)
        r = matvec(A, x.expand(A.shape[0], d)) - b
        self._f_nodes = r.pow(2).sum(-1) / (2 * self.m)  # f_i(x*), (k,)
        self.f_star = float(self._f_nodes.mean())
        self._centred = d <= self.m
        if self._centred:
            self._H = A.mT @ A / self.m
            self._g_star = matvec(A.mT, r) / self.m

    def _data(self) -> dict[str, torch.Tensor]:
        if self._centred:
            return {"H": self._H, "g": self._g_star, "f": self._f_nodes, "x": self.x_star}
        return {"A": self.A, "b": self.b}

    # ----------------------------------------------------------------- oracles
    def _grad(self, x: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        t = self._data_like(x)
        if self._centred:
            return self._rows(t["g"], nodes) + matvec(self._rows(t["H"], nodes), x - t["x"])
        A = self._rows(t["A"], nodes)
        return matvec(A.mT, matvec(A, x) - self._rows(t["b"], nodes)) / self.m

    def _loss(self, x: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        t = self._data_like(x)
        if self._centred:
            e = x - t["x"]
            H, g = self._rows(t["H"], nodes), self._rows(t["g"], nodes)
            quad = (g + 0.5 * matvec(H, e)).mul(e).sum(-1)
            return self._rows(t["f"], nodes) + quad
        A = self._rows(t["A"], nodes)
        return (matvec(A, x) - self._rows(t["b"], nodes)).pow(2).sum(-1) / (2 * self.m)

    def __repr__(self) -> str:
        return (f"<LeastSquares n={self.n} d={self.shape[0]} m={self.m} split={self.split} "
                f"heterogeneity={self.spread:g} noise={self.noise:g} sigma={self.sigma:g}>")
