r"""Consensus: agreeing on the average of the nodes' initial values.

* :class:`AverageConsensus`: ``x^{k+1} = W^{(k)} x^k``. With doubly stochastic W every step
  keeps the average and ``||x^k - x_bar|| <= rho^k ||x^0 - x_bar||``.
* :class:`PushSumConsensus`: directed graphs with column-stochastic weights ``A`` (each sender
  splits its mass): ``x <- A x``, ``w <- A w``, ``w^0 = 1``; the ratio ``x / w`` tends to the
  average although neither ``x`` nor ``w`` does.
* :class:`CECA`: one message per node per round and the *exact* average after
  ``ceil(log2 n)`` rounds, for any n.

Push-sum sends ``x`` and ``w`` in one buffer (:mod:`declearn.algorithms.flat`).
"""

from __future__ import annotations

import warnings

import torch

from declearn.algorithms.base import Algorithm
from declearn.algorithms.flat import node_dims, pack, unpack
from declearn.algorithms.mixing import CHECKED_STEPS, check_mixing
from declearn.errors import TopologyError
from declearn.topology.base import DynamicTopology, Topology

__all__ = ["AverageConsensus", "PushSumConsensus", "CECA"]


class AverageConsensus(Algorithm):
    """``x_i <- sum_j W[i, j] x_j`` with the topology of iteration k (static or dynamic).

    W must be row-stochastic (else a TopologyError). The nodes reach the *mean* of ``x0`` only
    if its columns sum to 1 too: with rows only they agree on ``pi^T x0``, where ``pi`` is the
    left Perron vector of W (``pi^T W = pi^T``, ``sum_i pi_i = 1``), and a UserWarning says
    so (chapter 06 shows that bias on purpose).
    """

    name = "average_consensus"
    _assigns_new_tensors = True

    def __init__(self, comm, topology, x0):
        self.topology = topology
        super().__init__(comm, None, x0=x0)
        check_mixing(comm, topology.at(0), "row", self.name)
        steps = [topology.at(k)
                 for k in range(min(getattr(topology, "period", None) or 1, CHECKED_STEPS))]
        if not all(t.is_column_stochastic for t in steps):
            limit = ("pi^T x0, with pi the left Perron vector of W (pi^T W = pi^T, sum pi = 1)"
                     if isinstance(topology, Topology) else
                     "sum_i pi_i x0_i, with pi the left (Perron) weights of the product of the "
                     "W's")
            warnings.warn(
                f"The weights of {topology.name} have rows summing to 1 but not columns, so "
                f"average consensus does not keep the average: the nodes agree on {limit}, "
                "not the mean of x0. For the mean use doubly stochastic weights (Metropolis "
                "weights on an undirected graph: ring(n), grid(n), apply_weights(n, edges, "
                "rule='metropolis')), or PushSumConsensus with column-stochastic weights "
                "(rule='uniform_out') on a directed graph.",
                UserWarning, stacklevel=2,
            )

    def _step(self) -> None:
        self.x = self.comm.neighbor_allreduce(self.x, self.topology.at(self.k))


class PushSumConsensus(Algorithm):
    r"""Push-sum (Kempe, Dobra, Gehrke 2003) over column-stochastic weights ``A = W^(k)``:

    ``x <- A x``, ``w <- A w`` with ``w^0 = 1`` (one scalar per node), iterate ``z = x / w``.

    Column sums of 1 mean each sender j splits what it holds among itself and its
    out-neighbors (``sum_i A[i, j] = 1``), so ``sum_i x_i`` and ``sum_i w_i = n`` never change;
    on a (jointly) strongly connected graph the products of the A's approach rank one,
    ``pi 1^T`` with positive ``pi``, hence ``x_i / w_i -> (pi_i sum_j x_j) / (pi_i n) =
    x_bar``. Only out-degrees are needed to build A (``apply_weights(..., rule="uniform_out")``).
    ``x`` and ``w`` travel in one message per out-neighbor per step. Static or dynamic
    topologies (``.at(k)``).
    """

    name = "push_sum"
    _assigns_new_tensors = True

    def __init__(self, comm, topology, x0):
        if not isinstance(topology, (Topology, DynamicTopology)):
            comm._check_topology(topology)  # raises, saying how to build one
        self.topology = topology
        super().__init__(comm, None, x0=x0)
        for k in range(min(topology.period or 1, CHECKED_STEPS)):  # one period
            _check_column_stochastic(comm, topology.at(k), self.name)
        p = node_dims(comm)
        w = torch.ones(self.x.shape[:p] + (1,) * (self.x.dim() - p), dtype=self.x.dtype,
                       device=self.x.device)
        self._xw = pack(comm, self.x, w)
        self.x, self.w = unpack(comm, self._xw, (self.x.shape, w.shape))

    @property
    def iterate(self) -> torch.Tensor:
        """The ratio ``x / w``: each node's estimate of the average."""
        return self.x / self.w

    def _params(self) -> dict:
        return {**super()._params(), "topology": self.topology.name}

    def _step(self) -> None:
        self._xw = self.comm.neighbor_allreduce(self._xw, self.topology.at(self.k),
                                                weighted_by="sender")
        self.x, self.w = unpack(self.comm, self._xw, (self.x.shape, self.w.shape))


class CECA(Algorithm):
    r"""CECA exact averaging (Ding et al., ICML 2023): one message per node per round, the exact
    average after ``tau = ceil(log2 n)`` rounds, for any n (one-peer exponential needs
    ``n = 2^tau``).

    Every node keeps two copies, ``x`` (the iterate) and ``x_hat``, both starting at ``x0``.
    Round r reads bit ``b = b_r`` of ``n - 1`` (most significant first) and the counter
    ``c = c_r`` of :func:`declearn.topology.ceca` (``c_{r+1} = 2 c + b``). Each node sends
    ``x`` if ``b = 1`` else ``x_hat`` to its round-r peer, receives ``v`` from its other
    round-r peer (one ``neighbor_allgather``), and updates, with ``lerp(a, v, t) = a + t (v - a)``:

    * ``b = 1``: ``x <- lerp(x, v, 1/2)``,            ``x_hat <- lerp(x_hat, v, (c+1)/(2c+1))``;
    * ``b = 0``: ``x <- lerp(x, v, c/(2c+1))``,        ``x_hat <- lerp(x_hat, v, 1/2)``.

    Invariant, with ``c`` the counter after the round: ``x_i`` is the mean of the ``c + 1``
    initial values of nodes ``i - c .. i`` and ``x_hat_i`` the mean of the ``c`` values of
    ``i - c .. i - 1`` (2-port, and even nodes of the 1-port form; odd nodes of the 1-port
    form hold the mirror image ``i .. i + c`` and ``i + 1 .. i + c``). After tau rounds
    ``c = n - 1``, so every ``x_i`` is the mean of all n. Later rounds repeat the schedule
    and keep the average. ``ports=1`` uses pairwise exchanges and needs an even n.
    """

    name = "ceca"
    _assigns_new_tensors = True

    def __init__(self, comm, x0, *, ports: int = 2):
        from declearn.topology.ceca import ceca

        self.ports = ports
        super().__init__(comm, None, x0=x0)
        self.topology = ceca(comm.size, ports=ports)
        self.x_hat = self.x.clone()

    def _params(self) -> dict:
        return {**super()._params(), "ports": self.ports}

    def _step(self) -> None:
        topo = self.topology
        if not topo.bits:  # n = 1: the value is already the average
            return
        r = self.k % topo.period
        b, c = topo.bits[r], topo.counters[r]
        sent = self.x if b else self.x_hat
        v = self.comm.neighbor_allgather(sent, topo.at(r)).select(node_dims(self.comm), 0)
        if b:
            self.x = torch.lerp(self.x, v, 0.5)
            self.x_hat = torch.lerp(self.x_hat, v, (c + 1) / (2 * c + 1))
        else:
            self.x = torch.lerp(self.x, v, c / (2 * c + 1))
            self.x_hat = torch.lerp(self.x_hat, v, 0.5)


def _check_column_stochastic(comm, topology, who: str) -> None:
    """A TopologyError unless ``topology`` (one step) has columns summing to 1."""
    try:
        check_mixing(comm, topology, "column", who)
    except TopologyError as exc:
        raise TopologyError(
            f"{who} needs column-stochastic weights (each sender splits its value among itself "
            f"and its out-neighbors, so sum_i x_i is kept): {exc} Build them from the graph "
            "with apply_weights(n, edges, rule='uniform_out', directed=True)."
        ) from None
