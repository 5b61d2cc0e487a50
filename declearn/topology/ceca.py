r"""CECA (Ding, Jin, Ying, Yuan, Yin, ICML 2023): one-peer rounds that average exactly for any n.

The schedule has ``tau = ceil(log2 n)`` rounds. Write ``n - 1`` in binary, most significant bit
first: ``b_0 b_1 ... b_{tau-1}`` (so ``b_0 = 1``), and let ``c_0 = 0``,
``c_{r+1} = 2 c_r + b_r`` (the bits read so far, as a number; ``c_tau = n - 1``). In round r
every node receives exactly one message:

* ``ports=2``: node i receives from ``i - (c_r + b_r)`` and sends to ``i + (c_r + b_r)``
  (mod n): a circulant shift, one send and one receive per node;
* ``ports=1`` (even n only): pairwise exchanges, odd i with ``i + 2 c_r + 1`` and even i
  with ``i - 2 c_r - 1`` (mod n): one ``Sendrecv`` per node. An odd n would pair some node
  with itself, so it is refused.

This module gives the *pattern* as a :class:`DynamicTopology` of period tau whose round-r
matrix is ``W(r) = (I + P_r) / 2`` with ``P_r`` the permutation "receive from your round-r
peer" (doubly stochastic, usable as any one-peer topology). The exact average needs more
than ``W(r)``: the two-copy CECA update of :class:`declearn.algorithms.CECA` reads the bits
``b_r`` and counters ``c_r`` kept here and uses only who talks to whom.
"""

from __future__ import annotations

import numbers

import numpy as np

from declearn.errors import TopologyError
from declearn.topology.base import Topology, check_n
from declearn.topology.dynamic import TopologySequence
from declearn.topology.registry import family

__all__ = ["ceca", "CECATopology", "ceca_schedule"]


def ceca_schedule(n: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(bits, counters)`` of the CECA rounds over n nodes: ``bits[r] = b_r`` (binary digits
    of n - 1, most significant first) and ``counters[r] = c_r`` (the value of the bits before
    round r). Empty for n = 1 (nothing to average)."""
    n = check_n(n)
    bits = tuple(int(b) for b in bin(n - 1)[2:]) if n > 1 else ()
    counters, c = [], 0
    for b in bits:
        counters.append(c)
        c = 2 * c + b
    return bits, tuple(counters)


class CECATopology(TopologySequence):
    """The CECA one-peer pattern (see the module docstring): period tau, ``at(r)`` is round
    ``r mod tau``. ``bits``, ``counters`` and ``peers[r]`` (the node each node receives from in
    round r) describe the schedule; ``ports`` is 1 or 2."""

    def __init__(self, n: int, ports: int):
        bits, counters = ceca_schedule(n)
        i = np.arange(n)
        peers, steps = [], []
        for r, (b, c) in enumerate(zip(bits, counters)):
            if ports == 2:
                hop = c + b
                peers.append((i - hop) % n)
                steps.append(Topology.from_circulant(
                    n, {0: 0.5, hop: 0.5}, name="ceca",
                    params={"k": r, "bit": b, "counter": c, "hop": hop}, stochastic="doubly"))
            else:
                hop = 2 * c + 1
                peer = np.where(i % 2 == 1, (i + hop) % n, (i - hop) % n)
                peers.append(peer)
                steps.append(Topology.from_coo(
                    n, np.concatenate([i, i]), np.concatenate([i, peer]), np.full(2 * n, 0.5),
                    name="ceca", params={"k": r, "bit": b, "counter": c, "hop": hop},
                    stochastic="doubly"))
        if not steps:  # n = 1: one idle round keeps at(k) defined
            steps.append(Topology.from_circulant(1, {0: 1.0}, name="ceca"))
        super().__init__(steps, name="ceca", params={"ports": ports})
        self.ports = ports
        self.bits = bits
        self.counters = counters
        self.peers = tuple(peers)
        for p in self.peers:
            p.flags.writeable = False


@family("ceca", dynamic=True)
def ceca(n: int, *, ports: int = 2) -> CECATopology:
    """CECA one-peer rounds (exact averaging for any n with :class:`declearn.algorithms.CECA`):
    period ``ceil(log2 n)``, one message per node per round; ``ports=1`` (pairwise, even n)
    or ``ports=2`` (a shift, any n)."""
    n = check_n(n)
    if isinstance(ports, bool) or not isinstance(ports, numbers.Integral) or ports not in (1, 2):
        raise TopologyError(
            f"ports must be 1 (pairwise exchanges, even n) or 2 (send to one node, receive "
            f"from another, any n), got {ports!r}."
        )
    if ports == 1 and n % 2:
        raise TopologyError(
            f"CECA's one-port form pairs odd nodes with even ones, so it needs an even n; got "
            f"n={n}. Use ports=2 (one send and one receive per round), which works for any n."
        )
    return CECATopology(n, int(ports))
