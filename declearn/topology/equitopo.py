r"""EquiTopo (Song, Li, Jin, Shi, Yan, Yin, Yuan, NeurIPS 2022): sparse topologies whose
consensus rate does not degrade with n.

Everything is built from the **basis matrices** ``A^(u)``, ``u = 1 .. n-1`` (row = receiver):

.. math::  A^{(u)}_{ii} = 1/n, \qquad A^{(u)}_{i,\,(i+u) \bmod n} = (n-1)/n ,

so under ``A^(u)`` node i receives from node ``i + u`` only: one message per node, every label
difference ``u`` possible. Each ``A^(u)`` is circulant and doubly stochastic, and for ``u``
uniform on ``{1..n-1}``

.. math::  \mathbb{E}_u[A^{(u)}] = \tfrac1n I + \tfrac{n-1}{n}\,\tfrac{11^T - I}{n-1}
           = 11^T/n = J ,

i.e. one basis matrix is an unbiased one-peer estimate of exact averaging. Averages of a few of
them concentrate around J (matrix Bernstein), which gives the four families:

- :func:`d_equistatic`: ``W = (1/M) sum_m A^(u_m)``, ``u_m`` iid uniform; directed, degree <= M.
- :func:`u_equistatic`: ``W = (1/2M) sum_m (A^(u_m) + A^(u_m)^T)``; symmetric, degree <= 2M.
- :func:`od_equidyn`: ``W(k) = (1 - eta) I + eta A^(u_k)``; one message per node per step.
- :func:`ou_equidyn`: a matching of the pairs ``(i, i + u_k)``; pairwise exchanges, symmetric.

Orientation: the paper's talk writes the basis graph as "i receives from i - u", its code as
"i receives from i + u"; the two are transposes and both doubly stochastic. We follow the code.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from declearn.errors import TopologyError
from declearn.topology.base import DynamicTopology, Topology, check_n
from declearn.topology.registry import family

__all__ = [
    "equitopo_basis",
    "equistatic_indices",
    "d_equistatic",
    "u_equistatic",
    "od_equidyn",
    "ou_equidyn",
    "ODEquiDyn",
    "OUEquiDyn",
    "ou_matching",
]

#: Defaults of the EquiStatic guarantee ``P(||W - J||_2 < eps) >= 1 - p``.
DEFAULT_EPS = 0.5
DEFAULT_P = 0.1


def equitopo_basis(n: int, u: int) -> Topology:
    """The basis matrix ``A^(u)``: ``A[i, i] = 1/n``, ``A[i, (i + u) mod n] = (n - 1)/n``.

    Node i receives from ``i + u`` (and sends to ``i - u``). Circulant, doubly stochastic.
    """
    n = check_n(n, minimum=2)
    u = _check_u(n, u)
    return Topology.from_circulant(
        n, _basis_shifts(n, u), name="equitopo_basis", params={"u": u}, stochastic="doubly"
    )


def equistatic_indices(
    n: int, *, M: int | None = None, eps: float = DEFAULT_EPS, p: float = DEFAULT_P,
    seed: int = 0,
) -> np.ndarray:
    """The basis indices ``u_1..u_M`` (iid uniform on ``{1..n-1}``, with repetition) that
    :func:`d_equistatic`, :func:`u_equistatic` and ``od/ou_equidyn(M=...)`` share.

    Without ``M``, ``M = int(8 ln(2n/p) / (3 eps^2))`` (at least 1): the number of draws for
    which matrix Bernstein gives ``||W - J||_2 < eps`` with probability ``>= 1 - p``.
    """
    n = check_n(n, minimum=2)
    M = equistatic_size(n, M=M, eps=eps, p=p)
    seed = _check_seed(seed)
    return np.random.default_rng(seed).integers(1, n, size=M)


def equistatic_size(n: int, *, M=None, eps: float = DEFAULT_EPS, p: float = DEFAULT_P) -> int:
    """``M`` if given (checked), else ``max(1, int(8 ln(2n/p) / (3 eps^2)))``."""
    if M is not None:
        if isinstance(M, bool) or not isinstance(M, numbers.Integral) or M < 1:
            raise TopologyError(
                f"M (the number of basis matrices drawn) must be a positive integer, got {M!r}; "
                "pass M=None to derive it from eps and p."
            )
        return int(M)
    eps = _check_open_unit(eps, "eps", "the target bound on ||W - J||_2", hi_closed=True)
    p = _check_open_unit(p, "p", "the allowed failure probability", hi_closed=False)
    return max(1, int(8.0 * math.log(2.0 * n / p) / (3.0 * eps * eps)))


@family("d_equistatic")
def d_equistatic(
    n: int, *, M: int | None = None, eps: float = DEFAULT_EPS, p: float = DEFAULT_P,
    seed: int = 0,
) -> Topology:
    r"""D-EquiStatic: ``W = (1/M) sum_m A^(u_m)`` with ``u_m`` iid uniform on ``{1..n-1}``.

    Directed, circulant, doubly stochastic, in/out degree ``<= M`` (repeated draws merge).
    Without ``M``, ``M = int(8 ln(2n/p) / (3 eps^2))`` draws give ``||W - J||_2 < eps`` with
    probability ``>= 1 - p``. The defaults ``eps = 0.5, p = 0.1`` ask for about
    ``10.7 ln(20 n)`` draws (76 for n = 64): the bound is loose, so for small n that graph is
    nearly complete; the paper's experiments use a handful of draws (``M ~ ln n``), and the
    measured ``||W - J||_2`` (``topology.rho``) is then still far below 1.
    The same ``(M, seed)`` gives the same graph on every rank.
    """
    return _equistatic(n, M=M, eps=eps, p=p, seed=seed, symmetric=False)


@family("u_equistatic")
def u_equistatic(
    n: int, *, M: int | None = None, eps: float = DEFAULT_EPS, p: float = DEFAULT_P,
    seed: int = 0,
) -> Topology:
    r"""U-EquiStatic: ``W = (1/2M) sum_m (A^(u_m) + A^(u_m)^T)``, the symmetrised D-EquiStatic
    (same draws for the same ``M``/``eps``/``p``/``seed``).

    Undirected, circulant, symmetric, doubly stochastic, degree ``<= 2M``; the same
    ``||W - J||_2 < eps`` guarantee (see :func:`d_equistatic` for the defaults).
    """
    return _equistatic(n, M=M, eps=eps, p=p, seed=seed, symmetric=True)


def _equistatic(n, *, M, eps, p, seed, symmetric: bool) -> Topology:
    """Average of the basis matrices ``A^(u_m)`` (and their transposes if ``symmetric``) as
    circulant shifts: ``A^(u)`` has weight ``1/n`` on shift 0 and ``(n-1)/n`` on shift
    ``-u`` (node i receives from i + u); ``A^(u)^T`` puts it on shift ``+u``."""
    n = check_n(n)
    name = "u_equistatic" if symmetric else "d_equistatic"
    params = {"M": M, "eps": eps, "p": p, "seed": seed}
    if n == 1:
        return Topology.from_circulant(1, {0: 1.0}, name=name, params=params)
    us = equistatic_indices(n, M=M, eps=eps, p=p, seed=seed)
    params["M"] = int(us.size)
    shifts: dict[int, float] = {0: 1.0 / n}
    w = (n - 1) / (n * us.size * (2 if symmetric else 1))
    for u in us:
        for s in ((n - int(u)) % n, int(u)) if symmetric else ((n - int(u)) % n,):
            shifts[s] = shifts.get(s, 0.0) + w
    return Topology.from_circulant(n, shifts, name=name, params=params, stochastic="doubly")


class _EquiDyn(DynamicTopology):
    """Shared part of OD-/OU-EquiDyn: the law of ``u_k`` and its per-step random draws.

    ``u_k`` is uniform on ``indices`` (the D-EquiStatic list, repetitions count) when ``M`` is
    given, else uniform on ``{1..n-1}`` ("complete" variant). Step k draws from
    ``numpy.random.default_rng([seed, k])``, so ``at(k)`` is a pure function of
    ``(n, eta, M, seed, k)``: every MPI rank builds the same ``W(k)`` without talking.
    """

    def __init__(self, n, *, eta, M, seed, name):
        n = check_n(n)
        eta = _check_eta(eta)
        seed = _check_seed(seed)
        super().__init__(n, name=name, params={"eta": eta, "M": M, "seed": seed}, period=None)
        self.eta = eta
        self.seed = seed
        self.M = None if M is None else equistatic_size(max(n, 2), M=M)
        self.indices = (
            None if self.M is None or n == 1
            else equistatic_indices(n, M=self.M, seed=seed)
        )
        if self.indices is not None:
            self.indices.flags.writeable = False

    def u_distribution(self) -> tuple[np.ndarray, np.ndarray]:
        """``(u_values, probabilities)`` of the law of ``u_k`` (exact, repetitions merged)."""
        if self.n == 1:
            return np.zeros(0, np.int64), np.zeros(0)
        if self.indices is None:
            return np.arange(1, self.n), np.full(self.n - 1, 1.0 / (self.n - 1))
        values, counts = np.unique(self.indices, return_counts=True)
        return values, counts / counts.sum()

    def _rng(self, k: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, k])

    def _draw_u(self, rng: np.random.Generator) -> int:
        if self.indices is None:
            return int(rng.integers(1, self.n))
        return int(self.indices[rng.integers(self.indices.size)])

    def _identity(self) -> Topology:
        return Topology.from_circulant(1, {0: 1.0}, name=self.name)


class ODEquiDyn(_EquiDyn):
    r"""OD-EquiDyn: ``W(k) = (1 - eta) I + eta A^(u_k)`` (directed, one peer per step).

    Node i keeps ``1 - eta + eta/n`` of itself and takes ``eta (n-1)/n`` from node ``i + u_k``.
    Each step is circulant and doubly stochastic. For the complete variant (``M=None``), for
    every x orthogonal to 1, ``E||W(k) x||^2 = [(1-eta)^2 + eta^2 (1 - 2/n)] ||x||^2``.
    """

    def __init__(self, n, *, eta=0.5, M=None, seed=0):
        super().__init__(n, eta=eta, M=M, seed=seed, name="od_equidyn")

    def u_at(self, k: int) -> int:
        """The basis index ``u_k`` used at step k (0 when n = 1)."""
        return 0 if self.n == 1 else self._draw_u(self._rng(int(k)))

    def _exact_mean_square_contraction(self) -> float:
        # W = alpha I + beta S^u, |lambda_f|^2 = alpha^2 + beta^2 + 2 alpha beta cos(2 pi f u / n).
        n, eta = self.n, self.eta
        alpha, beta = 1.0 - eta + eta / n, eta * (n - 1) / n
        u, prob = self.u_distribution()
        h = np.zeros(n)
        np.add.at(h, u, prob)
        c = np.fft.fft(h).real  # E_u cos(2 pi f u / n)
        return float(alpha**2 + beta**2 + 2.0 * alpha * beta * c[1:].max())

    def _step(self, k: int) -> Topology:
        if self.n == 1:
            return self._identity()
        n, eta, u = self.n, self.eta, self.u_at(k)
        shifts = {s: eta * w for s, w in _basis_shifts(n, u).items()}
        shifts[0] += 1.0 - eta
        return Topology.from_circulant(n, shifts, name=self.name, params={"u": u, "k": k})


class OUEquiDyn(_EquiDyn):
    r"""OU-EquiDyn: at step k draw ``u_k`` and a start node ``s_k`` (uniform), scan the nodes
    ``s_k, s_k + 1, ...`` (mod n) and pair each node i with ``i + u_k`` when both are still free.

    A matched node keeps ``1 - eta + eta/n`` and takes ``eta (n-1)/n`` from its partner; an
    unmatched node keeps weight 1. Each step is symmetric and doubly stochastic, and every
    message is a pairwise exchange (one ``Sendrecv`` per matched pair).
    """

    def __init__(self, n, *, eta=0.5, M=None, seed=0):
        super().__init__(n, eta=eta, M=M, seed=seed, name="ou_equidyn")

    def draw_at(self, k: int) -> tuple[int, int]:
        """``(u_k, s_k)``: basis index and scan start of step k (``(0, 0)`` when n = 1)."""
        if self.n == 1:
            return 0, 0
        rng = self._rng(int(k))
        u = self._draw_u(rng)
        return u, int(rng.integers(self.n))

    def _exact_mean_square_contraction(self) -> float:
        # For fixed u, averaging over the scan start s makes E_s[W^2] circulant: every node
        # starts a pair for K(u) of the n starts (see ou_matching), so it is matched with
        # probability q = 2K/n; W^2 has a^2 + b^2 on a matched diagonal, 1 on an idle one and
        # 2ab between partners. Eigenvalues: q(a^2+b^2) + 1 - q + (4abK/n) cos(2 pi f u / n).
        n, eta = self.n, self.eta
        a, b = 1.0 - eta + eta / n, eta * (n - 1) / n
        u, prob = self.u_distribution()
        w = np.minimum(u, n - u)
        length = n - w  # starts p in [0, n - w) with p // w even begin a pair
        blocks, rest = np.divmod(length, w)
        K = w * ((blocks + 1) // 2) + np.where(blocks % 2 == 0, rest, 0)
        q = 2.0 * K / n
        diag = float(np.sum(prob * (q * (a * a + b * b) + 1.0 - q)))
        h = np.zeros(n)
        np.add.at(h, u, prob * 4.0 * a * b * K / n)
        return float(diag + np.fft.fft(h).real[1:].max())

    def _step(self, k: int) -> Topology:
        if self.n == 1:
            return self._identity()
        n, eta = self.n, self.eta
        u, s = self.draw_at(k)
        initiators = np.nonzero(ou_matching(n, u, s))[0]
        partners = (initiators + u) % n
        matched = np.zeros(n, dtype=bool)
        matched[initiators] = matched[partners] = True
        idle = np.nonzero(~matched)[0]
        keep, give = 1.0 - eta + eta / n, eta * (n - 1) / n
        rows = np.concatenate([initiators, partners, initiators, partners, idle])
        cols = np.concatenate([initiators, partners, partners, initiators, idle])
        m, z = initiators.size, idle.size
        vals = np.concatenate([np.full(2 * m, keep), np.full(2 * m, give), np.ones(z)])
        return Topology.from_coo(n, rows, cols, vals, name=self.name,
                                 params={"u": u, "start": s, "k": k})


def ou_matching(n: int, u: int, start: int) -> np.ndarray:
    """Boolean mask over nodes c: True where the greedy scan pairs c with ``c + u`` (mod n).

    The scan visits ``start, start + 1, ...`` and pairs i with ``i + u`` when both are free.
    Closed form used here (no loop over nodes): with ``p = (c - start) mod n`` the scan
    position of c and ``w = min(u, n - u)``, c starts a pair iff ``p // w`` is even and
    ``p + w < n``. (Along each cycle ``c, c+u, c+2u, ...`` the scan positions rise by w
    within runs that start below w; the greedy takes every other link of a run and never the
    last one, whose far end the next run's first link has already taken.)
    """
    n = check_n(n, minimum=2)
    u = _check_u(n, u)
    w = min(u, n - u)
    p = (np.arange(n) - int(start)) % n
    return ((p // w) % 2 == 0) & (p + w < n)


@family("od_equidyn", dynamic=True)
def od_equidyn(n: int, *, eta: float = 0.5, M: int | None = None, seed: int = 0) -> ODEquiDyn:
    """OD-EquiDyn: one-peer directed dynamic topology, ``W(k) = (1-eta) I + eta A^(u_k)``.

    ``u_k`` is uniform on ``{1..n-1}`` (``M=None``) or on the D-EquiStatic index list of
    ``(M, seed)``. ``eta`` must lie in ``(0, 1]``; ``eta ~ 1/2`` gives a mean-square
    contraction ``~ 1/2`` for every n (``eta = 1`` only ``1 - 2/n``).
    """
    return ODEquiDyn(n, eta=eta, M=M, seed=seed)


@family("ou_equidyn", dynamic=True)
def ou_equidyn(n: int, *, eta: float = 0.5, M: int | None = None, seed: int = 0) -> OUEquiDyn:
    """OU-EquiDyn: one-peer undirected dynamic topology (a random matching of pairs i, i+u_k).

    Symmetric, doubly stochastic steps; ``eta`` in ``(0, 1]`` as for :func:`od_equidyn`.
    """
    return OUEquiDyn(n, eta=eta, M=M, seed=seed)


# ---------------------------------------------------------------------- helpers
def _basis_shifts(n: int, u: int) -> dict[int, float]:
    # A[i, i + u] = (n-1)/n is W[i, i - s] with s = -u mod n in from_circulant's terms.
    return {0: 1.0 / n, (n - u) % n: (n - 1.0) / n}


def _check_u(n: int, u) -> int:
    if isinstance(u, bool) or not isinstance(u, numbers.Integral) or not 1 <= u <= n - 1:
        raise TopologyError(f"The basis index u must be an integer in 1..{n - 1}, got {u!r}.")
    return int(u)


def _check_eta(eta) -> float:
    ok = not isinstance(eta, bool) and isinstance(eta, numbers.Real) and 0.0 < eta <= 1.0
    if not ok:
        raise TopologyError(
            f"eta must be a number in (0, 1] (the weight given to the basis matrix), got "
            f"{eta!r}; eta = 0.5 is a good default."
        )
    return float(eta)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise TopologyError(
            f"seed must be a non-negative integer, got {seed!r}: a fixed seed makes every MPI "
            "rank draw the same topology."
        )
    return int(seed)


def _check_open_unit(x, what: str, meaning: str, *, hi_closed: bool) -> float:
    ok = not isinstance(x, bool) and isinstance(x, numbers.Real) and x > 0.0
    ok = ok and (x <= 1.0 if hi_closed else x < 1.0)
    if not ok:
        interval = "(0, 1]" if hi_closed else "(0, 1)"
        raise TopologyError(f"{what} ({meaning}) must be a number in {interval}, got {x!r}.")
    return float(x)
