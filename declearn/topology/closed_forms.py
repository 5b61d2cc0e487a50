r"""Closed forms of ``rho`` for the families where theory gives one.

``rho = ||W - 11^T/n||_2`` (for a dynamic family, the effective per-step rate that
:func:`declearn.topology.rho` computes) of seven families with their default weights, as a
function of n. They are the dashed "theory" curves of the spectral-gap explorer and a check of
:func:`~declearn.topology.rho`: for every family below, ``closed_form_rho(family, n)`` equals
``make(family, n).rho`` (to round-off) wherever the formula applies, and is NaN elsewhere.

=======================  =====================================================  ==============
family                   ``rho(n)``                                             where it holds
=======================  =====================================================  ==============
ring (weights 1/3)       ``1/3 + 2/3 cos(2 pi / n)``                            n >= 3
exponential              ``1 - 2 / (tau + 1)``, ``tau = ceil(log2 n)``          even n
one_peer_exponential     ``0``                                                  n a power of 2
od_equidyn (``M=None``)  ``sqrt((1 - eta)^2 + eta^2 (1 - 2/n))``                n >= 2
hypercube                ``(d - 1) / (d + 1)``, ``n = 2^d``                     n a power of 2
star (Metropolis)        ``1 - 1/n``                                            n >= 3
complete                 ``0``                                                  n >= 1
=======================  =====================================================  ==============

Each formula's derivation and source is in the docstring of its function (``ring_rho``, ...).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from declearn.errors import TopologyError

__all__ = [
    "CLOSED_FORMS",
    "ClosedForm",
    "closed_form_rho",
    "complete_rho",
    "exponential_rho",
    "hypercube_rho",
    "od_equidyn_rho",
    "one_peer_exponential_rho",
    "ring_rho",
    "star_rho",
]


def _ns(n) -> np.ndarray:
    ns = np.asarray(n)
    if ns.dtype.kind not in "iuf" or np.any(ns < 1) or np.any(ns != np.round(ns)):
        raise TopologyError(f"n must hold positive integers (numbers of nodes), got {n!r}.")
    return ns.astype(np.int64)


def _power_of_two(ns: np.ndarray) -> np.ndarray:
    return (ns & (ns - 1)) == 0


def ring_rho(n) -> np.ndarray:
    r"""Ring with weight 1/3 on self and on each neighbour: ``rho = 1/3 + 2/3 cos(2 pi/n)``.

    W is circulant, so its eigenvalues are ``lambda_f = 1/3 (1 + 2 cos(2 pi f / n))``,
    ``f = 0..n-1`` (the DFT of its first row; R. M. Gray, *Toeplitz and Circulant Matrices:
    A Review*, 2006, sec. 3.1). ``lambda_0 = 1`` belongs to the all-ones vector; the largest
    of the others in modulus is ``lambda_1`` (the most negative one, ``-1/3`` at most, never
    exceeds it for n >= 3), hence ``rho = 1/3 + 2/3 cos(2 pi / n)`` and
    ``1 - rho ~ 4 pi^2 / (3 n^2)``. At n = 2 the ring is an edge with weights 1/2: rho = 0.
    """
    ns = _ns(n)
    return np.where(ns >= 3, 1.0 / 3.0 + 2.0 / 3.0 * np.cos(2.0 * np.pi / np.maximum(ns, 1)),
                    0.0)


def exponential_rho(n) -> np.ndarray:
    r"""Static exponential graph (node i hears ``i - 2^k``, ``k < tau``, weights
    ``1/(tau + 1)``): ``rho = 1 - 2/(tau + 1)``, ``tau = ceil(log2 n)``, for even n.

    B. Ying, K. Yuan, Y. Chen, H. Hu, P. Pan, W. Yin, *Exponential Graph is Provably
    Efficient for Decentralized Deep Training*, NeurIPS 2021, Proposition 1 (the eigenvalue
    at f = n/2 of the circulant W is ``(1 - tau)/(tau + 1)``, every other is smaller in
    modulus). For odd n rho is smaller and has no closed form: NaN.
    """
    ns = _ns(n)
    tau = np.array([int(v - 1).bit_length() for v in ns.ravel()], dtype=np.float64)
    value = (1.0 - 2.0 / (tau + 1.0)).reshape(ns.shape)
    return np.where(ns % 2 == 0, value, np.nan)


def one_peer_exponential_rho(n) -> np.ndarray:
    r"""One-peer exponential graph: ``rho = 0`` when n is a power of 2 (NaN otherwise).

    Step k averages each node with ``i - 2^(k mod tau)`` (weights 1/2); when ``n = 2^tau``
    the product of any tau consecutive steps is exactly ``11^T/n`` (Ying et al., NeurIPS
    2021, Lemma 1), so the effective per-step rate over a period is 0.
    """
    ns = _ns(n)
    return np.where(_power_of_two(ns), 0.0, np.nan)


def od_equidyn_rho(n, eta: float = 0.5, M=None, seed=None) -> np.ndarray:
    r"""OD-EquiDyn with ``M=None`` (one random shift u per step, uniform on ``1..n-1``):
    root-mean-square rate ``rho = sqrt((1 - eta)^2 + eta^2 (1 - 2/n))``.

    ``W = alpha I + beta S^u`` with ``alpha = 1 - eta + eta/n``, ``beta = eta (n-1)/n``, so
    ``|lambda_f|^2 = alpha^2 + beta^2 + 2 alpha beta cos(2 pi f u / n)``; averaging over u
    gives ``E cos = -1/(n-1)`` for every ``f != 0``, hence ``E||(W - J) x||^2 / ||x||^2 =
    (1 - eta)^2 + eta^2 (1 - 2/n)`` on ``x orthogonal to 1`` (Z. Song, W. Li, K. Jin, L. Shi,
    M. Yan, W. Yin, K. Yuan, *Communication-Efficient Topologies for Decentralized Learning
    with O(1) Consensus Rate*, NeurIPS 2022, Theorem 2). About ``1/sqrt(2)`` at eta = 1/2,
    whatever n. ``seed`` does not change the rate; ``M`` (a bounded shift) has no closed form.
    """
    if M is not None:
        raise TopologyError("the closed form of od_equidyn's rho holds for M=None only; use "
                            "make('od_equidyn', n, M=...).rho instead.")
    ns = _ns(n).astype(np.float64)
    eta = float(eta)
    if not 0.0 < eta <= 1.0:
        raise TopologyError(f"eta must be in (0, 1], got {eta!r}.")
    return np.sqrt((1.0 - eta) ** 2 + eta**2 * (1.0 - 2.0 / ns))


def hypercube_rho(n) -> np.ndarray:
    r"""Hypercube of dimension ``d = log2 n`` with Metropolis weights ``1/(d + 1)``:
    ``rho = (d - 1)/(d + 1)`` (NaN when n is not a power of 2).

    The adjacency matrix of the d-cube has eigenvalues ``d - 2k``, ``k = 0..d`` (A. E.
    Brouwer, W. H. Haemers, *Spectra of Graphs*, 2012, sec. 1.4.6), so ``W = (I + A)/(d + 1)``
    has ``(d + 1 - 2k)/(d + 1)``; after ``k = 0`` (eigenvalue 1) the largest in modulus are
    ``k = 1`` and ``k = d``, both ``(d - 1)/(d + 1)`` in modulus.
    """
    ns = _ns(n)
    d = np.log2(ns.astype(np.float64))
    return np.where(_power_of_two(ns), (d - 1.0) / (d + 1.0), np.nan)


def star_rho(n) -> np.ndarray:
    r"""Star with Metropolis weights (leaf-centre ``1/n``, leaf self-weight ``1 - 1/n``):
    ``rho = 1 - 1/n`` for n >= 3 (NaN below).

    Any vector that is 0 at the centre and sums to 0 over the leaves is an eigenvector of W
    with eigenvalue ``1 - 1/n`` (each leaf keeps ``1 - 1/n`` of its value and the centre
    receives ``sum = 0``): an (n-2)-dimensional eigenspace. The remaining eigenvalue besides
    1 is the trace's remainder ``1/n + (n-1)(1 - 1/n) - 1 - (n-2)(1 - 1/n) = 0``.
    (L. Xiao, S. Boyd, *Fast linear iterations for distributed averaging*, Systems & Control
    Letters 53, 2004, for the Metropolis weights.)
    """
    ns = _ns(n).astype(np.float64)
    return np.where(ns >= 3, 1.0 - 1.0 / ns, np.nan)


def complete_rho(n) -> np.ndarray:
    r"""Complete graph with weights ``1/n``: ``W = 11^T/n``, so ``rho = ||W - 11^T/n|| = 0``."""
    ns = _ns(n)
    return np.zeros(ns.shape)


@dataclass(frozen=True)
class ClosedForm:
    """The closed form of rho of one family: ``fn(n, **params)`` (NaN where it does not
    hold), its ``formula`` as plain text, and ``holds``: for which n."""

    family: str
    fn: Callable[..., np.ndarray]
    formula: str
    holds: str

    @property
    def params(self) -> tuple[str, ...]:
        """The family parameters the formula takes (with their defaults)."""
        return tuple(inspect.signature(self.fn).parameters)[1:]

    def rho(self, n, **params) -> np.ndarray:
        unknown = set(params) - set(self.params)
        if unknown:
            takes = ", ".join(self.params) or "no parameters"
            raise TopologyError(
                f"the closed form of {self.family}'s rho takes {takes}, not "
                f"{', '.join(sorted(unknown))}; build the topology and use its .rho instead."
            )
        return self.fn(n, **params)


#: family -> :class:`ClosedForm`, for the families with default weights whose rho theory gives.
CLOSED_FORMS: dict[str, ClosedForm] = {
    cf.family: cf for cf in (
        ClosedForm("ring", ring_rho, "1/3 + 2/3 cos(2\u03c0/n)", "n >= 3"),
        ClosedForm("exponential", exponential_rho,
                   "1 - 2/(\u03c4+1), \u03c4 = \u2308log\u2082n\u2309", "even n"),
        ClosedForm("one_peer_exponential", one_peer_exponential_rho, "0 at n = 2^\u03c4",
                   "n a power of 2"),
        ClosedForm("od_equidyn", od_equidyn_rho,
                   "\u221a((1-\u03b7)\u00b2 + \u03b7\u00b2(1-2/n)), \u03b7 = 1/2", "M = None"),
        ClosedForm("hypercube", hypercube_rho, "(d-1)/(d+1), n = 2^d", "n a power of 2"),
        ClosedForm("star", star_rho, "1 - 1/n", "n >= 3"),
        ClosedForm("complete", complete_rho, "0", "every n"),
    )
}


def closed_form_rho(family: str, n, **params) -> np.ndarray:
    """rho of ``make(family, n, **params)`` from its closed form (an array shaped like ``n``,
    NaN where the formula does not hold); see :data:`CLOSED_FORMS` for the families.

    ``closed_form_rho("ring", [8, 16])``; ``closed_form_rho("od_equidyn", 64, eta=0.3)``.
    A family without a closed form raises a TopologyError listing those that have one.
    """
    form = CLOSED_FORMS.get(family)
    if form is None:
        raise TopologyError(
            f"no closed form of rho is known for {family!r}; families with one: "
            f"{', '.join(CLOSED_FORMS)}. Use make({family!r}, n).rho instead."
        )
    return form.rho(n, **params)
