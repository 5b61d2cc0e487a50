r"""Consensus: agreeing on the average of the nodes' initial values.

* :class:`AverageConsensus`: ``x^{k+1} = W^{(k)} x^k``. With doubly stochastic W every step
  keeps the average and ``||x^k - x_bar|| <= rho^k ||x^0 - x_bar||``.
"""

from __future__ import annotations

from declearn.algorithms.base import Algorithm

__all__ = ["AverageConsensus"]


class AverageConsensus(Algorithm):
    """``x_i <- sum_j W[i, j] x_j`` with the topology of iteration k (static or dynamic)."""

    name = "average_consensus"

    def __init__(self, comm, topology, x0):
        self.topology = topology
        super().__init__(comm, None, x0=x0)
        comm._check_topology(topology.at(0), "receiver")

    def _step(self) -> None:
        self.x = self.comm.neighbor_allreduce(self.x, self.topology.at(self.k))
