r"""Distributed l2-regularised logistic regression, optionally with a non-convex regulariser.

Labels are in {-1, +1}. Node i holds samples ``(a_ik, y_ik)`` with weights ``w_ik`` (``1/m_i``
for its ``m_i`` samples; zero for the padding that makes nodes with fewer samples fit one
tensor), and

    f_i(x) = sum_k w_ik log(1 + exp(-y_ik a_ik^T x)) + reg/2 ||x||^2
             + nonconvex_reg * sum_j x_j^2 / (1 + x_j^2),

    grad f_i(x) = -sum_k w_ik y_ik sigmoid(-y_ik a_ik^T x) a_ik + reg x
                  + nonconvex_reg * 2 x / (1 + x^2)^2          (elementwise in the last term).

The last term is the bounded non-convex regulariser of the EquiTopo experiments; its second
derivative lies in [-1/2, 2], so with ``nonconvex_reg > 0`` the problem is non-convex unless
``reg`` outweighs ``nonconvex_reg / 2``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from declearn.problems.base import Problem, check_choice, check_count, check_real, matvec
from declearn.problems.partition import partition as _partition

__all__ = ["LogisticRegression"]

SPLITS = ("heterogeneous", "identical")


_EPS = float(torch.finfo(torch.float64).eps)


def _softplus(t: torch.Tensor) -> torch.Tensor:
    """``log(1 + exp(t))`` to full precision for every t (torch's softplus switches to ``t``
    past a threshold, an error of ``exp(-20)`` that would show in ``f(x) - f*``)."""
    return t.clamp(min=0) + torch.log1p(torch.exp(-t.abs()))


class LogisticRegression(Problem):
    r"""Binary logistic regression over n nodes (see the module docstring for ``f_i``).

    Synthetic data (float64, from one ``torch.Generator`` seeded by ``seed``): features
    ``a_ik ~ N(0, I_d)``; node i labels its samples with its own *teacher*
    ``w_i = w_c + heterogeneity * v_i`` (``w_c, v_i ~ N(0, I_d / d)``): ``y_ik = +1`` with
    probability ``sigmoid(a_ik^T w_i)``, else -1. ``heterogeneity`` is thus the
    root-mean-square distance of the teachers from the common one (kept as ``spread``); the
    node optima drift apart as it grows, and ``b^2`` (the :attr:`heterogeneity` property)
    grows with it. At 0, ``b^2`` is small but not 0: the nodes' finite samples still differ.
    ``teacher_scale=s`` draws ``w_c, v_i ~ N(0, s^2 I_d)`` instead of ``N(0, I_d / d)``
    (``s = 1`` is the EquiTopo experiment's, see :meth:`equitopo`).
    ``split="identical"``: every node holds node 0's data (stored once), ``b^2 = 0``.
    Real data: :meth:`from_data`.

    ``x_star``: Newton's method on the full objective in float64, with backtracking, until
    ``||grad f|| <= 1e-13 max(1, ||grad f(0)||)``. Convex case (``nonconvex_reg=0``, ``reg >
    0``): the unique minimiser. With ``nonconvex_reg > 0``: a *stationary point* (the local
    minimiser damped Newton reaches from 0), not necessarily the global minimiser; ``f_star``
    is the value there. ``smoothness = max_i lambda_max(sum_k w_ik a_ik a_ik^T) / 4 + reg +
    2 nonconvex_reg``; ``strong_convexity = reg - nonconvex_reg / 2`` when positive (a lower
    bound), else None.

    Data attributes: ``A`` (k, m, d) features, ``y`` (k, m) labels in {-1, +1}, ``weights``
    (k, m), with k = n, or k = 1 for the identical split (one copy every node shares);
    ``teachers`` (k, d) for synthetic data; ``parts`` and ``classes`` (the original label of
    -1 and of +1) for :meth:`from_data`.
    """

    name = "logistic regression"

    def __init__(self, n: int, d: int = 10, m: int = 50, *, heterogeneity: float = 1.0,
                 split: str = "heterogeneous", reg: float = 1e-2, nonconvex_reg: float = 0.0,
                 sigma: float = 0.0, seed: int = 0, teacher_scale: float | None = None):
        d = check_count(d, "d (the dimension of x)")
        m = check_count(m, "m (samples per node)")
        spread = check_real(heterogeneity, "heterogeneity (spread of the node teachers)")
        split = check_choice(split, "split", SPLITS)
        seed = check_count(seed, "seed", 0)
        gen = torch.Generator().manual_seed(seed)
        k = check_count(n, "n (number of nodes)") if split == "heterogeneous" else 1
        f64 = torch.float64
        A = torch.randn((k, m, d), generator=gen, dtype=f64)
        w_c = torch.randn(d, generator=gen, dtype=f64)
        v = torch.randn((k, d), generator=gen, dtype=f64)
        if teacher_scale is None:  # the default N(0, I_d / d), drawn as always
            w_c, v = w_c / math.sqrt(d), v / math.sqrt(d)
        else:
            scale = check_real(teacher_scale, "teacher_scale (std of the teachers' entries)")
            w_c, v = w_c * scale, v * scale
        u = torch.rand((k, m), generator=gen, dtype=f64)
        teachers = w_c.expand(1, d).clone() if split == "identical" else w_c + spread * v
        y = torch.where(u < torch.sigmoid(matvec(A, teachers)), 1.0, -1.0).to(f64)
        weights = torch.full((k, m), 1.0 / m, dtype=f64)
        self.spread, self.split, self.teachers = spread, split, teachers
        self._setup(n, A, y, weights, reg=reg, nonconvex_reg=nonconvex_reg, sigma=sigma,
                    seed=seed)

    @classmethod
    def equitopo(cls, n: int = 300, *, d: int = 10, m: int = 1000, heterogeneity: float = 0.2,
                 nonconvex_reg: float = 1e-3, sigma: float | None = None,
                 seed: int = 0) -> LogisticRegression:
        r"""The non-convex logistic regression of the EquiTopo experiments (Song et al.,
        NeurIPS 2022: gradient tracking over OD-EquiDyn against the one-peer exponential
        graph at n = 300), with the constants of the authors' notebook
        ``DSGT_nonconvex.ipynb`` (kexinjinnn/EquiTopo):

            f(x) = (1/n) sum_i (1/m) sum_k log(1 + exp(-y_ik a_ik^T x))
                   + R sum_j x_j^2 / (1 + x_j^2),       R = 1e-3, no l2 term;

        d = 10, m = 1000 samples per node, features ``a_ik ~ N(0, I_d)``, node i's teacher
        ``w_i = w_ref + 0.2 v_i`` with ``w_ref, v_i ~ N(0, I_d)`` (``teacher_scale=1``), labels
        drawn from the logistic model. The notebook adds ``1e-6 N(0, I_d)`` to every gradient:
        ``sigma`` defaults to that, ``1e-6 sqrt(d)`` (``E||noise||^2 = sigma^2``). Our data
        come from ``seed`` (theirs from numpy's seed 100), so the numbers differ, not the
        distribution. Their gradient of the regulariser sums ``2 R x_j / (1 + x_j^2)^2`` over
        j into one scalar added to every coordinate (the notebook's formula says the same);
        we use the elementwise gradient of the stated ``r(x)``. x* here is the stationary
        point Newton's method reaches from 0 (the notebook reports the gradient norm of the
        averaged model, which needs no x*)."""
        sigma = 1e-6 * math.sqrt(d) if sigma is None else sigma
        return cls(n, d, m, heterogeneity=heterogeneity, split="heterogeneous", reg=0.0,
                   nonconvex_reg=nonconvex_reg, sigma=sigma, seed=seed, teacher_scale=1.0)

    @classmethod
    def from_data(cls, X, y, n: int, *, partition: str = "iid", alpha: float = 1.0,
                  balanced: bool = True, reg: float = 1e-2, nonconvex_reg: float = 0.0,
                  sigma: float = 0.0, seed: int = 0) -> LogisticRegression:
        """Logistic regression on real data ``X`` (N x d) with binary labels ``y`` (N,),
        split over n nodes by :func:`declearn.problems.partition` (``"iid"``,
        ``"dirichlet"`` with concentration ``alpha``, or ``"sorted"`` by label).

        ``y`` may hold any two distinct values (e.g. {0, 1}, or digits {3, 8}): the smaller
        becomes -1 and the larger +1. No intercept is added: append a column of ones to
        ``X`` for one. Nodes may hold different numbers of samples (``balanced=False``):
        each averages over its own. E.g. MNIST digits 0 and 1 scaled to [0, 1], as in the
        BlueFog tutorial.
        """
        X = torch.as_tensor(np.asarray(X), dtype=torch.float64)
        labels = np.asarray(y)
        if X.ndim != 2:
            raise ValueError(f"X must be a 2-D array (samples x features), got shape "
                             f"{tuple(X.shape)}.")
        if labels.ndim != 1 or labels.shape[0] != X.shape[0]:
            raise ValueError(f"y must be 1-D with one label per row of X ({X.shape[0]}), got "
                             f"shape {labels.shape}.")
        if not torch.isfinite(X).all():
            raise ValueError("X holds NaN or infinite values; clean or impute them first.")
        classes = np.unique(labels)
        if len(classes) != 2:
            raise ValueError(
                f"Logistic regression needs exactly two classes in y, got {len(classes)} "
                f"({classes[:10].tolist()}); keep two classes (e.g. y in (0, 1)) first."
            )
        n = check_count(n, "n (number of nodes)")
        parts = _partition(labels, n, method=partition, alpha=alpha, seed=seed,
                           balanced=balanced)
        sizes = np.array([len(p) for p in parts])
        if sizes.min() == 0:
            raise ValueError(
                f"The partition left node(s) {np.flatnonzero(sizes == 0).tolist()} without "
                "samples; use balanced=True, a larger alpha, or fewer nodes."
            )
        order = torch.as_tensor(np.concatenate(parts), dtype=torch.long)
        node = torch.as_tensor(np.repeat(np.arange(n), sizes), dtype=torch.long)
        slot = torch.arange(len(order)) - torch.as_tensor(
            np.repeat(np.cumsum(sizes) - sizes, sizes), dtype=torch.long)
        m = int(sizes.max())
        A = torch.zeros((n, m, X.shape[1]), dtype=torch.float64)
        A[node, slot] = X[order]
        signs = torch.as_tensor(np.where(labels == classes[1], 1.0, -1.0))
        Y = torch.ones((n, m), dtype=torch.float64)
        Y[node, slot] = signs[order]
        W = torch.zeros((n, m), dtype=torch.float64)
        W[node, slot] = torch.as_tensor(1.0 / sizes, dtype=torch.float64)[node]
        self = cls.__new__(cls)
        self.spread, self.split, self.teachers = None, f"{partition} partition", None
        self.parts, self.classes = parts, classes
        self._setup(n, A, Y, W, reg=reg, nonconvex_reg=nonconvex_reg, sigma=sigma, seed=seed)
        return self

    def _setup(self, n, A, y, weights, *, reg, nonconvex_reg, sigma, seed) -> None:
        Problem.__init__(self, n, (A.shape[-1],), sigma=sigma, seed=seed)
        self.reg = check_real(reg, "reg (l2 regularisation)")
        self.nonconvex_reg = check_real(nonconvex_reg, "nonconvex_reg")
        self.A, self.y, self.weights = A, y, weights
        self.m = A.shape[1]
        # sum_k w_ik y_ik a_ik folded into one tensor: the hot path then needs A once per side.
        self._yA = y.unsqueeze(-1) * A
        curvature = torch.linalg.matrix_norm(weights.sqrt().unsqueeze(-1) * A, ord=2) ** 2
        self.smoothness = float(curvature.max()) / 4 + self.reg + 2 * self.nonconvex_reg
        mu = self.reg - self.nonconvex_reg / 2
        self.strong_convexity = mu if mu > 0 else None
        self._newton()

    def _data(self) -> dict[str, torch.Tensor]:
        return {"yA": self._yA, "w": self.weights}

    # ----------------------------------------------------------------- oracles
    def _regulariser(self, x: torch.Tensor) -> torch.Tensor:
        sq = x * x
        return 0.5 * self.reg * sq.sum(-1) + self.nonconvex_reg * (sq / (1 + sq)).sum(-1)

    def _regulariser_grad(self, x: torch.Tensor) -> torch.Tensor:
        g = self.reg * x
        if self.nonconvex_reg:
            g = g + (2 * self.nonconvex_reg) * x / (1 + x * x).square()
        return g

    def _loss(self, x: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        t = self._data_like(x)
        margins = matvec(self._rows(t["yA"], nodes), x)  # y_ik a_ik^T x
        data = (self._rows(t["w"], nodes) * _softplus(-margins)).sum(-1)
        return data + self._regulariser(x)

    def _grad(self, x: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        t = self._data_like(x)
        yA = self._rows(t["yA"], nodes)
        coef = self._rows(t["w"], nodes) * torch.sigmoid(-matvec(yA, x))
        return self._regulariser_grad(x) - matvec(yA.mT, coef)

    # ----------------------------------------------------------------- optimum
    def _newton(self, max_iter: int = 200) -> None:
        d = self.shape[0]
        rows = self._yA.reshape(-1, d)
        w = self.weights.reshape(-1) / self._yA.shape[0]  # the full objective's sample weights
        nc = self.nonconvex_reg

        def value(x):
            sq = x * x
            return float((w * _softplus(-(rows @ x))).sum()
                         + 0.5 * self.reg * sq.sum() + nc * (sq / (1 + sq)).sum())

        def gradient(x):
            return self._regulariser_grad(x) - rows.T @ (w * torch.sigmoid(-(rows @ x)))

        x = torch.zeros(d, dtype=torch.float64)
        g = gradient(x)
        tol = 1e-13 * max(1.0, float(g.norm()))
        for _ in range(max_iter):
            if float(g.norm()) <= tol:
                break
            s = torch.sigmoid(rows @ x)
            sq = x * x
            hess = (rows.T * (w * s * (1 - s))) @ rows + torch.diag(
                self.reg + nc * (2 - 6 * sq) / (1 + sq) ** 3)
            low = float(torch.linalg.eigvalsh(hess)[0])
            if low <= 1e-12:  # non-convex region (or no curvature): damp to a descent step
                hess = hess + (1e-6 - low + 1e-6 * abs(low)) * torch.eye(d, dtype=hess.dtype)
            step = -torch.linalg.solve(hess, g)
            f0, slope, t = value(x), float(g @ step), 1.0
            if -slope <= 64 * _EPS * max(1.0, abs(f0)):
                # f cannot resolve the decrease any more: judge the full step by ||grad f||
                g_new = gradient(x + step)
                if not float(g_new.norm()) < float(g.norm()):
                    break
                x, g = x + step, g_new
                continue
            while value(x + t * step) > f0 + 1e-4 * t * slope and t > 1e-12:
                t /= 2
            x_new = x + t * step
            g_new = gradient(x_new)
            if t <= 1e-12 or float(x_new.norm()) > 1e8:
                break
            x, g = x_new, g_new
        if not float(g.norm()) <= max(tol, 1e-11):
            hint = ("without enough regularisation separable data has no minimiser: use "
                    "reg > 0" if float(x.norm()) > 1e6 or self.reg == 0 else
                    "the regularisation is positive and x stayed bounded, so this is a "
                    "numerical failure: please report it with the problem's arguments")
            raise ValueError(
                f"Newton's method did not find a stationary point of {self.name} (||grad f|| = "
                f"{float(g.norm()):.3g} at ||x|| = {float(x.norm()):.3g}); {hint}."
            )
        self.x_star = x
        self.f_star = float(self._loss(x.expand((self.n, d)), self.all_nodes).mean())

    def __repr__(self) -> str:
        how = f"split={self.split}"
        if self.spread is not None:
            how += f" heterogeneity={self.spread:g}"
        return (f"<LogisticRegression n={self.n} d={self.shape[0]} m={self.m} {how} "
                f"reg={self.reg:g} nonconvex_reg={self.nonconvex_reg:g} sigma={self.sigma:g}>")
