r"""The numerical core of rho, of step products and of the mean square contraction.

With ``J = 11^T/n`` and row i of W = receiver:

- static: ``rho = ||W - J||_2``;
- periodic (period p): ``rho = ||W(p-1) ... W(0) - J||_2 ^ (1/p)``;
- random: ``rho = sqrt(lambda_max(P E[W^T W] P))``, ``P = I - J`` (the mean square
  contraction), exact when the family knows it (``_exact_mean_square_contraction``), else
  averaged over :data:`DEFAULT_SAMPLES` steps.

Fast paths, no loops over nodes: a circulant W (``shifts``) has eigenvalues
``lambda_f = sum_s w_s exp(-2 pi i f s / n)`` (one FFT) and is normal, so
``rho = max(|lambda_0 - 1|, max_{f != 0} |lambda_f|)``; a symmetric W uses ``eigvalsh`` (dense
up to :data:`DENSE_SYMMETRIC_MAX`, Lanczos beyond); any other W the dense 2-norm up to
:data:`DENSE_GENERAL_MAX` and ``svds`` of ``x -> W x - mean(x) 1`` beyond.

These functions take any object with a topology's attributes (``n``, ``is_dynamic``,
``period``, ``at``, ``shifts``, ``W``, the CSR arrays, ``memo``) and import no topology class:
the classes call them for ``.rho`` and ``.product()``, and :mod:`declearn.topology.analysis`
wraps them for users (with the conversions and checks of its arguments).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from declearn.errors import TopologyError

__all__ = [
    "rho",
    "circulant_spectrum",
    "product",
    "mean_square_contraction",
    "gram_lambda_max",
    "csr",
]

#: Largest n for a dense symmetric eigensolve (``eigvalsh``); beyond it, Lanczos.
DENSE_SYMMETRIC_MAX = 2048
#: Largest n for a dense 2-norm (SVD) of a non-symmetric matrix; beyond it, ``svds``.
DENSE_GENERAL_MAX = 1024
#: A period product within this distance of J counts as exact averaging (rho = 0): the FFT
#: of ``(1 + exp(-i pi))/2`` is 6e-17, not 0, and ``6e-17 ** (1/p)`` would not look like 0.
EXACT_ATOL = 1e-12
#: Steps that stand for a random sequence when no exact formula is known.
DEFAULT_SAMPLES = 1000


# ---------------------------------------------------------------------- rho
def rho(topology) -> float:
    """rho of a static, periodic or random topology (see the module docstring)."""
    if topology.is_dynamic:
        if topology.period is None:
            return math.sqrt(max(mean_square_contraction(topology), 0.0))
        return _period_rho(topology)
    return _static_rho(topology)


def circulant_spectrum(topology) -> np.ndarray:
    """``lambda_f = sum_s w_s exp(-2 pi i f s / n)``, ``f = 0..n-1``, of a topology with
    ``shifts`` (read-only, kept on the topology)."""
    return topology.memo("spectrum", lambda: _fft_of_shifts(topology.n, topology.shifts))


def _fft_of_shifts(n: int, shifts) -> np.ndarray:
    c = np.zeros(n)
    for s, w in shifts.items():
        c[s % n] += w
    lam = np.fft.fft(c)
    lam.flags.writeable = False
    return lam


def _static_rho(t) -> float:
    n = t.n
    if t.shifts is not None:
        lam = circulant_spectrum(t)
        return float(max(abs(lam[0] - 1.0), np.abs(lam[1:]).max(initial=0.0)))
    if t.is_symmetric:
        if n <= DENSE_SYMMETRIC_MAX:
            return float(np.abs(np.linalg.eigvalsh(t.W - 1.0 / n)).max())
        return _lanczos_norm(_minus_J_operator(t), n)
    if n <= DENSE_GENERAL_MAX:
        return float(np.linalg.norm(t.W - 1.0 / n, 2))
    return _svds_norm(_minus_J_operator(t), n)


def _period_rho(topology) -> float:
    p = topology.period
    steps = [topology.at(k) for k in range(p)]
    n = topology.n
    if all(s.shifts is not None for s in steps):
        lam = np.prod([circulant_spectrum(s) for s in steps], axis=0)
        dev = float(max(abs(lam[0] - 1.0), np.abs(lam[1:]).max(initial=0.0)))
    elif n <= DENSE_GENERAL_MAX:
        dev = float(np.linalg.norm(dense_product(steps, n) - 1.0 / n, 2))
    else:
        mats = [csr(s) for s in steps]

        def matvec(x):
            m = x.mean()
            for A in mats:
                x = A @ x
            return x - m

        def rmatvec(y):
            m = y.mean()
            for A in reversed(mats):
                y = A.T @ y
            return y - m

        dev = _svds_norm(_operator(n, matvec, rmatvec), n)
    return 0.0 if dev < EXACT_ATOL else dev ** (1.0 / p)


# ---------------------------------------------------------------------- products
def product(topology, start: int = 0, length: int | None = None) -> np.ndarray:
    """Dense ``W(start + length - 1) @ ... @ W(start)``: the map applied by ``length`` gossip
    steps from step ``start``. ``length`` defaults to the period (1 for a static topology);
    a random sequence (period None) needs an explicit ``length``."""
    if isinstance(start, bool) or not isinstance(start, numbers.Integral) or start < 0:
        raise TopologyError(f"start must be a non-negative integer step, got {start!r}.")
    if length is None:
        if topology.period is None:
            raise TopologyError(
                f"{topology.name} is a random sequence with no period: pass length=, the "
                "number of steps to multiply."
            )
        length = topology.period
    if isinstance(length, bool) or not isinstance(length, numbers.Integral) or length < 0:
        raise TopologyError(f"length must be a non-negative integer, got {length!r}.")
    return dense_product([topology.at(k) for k in range(start, start + length)], topology.n)


def dense_product(steps: list, n: int) -> np.ndarray:
    """``steps[-1].W @ ... @ steps[0].W`` as a dense n x n array (the identity for no step)."""
    out = np.eye(n)
    for t in steps:
        out = csr(t) @ out
    return np.asarray(out)


# ---------------------------------------------------------------------- mean square
def mean_square_contraction(topology, *, samples: int | None = None) -> float:
    r"""``lambda_max(P E[W^T W] P)`` over a uniformly random step (see
    :func:`declearn.topology.analysis.mean_square_contraction`); ``samples`` is assumed to be a
    positive int or None here."""
    n = topology.n
    if n == 1:
        return 0.0
    if not topology.is_dynamic:
        if topology.shifts is not None:
            return float((np.abs(circulant_spectrum(topology)[1:]) ** 2).max())
        if topology.is_row_stochastic:
            return topology.rho ** 2
        return float(np.linalg.norm(topology.W - topology.W.mean(axis=1, keepdims=True), 2)) ** 2
    if topology.period is not None:
        return gram_lambda_max([topology.at(k) for k in range(topology.period)], n)
    if samples is None:
        exact = topology._exact_mean_square_contraction()
        if exact is not None:
            return float(exact)
        samples = DEFAULT_SAMPLES
    return gram_lambda_max([topology.at(k) for k in range(samples)], n)


def gram_lambda_max(steps: list, n: int) -> float:
    """``lambda_max(P G P)`` with ``G = mean_k W_k^T W_k``."""
    if all(s.shifts is not None for s in steps):
        g = np.mean([np.abs(circulant_spectrum(s)) ** 2 for s in steps], axis=0)
        return float(g[1:].max())
    mats = [csr(s) for s in steps]
    G = mats[0].T @ mats[0]
    for A in mats[1:]:
        G = G + A.T @ A
    G = (G / len(steps)).tocsr()
    if n <= DENSE_SYMMETRIC_MAX:
        Gd = G.toarray()
        Gd -= Gd.mean(axis=0, keepdims=True)
        Gd -= Gd.mean(axis=1, keepdims=True)
        return float(np.linalg.eigvalsh((Gd + Gd.T) / 2.0)[-1])

    def matvec(x):
        x = x - x.mean()
        y = G @ x
        return y - y.mean()

    from scipy.sparse.linalg import eigsh

    val = eigsh(_operator(n, matvec, matvec), k=1, which="LA", return_eigenvectors=False,
                v0=_v0(n), ncv=min(n, 64))
    return float(val[0])


# ---------------------------------------------------------------------- helpers
def csr(t):
    """W of a static topology as a scipy CSR matrix (kept on the topology)."""
    from scipy.sparse import csr_matrix

    return t.memo("csr", lambda: csr_matrix((t.data, t.indices, t.indptr), shape=(t.n, t.n)))


def _operator(n, matvec, rmatvec):
    from scipy.sparse.linalg import LinearOperator

    return LinearOperator((n, n), matvec=matvec, rmatvec=rmatvec, dtype=np.float64)


def _minus_J_operator(t):
    """``x -> (W - J) x = W x - mean(x) 1`` and its transpose, without forming J."""
    A = csr(t)
    return _operator(t.n, lambda x: A @ x - x.mean(), lambda y: A.T @ y - y.mean())


def _v0(n: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal(n)


def _lanczos_norm(op, n: int) -> float:
    from scipy.sparse.linalg import eigsh

    val = eigsh(op, k=1, which="LM", return_eigenvectors=False, v0=_v0(n), ncv=min(n, 64),
                maxiter=100 * n)
    return float(np.abs(val).max())


def _svds_norm(op, n: int) -> float:
    from scipy.sparse.linalg import svds

    val = svds(op, k=1, which="LM", return_singular_vectors=False, v0=_v0(n), ncv=min(n, 64),
               maxiter=100 * n)
    return float(np.max(val))
