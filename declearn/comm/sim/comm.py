r"""SimComm: all n nodes in this process, one tensor with the node as its leading dim.

A node-local tensor ``x`` has shape ``(n, *s)``; ``x[i]`` is node i's value. With
``W = topology.W`` (row i = receiver) and ``X`` the matrix whose row i is ``x[i]`` flattened:

* ``allreduce(x, "sum")[i] = sum_j x[j]``; ``"mean"`` divides by n;
* ``broadcast(x, root)[i] = x[root]``;
* ``allgather(x)[i] = x`` (shape ``(n, n, *s)``);
* ``neighbor_allreduce(x, W)`` is ``W @ X`` reshaped to ``(n, *s)``;
* ``neighbor_allgather(x, W)[i, t] = x[j]`` for the t-th in-neighbor j of i (ascending, self
  excluded), zero past i's in-degree; shape ``(n, D_in, *s)``;
* ``neighbor_alltoall(m, W)[i, t] = m[j, r]`` where j is the t-th in-neighbor of i and i is
  the r-th out-neighbor of j; ``m`` has shape ``(n, D_out, *s)``.

Every result is a new contiguous tensor that shares no memory with the input (modify it in
place freely) and never requires grad: communication is not differentiable, as under MPI.
Inputs are never modified. The mixing kernels and their plans live in
:mod:`declearn.comm.sim.kernels`; nothing loops over nodes in Python.

Dtypes. ``neighbor_allreduce`` and ``allreduce(op="mean")`` need a floating (or complex)
tensor: weighting or averaging integers would round, so they raise a TypeError that says to
convert. ``allreduce(op="sum")`` sums integers exactly (in their own dtype, so mind
overflow); bool tensors cannot be reduced. ``broadcast``, ``allgather``,
``neighbor_allgather`` and ``neighbor_alltoall`` move data of any dtype unchanged.

Traffic (per node, what a real run would *send*; see :class:`~declearn.comm.base.Traffic`),
with ``b`` the bytes of one node's value ``x[i]`` (of one slot ``m[i, r]`` for alltoall):

* allreduce: as a ring allreduce, ``2 (n - 1)`` messages and ``2 (n - 1) / n * b`` bytes;
* broadcast: the root sends ``n - 1`` messages of ``b`` bytes, the others nothing;
* allgather: every node sends ``n - 1`` messages, ``(n - 1) b`` bytes;
* neighbor_allreduce / neighbor_allgather / neighbor_alltoall: node j sends one message of
  ``b`` bytes to each out-neighbor (``topology.out_degrees[j]`` messages);
* barrier: no message (only its call is counted).

``traffic.by_op[op]`` holds ``{"calls": int, "messages": array, "bytes": array}`` per op.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from declearn.comm.base import MODE_STOCHASTIC, Communicator, Traffic, old_weights_keyword
from declearn.comm.memory import ensure_cpu_allocator_tuned
from declearn.comm.sim.kernels import (
    KERNELS,
    allgather_plan,
    alltoall_plan,
    gather_slots,
    mix_plan,
    mixer,
)
from declearn.topology.base import Topology, check_n

__all__ = ["SimComm"]

class SimComm(Communicator):
    """The one-process simulator of n nodes (see the module docstring for every op).

    Parameters
    ----------
    n : int
        Number of simulated nodes.
    device : str or torch.device
        Where node-local tensors live ("cpu", "cuda", "cuda:1", ...). Every tensor passed to
        an op must be on this device.
    dtype : torch.dtype
        The floating dtype node-local tensors are meant to have (``comm.dtype``); float64 by
        default, so theory chapters see exact arithmetic. Ops keep the dtype of their input.
    kernel : str
        ``"auto"`` (default) lets each topology pick its mixing kernel; ``"circulant"``,
        ``"sparse"`` or ``"dense"`` forces one (tests and benchmarks compare them).
    """

    is_simulator = True

    def __init__(self, n: int, device="cpu", dtype: torch.dtype = torch.float64, *,
                 kernel: str = "auto"):
        self._n = check_n(n)
        self._device = _canonical_device(device)
        if self._device.type == "cpu":
            ensure_cpu_allocator_tuned()  # see declearn.comm.memory
        if not isinstance(dtype, torch.dtype) or not (dtype.is_floating_point or dtype.is_complex):
            raise TypeError(
                f"dtype must be a floating torch dtype such as torch.float64 or torch.float32, "
                f"got {dtype!r}."
            )
        self.dtype = dtype
        if kernel != "auto" and kernel not in KERNELS:
            raise ValueError(f"kernel must be 'auto' or one of {KERNELS}, got {kernel!r}.")
        self.kernel = kernel
        self._const: dict = {}
        self._mixers: dict = {}  # id(topology) -> _Mixer, see neighbor_allreduce
        self.reset_traffic()

    # ------------------------------------------------------------------ identity
    @property
    def size(self) -> int:
        return self._n

    @property
    def rank(self) -> torch.Tensor:
        """The node-local tensor ``arange(n)``: node i holds i (a new tensor at each call)."""
        return torch.arange(self._n, device=self._device)

    @property
    def device(self) -> torch.device:
        return self._device

    def __repr__(self) -> str:
        kernel = "" if self.kernel == "auto" else f", kernel={self.kernel!r}"
        return f"SimComm(n={self._n}, device='{self._device}', dtype={self.dtype}{kernel})"

    # ------------------------------------------------------------------ traffic
    @property
    def traffic(self) -> Traffic:
        """Messages and bytes sent so far, per node (see the module docstring)."""
        self._flush_traffic()
        return self._traffic

    def reset_traffic(self) -> None:
        self._pending: dict = {}
        self._traffic = self._new_traffic()

    def _new_traffic(self) -> Traffic:
        return Traffic(
            messages=np.zeros(self._n, dtype=np.int64), bytes=np.zeros(self._n), by_op={}
        )

    def _record(self, op: str, messages, nbytes: float) -> None:
        """Count one call of ``op`` in which node j sends ``messages[j]`` messages of
        ``nbytes`` bytes each. Calls are tallied in a dict keyed by (op, the messages array,
        nbytes) and added to the arrays when ``traffic`` is read: numpy work per call would
        cost more than a small mixing step."""
        key = (op, id(messages), nbytes)
        entry = self._pending.get(key)
        if entry is None:
            if len(self._pending) >= 1024:
                self._flush_traffic()
            self._pending[key] = [messages, 1]  # keeps the array (and so its id) alive
        else:
            entry[1] += 1

    def _flush_traffic(self) -> None:
        t = self._traffic
        for (op, _, nbytes), (messages, calls) in self._pending.items():
            rec = t.by_op.get(op)
            if rec is None:
                rec = t.by_op[op] = {
                    "calls": 0,
                    "messages": np.zeros(self._n, dtype=np.int64),
                    "bytes": np.zeros(self._n),
                }
            rec["calls"] += calls
            for counts in (rec["messages"], t.messages):
                counts += calls * messages
            for counts in (rec["bytes"], t.bytes):
                counts += (calls * nbytes) * messages
        self._pending.clear()

    # ------------------------------------------------------------------ checks
    def _check_local(self, x, what: str = "x") -> torch.Tensor:
        """A node-local tensor on our device, detached (communication is not differentiable)."""
        x = self._check_tensor(x, what)
        n = self._n
        if x.dim() == 0 or x.shape[0] != n:
            raise ValueError(
                f"{what} must be node-local: shape (n, *s) with the node dim first, n = {n} "
                f"for this SimComm, got shape {tuple(x.shape)}. For a value every node holds, "
                f"use {what}.expand({n}, *{what}.shape) (or build it with leading dim {n})."
            )
        if x.device != self._device:
            raise ValueError(
                f"{what} is on {x.device} but this SimComm lives on {self._device}; move it "
                f"with {what}.to(comm.device)."
            )
        return x.detach() if x.requires_grad else x

    def _checked_topology(self, topology, weights: str | None = None):
        """The static Topology to mix with; with ``weights`` ("receiver" or "sender"), once its
        rows (columns) are known to sum to 1 (``topology.require``, remembered per topology)."""
        topo = topology
        if topology.__class__ is not Topology or topology.n != self._n:
            topo = self._check_topology(topology)  # the full checks, with their messages
        if weights is not None:
            kind = MODE_STOCHASTIC.get(weights)
            if kind is None:
                self._check_topology(topo, weights)  # raises: says which modes there are
            topo.require(kind)
        return topo

    @staticmethod
    def _check_inexact(x: torch.Tensor, op: str, what: str = "x") -> None:
        if not (x.is_floating_point() or x.is_complex()):
            raise TypeError(
                f"{op} weights or averages values, which would round the {x.dtype} tensor "
                f"{what}; convert it first, e.g. {what}.to(comm.dtype) or {what}.double()."
            )

    @property
    def node_dims(self) -> tuple[int, ...]:
        return (self._n,)

    @property
    def reports(self) -> bool:
        return True

    # ------------------------------------------------------------------ collectives
    def allreduce(self, x: torch.Tensor, op: str = "mean", *, timeout: float | None = None,
                  tag: str | None = None):
        """Every node gets ``sum_j x[j]`` (op="sum") or its mean (op="mean")."""
        if tag is not None:
            self._check_tag(tag)
        x = self._check_local(x)
        op = self._check_op(op)
        if x.dtype == torch.bool:
            raise TypeError("allreduce cannot reduce a bool tensor; convert it with x.long().")
        if op == "mean":
            self._check_inexact(x, 'allreduce(op="mean")')
        total = x.sum(0, keepdim=True, dtype=x.dtype)
        if op == "mean":
            total = total.div_(self._n)
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device).copy_(total)
        n = self._n  # ring allreduce: 2(n-1) messages of 1/n of the payload
        self._record("allreduce", self._every_node(2 * (n - 1)), _node_bytes(x) / n)
        return out

    def broadcast(self, x: torch.Tensor, root: int = 0, *, timeout: float | None = None,
                  tag: str | None = None):
        """Every node gets ``x[root]``."""
        if tag is not None:
            self._check_tag(tag)
        x = self._check_local(x)
        root = self._check_root(root)
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device).copy_(x[root])
        self._record("broadcast", self._root_only(root), _node_bytes(x))
        return out

    def allgather(self, x: torch.Tensor, *, timeout: float | None = None,
                  tag: str | None = None):
        """Every node gets the stack ``x``: a new ``(n, n, *s)`` tensor (n copies of x, so
        mind memory for large n; ``x`` itself is what every node would see)."""
        if tag is not None:
            self._check_tag(tag)
        x = self._check_local(x)
        n = self._n
        out = torch.empty((n,) + tuple(x.shape), dtype=x.dtype, device=x.device).copy_(x)
        self._record("allgather", self._every_node(n - 1), _node_bytes(x))
        return out

    def barrier(self, *, timeout: float | None = None, tag: str | None = None) -> None:
        """Nothing to wait for in one process; counted in ``traffic.by_op``."""
        if tag is not None:
            self._check_tag(tag)
        self._record("barrier", self._every_node(0), 0)

    # ------------------------------------------------------------------ neighbor ops
    def neighbor_allreduce(
        self, x: torch.Tensor, topology, *, weighted_by: str = "receiver",
        timeout: float | None = None, tag: str | None = None, weights: str | None = None,
    ):
        """``W @ X``: node i gets ``sum_j W[i, j] x[j]``. ``weighted_by="receiver"`` checks
        that the rows of W sum to 1, ``"sender"`` that its columns do (push-sum). ``weights=``
        is the deprecated name of ``weighted_by=``."""
        if weights is not None:
            weighted_by = old_weights_keyword(weights)
        weights = weighted_by
        if tag is not None:
            self._check_tag(tag)
        m = self._mixers.get(id(topology))
        if not (
            m is not None and m.topology is topology and m.weights == weights
            and type(x) is torch.Tensor and x.shape == m.shape and x.dtype == m.dtype
            and x.get_device() == m.device_index and not x.is_meta and not x.requires_grad
        ):  # not the same call as last time: check everything, then remember it
            x = self._check_local(x)  # detached
            m = self._new_mixer(x, topology, weights)
        out = m.fn(x)
        self._record("neighbor_allreduce", m.out_degrees, m.nbytes)
        return out

    def _new_mixer(self, x, topology, weights) -> _Mixer:
        topo = self._checked_topology(topology, weights)
        self._check_inexact(x, "neighbor_allreduce")
        plan = mix_plan(topo, self._device, x.dtype, self.kernel, x.numel() // self._n)
        m = _Mixer(topo, weights, x.shape, x.dtype, x.get_device(), mixer(plan, x.shape),
                   topo.out_degrees, _node_bytes(x))
        if len(self._mixers) >= 256:  # a run cycles through few topologies; stay bounded
            self._mixers.clear()
        self._mixers[id(topo)] = m
        return m

    def neighbor_allgather(self, x: torch.Tensor, topology, *, timeout: float | None = None,
                  tag: str | None = None):
        """Node i gets ``(D_in, *s)``: slot t is its t-th in-neighbor's value, zero past its
        in-degree (D_in = largest in-degree, self excluded)."""
        if tag is not None:
            self._check_tag(tag)
        x = self._check_local(x)
        topo = self._checked_topology(topology)
        out = gather_slots(x, allgather_plan(topo, self._device), x.shape[1:])
        self._record_neighbors("neighbor_allgather", topo, _node_bytes(x))
        return out

    def neighbor_alltoall(self, m: torch.Tensor, topology, *, timeout: float | None = None,
                  tag: str | None = None):
        """Node j passes ``m[j]`` of shape ``(D_out, *s)``, slot r for its r-th out-neighbor;
        node i gets ``(D_in, *s)``, slot t holding what its t-th in-neighbor sent it."""
        if tag is not None:
            self._check_tag(tag)
        m = self._check_local(m, "m")
        topo = self._checked_topology(topology)
        plan, d_out = alltoall_plan(topo, self._device)
        if m.dim() < 2 or m.shape[1] != d_out:
            raise ValueError(
                f"m must have shape (n, D_out, *s) = ({self._n}, {d_out}, ...): D_out = {d_out} "
                f"is the largest out-degree of {topo.name} (self excluded), and m[j, r] is "
                f"node j's message to its r-th out-neighbor, topology.out_neighbors(j)[r]; "
                f"got shape {tuple(m.shape)}."
            )
        tail = tuple(m.shape[2:])
        out = gather_slots(m.reshape((self._n * d_out,) + tail), plan, tail)
        self._record_neighbors("neighbor_alltoall", topo, math.prod(tail) * m.element_size())
        return out

    # ------------------------------------------------------------------ asynchrony
    def progress(self) -> int:
        """Nothing is ever in flight in one process (iallreduce completes at once): 0."""
        return 0

    def partial_allreduce(self, shape, **options):
        """eager-SGD's partial allreduce, emulated on a simulated clock (a
        :class:`~declearn.comm.sim.partial.SimPartialAllreduce`; ``shape`` is one node's)."""
        from declearn.comm.sim.partial import SimPartialAllreduce

        return SimPartialAllreduce(self, shape, **options)

    def pairwise_gossip(self, topology, x: torch.Tensor, **options):
        """Asynchronous pairwise gossip of the node-local ``x`` (updated in place), event by
        event (a :class:`~declearn.comm.sim.gossip.SimGossip`)."""
        from declearn.comm.sim.gossip import SimGossip

        return SimGossip(self, topology, self._check_local(x), **options)

    def _record_neighbors(self, op: str, topo, nbytes: int) -> None:
        self._record(op, topo.out_degrees, nbytes)

    def _every_node(self, count: int) -> np.ndarray:
        """The read-only array ``[count] * n``, one per count (so _record can key on it)."""
        arr = self._const.get(count)
        if arr is None:
            arr = self._const[count] = np.full(self._n, count, dtype=np.int64)
            arr.flags.writeable = False
        return arr

    def _root_only(self, root: int) -> np.ndarray:
        """``n - 1`` messages from ``root``, none from the others."""
        arr = self._const.get(("root", root))
        if arr is None:
            arr = self._const[("root", root)] = np.zeros(self._n, dtype=np.int64)
            arr[root] = self._n - 1
            arr.flags.writeable = False
        return arr


def _node_bytes(x: torch.Tensor) -> int:
    """Bytes of one node's value ``x[i]``."""
    return math.prod(x.shape[1:]) * x.element_size()


def _canonical_device(device) -> torch.device:
    """``device`` as tensors report it (``"cuda"`` becomes ``cuda:<current>``), or a clear
    error if it cannot hold tensors here."""
    try:
        dev = torch.device(device)
        return torch.empty(0, device=dev).device
    except (RuntimeError, AssertionError, TypeError, ValueError) as exc:
        raise ValueError(
            f"Cannot place tensors on device {device!r} here ({exc}). Use device='cpu', or "
            "check torch.cuda.is_available() for a GPU."
        ) from None


class _Mixer(NamedTuple):
    """A checked neighbor_allreduce call: same topology object, weights mode, shape, dtype and
    device next time means the same plan, with no check to redo (the object is kept, so its
    id cannot be reused while the entry lives)."""

    topology: Topology
    weights: str
    shape: torch.Size
    dtype: torch.dtype
    device_index: int
    fn: object
    out_degrees: np.ndarray
    nbytes: int
