r"""The Communicator protocol: the only thing that differs between the two backends.

An algorithm is written once against a :class:`Communicator` and runs on both:

* :class:`~declearn.comm.sim.SimComm` (one process): a *node-local* tensor has the node as its
  leading dim, ``x[i]`` is node i's value, shape ``(n, *s)``.
* :class:`~declearn.comm.mpi.MPIComm` (one MPI rank per node): a node-local tensor is the
  rank's own value, shape ``(*s)``.

Arithmetic between node-local tensors is plain torch broadcasting, so ``x - lr * g`` means the
same on both; only the methods below communicate. Their results agree: the SimComm result's
row i equals the MPIComm result on rank i.

Semantics, with ``W = topology.W`` (row i = receiver) and node-local ``x``:

* ``allreduce(x, op)``: every node gets ``sum_j x_j`` (op="sum") or ``(1/n) sum_j x_j`` ("mean").
* ``broadcast(x, root)``: every node gets ``x_root``.
* ``allgather(x)``: every node gets the stack ``[x_0, ..., x_{n-1}]``, shape ``(n, *s)``.
* ``barrier()``: returns once every node has called it.
* ``iallreduce(x, op)``: starts an allreduce and returns a :class:`Pending` whose ``wait()``
  gives the result, so local work can overlap the communication.
* ``neighbor_allreduce(x, topology, weighted_by=...)``: node i gets ``sum_j W[i, j] x_j``.
  ``weighted_by="receiver"`` requires row-stochastic W (each receiver forms a convex
  combination); ``weighted_by="sender"`` requires column-stochastic W (each sender splits its
  mass: push-sum). The value computed is the same ``W @ X`` either way; the choice says which
  normalisation the algorithm relies on and is checked. (The keyword was called ``weights=``;
  that name still works, with a DeprecationWarning.) A per-iteration topology is passed as
  ``topology.at(k)``.
* ``neighbor_allgather(x, topology)``: node i gets ``(D_in, *s)`` where ``D_in`` is the largest
  in-degree of the topology; slot s holds ``x_j`` for the s-th in-neighbor j of i (ascending,
  self excluded), slots past i's in-degree are zero.
* ``partial_allreduce(shape, ...)``: eager-SGD's solo/majority collectives, an object called
  once per step (:mod:`declearn.comm.partial`); ``pairwise_gossip(topology, x, ...)``:
  asynchronous pairwise averaging of ``x`` (:mod:`declearn.comm.gossip`).
* ``progress()`` moves nonblocking operations forward and returns how many are in flight;
  ``resync()`` brings every node back in step after an abandoned operation (every node calls
  it; a no-op where nothing can be abandoned).
* ``neighbor_alltoall(m, topology)``: a different message to each out-neighbor. Node i passes
  ``m_i`` of shape ``(D_out, *s)``, slot s addressed to its s-th out-neighbor (ascending, self
  excluded; slots past its out-degree are ignored). Node i gets ``(D_in, *s)``: slot s holds
  the message its s-th in-neighbor addressed to i, zero past i's in-degree.

Every blocking operation of MPIComm has a deadline (``timeout`` seconds; default from
:func:`get_default_timeout`) and raises :class:`~declearn.errors.CollectiveTimeoutError`
naming the ranks that did not arrive. SimComm never waits, and accepts ``timeout`` for
symmetry.
"""

from __future__ import annotations

import abc
import contextlib
import numbers
import os
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from declearn.errors import TopologyError

if TYPE_CHECKING:
    from declearn.comm.gossip import Gossip
    from declearn.comm.partial import PartialAllreduce

__all__ = [
    "Communicator",
    "Pending",
    "Completed",
    "Traffic",
    "get_default_timeout",
    "set_default_timeout",
    "REDUCE_OPS",
    "WEIGHT_MODES",
    "MODE_STOCHASTIC",
    "old_weights_keyword",
]

REDUCE_OPS = ("sum", "mean")
WEIGHT_MODES = ("receiver", "sender")
#: The normalisation of W (``topology.require``'s kind) that each weighting mode relies on.
MODE_STOCHASTIC = {"receiver": "row", "sender": "column"}



def old_weights_keyword(weights: str) -> str:
    """``neighbor_allreduce(weights=...)``'s value as ``weighted_by``, with a DeprecationWarning
    pointing at the caller of ``neighbor_allreduce`` (call this from its body)."""
    warnings.warn(f"neighbor_allreduce(weights={weights!r}) is deprecated: write "
                  f"weighted_by={weights!r}.", DeprecationWarning, stacklevel=3)
    return weights


_DEFAULT_TIMEOUT = [float(os.environ.get("DECLEARN_TIMEOUT", "60"))]


def get_default_timeout() -> float:
    """Seconds a blocking operation waits before raising (env ``DECLEARN_TIMEOUT``, else 60)."""
    return _DEFAULT_TIMEOUT[0]


def set_default_timeout(seconds: float) -> None:
    """Set the deadline of every later blocking operation that does not pass its own."""
    seconds = float(seconds)
    if not seconds > 0:
        raise ValueError(f"The timeout must be a positive number of seconds, got {seconds!r}.")
    _DEFAULT_TIMEOUT[0] = seconds


@dataclass
class Traffic:
    """Messages and bytes *sent* so far, per node (an array of length n under SimComm, a
    number under MPIComm), counting every point-to-point message of the logical algorithm
    (an allreduce counts as the ``2 (n - 1) / n`` payload of a ring allreduce)."""

    messages: np.ndarray | int = 0
    bytes: np.ndarray | float = 0
    by_op: dict = field(default_factory=dict)


class Pending(abc.ABC):
    """A communication in flight: ``wait()`` returns its result once complete (within the
    op's deadline); ``done()`` says, without blocking, whether it has completed."""

    @abc.abstractmethod
    def wait(self) -> torch.Tensor: ...

    @abc.abstractmethod
    def done(self) -> bool: ...


class Completed(Pending):
    """A communication that has already completed (what a blocking backend returns)."""

    def __init__(self, value: torch.Tensor):
        self._value = value

    def wait(self) -> torch.Tensor:
        return self._value

    def done(self) -> bool:
        return True


class Communicator(abc.ABC):
    """What every backend offers; see the module docstring for the exact semantics."""

    #: True for the one-process simulator, False for real processes.
    is_simulator: bool = False

    #: The caller's iteration number, or None outside any iteration. An algorithm sets it
    #: around each step (:meth:`at_iteration`); MPIComm carries it in every header, so an
    #: operation paired with one made at another iteration on another rank raises
    #: :class:`~declearn.errors.IterationMismatchError` instead of mixing iterates of
    #: different iterations. The simulator has one process: its nodes cannot drift apart.
    iteration: int | None = None

    @contextlib.contextmanager
    def at_iteration(self, k: int | None):
        """``with comm.at_iteration(k):`` stamps the block's operations with iteration ``k``
        (restoring the previous stamp afterwards, so blocks nest)."""
        if k is not None and (isinstance(k, bool) or not isinstance(k, numbers.Integral)
                              or k < 0):
            raise ValueError(f"the iteration must be a non-negative integer or None, got {k!r}.")
        saved = self.iteration
        self.iteration = None if k is None else int(k)
        try:
            yield self
        finally:
            self.iteration = saved

    @property
    @abc.abstractmethod
    def size(self) -> int:
        """Number of nodes n."""

    @property
    @abc.abstractmethod
    def rank(self):
        """This node's index: an int under MPIComm; under SimComm the node-local tensor
        ``arange(n)`` (node i holds i)."""

    @property
    @abc.abstractmethod
    def device(self) -> torch.device:
        """Where node-local tensors live."""

    @property
    @abc.abstractmethod
    def node_dims(self) -> tuple[int, ...]:
        """The dims a node-local tensor has in front of one node's value: ``(n,)`` in the
        simulator (every node in one tensor), ``()`` on a rank. The one layout fact that
        differs between backends: reshape with it (``x.reshape(comm.node_dims + (-1,))``)
        instead of asking which backend runs."""

    @property
    @abc.abstractmethod
    def reports(self) -> bool:
        """Whether this process speaks for the whole run (progress bars, printed results):
        the simulator's one process, rank 0 of MPIComm."""

    def one_node(self, x: torch.Tensor) -> torch.Tensor:
        """One node's copy of a node-local value every node holds the same (an allreduce's
        result, a gathered table): ``x[0]`` in the simulator, ``x`` itself on a rank."""
        return x[(0,) * len(self.node_dims)] if self.node_dims else x

    @property
    def traffic(self) -> Traffic:
        """Messages and bytes sent so far (see :class:`Traffic`)."""
        return self._traffic

    def reset_traffic(self) -> None:
        self._traffic = self._new_traffic()

    @contextlib.contextmanager
    def untracked(self):
        """Operations inside the block do not count in ``traffic``: for measuring a run
        (its consensus error, its loss) without charging the algorithm for it."""
        saved = self.traffic  # reading it folds in any count a backend still holds
        self.reset_traffic()
        try:
            yield self
        finally:
            _ = self.traffic
            self._traffic = saved

    @abc.abstractmethod
    def _new_traffic(self) -> Traffic: ...

    @abc.abstractmethod
    def allreduce(self, x: torch.Tensor, op: str = "mean", *, timeout: float | None = None,
                  tag: str | None = None): ...

    def iallreduce(self, x: torch.Tensor, op: str = "mean", *,
                   timeout: float | None = None, tag: str | None = None) -> Pending:
        """Start ``allreduce(x, op)`` and return at once; ``.wait()`` gives its result. The
        local computation between the two overlaps the communication where the backend can
        (this default completes it before returning)."""
        return Completed(self.allreduce(x, op, timeout=timeout, tag=tag))

    @abc.abstractmethod
    def broadcast(self, x: torch.Tensor, root: int = 0, *, timeout: float | None = None,
                  tag: str | None = None): ...

    @abc.abstractmethod
    def allgather(self, x: torch.Tensor, *, timeout: float | None = None,
                  tag: str | None = None): ...

    @abc.abstractmethod
    def barrier(self, *, timeout: float | None = None, tag: str | None = None) -> None: ...

    @abc.abstractmethod
    def neighbor_allreduce(
        self, x: torch.Tensor, topology, *, weighted_by: str = "receiver",
        timeout: float | None = None, tag: str | None = None, weights: str | None = None,
    ): ...

    @abc.abstractmethod
    def neighbor_allgather(self, x: torch.Tensor, topology, *, timeout: float | None = None,
                  tag: str | None = None): ...

    @abc.abstractmethod
    def neighbor_alltoall(self, m: torch.Tensor, topology, *, timeout: float | None = None,
                  tag: str | None = None): ...

    @abc.abstractmethod
    def partial_allreduce(self, shape, *, dtype: torch.dtype = torch.float64,
                          mode: str = "solo", staleness: int = 8, seed: int = 0,
                          op: str = "mean", step_time: float = 0.0,
                          timeout: float | None = None) -> PartialAllreduce:
        """eager-SGD's partial allreduce of node-local tensors of one node's shape ``shape``
        (see :mod:`declearn.comm.partial`; every node creates it at the same time)."""

    @abc.abstractmethod
    def pairwise_gossip(self, topology, x: torch.Tensor, *, rate: float = 1.0, seed: int = 0,
                        timeout: float | None = None) -> Gossip:
        """Asynchronous pairwise gossip of the node-local ``x`` over ``topology`` (see
        :mod:`declearn.comm.gossip`; every node creates it at the same time)."""

    def progress(self) -> int:
        """Move the nonblocking operations in flight forward without blocking; return how
        many are still in flight (0 where operations complete when started)."""
        return 0

    @property
    def in_flight(self) -> int:
        """Number of nonblocking operations started and not finished yet."""
        return 0

    def resync(self, *, timeout: float | None = None) -> None:
        """Bring every node back in step after an abandoned operation (every node calls it).
        Nothing to do where no operation can be abandoned (one process)."""
        return None

    # ------------------------------------------------------------ shared argument checks
    @staticmethod
    def _check_tag(tag) -> str | None:
        """``tag``: None (calls pair by call site) or a non-empty string (calls pair by tag)."""
        if tag is not None and (not isinstance(tag, str) or not tag):
            raise TypeError(
                f"tag must be a non-empty string naming the calls that pair up (the same on "
                f"every rank), got {tag!r}."
            )
        return tag

    def _check_topology(self, topology, weights: str | None = None):
        """Return the static Topology to use, or raise an error that says what to do."""
        from declearn.topology.base import DynamicTopology, Topology

        if isinstance(topology, DynamicTopology):
            raise TopologyError(
                f"{topology.name} is a dynamic topology: pass the one of the current iteration, "
                "topology.at(k)."
            )
        if not isinstance(topology, Topology):
            raise TopologyError(
                f"Expected a declearn Topology, got {type(topology).__name__}. Build one with "
                "declearn.topology (e.g. ring(n)) or Topology.from_matrix(W)."
            )
        if topology.n != self.size:
            raise TopologyError(
                f"The topology {topology.name} has n={topology.n} nodes but the communicator "
                f"has {self.size}; build the topology with n={self.size}."
            )
        if weights is not None:
            if weights not in WEIGHT_MODES:
                raise ValueError(
                    f"weighted_by must be 'receiver' (rows of W sum to 1) or 'sender' (columns "
                    f"sum to 1, push-sum), got {weights!r}."
                )
            topology.require(MODE_STOCHASTIC[weights])
        return topology

    @staticmethod
    def _check_op(op: str) -> str:
        if op not in REDUCE_OPS:
            raise ValueError(f"op must be one of {REDUCE_OPS}, got {op!r}.")
        return op

    def _check_root(self, root) -> int:
        if isinstance(root, bool) or not isinstance(root, (int, np.integer)) \
                or not 0 <= root < self.size:
            raise ValueError(f"root must be a rank in 0..{self.size - 1}, got {root!r}.")
        return int(root)

    @staticmethod
    def _check_tensor(x, what: str = "x") -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(
                f"{what} must be a torch.Tensor, got {type(x).__name__}; "
                "wrap numbers with torch.as_tensor(...)."
            )
        return x
