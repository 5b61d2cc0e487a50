r"""Gossip SGD with periodic global averaging (Gossip-PGA; Chen et al., ICML 2021) as a
``torch.optim`` optimizer, with the ``step()`` + ``average()`` pattern of the others.

``step()`` is the local SGD step of :class:`~declearn.optim.local_sgd.PeriodicSyncSGD`
(momentum, Nesterov and weight decay kept local, never communicated). ``average()`` counts
the calls and synchronises after every ``tau``-th; the r-th synchronisation (r = 0, 1, ...)
of the flat parameter vector ``x`` is

* ``x <- (1/n) sum_j x_j`` (one ``allreduce``) when ``(r + 1) % period == 0``;
* ``x_i <- sum_j W(r)[i, j] x_j`` over ``topology.at(r)`` (one ``neighbor_allreduce``)
  otherwise.

With ``tau = 1`` (the default) r is the iteration and ``period`` the paper's ``H``; with plain
SGD this is exactly :class:`declearn.algorithms.GossipPGA`. With ``tau > 1`` there are
``tau - 1`` purely local steps between synchronisations and ``period`` counts
synchronisations. ``period = 1`` is Local SGD (parallel SGD when ``tau = 1``); a period
longer than the run is :class:`~declearn.optim.DecentralizedSGD`.

A checkpoint (``state_dict()``) holds the rule's ``calls`` (the position in the ``tau``
period) and ``rounds`` (r: the position in the ``period`` and in the dynamic topology's
schedule), besides the parameters and the momentum buffer.
"""

from __future__ import annotations

import torch

from declearn.algorithms.gossip_pga import check_global_period
from declearn.algorithms.local_sgd import SyncRule, check_period
from declearn.algorithms.mixing import check_mixing, check_schedule
from declearn.errors import TopologyError
from declearn.optim.local_sgd import PeriodicSyncSGD
from declearn.optim.sync_state import known_rule
from declearn.topology.base import DynamicTopology, Topology

__all__ = ["GossipPGA", "PeriodicGlobalAveraging"]

_WHO = "GossipPGA"


@known_rule
class PeriodicGlobalAveraging(SyncRule):
    """At the r-th synchronisation: ``x <- mean_j x_j`` if ``(r + 1) % period == 0``, else
    ``x <- W(r) x`` with ``W(r) = topology.at(r)`` doubly stochastic."""

    name = "periodic_global_averaging"
    uses_anchor = False

    def __init__(self, comm, topology, period: int, tau: int = 1):
        super().__init__(comm, tau)
        self.period = check_global_period(period)
        if not isinstance(topology, (Topology, DynamicTopology)):
            raise TopologyError(
                f"Expected a declearn Topology, got {type(topology).__name__}; e.g. "
                "declearn.topology.ring(comm.size) or exponential(comm.size)."
            )
        self.topology = topology
        self.rounds = 0
        check_schedule(comm, topology, "doubly", _WHO)

    def _sync(self, x: torch.Tensor, lr: float) -> torch.Tensor:
        r = self.rounds
        if (r + 1) % self.period == 0:
            out = self.comm.allreduce(x, "mean")
        else:
            topo = self.topology.at(r)
            check_mixing(self.comm, topo, "doubly", _WHO)
            out = self.comm.neighbor_allreduce(x, topo)
        self.rounds = r + 1
        return out

    def params(self) -> dict:
        return {**super().params(), "period": self.period}


class GossipPGA(PeriodicSyncSGD):
    """Gossip-PGA: a local SGD step, then (every ``tau``-th call of ``average()``) a gossip
    step over ``topology.at(r)``, replaced by an exact global average at every
    ``period``-th synchronisation; see the module docstring."""

    def __init__(self, params, comm, topology, *, lr, period: int, tau: int = 1, **sgd):
        rule = PeriodicGlobalAveraging(comm, topology, check_global_period(period),
                                       check_period(tau))
        super().__init__(params, comm, rule, lr=lr, **sgd)
