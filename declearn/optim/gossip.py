r"""Gossip optimizers for decentralized deep learning: DSGD and RelaySGD as ``torch.optim``
optimizers, with the same ``step()`` + ``average()`` pattern as the Local SGD family.

``step()`` is the local SGD step of :class:`~declearn.optim.local_sgd.PeriodicSyncSGD`
(momentum, Nesterov and weight decay kept local, never communicated). ``average()`` then
mixes the flat parameter vector ``x`` of every node (``k`` counts the calls):

* :class:`DecentralizedSGD` (D-PSGD / DSGD in its adapt-then-combine form):
  ``x_i <- sum_j W(k)[i, j] x_j``, one ``neighbor_allreduce`` over ``topology.at(k)``. With
  plain SGD this is exactly :class:`declearn.algorithms.DGD` with ``variant="atc"``.
* :class:`RelaySGD` (Vogels et al., NeurIPS 2021) on a spanning tree:
  ``x_i <- (S_i + (n - C_i) x0) / n`` where ``S_i``, ``C_i`` are the relayed sum and count of
  the models (:class:`declearn.algorithms.relay.RelaySum`) and ``x0`` the shared starting
  model fills what has not arrived yet. With plain SGD this is exactly
  :class:`declearn.algorithms.RelaySGD` with ``fill="initial"``.

``tau > 1`` mixes only after every ``tau``-th call (local steps in between). Under MPIComm each
rank passes its own model; under SimComm(n) a model of n stacked copies
(:class:`~declearn.optim.stacked.StackedModel`).
"""

from __future__ import annotations

import torch

from declearn.algorithms.local_sgd import SyncRule, check_period
from declearn.algorithms.mixing import check_mixing, check_schedule
from declearn.algorithms.relay import RelaySum
from declearn.errors import TopologyError
from declearn.optim.local_sgd import PeriodicSyncSGD
from declearn.optim.sync_state import known_rule
from declearn.topology.base import DynamicTopology, Topology

__all__ = ["GossipAveraging", "RelayAveraging", "DecentralizedSGD", "RelaySGD"]

@known_rule
class GossipAveraging(SyncRule):
    """``x <- W(r) x`` at the r-th synchronisation (r = 0, 1, ...), W doubly stochastic."""

    name = "gossip"
    uses_anchor = False

    def __init__(self, comm, topology, tau: int = 1):
        super().__init__(comm, tau)
        if not isinstance(topology, (Topology, DynamicTopology)):
            raise TopologyError(
                f"Expected a declearn Topology, got {type(topology).__name__}; e.g. "
                "declearn.topology.ring(comm.size) or exponential(comm.size)."
            )
        self.topology = topology
        self.rounds = 0
        check_schedule(comm, topology, "doubly", "DecentralizedSGD")

    def _sync(self, x: torch.Tensor, lr: float) -> torch.Tensor:
        topo = self.topology.at(self.rounds)
        check_mixing(self.comm, topo, "doubly", "DecentralizedSGD")
        self.rounds += 1
        return self.comm.neighbor_allreduce(x, topo)


@known_rule
class RelayAveraging(SyncRule):
    """RelaySum over a spanning tree (or a pair of trees), the missing mass filled with the
    shared starting model (the anchor ``z``, node 0's, never updated)."""

    name = "relay"
    uses_anchor = True

    def __init__(self, comm, tree, tau: int = 1):
        super().__init__(comm, tau)
        self.relay = RelaySum(comm, tree)  # raises with a hint when tree is not a tree

    def _sync(self, x: torch.Tensor, lr: float) -> torch.Tensor:
        return self.relay.mix(x, self.z)


class DecentralizedSGD(PeriodicSyncSGD):
    """DSGD: a local SGD step, then ``x_i <- sum_j W(k)[i, j] x_j`` over ``topology.at(k)``
    (every ``tau``-th call of ``average()``); see the module docstring."""

    def __init__(self, params, comm, topology, *, lr, tau: int = 1, **sgd):
        rule = GossipAveraging(comm, topology, check_period(tau))
        super().__init__(params, comm, rule, lr=lr, **sgd)


class RelaySGD(PeriodicSyncSGD):
    """RelaySGD: a local SGD step, then RelaySum averaging over the spanning ``tree`` (every
    ``tau``-th call of ``average()``); see the module docstring."""

    def __init__(self, params, comm, tree, *, lr, tau: int = 1, **sgd):
        rule = RelayAveraging(comm, tree, check_period(tau))
        super().__init__(params, comm, rule, lr=lr, **sgd)
