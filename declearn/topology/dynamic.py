r"""Periodic dynamic topologies: one-peer sequences and explicit sequences of topologies.

One-peer exponential graph (Ying et al., NeurIPS 2021): with ``tau = ceil(log2 n)``,

.. math::  W(k) = \tfrac12 \big(I + P^{2^{k \bmod \tau}}\big), \qquad (P x)_i = x_{i-1},

i.e. at step k node i averages itself with node ``i - 2^(k mod tau)``: one message per node
per step. When ``n = 2^tau`` the product of any tau consecutive steps is exactly ``11^T/n``.

:func:`one_peer` turns any regular base graph into such a sequence (BlueFog's
``GetDynamicOnePeerSendRecvRanks``): at step k node i sends only to its
``(k mod d)``-th out-neighbor in clockwise order, and every step is ``(I + P_k)/2`` for the
resulting one-message-per-node map ``P_k``. That is doubly stochastic only when ``P_k`` is a
permutation; on a star or a grid it is not, and we refuse it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from declearn.errors import TopologyError
from declearn.topology.base import DynamicTopology, Topology, check_n
from declearn.topology.registry import family, make

__all__ = [
    "one_peer_exponential",
    "one_peer",
    "sequence",
    "OnePeerSequence",
    "TopologySequence",
]


class TopologySequence(DynamicTopology):
    """A periodic sequence ``W(k) = topologies[k mod len(topologies)]`` (period = length)."""

    def __init__(self, topologies: Iterable[Topology], *, name: str = "sequence",
                 params: Mapping | None = None):
        steps = list(topologies)
        if not steps:
            raise TopologyError("A topology sequence needs at least one Topology.")
        for k, t in enumerate(steps):
            if not isinstance(t, Topology):
                raise TopologyError(
                    f"Item {k} of the sequence is a {type(t).__name__}, not a static Topology; "
                    "pass topology.at(j) for the steps of a dynamic topology."
                )
        ns = {t.n for t in steps}
        if len(ns) != 1:
            raise TopologyError(
                f"All topologies of a sequence must have the same n, got n in {sorted(ns)}."
            )
        super().__init__(steps[0].n, name=name, params=params, period=len(steps))
        self.topologies = tuple(steps)

    def _step(self, k: int) -> Topology:
        return self.topologies[k]


def sequence(*topologies, name: str = "sequence") -> TopologySequence:
    """Cycle through the given topologies: ``sequence(t0, t1, t2).at(k)`` is ``t_(k mod 3)``.

    Accepts topologies as arguments or one iterable of them.
    """
    if len(topologies) == 1 and not isinstance(topologies[0], Topology):
        topologies = tuple(topologies[0])
    return TopologySequence(topologies, name=name)


class OnePeerSequence(TopologySequence):
    """The one-peer sequence of a regular base graph (see :func:`one_peer`); ``base`` keeps
    the base topology and ``targets[k]`` the node each node sends to at step k."""

    def __init__(self, base: Topology, targets: np.ndarray, steps: list[Topology], name: str,
                 params: Mapping):
        super().__init__(steps, name=name, params=params)
        self.base = base
        self.targets = targets
        self.targets.flags.writeable = False


@family("one_peer_exponential", dynamic=True)
def one_peer_exponential(n: int) -> OnePeerSequence:
    r"""One-peer exponential graph: at step k node i averages itself with ``i - 2^(k mod tau)``
    (weights 1/2), ``tau = ceil(log2 n)``; period tau, one message per node per step.

    Every step is circulant and doubly stochastic. For ``n = 2^tau`` the product of tau
    consecutive steps is exactly ``11^T/n`` (exact averaging every tau steps); for other n it
    is not, use :func:`declearn.topology.od_equidyn` or CECA there.
    """
    n = check_n(n)
    tau = max(1, (n - 1).bit_length())  # ceil(log2 n), at least one step
    hops = [(1 << j) % n for j in range(tau)]
    return _circulant_one_peer(n, hops, name="one_peer_exponential", params={"tau": tau})


def one_peer(base: Topology) -> OnePeerSequence:
    r"""The one-peer sequence of a regular base graph: at step k node i sends only to its
    ``(k mod d)``-th out-neighbor in clockwise order (``(j - i) mod n`` ascending), and the
    receiver averages with weight 1/2 on itself and 1/2 on the one message; period d, the
    common out-degree. The base's weights are ignored, only its links count.

    Each step must be doubly stochastic, i.e. every node must receive exactly one message per
    step; otherwise a :class:`TopologyError` says which node receives none or several. This
    holds for circulant graphs (ring, exponential, ...), not for a star or a grid.
    ``one_peer(exponential(n))`` equals :func:`one_peer_exponential` ``(n)``.
    """
    if isinstance(base, DynamicTopology) or not isinstance(base, Topology):
        raise TopologyError(
            f"one_peer() takes a static Topology, got {type(base).__name__}; e.g. "
            "one_peer(exponential(8)) or one_peer(ring(8))."
        )
    n, name = base.n, f"one_peer({base.name})"
    params = {"base": base.name, **base.params}
    if n == 1:
        return _circulant_one_peer(1, [0], name=name, params=params, base=base)
    out_deg = base.out_degrees
    d = int(out_deg[0])
    if d == 0 or not np.all(out_deg == d):
        lo, hi = int(np.argmin(out_deg)), int(np.argmax(out_deg))
        raise TopologyError(
            f"one_peer needs a regular base graph (every node with the same number of "
            f"out-neighbors), but in {base.name} node {hi} sends to {out_deg[hi]} nodes and node "
            f"{lo} to {out_deg[lo]}: cycling through them would make some node receive several "
            "messages in one step and others none, so the steps would not be doubly stochastic "
            "(consensus would be biased). Use a regular graph such as ring or exponential, or "
            "od_equidyn / ou_equidyn, which are one-peer for any graph size."
        )
    if base.shifts is not None:
        hops = sorted(s % n for s in base.shifts if s % n != 0)  # j -> j + s for each shift s
        if len(hops) == d:
            return _circulant_one_peer(n, hops, name=name, params=params, base=base)
    # Clockwise order of the out-neighbors of every node, as a (n, d) array.
    out = np.stack(base._out_lists())
    i = np.arange(n)[:, None]
    order = np.argsort((out - i) % n, axis=1, kind="stable")
    out = np.take_along_axis(out, order, axis=1)
    targets = out.T.copy()  # targets[k, i]: where node i sends at step k
    steps = []
    for k in range(d):
        received = np.bincount(targets[k], minlength=n)
        if np.any(received != 1):
            many, none = int(np.argmax(received)), int(np.argmin(received))
            raise TopologyError(
                f"The one-peer sequence of {base.name} is not doubly stochastic: at step {k} "
                f"node {many} receives {received[many]} messages and node {none} receives "
                f"{received[none]}, so averaging would be biased. Each step must map senders "
                "to receivers one-to-one (true for circulant graphs such as ring or "
                "exponential); use one of those, or od_equidyn / ou_equidyn."
            )
        rows = np.concatenate([np.arange(n), targets[k]])
        cols = np.concatenate([np.arange(n), np.arange(n)])
        steps.append(Topology.from_coo(n, rows, cols, np.full(2 * n, 0.5),
                                       name=name, params={"k": k}))
    return OnePeerSequence(base, targets, steps, name=name, params=params)


@family("one_peer", dynamic=True)
def one_peer_family(n: int, *, base: str = "exponential") -> OnePeerSequence:
    """One-peer sequence of the regular family ``base`` over n nodes (see :func:`one_peer`)."""
    return one_peer(make(base, n))


def _circulant_one_peer(n, hops, *, name, params, base=None) -> OnePeerSequence:
    """Steps ``(I + P^hop_k)/2`` where node i sends to ``i + hop_k`` (receives from i - hop_k)."""
    i = np.arange(n)
    targets = np.stack([(i + h) % n for h in hops])
    steps = [
        Topology.from_circulant(n, {0: 0.5, h: 0.5} if h else {0: 1.0}, name=name,
                                params={"k": k, "hop": h}, stochastic="doubly")
        for k, h in enumerate(hops)
    ]
    return OnePeerSequence(base, targets, steps, name=name, params=params)
