r"""Decentralized gradient descent (DGD) and its stochastic form (DSGD).

Each node takes gradient steps on its own ``f_i`` and averages with its neighbors. With a
constant step the nodes do *not* reach the minimiser of ``f = (1/n) sum_i f_i``: at
``x_i = x*`` for all i the mixed step moves them by ``-lr sum_j W[i, j] grad f_j(x*)``, which
is not zero when the data differ. The plateau grows with ``lr`` and with the heterogeneity
``b^2 = (1/n) sum_i ||grad f_i(x*)||^2`` (for strongly convex f, the mean squared distance to
x* is ``O(lr^2 rho^2 b^2 / (1 - rho)^2)`` for ATC and ``O(lr^2 b^2 / (1 - rho)^2)`` for AWC).
A diminishing step (:func:`declearn.algorithms.diminishing`) removes the bias, slowly; the bias
correction methods (:mod:`~declearn.algorithms.tracking`, :mod:`~declearn.algorithms.diffusion`)
remove it with a constant step.
"""

from __future__ import annotations

import torch

from declearn.algorithms.base import Algorithm, check_step_size
from declearn.errors import TopologyError
from declearn.topology.base import DynamicTopology, Topology

__all__ = ["DGD", "DGD_VARIANTS"]

#: The orderings of DGD's two operations.
DGD_VARIANTS = ("atc", "awc", "cta")


class GossipMethod(Algorithm):
    """What the methods of this package that mix over a topology share: a problem, a topology
    (static, or dynamic and read with ``.at(k)``), a step size, and the checks.

    ``weights`` says which normalisation of W the method relies on ("receiver": rows sum to 1;
    "sender": columns; "doubly": both); it is checked at construction on the steps of one
    period (at most 64; the first step of a random sequence), and later steps as they come.
    """

    weights = "receiver"

    def __init__(self, comm, problem, topology, *, lr, x0=None):
        if problem is None:
            raise ValueError(
                f"{self.name} needs a problem (or a node-local gradient function grad(x))."
            )
        if lr is None:
            check_step_size(lr)  # raises: a step size is required
        if not isinstance(topology, (Topology, DynamicTopology)):
            raise TopologyError(
                f"Expected a declearn Topology, got {type(topology).__name__}. Build one with "
                "declearn.topology (e.g. ring(n)) or Topology.from_matrix(W)."
            )
        self.topology = topology
        super().__init__(comm, problem, x0=x0, lr=lr)
        for k in range(min(topology.period or 1, _CHECKED_STEPS)):
            self._check_mixing(topology.at(k))

    def _check_mixing(self, topo: Topology) -> None:
        check_weights(self.comm, topo, self.weights, self.name)

    def _params(self) -> dict:
        return {**super()._params(), "topology": self.topology.name}

    def mix(self, x: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """``W^(k) x`` (k defaults to the current iteration), a new tensor."""
        topo = self.topology.at(self.k if k is None else k)
        return self.comm.neighbor_allreduce(x, topo, weights=_COMM_MODE[self.weights])


class DGD(GossipMethod):
    r"""Decentralized gradient descent, three orderings (``g = grad`` of the node's own f_i,
    ``W = W^(k)``, ``lr = lr(k)``):

    * ``variant="atc"`` (adapt then combine, diffusion): ``x <- W (x - lr g(x))``;
    * ``variant="awc"`` (adapt with combine, Nedic-Ozdaglar DGD, D-PSGD):
      ``x <- W x - lr g(x)``: the gradient does not wait for the communication;
    * ``variant="cta"`` (combine then adapt): ``phi = W x``, ``x <- phi - lr g(phi)``.

    One ``neighbor_allreduce`` and one gradient per iteration. On a problem with gradient
    noise (``sigma > 0``) this is decentralized SGD (DSGD). A constant ``lr`` stalls at a
    bias that grows with lr (see the module docstring); ``lr=diminishing(lr0)`` converges.
    W must be row-stochastic (doubly stochastic for the average of the f_i).
    """

    name = "dgd"

    def __init__(self, comm, problem, topology, *, lr, variant: str = "atc", x0=None):
        if variant not in DGD_VARIANTS:
            raise ValueError(
                f"variant must be one of {DGD_VARIANTS} (adapt-then-combine, "
                f"adapt-with-combine, combine-then-adapt), got {variant!r}."
            )
        self.variant = variant
        self.name = f"dgd-{variant}"
        super().__init__(comm, problem, topology, lr=lr, x0=x0)

    def _params(self) -> dict:
        return {**super()._params(), "variant": self.variant}

    def _step(self) -> None:
        lr = self.lr()
        if self.variant == "atc":
            self.x = self.mix(torch.add(self.x, self.grad(self.x), alpha=-lr))
        elif self.variant == "awc":
            mixed = self.mix(self.x)
            self.x = mixed.sub_(self.grad(self.x), alpha=lr)
        else:
            phi = self.mix(self.x)
            self.x = phi.sub_(self.grad(phi), alpha=lr)


# ------------------------------------------------------------------------- checks
#: Steps of a periodic dynamic topology checked at construction (later ones when used).
_CHECKED_STEPS = 64
_COMM_MODE = {"receiver": "receiver", "sender": "sender", "doubly": "receiver"}


def check_weights(comm, topo: Topology, weights: str, who: str) -> None:
    """A TopologyError unless the one-step topology ``topo`` fits the communicator and has the
    normalisation ``weights`` ("receiver", "sender" or "doubly"), saying what to use instead.
    Remembered per topology object, so checking every step of a dynamic topology is cheap."""
    key = ("declearn.algorithms.weights_ok", weights, comm.size)
    if topo._cache.get(key):
        return
    comm._check_topology(topo)
    if weights == "doubly" and not topo.is_doubly_stochastic:
        rows, cols = topo.is_row_stochastic, topo.is_column_stochastic
        off = "rows" if not rows else "columns"
        raise TopologyError(
            f"{who} needs a doubly stochastic W (rows and columns summing to 1), but the "
            f"{off} of {topo.name} do not sum to 1. "
            + ("With column-stochastic weights on a directed graph use PushDIGing. "
               if cols else "")
            + "Metropolis weights (the default of ring, grid, erdos_renyi, ...) are doubly "
            "stochastic on any undirected graph."
        )
    if weights in ("receiver", "sender"):
        comm._check_topology(topo, weights)
    topo._cache[key] = True
