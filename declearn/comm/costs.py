r"""What a collective costs on a network of n nodes: the latency-bandwidth (alpha-beta) model.

One message of ``b`` bytes between two nodes takes ``alpha + b / beta`` seconds (``alpha`` the
latency, ``beta`` the bandwidth in bytes per second; Hockney's model). Every node has one
full-duplex link: it can send one message while it receives another, but its messages in one
direction go one after the other. A collective costs the messages on its critical path; with
``M`` the bytes of one node's input (``x[i]`` under SimComm, the rank's ``x`` under MPIComm):

* ``allreduce``: ``2 (n - 1) (alpha + M / (n beta))``. The ring algorithm: reduce-scatter then
  allgather, ``2 (n - 1)`` steps, each a message of ``M / n`` bytes (one chunk).
* ``allgather``: ``(n - 1) (alpha + M / beta)`` (ring, ``n - 1`` steps of one whole input).
* ``broadcast``: ``ceil(log2 n) (alpha + M / beta)`` (binomial tree).
* ``barrier``: ``ceil(log2 n) alpha`` (dissemination barrier, no payload).
* ``neighbor_allreduce``, ``neighbor_allgather``: ``p (alpha + M / beta)`` (each node sends its
  whole ``x`` to each out-neighbor).
* ``neighbor_alltoall``: ``p (alpha + M / (D_out beta))`` (one slot of ``m``, ``M / D_out``
  bytes, per out-neighbor).

``p = max_i max(in_i, out_i)`` is the number of peers of the busiest node in one direction
(self excluded): ``1`` for one-peer graphs (one-peer exponential, OD-EquiDyn), ``2`` for a
ring, ``log2 n`` for the static exponential graph. Every operation costs ``0`` at ``n = 1``.

Two limits say what the model teaches. For small messages the latency terms dominate: a ring
allreduce pays ``2 (n - 1) alpha``, one-peer averaging ``alpha``, a factor ``2 (n - 1)``. For
large ones the bandwidth terms do: ``2 (n - 1) / n * M / beta`` against ``M / beta``, a factor
that tends to 2. The ring allreduce is bandwidth-optimal (Patarasuk & Yuan 2009: no allreduce
sends less than ``2 (n - 1) / n * M`` bytes per node), so the factor 2 is the least that gossip
over a one-peer graph saves per iteration, and it grows as models shrink or n grows.

Not modelled: computation, contention between links in a real switch fabric, hierarchical
networks (fast links inside a machine, slow ones between machines), protocol overheads.
:class:`~declearn.comm.DelayedComm` (``cost="alpha_beta"``) charges exactly these formulas;
:func:`peers` reads ``p`` off a topology.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

__all__ = ["NetworkModel", "peers", "ring_over_one_peer"]


def _check_positive(value, what: str, hint: str, *, zero: bool = False,
                    infinite: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and \
        (value >= 0 if zero else value > 0) and (infinite or math.isfinite(value))
    if not ok:
        raise ValueError(f"{what} must be a number {'>= 0' if zero else '> 0'}, got "
                         f"{value!r}. {hint}")
    return float(value)


def _check_nodes(n) -> int:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n (the number of nodes) must be an integer >= 1, got {n!r}.")
    return int(n)


def _check_bytes(nbytes) -> float:
    return _check_positive(nbytes, "nbytes (bytes of one node's input)",
                           "Use x.numel() * x.element_size() of one node's tensor.", zero=True)


@dataclass(frozen=True)
class NetworkModel:
    """The alpha-beta model of the module docstring: a message of ``b`` bytes takes
    ``alpha + b / beta`` seconds. ``alpha`` >= 0 (seconds), ``beta`` > 0 (bytes per
    second; ``math.inf`` for latency only). Methods give the seconds of one collective over
    ``n`` nodes whose inputs have ``nbytes`` bytes each."""

    alpha: float
    beta: float = math.inf

    def __post_init__(self):
        _check_positive(self.alpha, "alpha (the latency of one message, in seconds)",
                        "0 models an ideal network.", zero=True)
        _check_positive(self.beta, "beta (the bandwidth, in bytes per second)",
                        "E.g. 25 Gbit/s is 25e9 / 8 = 3.125e9; math.inf for no bandwidth term.",
                        infinite=True)

    def message(self, nbytes: float) -> float:
        """``alpha + nbytes / beta``: one point-to-point message."""
        return self.alpha + _check_bytes(nbytes) / self.beta

    def allreduce(self, n: int, nbytes: float) -> float:
        """Ring allreduce: ``2 (n - 1) (alpha + nbytes / (n beta))``."""
        n = _check_nodes(n)
        return 2 * (n - 1) * self.message(_check_bytes(nbytes) / n)

    def allgather(self, n: int, nbytes: float) -> float:
        """Ring allgather: ``(n - 1) (alpha + nbytes / beta)``."""
        return (_check_nodes(n) - 1) * self.message(nbytes)

    def broadcast(self, n: int, nbytes: float) -> float:
        """Binomial-tree broadcast: ``ceil(log2 n) (alpha + nbytes / beta)``."""
        return _log2_rounds(n) * self.message(nbytes)

    def barrier(self, n: int) -> float:
        """Dissemination barrier: ``ceil(log2 n) alpha``."""
        return _log2_rounds(n) * self.alpha

    def neighbor(self, p: int, nbytes: float) -> float:
        """Neighbor averaging (or allgather) with ``p`` peers on the busiest node:
        ``p (alpha + nbytes / beta)``."""
        if isinstance(p, bool) or not isinstance(p, numbers.Integral) or p < 0:
            raise ValueError(f"p (peers of the busiest node) must be an integer >= 0, got "
                             f"{p!r}; declearn.comm.costs.peers(topology) reads it off a graph.")
        return int(p) * self.message(nbytes)

    @classmethod
    def fit_allreduce(cls, n: int, nbytes, seconds) -> NetworkModel:
        """The ``alpha, beta`` whose ring-allreduce time best matches measured ``seconds`` at
        message sizes ``nbytes`` (least squares of ``t = 2 (n - 1) alpha + 2 (n - 1) / n *
        nbytes / beta``, both coefficients >= 0; at least two distinct sizes)."""
        n = _check_nodes(n)
        if n < 2:
            raise ValueError("An allreduce over n = 1 node sends nothing: fit with n >= 2.")
        b = np.asarray(nbytes, dtype=float).ravel()
        t = np.asarray(seconds, dtype=float).ravel()
        if b.shape != t.shape or np.unique(b).size < 2:
            raise ValueError(f"nbytes and seconds must be two lists of the same length with at "
                             f"least two distinct sizes, got {b.size} sizes ({np.unique(b).size} "
                             f"distinct) and {t.size} times.")
        if not (np.isfinite(t).all() and (t >= 0).all() and np.isfinite(b).all()):
            raise ValueError("seconds must be finite and >= 0, nbytes finite.")
        A = np.stack([np.full_like(b, 2 * (n - 1)), 2 * (n - 1) / n * b], axis=1)
        from scipy.optimize import nnls

        (alpha, inv_beta), _ = nnls(A, t)
        return cls(float(alpha), math.inf if inv_beta <= 0 else float(1 / inv_beta))

    def __str__(self) -> str:
        bw = "inf" if math.isinf(self.beta) else f"{self.beta * 8 / 1e9:.3g} Gbit/s"
        return f"alpha = {self.alpha * 1e6:.3g} us, beta = {bw}"


def _log2_rounds(n) -> int:
    n = _check_nodes(n)
    return (n - 1).bit_length()  # ceil(log2 n), 0 at n = 1


def peers(topology) -> int:
    """``max_i max(in_i, out_i)``: messages the busiest node receives (or sends) in one
    neighbor exchange over the static ``topology`` (self excluded). Pass ``topology.at(k)``
    for a dynamic one."""
    from declearn.topology.base import Topology

    if not isinstance(topology, Topology):
        raise TypeError(f"peers needs a static declearn Topology (topology.at(k) for a dynamic "
                        f"one), got {type(topology).__name__}.")

    def busiest() -> int:
        if topology.n < 2:
            return 0
        return int(max(topology.in_degrees.max(), topology.out_degrees.max()))

    return topology.memo("costs.peers", busiest)


def ring_over_one_peer(model: NetworkModel, n: int, nbytes: float) -> float:
    """The ratio of a ring allreduce's time to one one-peer neighbor exchange:
    ``2 (n - 1) (alpha + M / (n beta)) / (alpha + M / beta)``, between ``2 (n - 1) / n``
    (bandwidth only: large messages) and ``2 (n - 1)`` (latency only: small ones)."""
    one = model.neighbor(1, nbytes)
    if one == 0:
        raise ValueError("Both times are 0 (alpha = 0 and no bytes): the ratio is undefined.")
    return model.allreduce(n, nbytes) / one
