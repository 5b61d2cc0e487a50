r"""Methods that mix over a topology: their shared base and the check of their W.

A method that mixes ``x <- W^{(k)} x`` relies on one normalisation of W, named as
:meth:`declearn.topology.Topology.require` names it:

* ``"row"``: every row sums to 1 (``sum_j W[i, j] = 1``: a receiver averages what it gets);
* ``"column"``: every column sums to 1 (``sum_i W[i, j] = 1``: a sender splits what it
  has, so ``sum_i x_i`` is kept; push-sum);
* ``"doubly"``: both (the average over nodes is kept and is what the nodes agree on).

:class:`GossipMethod` declares it in the class attribute ``mixing`` and checks it at
construction on the steps of one period of the topology (at most :data:`CHECKED_STEPS`; the
first step of a random sequence), and a method that wants later steps checked as they come
calls :meth:`GossipMethod._check_mixing`. :func:`check_mixing` is the one check, shared with
the optimizers: the topology must fit the communicator (a static Topology of ``comm.size``
nodes) and pass ``topology.require(mixing)``, which is remembered per topology.
"""

from __future__ import annotations

import warnings

import torch

from declearn.algorithms.base import Algorithm, check_step_size
from declearn.errors import TopologyError
from declearn.topology.base import DynamicTopology, Topology
from declearn.topology.stochastic import KINDS, OLD_NAMES

__all__ = ["GossipMethod", "check_mixing", "check_schedule", "MIXINGS", "CHECKED_STEPS"]

#: The normalisations of W a method can rely on (those of ``Topology.require``).
MIXINGS = KINDS
#: Steps of a periodic dynamic topology checked at construction (later ones when used).
CHECKED_STEPS = 64
#: ``neighbor_allreduce``'s weighting for each normalisation: a doubly stochastic W is
#: applied receiver-side, like a row-stochastic one.
_COMM_MODE = {"row": "receiver", "column": "sender", "doubly": "receiver"}
#: The names the class attribute ``weights`` used for the normalisations (before ``mixing``).
_OLD_NAMES = OLD_NAMES


def check_mixing(comm, topology: Topology, mixing: str, who: str) -> None:
    """A TopologyError unless the one-step ``topology`` fits ``comm`` (a static Topology with
    ``comm.size`` nodes) and its W has the normalisation ``mixing`` ("row", "column" or
    "doubly"), saying what to use instead. The normalisation is checked once per topology
    object (``topology.require`` remembers it), so checking every step is cheap."""
    if mixing not in MIXINGS:
        raise ValueError(f"mixing must be one of {MIXINGS}, got {mixing!r}.")
    if topology.__class__ is not Topology or topology.n != comm.size:
        comm._check_topology(topology)  # raises, saying what to pass instead
    if mixing != "doubly":
        topology.require(mixing)
        return
    try:
        topology.require("doubly")
    except TopologyError:
        rows, cols = topology.is_row_stochastic, topology.is_column_stochastic
        off = "rows" if not rows else "columns"
        raise TopologyError(
            f"{who} needs a doubly stochastic W (rows and columns summing to 1), but the "
            f"{off} of {topology.name} do not sum to 1. "
            + ("With column-stochastic weights on a directed graph use PushDIGing. "
               if cols else "")
            + "Metropolis weights (the default of ring, grid, erdos_renyi, ...) are doubly "
            "stochastic on any undirected graph."
        ) from None


def check_schedule(comm, topology, mixing: str, who: str) -> None:
    """:func:`check_mixing` on the steps of one period of a static or dynamic ``topology``
    (``topology.at(k)`` for ``k < min(period, CHECKED_STEPS)``; one step when the period is
    unknown, as for a random sequence)."""
    if not isinstance(topology, (Topology, DynamicTopology)):
        raise TopologyError(
            f"Expected a declearn Topology, got {type(topology).__name__}. Build one with "
            "declearn.topology (e.g. ring(n)) or Topology.from_matrix(W)."
        )
    for k in range(min(topology.period or 1, CHECKED_STEPS)):
        check_mixing(comm, topology.at(k), mixing, who)


class GossipMethod(Algorithm):
    """What the methods of this package that mix over a topology share: a problem, a topology
    (static, or dynamic and read with ``.at(k)``), a step size, and the checks.

    ``mixing`` says which normalisation of W the method relies on ("row": rows sum to 1;
    "column": columns; "doubly": both); it is checked at construction on the steps of one
    period (see the module docstring), and later steps as they come.
    """

    mixing = "row"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        old = cls.__dict__.get("weights")  # the attribute's name before `mixing`
        if isinstance(old, str) and old in _OLD_NAMES and "mixing" not in cls.__dict__:
            warnings.warn(
                f"{cls.__name__}.weights = {old!r} is deprecated: declare the normalisation "
                f"of W with mixing = {_OLD_NAMES[old]!r}.", DeprecationWarning, stacklevel=2)
            cls.mixing = _OLD_NAMES[old]

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
        check_schedule(comm, topology, self.mixing, self.name)

    def _check_mixing(self, topology: Topology) -> None:
        check_mixing(self.comm, topology, self.mixing, self.name)

    def _params(self) -> dict:
        return {**super()._params(), "topology": self.topology.name}

    def mix(self, x: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """``W^(k) x`` (k defaults to the current iteration), a new tensor."""
        topology = self.topology.at(self.k if k is None else k)
        return self.comm.neighbor_allreduce(x, topology, weighted_by=_COMM_MODE[self.mixing])
