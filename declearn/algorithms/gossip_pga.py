r"""Gossip SGD with periodic global averaging (Gossip-PGA; Chen, Yuan, Zhang, Pan, Xu, Yin,
"Accelerating Gossip SGD with Periodic Global Averaging", ICML 2021).

Decentralized SGD in its adapt-then-combine form, where every ``H``-th combination is an exact
global average instead of a gossip step. With ``g = grad`` of the node's own ``f_i``
(stochastic when the problem has ``sigma > 0``), ``lr = lr(k)``, ``W^(k) = topology.at(k)``
and the iteration ``k = 0, 1, 2, ...``:

* ``x_i^(k+1/2) = x_i^(k) - lr g_i(x_i^(k))`` (the local step);
* ``x^(k+1) = (1/n) sum_j x_j^(k+1/2)`` on every node if ``(k + 1) % H == 0``, otherwise
  ``x^(k+1) = W^(k) x^(k+1/2)`` (rows of ``W^(k)`` = receivers).

So the global averages come after the H-th, 2H-th, ... iterations (k = H - 1, 2H - 1, ...),
the convention of Local SGD in :mod:`declearn.algorithms.local_sgd`. Where the paper's
algorithm puts the average within a period is not checked: its body could not be read here
(only its abstract, quoted below; no code of the paper is public as far as we found). Any
offset changes which iterations average, not the rate. Step k always reads
``topology.at(k)``: the W of a step that averages globally is not used, and the schedule of a
dynamic topology is not shifted. The paper's adaptive-period variant (Gossip-AGA) is not here:
nothing we could read says its experiments rely on it.

Two limits, checked by the tests: ``H = 1`` averages after every step, which is parallel SGD
(``mean_j(x_j - lr g_j) = x - lr mean_j g_j`` once the nodes agree, up to rounding since the
sums are taken in another order); an ``H`` longer than the run never averages, which is DSGD
(:class:`~declearn.algorithms.DGD` with ``variant="atc"``), bit for bit.

Per ``H`` iterations: ``H - 1`` ``neighbor_allreduce`` (one message per neighbor) and one
``allreduce`` (the communicator counts what its implementation sends).
"""

from __future__ import annotations

import numbers

import torch

from declearn.algorithms.mixing import GossipMethod

__all__ = ["GossipPGA", "check_global_period"]


def check_global_period(period) -> int:
    """The number ``H`` of iterations between global averages as an int >= 1, or a
    ValueError saying what to pass."""
    if isinstance(period, bool) or not isinstance(period, numbers.Integral) or period < 1:
        raise ValueError(
            f"period (H, the iterations between two global averages) must be an integer "
            f">= 1, got {period!r}. H = 1 averages globally after every step (parallel SGD); "
            "an H longer than the run never does (DSGD)."
        )
    return int(period)


class GossipPGA(GossipMethod):
    r"""Gossip SGD with periodic global averaging: ``x^(k+1/2) = x - lr g(x)``; then
    ``x <- (1/n) sum_j x_j^(k+1/2)`` when ``(k + 1) % period == 0``, else
    ``x <- W^(k) x^(k+1/2)`` (see the module docstring). ``period`` is the paper's ``H``.

    W must be doubly stochastic (the global average and the gossip steps then keep the same
    mean). With gradient noise (``sigma > 0``) this is the stochastic method of the paper.

    What the paper states (abstract, quoted): "Its transient stage, i.e., the iterations
    required to reach asymptotic linear speedup stage, improves from
    Ω(β^4 n^3/(1-β)^4) to Ω(β^4 n^3 H^4) for non-convex problems." and "Its transient-stage
    complexity is also superior to Local SGD which has order Ω(n^3 H^4)." Here ``β`` is the
    mixing rate ``||W - 11^T/n||_2`` of the gossip matrix (:attr:`Topology.rho`), ``n`` the
    number of nodes and ``H`` the period. The abstract does not say whether these orders are
    for iid or heterogeneous data, and the paper's table of orders could not be read here.
    For comparison, K. Yuan's talk (an author of the paper) gives DSGD's order for non-convex,
    data-homogeneous problems as ``O(β^4 n^3/(1-β)^2)`` (its ``rho``, the same mixing rate); the
    abstract's ``β^4 n^3/(1-β)^4`` has a larger power of ``1/(1-β)``, which suggests (not
    read) the heterogeneous case. Comparing the abstract's two orders, the global averages
    help where ``H < 1/(1 - β)``: the period, not the graph, then bounds how far the nodes
    drift apart.
    """

    name = "gossip_pga"
    mixing = "doubly"
    _assigns_new_tensors = True

    def __init__(self, comm, problem, topology, *, lr, period: int, x0=None):
        self.period = check_global_period(period)
        super().__init__(comm, problem, topology, lr=lr, x0=x0)

    def _params(self) -> dict:
        return {**super()._params(), "period": self.period}

    def averages_globally(self, k: int | None = None) -> bool:
        """Whether iteration ``k`` (default: the next one) ends with the global average."""
        return ((self.k if k is None else k) + 1) % self.period == 0

    def _step(self) -> None:
        half = torch.add(self.x, self.grad(self.x), alpha=-self.lr())
        if self.averages_globally():
            self.x = self.comm.allreduce(half, "mean")
        else:
            self._check_mixing(self.topology.at(self.k))  # remembered: cheap after the first
            self.x = self.mix(half)
