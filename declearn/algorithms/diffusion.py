r"""Exact diffusion, D2 and EXTRA: bias correction by remembering the previous iterate.

All three are second-order recursions of the same family,

.. math::  x^{k+1} = M \big(2 x^k - x^{k-1} - lr\,(g(x^k) - g(x^{k-1}))\big)
           \quad\text{(exact diffusion: } M = (I + W)/2\text{; D2: } M = W\text{)},

and EXTRA is ``x^{k+2} = (I + W) x^{k+1} - (I + W)/2 x^k - lr (g(x^{k+1}) - g(x^k))``. At a
consensual ``x^k = x^{k-1} = x*`` the gradient terms cancel, so x* is a fixed point and a
constant step converges exactly. One message and one gradient per iteration.

They need a **static, symmetric, doubly stochastic W**: the correction term assumes the same W
at every step (with time-varying W they can diverge; gradient tracking is the robust choice
there), and their stability rests on the eigenvalues of W (real only when W is symmetric):
exact diffusion and EXTRA mix with ``(I + W)/2``, whose eigenvalues lie in [0, 1]; D2 mixes
with W itself and needs ``lambda_min(W) > -1/3``.
"""

from __future__ import annotations

import numpy as np
import torch

from declearn.algorithms.mixing import GossipMethod
from declearn.errors import TopologyError
from declearn.topology.base import DynamicTopology, Topology

__all__ = ["ExactDiffusion", "D2", "EXTRA", "lambda_min"]

#: Dense eigensolvers up to this n, Lanczos beyond.
_DENSE_EIG_MAX = 2048


class _StaticSymmetric(GossipMethod):
    """Checks shared by ED, D2 and EXTRA: a static, symmetric, doubly stochastic W."""

    mixing = "doubly"

    def __init__(self, comm, problem, topology, *, lr, x0=None):
        if isinstance(topology, DynamicTopology):
            raise TopologyError(
                f"{self.name} needs a static topology, got the dynamic {topology.name}: its "
                "correction term assumes the same W at every step and can diverge when W "
                "changes. Use GradientTracking (or PushDIGing on directed graphs), which works "
                "with time-varying topologies, or pass one static topology."
            )
        super().__init__(comm, problem, topology, lr=lr, x0=x0)
        if not topology.is_symmetric:
            raise TopologyError(
                f"{self.name} needs a symmetric, doubly stochastic W, but {topology.name} is not "
                "symmetric: (I + W)/2 then need not be positive semidefinite and the method can "
                "diverge. Use Metropolis weights on an undirected graph (ring(n), grid(n), "
                "erdos_renyi(n, p=...), apply_weights(n, edges, rule='metropolis')), or "
                "GradientTracking / PushDIGing for directed graphs."
            )


class ExactDiffusion(_StaticSymmetric):
    r"""Exact diffusion (Yuan, Ying, Zhao, Sayed 2019) with ``W_bar = (I + W)/2``:

    ``psi^k = x^k - lr g(x^k)`` (adapt), ``phi^k = psi^k + x^k - psi^{k-1}`` (correct),
    ``x^{k+1} = W_bar phi^k`` (combine), with ``psi^{-1} = x^0``; i.e.
    ``x^{k+1} = W_bar (2 x^k - x^{k-1} - lr (g(x^k) - g(x^{k-1})))``,
    ``x^1 = W_bar (x^0 - lr g(x^0))``. W: static, symmetric, doubly stochastic.
    """

    name = "exact_diffusion"
    _assigns_new_tensors = True

    def __init__(self, comm, problem, topology, *, lr, x0=None):
        super().__init__(comm, problem, topology, lr=lr, x0=x0)
        self.w_bar = topology.lazy()  # (I + W) / 2
        self.psi = self.x  # psi^{-1} = x^0

    def _step(self) -> None:
        psi = torch.add(self.x, self.grad(self.x), alpha=-self.lr())
        phi = torch.add(psi, self.x).sub_(self.psi)
        self.x = self.comm.neighbor_allreduce(phi, self.w_bar)
        self.psi = psi


class D2(_StaticSymmetric):
    r"""D2 (Tang, Lian, Yan, Zhang, Liu 2018): exact diffusion with W in place of (I + W)/2,

    ``x^{k+1} = W (2 x^k - x^{k-1} - lr (g(x^k) - g(x^{k-1})))``, ``x^1 = W (x^0 - lr g(x^0))``,

    computed as ``psi^k = x^k - lr g(x^k)``, ``x^{k+1} = W (psi^k + x^k - psi^{k-1})``,
    ``psi^{-1} = x^0``. W: static, symmetric, doubly stochastic, with ``lambda_min(W) > -1/3``:
    without gradients each eigenvalue lam of W gives the recursion ``z^2 = lam (2 z - 1)``,
    whose roots stay inside the unit circle exactly for ``-1/3 < lam < 1`` (at ``lam = -1/3``
    one root is -1: the disagreement oscillates forever).
    """

    name = "d2"
    _assigns_new_tensors = True

    def __init__(self, comm, problem, topology, *, lr, x0=None):
        super().__init__(comm, problem, topology, lr=lr, x0=x0)
        lam = lambda_min(topology)
        if not lam > -1.0 / 3.0 + 1e-12:
            raise TopologyError(
                f"D2 needs lambda_min(W) > -1/3, but {topology.name} has lambda_min = {lam:.6g}: "
                "without the gradients, D2's recursion x+ = W (2 x - x_prev) has a root of "
                "modulus >= 1 along that eigenvector, so the nodes never agree. Use the lazy "
                "topology topology.lazy() (eigenvalues in [0, 1]) or ExactDiffusion, which "
                "does exactly that."
            )
        self.lambda_min = lam
        self.psi = self.x

    def _step(self) -> None:
        psi = torch.add(self.x, self.grad(self.x), alpha=-self.lr())
        phi = torch.add(psi, self.x).sub_(self.psi)
        self.x = self.mix(phi)
        self.psi = psi


class EXTRA(_StaticSymmetric):
    r"""EXTRA (Shi, Ling, Wu, Yin 2015) with ``W_tilde = (I + W)/2``:

    ``x^1 = W x^0 - lr g(x^0)``;
    ``x^{k+2} = (I + W) x^{k+1} - W_tilde x^k - lr (g(x^{k+1}) - g(x^k))``.

    Since ``(I + W) x^{k+1} - W_tilde x^k = (I + W) z`` with ``z = x^{k+1} - x^k / 2``, one
    message per iteration carries z: ``x^{k+2} = z + W z - lr (g(x^{k+1}) - g(x^k))``.
    W: static, symmetric, doubly stochastic.
    """

    name = "extra"
    _assigns_new_tensors = True

    def __init__(self, comm, problem, topology, *, lr, x0=None):
        super().__init__(comm, problem, topology, lr=lr, x0=x0)
        self.x_prev: torch.Tensor | None = None  # x^k and g(x^k) of the step before
        self.g_prev: torch.Tensor | None = None

    def _step(self) -> None:
        g, lr = self.grad(self.x), self.lr()
        x_prev, g_prev = self.x_prev, self.g_prev
        if x_prev is None or g_prev is None:  # the first step (both are set together)
            x = self.mix(self.x).sub_(g, alpha=lr)
        else:
            z = torch.add(self.x, x_prev, alpha=-0.5)
            x = self.mix(z).add_(z).sub_(g, alpha=lr).add_(g_prev, alpha=lr)
        self.x_prev, self.g_prev, self.x = self.x, g, x


def lambda_min(topology: Topology) -> float:
    """The smallest eigenvalue of a symmetric W (exact for circulant W, dense for
    n <= 2048, Lanczos beyond)."""
    if not isinstance(topology, Topology) or not topology.is_symmetric:
        raise TopologyError("lambda_min needs a static, symmetric Topology.")
    if topology.n == 1:
        return float(topology.W[0, 0])
    if topology.shifts is not None:
        from declearn.topology.analysis import circulant_spectrum

        return float(np.min(circulant_spectrum(topology).real))
    if topology.n <= _DENSE_EIG_MAX:
        return float(np.linalg.eigvalsh(topology.W)[0])
    from scipy.sparse import csr_matrix
    from scipy.sparse.linalg import eigsh

    A = csr_matrix((topology.data, topology.indices, topology.indptr),
                   shape=(topology.n, topology.n))
    return float(eigsh(A, k=1, which="SA", return_eigenvectors=False)[0])
