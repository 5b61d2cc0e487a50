r"""Spectral analysis of topologies: how fast does gossip average?

With ``J = 11^T/n`` and row i of W = receiver:

- **rho** ``= ||W - J||_2`` for a static topology, so ``||W^k x - J x|| <= rho^k ||x - J x||``
  for a doubly stochastic W; ``spectral_gap = 1 - rho``.
- For a **periodic** dynamic topology (period p) the effective per-step rate is
  ``rho = ||W(p-1) ... W(0) - J||_2 ^ (1/p)`` (one period from step 0): the one-peer
  exponential graph with ``n = 2^tau`` has rho = 0.
- For a **random** sequence (EquiDyn) it is the root-mean-square rate
  ``rho = sqrt(mean_square_contraction)``, with
  ``mean_square_contraction = sup_{x orthogonal to 1} E||W(k) x||^2 / ||x||^2
  = lambda_max(P E[W^T W] P)``, ``P = I - J``. For independent doubly stochastic steps,
  ``E||x_k - J x_0||^2 <= rho^(2k) ||x_0 - J x_0||^2``.

Fast paths, no loops over nodes: a circulant W (``topology.shifts``) is normal with
eigenvalues ``lambda_f = sum_s w_s exp(-2 pi i f s / n)`` (one FFT), so
``rho = max(|lambda_0 - 1|, max_{f != 0} |lambda_f|)``; a symmetric W uses ``eigvalsh``
(dense up to n = 2048, Lanczos ``eigsh`` beyond); any other W uses the dense 2-norm up to
n = 1024 and ``svds`` on the operator ``x -> W x - mean(x) 1`` beyond.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from declearn.errors import TopologyError
from declearn.topology.base import DynamicTopology, Topology

__all__ = [
    "rho",
    "spectral_gap",
    "circulant_spectrum",
    "product",
    "mean_square_contraction",
    "mixing_time",
    "transient_iterations",
    "stationary_distribution",
    "summary",
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
    """``||W - 11^T/n||_2``, or the effective per-step rate of a dynamic topology (see the
    module docstring). Accepts a Topology, a DynamicTopology or a square matrix."""
    topology = _as_topology(topology)
    if topology.is_dynamic:
        if topology.period is None:
            return math.sqrt(max(mean_square_contraction(topology), 0.0))
        return _period_rho(topology)
    return _static_rho(topology)


def spectral_gap(topology) -> float:
    """``1 - rho(topology)``."""
    return 1.0 - rho(topology)


def circulant_spectrum(topology: Topology) -> np.ndarray:
    """Eigenvalues ``lambda_f = sum_s w_s exp(-2 pi i f s / n)``, ``f = 0..n-1``, of a circulant
    topology (``W[i, (i - s) mod n] = w_s``); ``lambda_f`` belongs to the eigenvector
    ``v_j = exp(2 pi i f j / n)``. ``lambda_0`` is the row sum."""
    if not isinstance(topology, Topology) or topology.shifts is None:
        raise TopologyError(
            "circulant_spectrum needs a circulant Topology (built with Topology.from_circulant, "
            "e.g. ring or exponential); use numpy.linalg.eigvals(topology.W) for any other."
        )
    if "spectrum" not in topology._cache:
        c = np.zeros(topology.n)
        for s, w in topology.shifts.items():
            c[s % topology.n] += w
        lam = np.fft.fft(c)
        lam.flags.writeable = False
        topology._cache["spectrum"] = lam
    return topology._cache["spectrum"]


def _static_rho(t: Topology) -> float:
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


def _period_rho(topology: DynamicTopology) -> float:
    p = topology.period
    steps = [topology.at(k) for k in range(p)]
    n = topology.n
    if all(s.shifts is not None for s in steps):
        lam = np.prod([circulant_spectrum(s) for s in steps], axis=0)
        dev = float(max(abs(lam[0] - 1.0), np.abs(lam[1:]).max(initial=0.0)))
    elif n <= DENSE_GENERAL_MAX:
        dev = float(np.linalg.norm(_dense_product(steps) - 1.0 / n, 2))
    else:
        mats = [_csr(s) for s in steps]

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
    topology = _as_topology(topology)
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
    return _dense_product([topology.at(k) for k in range(start, start + length)], topology.n)


def _dense_product(steps: list[Topology], n: int | None = None) -> np.ndarray:
    n = steps[0].n if n is None else n
    out = np.eye(n)
    for t in steps:
        out = _csr(t) @ out
    return np.asarray(out)


# ---------------------------------------------------------------------- mean square
def mean_square_contraction(topology, *, samples: int | None = None) -> float:
    r"""``sup_{x orthogonal to 1} E||W(k) x||^2 / ||x||^2 = lambda_max(P E[W^T W] P)``.

    The expectation is over a uniformly random step: exact for a static topology
    (``||W P||_2^2``, which is ``rho^2`` when rows sum to 1) and for a periodic one (average
    over one period); exact for :class:`~declearn.topology.ODEquiDyn` and
    :class:`~declearn.topology.OUEquiDyn` from the law of ``u_k`` (and of the scan start, which
    makes ``E[W^T W]`` circulant), e.g. ``(1-eta)^2 + eta^2 (1 - 2/n)`` for OD-EquiDyn with
    ``M=None``. ``samples=m`` asks instead for the Monte Carlo average over steps ``0..m-1``
    of a random sequence; other random sequences use ``m = 1000`` by default.
    """
    topology = _as_topology(topology)
    n = topology.n
    if n == 1:
        return 0.0
    if not topology.is_dynamic:
        if topology.shifts is not None:
            return float((np.abs(circulant_spectrum(topology)[1:]) ** 2).max())
        if topology.is_row_stochastic:
            return rho(topology) ** 2
        return float(np.linalg.norm(topology.W - topology.W.mean(axis=1, keepdims=True), 2)) ** 2
    if topology.period is not None:
        return _gram_lambda_max([topology.at(k) for k in range(topology.period)], n)
    if samples is not None:
        if isinstance(samples, bool) or not isinstance(samples, numbers.Integral) or samples < 1:
            raise TopologyError(f"samples must be a positive integer, got {samples!r}.")
        return _gram_lambda_max([topology.at(k) for k in range(samples)], n)
    from declearn.topology.equitopo import ODEquiDyn, OUEquiDyn

    if isinstance(topology, ODEquiDyn):
        return _od_equidyn_msc(topology)
    if isinstance(topology, OUEquiDyn):
        return _ou_equidyn_msc(topology)
    return _gram_lambda_max([topology.at(k) for k in range(DEFAULT_SAMPLES)], n)


def _gram_lambda_max(steps: list[Topology], n: int) -> float:
    """``lambda_max(P G P)`` with ``G = mean_k W_k^T W_k``."""
    if all(s.shifts is not None for s in steps):
        g = np.mean([np.abs(circulant_spectrum(s)) ** 2 for s in steps], axis=0)
        return float(g[1:].max())
    G = None
    for s in steps:
        A = _csr(s)
        G = A.T @ A if G is None else G + A.T @ A
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


def _od_equidyn_msc(t) -> float:
    # W = alpha I + beta S^u, |lambda_f|^2 = alpha^2 + beta^2 + 2 alpha beta cos(2 pi f u / n).
    n, eta = t.n, t.eta
    alpha, beta = 1.0 - eta + eta / n, eta * (n - 1) / n
    u, prob = t.u_distribution()
    h = np.zeros(n)
    np.add.at(h, u, prob)
    c = np.fft.fft(h).real  # E_u cos(2 pi f u / n)
    return float(alpha**2 + beta**2 + 2.0 * alpha * beta * c[1:].max())


def _ou_equidyn_msc(t) -> float:
    # For fixed u, averaging over the scan start s makes E_s[W^2] circulant: every node starts a
    # pair for K(u) of the n starts (see equitopo.ou_matching), so it is matched with
    # probability q = 2K/n; W^2 has a^2 + b^2 on a matched diagonal, 1 on an idle one and 2ab
    # between partners. Eigenvalues: q(a^2+b^2) + 1 - q + (4abK/n) cos(2 pi f u / n).
    n, eta = t.n, t.eta
    a, b = 1.0 - eta + eta / n, eta * (n - 1) / n
    u, prob = t.u_distribution()
    w = np.minimum(u, n - u)
    length = n - w  # starts p in [0, n - w) with p // w even begin a pair
    blocks, rest = np.divmod(length, w)
    K = w * ((blocks + 1) // 2) + np.where(blocks % 2 == 0, rest, 0)
    q = 2.0 * K / n
    diag = float(np.sum(prob * (q * (a * a + b * b) + 1.0 - q)))
    h = np.zeros(n)
    np.add.at(h, u, prob * 4.0 * a * b * K / n)
    return float(diag + np.fft.fft(h).real[1:].max())


# ---------------------------------------------------------------------- rates
def mixing_time(topology, eps: float = 1e-2) -> int | float:
    r"""Steps after which the disagreement bound drops below ``eps``:
    ``ceil(ln(1/eps) / ln(1/rho))``, the smallest k with ``rho^k <= eps`` (so
    ``||x_k - J x_0|| <= eps ||x_0 - J x_0||`` for doubly stochastic steps; in root mean square
    for a random sequence). ``rho = 0`` gives 1 step; ``rho >= 1`` gives ``math.inf`` (the
    bound never contracts). A periodic topology is counted in whole periods, where its bound
    holds: ``p * ceil(ln(1/eps) / ln(1/rho^p))`` (tau for the one-peer exponential graph with
    ``n = 2^tau``). For small gaps this is ``~ ln(1/eps) / (1 - rho)``.
    """
    ok = not isinstance(eps, bool) and isinstance(eps, numbers.Real) and 0.0 < eps < 1.0
    if not ok:
        raise TopologyError(f"eps must be a number in (0, 1) (the target accuracy), got {eps!r}.")
    topology = _as_topology(topology)
    r = topology.rho  # cached on the topology
    p = topology.period if topology.is_dynamic and topology.period else 1
    if r >= 1.0:
        return math.inf
    if r == 0.0:
        return p
    rp = r**p
    if rp == 0.0:  # underflow: exact within float
        return p
    return p * max(1, math.ceil(math.log(1.0 / eps) / math.log(1.0 / rp) - 1e-12))


def transient_iterations(topology, *, setting: str = "iid", n: int | None = None) -> float:
    r"""Order of growth of DSGD's transient stage (non-convex), the iterations before it
    reaches the linear speedup of parallel SGD:

    - ``setting="iid"`` (homogeneous data): ``rho^4 n^3 / (1 - rho)^2``;
    - ``setting="heterogeneous"``: ``rho^4 n^3 / (1 - rho)^4``.

    These are the values of the big-O expressions, with every constant (noise, heterogeneity,
    smoothness) set to 1: compare topologies with them, do not read them as iteration counts.
    The iid one balances DSGD's extra term ``rho^(2/3) sigma^(2/3) / (T^(2/3) (1 - rho)^(1/3))``
    against ``sigma / sqrt(nT)`` (Koloskova et al. 2020); the heterogeneous one does the same
    with ``(1 - rho)^(2/3)`` in the denominator. The ``rho^4`` factor gives 0 for the complete
    graph and does not change the order as rho -> 1. ``rho >= 1`` gives ``math.inf``.

    ``topology`` may also be a number, rho itself (then ``n`` is required).
    """
    if setting not in ("iid", "heterogeneous"):
        raise TopologyError(f"setting must be 'iid' or 'heterogeneous', got {setting!r}.")
    if isinstance(topology, numbers.Real) and not isinstance(topology, bool):
        r = float(topology)
        if not r >= 0.0:
            raise TopologyError(f"rho must be a number >= 0, got {topology!r}.")
        if n is None:
            raise TopologyError("Pass n= (the number of nodes) when giving rho as a number.")
    else:
        topology = _as_topology(topology)
        r = topology.rho
        n = topology.n if n is None else n
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise TopologyError(f"n must be a positive integer, got {n!r}.")
    if r >= 1.0:
        return math.inf
    power = 2 if setting == "iid" else 4
    return float(r**4 * float(n) ** 3 / (1.0 - r) ** power)


# ---------------------------------------------------------------------- summary
def summary(topology) -> dict:
    """A dict for tables and widgets: name, n, dynamic, period, degree, rho, spectral_gap,
    stochasticity ("doubly", "row", "column" or "none"), symmetric, connected, mixing_time
    (eps = 1e-2). For a dynamic topology the step properties hold for every step of one
    period (the first 64 steps of a random sequence) and "connected" is for the union graph
    of those steps."""
    topology = _as_topology(topology)
    steps = _window(topology)
    row = all(s.is_row_stochastic for s in steps)
    col = all(s.is_column_stochastic for s in steps)
    stochasticity = {(True, True): "doubly", (True, False): "row", (False, True): "column"}
    r = topology.rho
    return {
        "name": topology.name,
        "n": topology.n,
        "dynamic": bool(topology.is_dynamic),
        "period": topology.period,
        "degree": topology.degree,
        "rho": r,
        "spectral_gap": 1.0 - r,
        "stochasticity": stochasticity.get((row, col), "none"),
        "symmetric": all(s.is_symmetric for s in steps),
        "connected": _union_connected(steps),
        "mixing_time": mixing_time(topology),
    }


def _window(topology) -> list[Topology]:
    if not topology.is_dynamic:
        return [topology]
    return [topology.at(k) for k in range(topology.period or 64)]


def _union_connected(steps: list[Topology]) -> bool:
    if len(steps) == 1:
        return steps[0].is_connected
    from scipy.sparse.csgraph import connected_components

    A = sum(_csr(s) for s in steps)
    return bool(connected_components(A, directed=True, connection="strong")[0] == 1)


# ---------------------------------------------------------------------- stationary
def stationary_distribution(topology) -> np.ndarray:
    r"""``pi`` with ``pi^T W = pi^T``, ``sum_i pi_i = 1``: the left Perron vector of a
    row-stochastic W (a static Topology or a square matrix, row i = receiver i).

    Plain averaging ``x <- W x`` with row-stochastic weights that are not doubly stochastic
    converges to ``pi^T x^0`` at every node, not to the mean: ``pi_i`` is how much node i's
    initial value counts. ``pi`` is unique exactly when W has one closed class of nodes (e.g.
    when the graph is strongly connected); it is found by solving ``(W^T - I) pi = 0`` with
    one of the n (dependent) equations replaced by ``sum_i pi_i = 1``.
    """
    if isinstance(topology, DynamicTopology):
        raise TopologyError(
            f"{topology.name} changes W every step, so it has no single stationary "
            "distribution; pass one step, e.g. stationary_distribution(topology.at(k))."
        )
    W = topology.W if isinstance(topology, Topology) else _dense_square(topology)
    n = W.shape[0]
    if np.any(W < 0) or not np.allclose(W.sum(axis=1), 1.0, rtol=0.0, atol=1e-9):
        raise TopologyError(
            "stationary_distribution needs a row-stochastic W (non-negative, every row summing "
            "to 1); for column-stochastic (push-sum) weights, pass the transpose's "
            "normalisation instead, e.g. W / W.sum(axis=1, keepdims=True)."
        )
    A = W.T - np.eye(n)
    A[-1, :] = 1.0
    b = np.zeros(n)
    b[-1] = 1.0
    try:
        pi = np.linalg.solve(A, b)
    except np.linalg.LinAlgError:
        pi = None
    if pi is None or not np.allclose(pi @ W, pi, rtol=0.0, atol=1e-9) or np.any(pi < -1e-12):
        raise TopologyError(
            "W has no unique stationary distribution: its graph has several closed groups of "
            "nodes that never hear from each other. Make it strongly connected."
        )
    return np.maximum(pi, 0.0)


def _dense_square(obj) -> np.ndarray:
    if hasattr(obj, "toarray"):
        obj = obj.toarray()
    elif hasattr(obj, "detach"):
        obj = obj.detach().cpu().numpy()
    W = np.array(obj, dtype=np.float64)
    if W.ndim != 2 or W.shape[0] != W.shape[1] or W.shape[0] == 0:
        raise TopologyError(f"expected a square matrix W, got shape {W.shape}.")
    return W


# ---------------------------------------------------------------------- helpers
def _as_topology(obj):
    if isinstance(obj, (Topology, DynamicTopology)):
        return obj
    if hasattr(obj, "tocoo") or hasattr(obj, "detach") or isinstance(obj, (np.ndarray, list)):
        return Topology.from_matrix(obj, weights=None, allow_disconnected=True)
    raise TopologyError(
        f"Expected a Topology, a DynamicTopology or a square matrix, got {type(obj).__name__}."
    )


def _csr(t: Topology):
    from scipy.sparse import csr_matrix

    if "csr" not in t._cache:
        t._cache["csr"] = csr_matrix((t.data, t.indices, t.indptr), shape=(t.n, t.n))
    return t._cache["csr"]


def _operator(n, matvec, rmatvec):
    from scipy.sparse.linalg import LinearOperator

    return LinearOperator((n, n), matvec=matvec, rmatvec=rmatvec, dtype=np.float64)


def _minus_J_operator(t: Topology):
    """``x -> (W - J) x = W x - mean(x) 1`` and its transpose, without forming J."""
    A = _csr(t)
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
