r"""Static topology families: ring, grid/torus, star, complete, random graphs, hypercube,
static exponential graph. Each returns a :class:`Topology` with row i = receiver,

.. math::  x_i \leftarrow \sum_j W_{ij}\, x_j ,

and is registered by name, so ``make("ring", 8)`` equals ``ring(8)``; ``params`` holds the
family's keyword arguments, so ``make(t.name, t.n, **t.params)`` rebuilds ``t``. Circulant families
(ring, complete, exponential) are built with :meth:`Topology.from_circulant`, so the simulator
can mix with shifted copies ``x_new = sum_s w_s * roll(x, s)`` instead of a matrix product.

Random families draw from ``numpy.random.default_rng(seed)``: the same ``seed`` gives the same
graph on every MPI rank, with no communication.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from declearn.errors import TopologyError
from declearn.topology.base import Topology, check_n
from declearn.topology.registry import family
from declearn.topology.weights import RULES, apply_weights, old_rule_keyword

__all__ = [
    "ring", "grid", "star", "complete", "erdos_renyi", "geometric", "hypercube", "exponential",
]


@family("ring")
def ring(n: int) -> Topology:
    """Bidirectional ring: each node averages itself and its two neighbors, weights 1/3.

    ``W[i, i] = W[i, i-1] = W[i, i+1] = 1/3`` (indices mod n); ``n = 2`` gives all 1/2 and
    ``n = 1`` gives ``[[1]]`` (as BlueFog's ``RingGraph``). Symmetric, doubly stochastic,
    ``rho = 1/3 + 2/3 cos(2 pi / n)`` for n >= 3.
    """
    n = check_n(n)
    if n <= 2:
        shifts = {s: 1.0 / n for s in range(n)}
    else:
        shifts = {0: 1.0 / 3.0, 1: 1.0 / 3.0, -1: 1.0 / 3.0}
    return Topology.from_circulant(n, shifts, name="ring", stochastic="doubly")


@family("grid")
@old_rule_keyword
def grid(
    n: int, *, shape: tuple[int, int] | None = None, torus: bool = False,
    rule: str = "metropolis",
) -> Topology:
    """2-D mesh (4-neighbor grid), or torus with ``torus=True``; Metropolis weights by default.

    Node ``i = r * ncol + c`` sits at row r, column c (row-major). ``shape = (nrow, ncol)``
    must satisfy ``nrow * ncol == n``; by default nrow is the largest factor of n that is
    ``<= sqrt(n)`` (BlueFog's ``MeshGrid2DGraph``), so a **prime n gives a 1 x n grid, i.e. a
    path** (a ring with ``torus=True``): pass ``shape`` to choose, or pick a composite n.
    ``params["shape"]`` always records the shape used. ``torus=True`` links the last row
    (column) to the first one. ``rule`` is a weight rule of :data:`RULES`.
    """
    n = check_n(n)
    _check_rule(rule)
    nrow, ncol = _grid_shape(n, shape)
    idx = np.arange(n).reshape(nrow, ncol)
    right = (idx[:, :-1], idx[:, 1:])
    down = (idx[:-1, :], idx[1:, :])
    pairs = [right, down]
    if torus:
        if ncol > 2:
            pairs.append((idx[:, -1], idx[:, 0]))
        if nrow > 2:
            pairs.append((idx[-1, :], idx[0, :]))
    u = np.concatenate([a.ravel() for a, _ in pairs])
    v = np.concatenate([b.ravel() for _, b in pairs])
    topo = apply_weights(
        n, np.stack([u, v], axis=1), rule, name="grid",
        params={"shape": (nrow, ncol), "torus": bool(torus), "rule": rule},
    )
    r, c = np.divmod(np.arange(n), ncol)
    topo.memo("pos", lambda: np.stack([c, -r], axis=1).astype(np.float64))  # drawing layout
    return topo


@family("star")
def star(n: int, *, center: int = 0) -> Topology:
    """Star: every leaf talks only to ``center`` (BlueFog's ``StarGraph`` weights).

    Leaves: ``W[l, l] = 1 - 1/n``, ``W[l, center] = 1/n``; center: ``W[center, j] = 1/n`` for
    every j (Metropolis weights of the star). Symmetric, doubly stochastic, ``rho = 1 - 1/n``.
    """
    n = check_n(n)
    if isinstance(center, bool) or not isinstance(center, numbers.Integral) or not (
        0 <= center < n
    ):
        raise TopologyError(f"center must be a node index in 0..{n - 1}, got {center!r}.")
    leaves = np.delete(np.arange(n), int(center))
    edges = np.stack([np.full(n - 1, int(center)), leaves], axis=1)
    return apply_weights(n, edges, "metropolis", name="star", params={"center": int(center)})


@family("complete")
def complete(n: int) -> Topology:
    """Complete graph with ``W = 11^T / n``: exact averaging in one step, ``rho = 0``, but every
    node sends n - 1 messages."""
    n = check_n(n)
    return Topology.from_circulant(
        n, {s: 1.0 / n for s in range(n)}, name="complete", stochastic="doubly"
    )


@family("erdos_renyi")
@old_rule_keyword
def erdos_renyi(n: int, *, p: float, seed: int = 0, rule: str = "metropolis") -> Topology:
    """Erdos-Renyi graph G(n, p): each of the n(n-1)/2 links is present with probability p.

    A disconnected draw raises: raise p (connectivity needs roughly ``p > ln(n) / n``) or
    change ``seed``. ``rule`` is a weight rule of :data:`RULES`.
    """
    n = check_n(n)
    p = _check_real(p, "p", lo=0.0, hi=1.0, hint="it is the probability of each link")
    seed = _check_seed(seed)
    _check_rule(rule)
    u, v = np.triu_indices(n, k=1)
    keep = np.random.default_rng(seed).random(u.size) < p
    return apply_weights(
        n, np.stack([u[keep], v[keep]], axis=1), rule, name="erdos_renyi",
        params={"p": p, "seed": seed, "rule": rule},
        hint=f"Raise p (connectivity needs roughly p > ln(n)/n = {math.log(max(n, 2)) / n:.3g}) "
        "or change seed.",
    )


@family("geometric")
@old_rule_keyword
def geometric(n: int, *, radius: float, seed: int = 0, rule: str = "metropolis") -> Topology:
    """Random geometric graph: n points uniform in the unit square, linked when their distance
    is ``<= radius``.

    A disconnected draw raises: raise radius (roughly ``sqrt(ln(n) / (pi n))`` is needed) or
    change ``seed``. ``rule`` is a weight rule of :data:`RULES`. The points are kept as a
    drawing layout, ``topology.recall("pos")``.
    """
    n = check_n(n)
    radius = _check_real(radius, "radius", lo=0.0, open_lo=True, hint="it is a distance")
    seed = _check_seed(seed)
    _check_rule(rule)
    from scipy.spatial import cKDTree

    pos = np.random.default_rng(seed).random((n, 2))
    pairs = cKDTree(pos).query_pairs(radius, output_type="ndarray")
    need = math.sqrt(math.log(max(n, 2)) / (math.pi * n))
    topo = apply_weights(
        n, pairs, rule, name="geometric",
        params={"radius": radius, "seed": seed, "rule": rule},
        hint=f"Raise radius (roughly radius > sqrt(ln(n)/(pi n)) = {need:.3g} is needed) "
        "or change seed.",
    )
    topo.memo("pos", lambda: pos)
    return topo


@family("hypercube")
def hypercube(n: int) -> Topology:
    """Hypercube over ``n = 2^d`` nodes: i and j are linked when they differ in exactly one bit.

    Weight ``1/(d + 1)`` on self and each of the d neighbors (doubly stochastic, symmetric).
    """
    n = check_n(n)
    if n & (n - 1):
        lo = 1 << (n.bit_length() - 1)
        raise TopologyError(
            f"A hypercube needs n to be a power of 2, got n = {n}; use n = {lo} or {2 * lo}, "
            "or the exponential graph, which works for any n."
        )
    d = n.bit_length() - 1
    i = np.repeat(np.arange(n), d)
    j = i ^ np.tile(1 << np.arange(d), n)
    return apply_weights(n, np.stack([j, i], axis=1), "metropolis", name="hypercube",
                         params={}, directed=True)


@family("exponential")
def exponential(n: int) -> Topology:
    """Static exponential graph: node i receives from ``i - 2^k`` (and sends to ``i + 2^k``),
    ``k = 0 .. tau - 1``, ``tau = ceil(log2 n)``; weight ``1/(tau + 1)`` on self and each.

    Circulant, doubly stochastic, not symmetric for n > 2 (BlueFog's ``ExponentialTwoGraph``,
    transposed to row = receiver). ``rho = 1 - 2/(tau + 1)`` for even n, smaller for odd n.
    The offsets ``2^k < n`` are distinct mod n, so every node has exactly tau in-neighbors.
    """
    n = check_n(n)
    tau = (n - 1).bit_length()  # ceil(log2 n) for n >= 1
    shifts = {0: 1.0 / (tau + 1)}
    shifts.update({1 << k: 1.0 / (tau + 1) for k in range(tau)})
    return Topology.from_circulant(n, shifts, name="exponential", stochastic="doubly")


# ---------------------------------------------------------------------- validation
def _grid_shape(n: int, shape) -> tuple[int, int]:
    if shape is None:
        nrow = max(r for r in range(1, math.isqrt(n) + 1) if n % r == 0)
        return nrow, n // nrow
    try:
        nrow, ncol = shape
    except (TypeError, ValueError):
        raise TopologyError(
            f"shape must be a pair (nrow, ncol) with nrow * ncol == n, got {shape!r}."
        ) from None
    for v in (nrow, ncol):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise TopologyError(f"shape must hold two positive integers, got {shape!r}.")
    if nrow * ncol != n:
        raise TopologyError(
            f"grid shape {tuple(shape)} has {nrow * ncol} nodes but n = {n}: pass shape=(nrow, "
            "ncol) with nrow * ncol == n, or shape=None for the squarest factorization."
        )
    return int(nrow), int(ncol)


def _check_rule(rule) -> None:
    if rule not in RULES:
        raise TopologyError(
            f"Unknown weight rule {rule!r}; choose one of {', '.join(map(repr, RULES))}."
        )


def _check_real(x, what, *, lo, hi=None, open_lo=False, hint="") -> float:
    ok = not isinstance(x, bool) and isinstance(x, numbers.Real) and math.isfinite(x)
    if ok:
        ok = (x > lo if open_lo else x >= lo) and (hi is None or x <= hi)
    if not ok:
        lo_s = f"{'>' if open_lo else '>='} {lo:g}"
        rng = f"a number {lo_s}" + (f" and <= {hi:g}" if hi is not None else "")
        raise TopologyError(f"{what} must be {rng} ({hint}), got {x!r}.")
    return float(x)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise TopologyError(
            f"seed must be a non-negative integer, got {seed!r}: a fixed seed makes every MPI "
            "rank draw the same graph."
        )
    return int(seed)
