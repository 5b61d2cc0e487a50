r"""Two kinds of node: a heterogeneous problem whose curvature is correlated with the data.

    f_i(x) = a_i / 2 ||x - c_i||^2,    a_i = 1 + kappa s_i,    grad f_i(x*) = zeta s_i u,

with ``s_i = +1`` on half the nodes (stiff) and ``-1`` on the other half (soft). The stiff
nodes pull one way at the optimum, the soft ones the other, so in decentralized SGD the nodes'
disagreement leaks into the averaged model *systematically*: the transient stage grows with n
(chapter 04 and ``bench/bench_transient.py`` measure it). With independent curvatures and
minimisers (:class:`~declearn.problems.RandomQuadratics`) the leak is a sum of terms of random
sign, and the measured transient follows the draw of the data more than n.
"""

from __future__ import annotations

import numpy as np
import torch

from declearn.problems.base import Problem, check_count, check_real

__all__ = ["TwoTypeQuadratics"]


class TwoTypeQuadratics(Problem):
    r"""``f_i(x) = a_i / 2 ||x - c_i||^2``: half the nodes stiff (``a_i = 1 + kappa``), half
    soft (``1 - kappa``), placed by a seeded permutation; ``grad f_i(x*) = zeta s_i u``
    (``s_i = +1`` stiff, ``-1`` soft, ``u`` a unit vector; one node with ``s = 0, a = 1``
    when n is odd), so ``sum_i grad f_i(x*) = 0`` and ``b^2 = zeta^2`` (``(n-1)/n zeta^2``
    for odd n). ``grad f_i(x) = zeta s_i u + a_i (x - x*)``. Every f_i is
    ``(1 + kappa)``-smooth and f is 1-strongly convex (mean curvature 1).

    ``sigma``: gradient noise with ``E||noise||^2 = sigma^2`` (``sigma / sqrt(d)`` per
    coordinate, as for every :class:`~declearn.problems.Problem`); ``seed``
    places the node types and draws ``u`` and ``x*`` (and seeds the noise)."""

    name = "two-type quadratics"

    def __init__(self, n: int, d: int = 5, *, zeta: float = 3.0, kappa: float = 0.5,
                 sigma: float = 1.0, seed: int = 0):
        super().__init__(n, (check_count(d, "d"),), sigma=sigma,
                         seed=check_count(seed, "seed", 0))
        zeta, kappa = check_real(zeta, "zeta"), check_real(kappa, "kappa")
        if not kappa < 1:
            raise ValueError(f"kappa must be in [0, 1) (curvatures 1 +- kappa > 0), got {kappa}.")
        s = np.zeros(self.n)
        s[: self.n // 2], s[self.n // 2: 2 * (self.n // 2)] = 1.0, -1.0
        s = np.random.default_rng(self.seed).permutation(s)
        gen = torch.Generator().manual_seed(self.seed)
        u = torch.randn(d, generator=gen, dtype=torch.float64)
        self.x_star = torch.randn(d, generator=gen, dtype=torch.float64)
        self.signs = torch.as_tensor(s)
        self.curvature = 1.0 + kappa * self.signs
        self._g_star = zeta * self.signs[:, None] * (u / u.norm())
        self.smoothness, self.strong_convexity = 1.0 + kappa, 1.0
        self.f_star = float((self._g_star.pow(2).sum(-1) / (2 * self.curvature)).mean())

    def _data(self) -> dict[str, torch.Tensor]:
        return {"g": self._g_star, "a": self.curvature, "x": self.x_star}

    def _grad(self, x, nodes):
        t = self._data_like(x)
        return self._rows(t["g"], nodes) + self._rows(t["a"], nodes)[:, None] * (x - t["x"])

    def _loss(self, x, nodes):
        t = self._data_like(x)
        e, a, g = x - t["x"], self._rows(t["a"], nodes), self._rows(t["g"], nodes)
        const = g.pow(2).sum(-1) / (2 * a)  # f_i(x*), with c_i = x* - g_i* / a_i
        return const + (g * e).sum(-1) + 0.5 * a * e.pow(2).sum(-1)
