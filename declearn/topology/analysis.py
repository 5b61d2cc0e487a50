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

The numerics (FFT of a circulant, dense or Lanczos eigensolves, period products) live in
:mod:`declearn.topology.spectral`, which the topology classes use for ``.rho`` and
``.product()``; the functions here take a Topology, a DynamicTopology or a square matrix.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from declearn.errors import TopologyError
from declearn.topology import spectral
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


# ---------------------------------------------------------------------- rho
def rho(topology) -> float:
    """``||W - 11^T/n||_2``, or the effective per-step rate of a dynamic topology (see the
    module docstring). Accepts a Topology, a DynamicTopology or a square matrix."""
    return spectral.rho(_as_topology(topology))


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
    return spectral.circulant_spectrum(topology)


# ---------------------------------------------------------------------- products
def product(topology, start: int = 0, length: int | None = None) -> np.ndarray:
    """Dense ``W(start + length - 1) @ ... @ W(start)``: the map applied by ``length`` gossip
    steps from step ``start``. ``length`` defaults to the period (1 for a static topology);
    a random sequence (period None) needs an explicit ``length``."""
    return spectral.product(_as_topology(topology), start=start, length=length)


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
    random = topology.is_dynamic and topology.period is None and topology.n > 1
    bad = isinstance(samples, bool) or not isinstance(samples, numbers.Integral) or samples < 1
    if random and samples is not None and bad:  # samples only matter for a random sequence
        raise TopologyError(f"samples must be a positive integer, got {samples!r}.")
    return spectral.mean_square_contraction(topology, samples=samples)


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

    A = sum(spectral.csr(s) for s in steps)
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
        return Topology.from_matrix(obj, stochastic=None, allow_disconnected=True)
    raise TopologyError(
        f"Expected a Topology, a DynamicTopology or a square matrix, got {type(obj).__name__}."
    )
