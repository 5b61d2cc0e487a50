r"""MPIComm: one node per MPI rank; every wait has a deadline; mismatches are named.

Node i is MPI rank i and holds its own tensor ``x`` (shape ``s``). With ``W = topology.W``
(row i = receiver), ``neighbor_allreduce`` computes on rank i

.. math::  y_i = W_{ii}\, x_i + \sum_{j \in N^{in}_i} W_{ij}\, x_j ,

receiving ``x_j`` from every in-neighbor ``j`` (``W[i, j] > 0``) and sending ``x_i`` to every
out-neighbor; the other operations follow :mod:`declearn.comm.base`. mpi4py is imported when
the first MPIComm is created, never at module import.

Protocol
--------
*Communicators.* ``MPIComm(comm)`` duplicates ``comm`` (default ``COMM_WORLD``) twice: ``p2p``
carries headers, neighbor payloads and resync messages; ``coll`` carries the native nonblocking
collectives (``Iallreduce``, ``Ibcast``, ``Iallgather``). User traffic on ``comm`` can never
match ours, and a collective abandoned on ``coll`` cannot poison ``p2p``.

*Sequence numbers and epochs.* Each operation has a number ``seq`` (the same on every rank if
all ranks call the same operations in the same order) within an ``epoch`` (bumped by
:meth:`MPIComm.resync`). Point-to-point tags encode both,
``tag = 16 + 2 ((epoch mod E) S + seq mod S) + kind`` with kind 0 = header, 1 = payload and
``E, S`` sized to the library's ``TAG_UB``; tag 1 is the resync control tag. A message left
behind by an abandoned operation can therefore never match a later one.

*Headers.* Every operation first sends a 28-int64 header to its peers: operation, dtype,
shape, payload bytes, operation argument (reduce op, root or weights mode), a fingerprint of
the topology, data plane, ``seq``, the caller's iteration (``comm.iteration``, set by an
algorithm around each step; -1 outside) and the call site (:mod:`declearn.comm.callsite`:
the line that called the operation, or its ``tag``). Ranks pair two calls only if their
headers are equal, so an extra or skipped call on one rank (its next call comes from another
line) and ranks at different iterations raise instead of mixing unrelated tensors.

* Global collectives (allreduce, broadcast, allgather, barrier) exchange headers all-to-all
  (``Irecv``/``Isend``). Once every header has arrived, every rank knows that every rank is
  there and sees the same n headers, so all ranks take the same decision: raise
  :class:`~declearn.errors.CollectiveMismatchError` naming the ranks and their shapes, or
  start the native nonblocking collective and wait for it (barrier: the exchange itself).
* Neighbor operations run in one round. Each rank posts, for every in-neighbor, the receive
  of its header and the receive of its payload, sized for a peer that matches (same header,
  so the same number of bytes); then it sends its header and payload to every out-neighbor.
  When every header has arrived and equals its own, it waits for the rest. A mismatching
  in-neighbor's payload still lands in the receive posted for it: whole if it fits, else
  truncated (MPI reports ``MPI_ERR_TRUNCATE``, drops the rest and completes the send); if its
  header says it sends no payload (a global operation, the NCCL plane), that receive is
  cancelled. No sender is left blocked, and the rank raises CollectiveMismatchError. Only the
  ranks that see a mismatch raise; either way every message was consumed, so the
  communicator stays in sync. A rank that skips a neighbor operation makes only its
  neighbors time out.

*Deadlines.* Every wait is a Python polling loop (:mod:`declearn.comm.deadline`) bounded by
``timeout`` (per call, else the communicator's, else
:func:`~declearn.comm.base.get_default_timeout`); Ctrl-C interrupts it. At the deadline the
pending receives are cancelled, the pending sends and their buffers go to a graveyard (MPI may
still read them), and :class:`~declearn.errors.CollectiveTimeoutError` names the ranks this
rank did not hear from. The communicator is then *out of sync*: every later operation raises
:class:`~declearn.errors.CommunicatorOutOfSyncError` until :meth:`MPIComm.resync` has run on
every rank.

*Resync.* A handshake of tiny messages on the control tag (itself with a deadline,
:meth:`MPIComm._handshake`): each message carries the sender's resync generation and the
newest generation it has received from the addressee, so a rank completes only on answers
given while every other rank was in resync *with it*, never on messages left by a resync
that timed out elsewhere. Then every rank moves to epoch ``max(epochs) + 1`` and
``seq = 0``, drains the stale messages already queued, and, if any rank abandoned a native
collective, replaces ``coll`` by a fresh duplicate of ``p2p`` (``Idup``, deadline-bounded).
If that duplication times out, the engines must be restarted. :func:`resync_all` resyncs
every live MPIComm of the process (an engine-side helper).

*Data planes.* CPU tensors go to MPI as zero-copy views of their memory (upper-case mpi4py
methods only, never pickles); CUDA tensors go through CUDA-aware MPI, pinned-host staging or
NCCL (:mod:`declearn.comm.gpu`). Results are fresh tensors on the input's device (large CPU
ones reuse freed memory, see :mod:`declearn.comm.memory`); they never require grad.

*Call plans.* A neighbor operation derives a lot from its arguments: the rank's neighbors and
weights, its header, the receive buffers. The first call with a given (operation, topology
object, weights, shape, dtype, device) checks the arguments and builds a
:class:`_NeighborCall` with all of it; later such calls reuse it and only fill in ``seq``. For
``neighbor_allreduce`` it holds the receive buffers (one per in-neighbor slot) and their MPI
views; the combine uses in-place torch ops. Call plans and buffers are dropped when an
operation is abandoned (MPI may still write into them) and by resync.

*Nonblocking allreduce.* :meth:`MPIComm.iallreduce` takes its ``seq`` and posts its header
exchange at once, then returns a :class:`Pending`; the native ``Iallreduce`` is posted as soon
as every header has arrived (and matched). Native collectives on ``coll`` must start in the
same order on every rank, so one is posted only after those of every earlier iallreduce, and
a blocking allreduce, broadcast or allgather first posts those of the iallreduces still
waiting for headers (:meth:`MPIComm._settle_in_flight`). Several may be in flight; they are
posted in call order. MPICH moves a nonblocking collective only while the process is inside
an MPI call, so nothing happens "in the background": ``Pending.done()`` and
:meth:`MPIComm.progress` test every operation in flight, and an algorithm that overlaps
communication with local steps calls one of them between steps (the Local SGD rules do).
``wait()`` applies the operation's deadline from the moment it is called: a timeout names
the ranks whose headers are missing and, as for a blocking operation, leaves the
communicator out of sync (every operation still in flight is abandoned with it). The input
must not be modified until ``wait()`` has returned. CUDA tensors, dtypes MPI cannot add and
n = 1 fall back to the blocking allreduce (a completed Pending).

*Threads.* An MPIComm is not thread-safe: call it from one thread per rank (the engine's).
Services that need asynchronous progress (the partial collectives of eager-SGD, pairwise
gossip; :mod:`declearn.comm.service`) run a thread of their own on their own duplicate of
``p2p``; the MPI library must then run at ``MPI_THREAD_MULTIPLE`` (mpi4py's default).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import weakref
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from declearn.comm.base import (
    REDUCE_OPS,
    WEIGHT_MODES,
    Communicator,
    Completed,
    Pending,
    Traffic,
    get_default_timeout,
)
from declearn.comm.callsite import NO_SITE, SITE_WORDS, call_site, describe_site, tag_site
from declearn.comm.deadline import (
    Deadline,
    Graveyard,
    RequestSet,
    resolve_timeout,
    spin_for,
    wait_until,
)
from declearn.comm.gpu import (
    DATA_PLANES,
    BufferCache,
    CudaAwarePlane,
    HostPlane,
    NcclPlane,
    StagedPlane,
    as_bytes,
    cuda_aware_mpi,
)
from declearn.comm.memory import ensure_cpu_allocator_tuned
from declearn.errors import (
    CollectiveMismatchError,
    CollectiveTimeoutError,
    CommunicatorOutOfSyncError,
    IterationMismatchError,
)

__all__ = ["MPIComm", "resync_all", "live_comms"]

# ------------------------------------------------------------------ protocol constants
_OPS = (
    "barrier", "allreduce", "broadcast", "allgather",
    "neighbor_allreduce", "neighbor_allgather", "neighbor_alltoall",
)
_OP_CODE = {name: i + 1 for i, name in enumerate(_OPS)}
_MAGIC = 0x44434C4E  # "DCLN"
_MAXDIM = 10
(_H_MAGIC, _H_OP, _H_DTYPE, _H_NDIM, _H_BYTES, _H_EXTRA, _H_TOPO, _H_PLANE, _H_SEQ,
 _H_SHAPE, _H_ITER) = range(11)
_H_SITE = 11  # SITE_WORDS words: the call site or tag (declearn.comm.callsite)
_H_DIMS = _H_SITE + SITE_WORDS
_HLEN = _H_DIMS + _MAXDIM
_PLANE_MPI, _PLANE_NCCL = 0, 1

_MAX_CALLS = 256  # call plans kept per communicator (see _NeighborCall)

_CTRL_TAG = 1
_TAG_BASE = 16
_CTRL_LEN = 5

_DTYPE_CODE = {
    dt: zlib.crc32(str(dt).encode()) & 0x7FFFFFFF
    for dt in {v for v in vars(torch).values() if isinstance(v, torch.dtype)}
}
_DTYPE_NAME = {code: str(dt).replace("torch.", "") for dt, code in _DTYPE_CODE.items()}
_MPI_REDUCIBLE = {
    torch.float32, torch.float64, torch.complex64, torch.complex128,
    torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8,
}

_RESYNC_HINT = (
    "This communicator is now out of sync: call comm.resync() on every rank (from a "
    "notebook: %px comm.resync()) before using it again."
)
_RESTART_HINT = (
    "The engines must be restarted (cluster.restart(), or restart the mpiexec job): a "
    "pending MPI duplication or NCCL operation cannot be cancelled."
)

_LIVE: "weakref.WeakSet[MPIComm]" = weakref.WeakSet()
_ORPHANS: list = []  # duplications abandoned during construction, kept alive for MPI
_SERIAL = itertools.count()


def live_comms() -> list["MPIComm"]:
    """The MPIComm objects alive in this process, oldest first."""
    return sorted(_LIVE, key=lambda c: c._serial)


def resync_all(*, timeout: float | None = None) -> int:
    """Call :meth:`MPIComm.resync` on every live MPIComm of this process, oldest first (so
    every rank resyncs its communicators in the same order). Every rank must call it.
    Returns how many communicators were resynced."""
    comms = live_comms()
    for comm in comms:
        comm.resync(timeout=timeout)
    return len(comms)


@dataclass(frozen=True)
class _Plan:
    """What rank ``rank`` needs of a topology: its in-neighbors with their weights
    ``W[rank, j]``, its self weight, its out-neighbors, the largest in/out degrees, a
    fingerprint of the whole matrix, and the notes of a neighbor exchange's requests in the
    order :meth:`MPIComm._exchange_neighbors` posts them: the header receives (slot s at
    index s), the payload receives (slot s at index ``len(in_nbrs) + s``), then a header
    send and a payload send per out-neighbor."""

    in_nbrs: tuple
    in_w: tuple
    self_w: float
    out_nbrs: tuple
    d_in: int
    d_out: int
    fingerprint: int
    notes: tuple


class _NeighborCall:
    """The *call plan* of a neighbor operation: what it derives from (operation, topology,
    weights, shape, dtype, device, data plane) on this rank, built by the first such call and
    reused by the next ones, so that the hot path re-derives nothing.

    ``plan`` is the topology's :class:`_Plan`; ``hdr`` this rank's header (only ``seq``
    changes from call to call, see :meth:`header`); ``hdrs`` the array the in-neighbors'
    headers land in (row s: slot s); ``nbytes`` the payload bytes per message; ``moved`` the
    bytes the call sends and receives (for the wait's spin, see
    :func:`~declearn.comm.deadline.spin_for`). neighbor_allreduce also keeps its receive
    buffers ``bufs`` (one per in-neighbor slot, from the communicator's BufferCache) and,
    for CPU tensors, their MPI views ``views``.

    The arrays are reused, so the communicator drops every call plan when an operation is
    abandoned (MPI may still use them) and in resync. ``topo`` keeps the topology alive:
    the cache is keyed by its ``id``.
    """

    __slots__ = ("topo", "plan", "hdr", "hdrs", "nbytes", "moved", "bufs", "views",
                 "iteration", "site")

    def __init__(self, topo, plan: _Plan, hdr: np.ndarray, nbytes: int):
        self.topo = topo
        self.plan = plan
        self.hdr = hdr
        self.hdrs = np.zeros((len(plan.in_nbrs), _HLEN), np.int64)
        self.nbytes = nbytes
        self.moved = (len(plan.in_nbrs) + len(plan.out_nbrs)) * nbytes
        self.bufs: list = []
        self.views: list | None = None
        self.iteration = self.site = _UNSET  # the first header() writes both

    def header(self, seq: int, iteration: int | None, site: np.ndarray) -> np.ndarray:
        """This rank's header for operation ``seq`` made at ``iteration`` from ``site`` (the
        call-site words are cached arrays: the same site is the same object)."""
        hdr = self.hdr
        hdr[_H_SEQ] = seq
        if iteration != self.iteration:
            self.iteration = iteration
            hdr[_H_ITER] = -1 if iteration is None else iteration
        if site is not self.site:
            hdr[_H_SITE:_H_DIMS] = self.site = site
        return hdr


_UNSET = object()

_NEIGHBOR_OPS = frozenset(_OP_CODE[op] for op in _OPS if op.startswith("neighbor_"))


def _sends_payload(h) -> bool:
    """Whether the rank that sent header ``h`` also sends us a payload on the payload tag,
    of ``h[_H_BYTES]`` bytes (possibly 0): it called a neighbor operation on the MPI data
    plane (a global operation, or the NCCL plane, sends none)."""
    return (int(h[_H_MAGIC]) == _MAGIC and int(h[_H_OP]) in _NEIGHBOR_OPS
            and int(h[_H_PLANE]) == _PLANE_MPI)


def _fingerprint(topo) -> int:
    """A 63-bit digest of the topology's sparsity and weights (rounded to 1e-10, so ranks
    that computed the weights with last-bit differences still agree)."""
    fp = topo._cache.get("fingerprint")
    if fp is None:
        h = hashlib.blake2b(digest_size=8)
        h.update(np.int64(topo.n).tobytes())
        h.update(np.ascontiguousarray(topo.indptr, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(topo.indices, dtype=np.int64).tobytes())
        h.update(np.round(np.asarray(topo.data, dtype=np.float64), 10).tobytes())
        fp = int.from_bytes(h.digest(), "little") & 0x7FFFFFFFFFFFFFFF
        topo._cache["fingerprint"] = fp
    return fp


def _empty(shape, like: torch.Tensor) -> torch.Tensor:
    """A new uninitialised tensor of ``shape`` with the dtype and device of ``like`` (large
    CPU ones reuse freed memory thanks to :mod:`declearn.comm.memory`)."""
    return torch.empty(tuple(shape), dtype=like.dtype, device=like.device)


def _copy(x: torch.Tensor) -> torch.Tensor:
    """A fresh copy of ``x`` (allocated by :func:`_empty`)."""
    return _empty(x.shape, x).copy_(x)


def _shape_text(h) -> str:
    ndim = int(h[_H_NDIM])
    dims = [str(int(d)) for d in h[_H_DIMS:_H_DIMS + min(ndim, _MAXDIM)]]
    if ndim > _MAXDIM:
        dims.append("...")
    return "(" + ", ".join(dims) + ("," if ndim == 1 else "") + ")"


def _describe(h) -> str:
    """A header in words, e.g. ``allreduce(float64 (3, 4), op='mean')``."""
    if int(h[_H_MAGIC]) != _MAGIC:
        return "a message that is not a declearn header"
    code = int(h[_H_OP])
    op = _OPS[code - 1] if 1 <= code <= len(_OPS) else f"operation #{code}"
    parts = [f"{_DTYPE_NAME.get(int(h[_H_DTYPE]), 'unknown dtype')} {_shape_text(h)}"]
    extra = int(h[_H_EXTRA])
    if op == "allreduce" and 0 <= extra < len(REDUCE_OPS):
        parts.append(f"op={REDUCE_OPS[extra]!r}")
    elif op == "broadcast":
        parts.append(f"root={extra}")
    elif op == "neighbor_allreduce" and 0 <= extra < len(WEIGHT_MODES):
        parts.append(f"weights={WEIGHT_MODES[extra]!r}")
    if int(h[_H_TOPO]):
        parts.append(f"topology #{int(h[_H_TOPO]) & 0xFFFFFF:06x}")
    if int(h[_H_PLANE]) == _PLANE_NCCL:
        parts.append("NCCL data plane")
    where = describe_site(h[_H_SITE:_H_DIMS])
    text = f"{op}({', '.join(parts)})" + ("" if where == "an unknown line" else f" at {where}")
    iteration = int(h[_H_ITER])
    return text + (f" in iteration {iteration}" if iteration >= 0 else "")


def _without_site(h) -> bytes:
    """The header's bytes with the call site, iteration and seq blanked: what two calls of the
    same operation on the same tensors have in common."""
    h = np.array(h, np.int64)
    h[_H_SITE:_H_DIMS] = 0
    h[_H_ITER] = h[_H_SEQ] = 0
    return h.tobytes()


def _mismatch_error(head: str, groups, rank: int, advice: str) -> CollectiveMismatchError:
    """The error for ``groups`` (``[(ranks, header), ...]``, first this rank's) that do not
    match. Iterations that differ -> IterationMismatchError; calls that differ only in
    their call site -> an error about the extra/missing call; else ``advice``."""
    lines = "; ".join(f"{_ranks_text(ranks)} called {_describe(h)}" for ranks, h in groups)
    iterations = {int(r): (int(h[_H_ITER]) if int(h[_H_ITER]) >= 0 else None)
                  for ranks, h in groups for r in ranks}
    if len(set(iterations.values())) > 1:
        return IterationMismatchError(
            f"{head}: {lines}. The ranks are at different iterations of an algorithm: a step "
            "failed or was skipped on some rank, and the others went on. The "
            "communicator is still in sync. With a declearn algorithm, call "
            "alg.recover() on every rank (from a notebook: %px alg.recover()): it rolls every "
            "rank back to the last iteration they all completed.",
            iterations,
        )
    if len({_without_site(h) for _, h in groups}) == 1:
        return CollectiveMismatchError(
            f"{head}: {lines}. Same operation, different lines: the ranks reached different "
            "calls, so some rank made an extra call or skipped one (look for an `if rank == "
            "...:` or a loop that runs a different number of times). If the ranks really mean to pair calls made on different lines, give those calls "
            "the same tag, e.g. comm.broadcast(x, tag='weights') on every rank."
        )
    return CollectiveMismatchError(f"{head}: {lines}. {advice}")


def _ranks_text(ranks) -> str:
    ranks = sorted(int(r) for r in ranks)
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


class _Operation:
    """One operation in flight (its deadline, its MPI requests and any native collective),
    and the context manager that runs it (see :meth:`MPIComm._operation`)."""

    __slots__ = ("comm", "name", "deadline", "requests", "native", "spin")

    def __init__(self, comm, name, deadline, requests, spin):
        self.comm = comm
        self.name = name
        self.deadline = deadline
        self.requests = requests
        self.spin = spin  # seconds of yielding before sleeping (see deadline.spin_for)
        self.native = None  # (kind, request or works, buffers) while a collective runs

    def __enter__(self) -> "_Operation":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc is not None:
                self.comm._abandon(self, exc)
        finally:
            self.comm._seq += 1
        return False


_HEADERS, _DRAINING, _NATIVE, _DONE, _FAILED = "headers", "draining", "native", "done", "failed"


class _InFlight(Pending):
    """An :meth:`MPIComm.iallreduce` in flight: its header exchange (``requests``, ``table``),
    then its native ``Iallreduce`` (``native``), then its result.

    ``stage`` goes ``headers -> native -> done``; a mismatch goes ``headers -> draining``
    (receiving the payloads announced by mismatching peers) ``-> failed``; an abandoned
    operation goes straight to ``failed``. ``done()`` moves every operation of the
    communicator forward without blocking; ``wait()`` waits up to the deadline.
    """

    __slots__ = ("comm", "seq", "epoch", "tag", "op", "x", "out", "timeout", "spin",
                 "requests", "table", "hdr", "native", "stage", "error", "result")

    def __init__(self, comm, seq, epoch, tag, op, x, timeout, spin):
        self.comm = comm
        self.seq, self.epoch, self.tag = seq, epoch, tag
        self.op = op
        self.x = x  # MPI reads it until the native collective completes
        self.out = None
        self.timeout = timeout
        self.spin = spin
        self.requests = None
        self.table = None
        self.hdr = None
        self.native = None
        self.stage = _HEADERS
        self.error: BaseException | None = None
        self.result: torch.Tensor | None = None

    @property
    def finished(self) -> bool:
        return self.stage == _DONE or self.stage == _FAILED

    def done(self) -> bool:
        if not self.finished:
            self.comm._progress()
        return self.finished

    def wait(self) -> torch.Tensor:
        if not self.finished:
            self.comm._wait_in_flight(self)
        if self.error is not None:
            raise self.error
        return self.result

    def __repr__(self) -> str:
        return f"<iallreduce {self.seq} of epoch {self.epoch}: {self.stage}>"


class MPIComm(Communicator):
    """One node per MPI rank; see the module docstring for the protocol.

    Parameters
    ----------
    comm : mpi4py communicator, optional
        The ranks that take part (default ``MPI.COMM_WORLD``); it is duplicated, so traffic
        of the caller on ``comm`` never mixes with ours. Every rank of ``comm`` must create
        its MPIComm at the same time (from a notebook: ``%px comm = MPIComm()``).
    device : str or torch.device, optional
        Where node-local tensors live; default :func:`declearn.comm.placement.default_device`
        (the engine's GPU when there is one, else CPU). Operations accept CPU and CUDA
        tensors and return results on the input's device.
    timeout : float, optional
        Seconds any operation waits before raising CollectiveTimeoutError; default
        :func:`declearn.comm.base.get_default_timeout` at call time.
    data_plane : {"auto", "cuda-aware", "staged", "nccl"}
        How CUDA tensors travel (see :mod:`declearn.comm.gpu`); CPU tensors always go
        through MPI.
    check_call_sites : bool
        Every header carries the line the operation was called from, and calls paired from
        different lines raise CollectiveMismatchError (see :mod:`declearn.comm.callsite`).
        Calls that are meant to pair from different lines take ``tag="..."``; False turns
        the check off for every call.

    Example, in a cell run on every engine (``%%px``)::

        comm = MPIComm(timeout=30)
        x = torch.full((3,), float(comm.rank), dtype=torch.float64)
        y = comm.neighbor_allreduce(x, declearn.topology.ring(comm.size))  # sum_j W[i,j] x_j

    After a CollectiveTimeoutError (a rank did not arrive), call ``comm.resync()`` on every
    engine before using the communicator again.
    """

    is_simulator = False

    def __init__(self, comm=None, *, device=None, timeout: float | None = None,
                 data_plane: str = "auto", check_call_sites: bool = True):
        try:
            from mpi4py import MPI
        except ImportError:
            raise ImportError(
                "MPIComm needs mpi4py and an MPI library: pip install mpi4py mpich "
                "(then run under mpiexec or start MPI engines with ipyparallel)."
            ) from None
        if data_plane not in DATA_PLANES:
            raise ValueError(
                f"data_plane must be one of {', '.join(repr(p) for p in DATA_PLANES)}, "
                f"got {data_plane!r}."
            )
        self._MPI = MPI
        self._address_buffer = MPI.buffer.fromaddress  # zero-copy view of a CPU tensor
        self._timeout = None if timeout is None else resolve_timeout(timeout)
        self.data_plane = data_plane
        base = self._check_comm(MPI, comm)
        wanted = self._check_device(device, data_plane)  # local checks before any collective
        deadline = Deadline(resolve_timeout(self._timeout))
        self._p2p = self._duplicate(base, deadline)
        self._coll = self._duplicate(self._p2p, deadline)
        self._rank = self._p2p.Get_rank()
        self._size = self._p2p.Get_size()
        self._device = self._place(wanted)
        if self._device.type == "cpu":
            ensure_cpu_allocator_tuned()
        tag_ub = MPI.COMM_WORLD.Get_attr(MPI.TAG_UB) or 32767
        slots = (int(tag_ub) - _TAG_BASE) // 2
        self._epoch_slots = 64 if slots >= 64 * 4096 else 4
        self._seq_slots = slots // self._epoch_slots
        self._epoch = 0
        self._seq = 0
        self._resync_gen = 0
        self._ctrl_seen = np.zeros(self._size, np.int64)  # see _handshake
        self._ctrl_last = np.zeros((self._size, _CTRL_LEN), np.int64)
        self._check_sites = bool(check_call_sites)
        self._site = NO_SITE  # call site of the operation being started (see _tagged)
        self._out_of_sync: str | None = None
        self._broken: str | None = None
        self._coll_poisoned = False
        self._retired: list = []  # communicators replaced while requests may be pending
        self._closed = False
        self._graveyard = Graveyard(MPI)
        self._bufs = BufferCache()
        self._headers: dict = {}  # header templates by operation signature
        self._calls: dict = {}  # neighbor call plans (_NeighborCall), see _neighbor_call
        self._in_flight: list[_InFlight] = []  # iallreduces not finished, in call order
        self._host = HostPlane(self._bufs)
        self._gpu = None
        self._traffic = self._new_traffic()
        self._serial = next(_SERIAL)
        _LIVE.add(self)
        if data_plane == "nccl":
            self._gpu = NcclPlane(self._bufs)
            self._gpu.init(
                self._rank, self._size, lambda t: self.broadcast(t, 0), self._device,
                resolve_timeout(self._timeout),
            )

    # ------------------------------------------------------------------ construction
    @staticmethod
    def _check_comm(MPI, comm):
        if comm is None:
            return MPI.COMM_WORLD
        if not isinstance(comm, MPI.Comm):
            raise TypeError(
                f"comm must be an mpi4py communicator (e.g. MPI.COMM_WORLD.Split(...)), got "
                f"{type(comm).__name__}."
            )
        if comm == MPI.COMM_NULL:
            raise ValueError(
                "This rank is not a member of the communicator (it is MPI.COMM_NULL): create "
                "the MPIComm only on the ranks that belong to it."
            )
        if not isinstance(comm, MPI.Intracomm) or comm.Is_inter():
            raise TypeError("comm must be an intra-communicator, not an inter-communicator.")
        return comm

    def _duplicate(self, comm, deadline: Deadline):
        new, request = comm.Idup()
        try:
            done = wait_until(request.Test, deadline)
        except BaseException:
            _ORPHANS.append((new, request))  # MPI will still write the new handle
            raise
        if not done:
            _ORPHANS.append((new, request))
            raise CollectiveTimeoutError(
                "MPIComm()", (), deadline.timeout, comm.Get_rank(),
                hint="Every rank of the communicator must create its MPIComm at the same "
                "time (from a notebook: %px comm = MPIComm()). " + _RESTART_HINT,
            )
        return new

    @staticmethod
    def _check_device(device, data_plane: str) -> torch.device | None:
        """The device asked for (None: automatic), checked without communicating."""
        if device is not None:
            try:
                device = torch.device(device)
            except (TypeError, RuntimeError) as exc:
                raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:k': {exc}") from None
            if device.type not in ("cpu", "cuda"):
                raise ValueError(f"MPIComm supports CPU and CUDA devices, got {device}.")
            if device.type == "cuda" and not torch.cuda.is_available():
                raise ValueError(
                    f"device={str(device)!r} but CUDA is not available here; use "
                    "device='cpu' (or leave device=None to pick automatically)."
                )
        if data_plane == "nccl" and not (
            (device is not None and device.type == "cuda")
            or (device is None and torch.cuda.is_available())
        ):
            raise ValueError(
                "data_plane='nccl' moves CUDA tensors, but this engine has no CUDA device "
                "(or device='cpu' was asked); use data_plane='auto'."
            )
        return device

    def _place(self, wanted: torch.device | None) -> torch.device:
        """The device to use: ``cuda:(local rank % GPUs)`` unless a full device was asked."""
        from declearn.comm.placement import default_device, local_rank

        # A collective over p2p on every rank (so none can hang in it alone); safe here,
        # every rank has just completed the duplication.
        node_rank = local_rank(self._p2p)
        if wanted is None:
            return default_device(node_rank)
        if wanted.type == "cuda" and wanted.index is None:
            return torch.device("cuda", node_rank % torch.cuda.device_count())
        return wanted

    # ------------------------------------------------------------------ properties
    @property
    def size(self) -> int:
        return self._size

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def timeout(self) -> float | None:
        """This communicator's deadline in seconds (None: the global default at call time)."""
        return self._timeout

    @timeout.setter
    def timeout(self, seconds: float | None) -> None:
        self._timeout = None if seconds is None else resolve_timeout(seconds)

    @property
    def epoch(self) -> int:
        """Number of the current epoch (bumped by :meth:`resync`)."""
        return self._epoch

    @property
    def seq(self) -> int:
        """Number of operations started in the current epoch."""
        return self._seq

    @property
    def in_sync(self) -> bool:
        """False after an operation was abandoned, until :meth:`resync`."""
        return self._out_of_sync is None and self._broken is None

    @property
    def abandoned(self) -> int:
        """MPI requests given up by timed-out operations that MPI has not finished yet."""
        return self._graveyard.sweep()

    def _new_traffic(self) -> Traffic:
        return Traffic(messages=0, bytes=0, by_op={})

    def __repr__(self) -> str:
        state = "in sync" if self.in_sync else "OUT OF SYNC (call comm.resync() on every rank)"
        return (
            f"<MPIComm rank {self._rank} of {self._size} on {self._device}, "
            f"timeout {self._timeout if self._timeout is not None else 'default'}, {state}>"
        )

    # ------------------------------------------------------------------ operations
    def barrier(self, *, timeout: float | None = None, tag: str | None = None) -> None:
        self._site = call_site(2) if tag is None and self._check_sites else self._tagged(tag)
        with self._operation("barrier", timeout) as state:
            if self._size > 1:
                hdr = self._header("barrier", (), torch.uint8)
                self._exchange_all(state, hdr)
        self._count("barrier", 0, 0)

    def allreduce(self, x: torch.Tensor, op: str = "mean", *, timeout: float | None = None,
                  tag: str | None = None):
        self._site = call_site(2) if tag is None and self._check_sites else self._tagged(tag)
        x = self._tensor(x)
        op = self._check_op(op)
        if x.dtype == torch.bool:
            raise TypeError("allreduce cannot sum booleans; convert with x.int() first.")
        if op == "mean" and not (x.is_floating_point() or x.is_complex()):
            raise TypeError(
                f"allreduce(op='mean') divides by n, so x must be floating point, got "
                f"{x.dtype}; convert with x.double() or use op='sum'."
            )
        plane = self._plane(x)
        n = self._size
        nbytes = x.numel() * x.element_size()
        with self._operation("allreduce", timeout, 4 * nbytes) as state:
            if n == 1:
                out = _copy(x)
            else:
                hdr = self._header("allreduce", x.shape, x.dtype, extra=REDUCE_OPS.index(op),
                                   plane=plane)
                self._exchange_all(state, hdr)
                out = _empty(x.shape, x)
                if not plane.uses_mpi:
                    out.copy_(x)
                    self._wait_nccl(state, [plane.dist.all_reduce(out, async_op=True)], out)
                elif x.dtype in _MPI_REDUCIBLE:
                    io = plane.session()
                    send, recv = io.typed_send(x, "allreduce-in"), io.typed_recv(out, "allreduce")
                    self._settle_in_flight(state)
                    self._wait_native(
                        state, self._coll.Iallreduce(send, recv, self._MPI.SUM), (send, recv)
                    )
                    io.finish()
                else:  # float16, bfloat16, ...: MPI cannot add them; gather, then add here
                    stack = self._gather_bytes(state, plane, x)
                    torch.sum(stack, dim=0, out=out)
            if op == "mean":
                out.div_(n)
        self._count("allreduce", 2 * (n - 1), 2 * (n - 1) * nbytes / n if n > 1 else 0)
        return out

    def iallreduce(self, x: torch.Tensor, op: str = "mean", *,
                   timeout: float | None = None, tag: str | None = None) -> Pending:
        """Start ``allreduce(x, op)`` and return a :class:`Pending` at once (see the module
        docstring, *Nonblocking allreduce*): its ``wait()`` gives the result, ``done()`` says
        whether it has completed and moves it forward. Do not modify ``x`` before ``wait()``
        returns. It matches an ``allreduce`` at the same point on another rank (from the same
        line, or with the same ``tag``)."""
        self._site = call_site(2) if tag is None and self._check_sites else self._tagged(tag)
        x = self._tensor(x)
        op = self._check_op(op)
        if x.dtype == torch.bool:
            raise TypeError("iallreduce cannot sum booleans; convert with x.int() first.")
        if op == "mean" and not (x.is_floating_point() or x.is_complex()):
            raise TypeError(
                f"iallreduce(op='mean') divides by n, so x must be floating point, got "
                f"{x.dtype}; convert with x.double() or use op='sum'."
            )
        plane = self._plane(x)
        n = self._size
        if n == 1 or not plane.direct or x.dtype not in _MPI_REDUCIBLE:
            return Completed(self.allreduce(x, op, timeout=timeout, tag=tag))
        seconds = resolve_timeout(timeout, self._timeout)
        self._check_usable("iallreduce")
        if len(self._graveyard):
            self._graveyard.sweep()
        nbytes = x.numel() * x.element_size()
        pending = _InFlight(self, self._seq, self._epoch, self._tag(0), op, x, seconds,
                            spin_for(4 * nbytes))
        pending.hdr = self._header("allreduce", x.shape, x.dtype, extra=REDUCE_OPS.index(op),
                                   plane=plane)
        pending.requests = RequestSet(self._MPI)
        pending.table = self._post_headers(pending.requests, pending.hdr, pending.tag)
        self._seq += 1
        self._in_flight.append(pending)
        self._count("allreduce", 2 * (n - 1), 2 * (n - 1) * nbytes / n)
        self._progress()
        return pending

    def progress(self) -> int:
        """Move every nonblocking operation in flight forward without blocking (MPICH moves
        them only inside MPI calls: call this, or ``pending.done()``, between local steps
        to overlap communication with computation). Returns how many are still in flight."""
        self._progress()
        return len(self._in_flight)

    @property
    def in_flight(self) -> int:
        """Number of nonblocking operations started and not finished yet."""
        return len(self._in_flight)

    def partial_allreduce(self, shape, **options):
        """eager-SGD's partial allreduce, for real: a
        :class:`~declearn.comm.partial.MPIPartialAllreduce` with its service thread (every
        rank must call this together)."""
        from declearn.comm.partial import MPIPartialAllreduce

        return MPIPartialAllreduce(self, shape, **options)

    def pairwise_gossip(self, topology, x: torch.Tensor, **options):
        """Asynchronous pairwise gossip of this rank's ``x``, with no global lock-step: a
        :class:`~declearn.comm.gossip.MPIGossip` (every rank must call this together)."""
        from declearn.comm.gossip import MPIGossip

        return MPIGossip(self, topology, self._tensor(x), **options)

    def broadcast(self, x: torch.Tensor, root: int = 0, *, timeout: float | None = None,
                  tag: str | None = None):
        self._site = call_site(2) if tag is None and self._check_sites else self._tagged(tag)
        x = self._tensor(x)
        root = self._check_root(root)
        plane = self._plane(x)
        n = self._size
        with self._operation("broadcast", timeout, 2 * x.numel() * x.element_size()) as state:
            out = _copy(x)
            if n > 1:
                hdr = self._header("broadcast", x.shape, x.dtype, extra=root, plane=plane)
                self._exchange_all(state, hdr)
                if not plane.uses_mpi:
                    self._wait_nccl(state, [plane.dist.broadcast(out, src=root, async_op=True)],
                                    out)
                else:
                    io = plane.session()
                    buf = io.send(out, "bcast") if self._rank == root else io.recv(out, "bcast")
                    self._settle_in_flight(state)
                    self._wait_native(state, self._coll.Ibcast(buf, root), buf)
                    io.finish()
        nbytes = x.numel() * x.element_size()
        sent = n - 1 if self._rank == root else 0
        self._count("broadcast", sent, sent * nbytes)
        return out

    def allgather(self, x: torch.Tensor, *, timeout: float | None = None,
                  tag: str | None = None):
        self._site = call_site(2) if tag is None and self._check_sites else self._tagged(tag)
        x = self._tensor(x)
        plane = self._plane(x)
        n = self._size
        with self._operation("allgather", timeout, n * x.numel() * x.element_size()) as state:
            if n == 1:
                out = _copy(x.unsqueeze(0))
            else:
                hdr = self._header("allgather", x.shape, x.dtype, plane=plane)
                self._exchange_all(state, hdr)
                out = self._gather_bytes(state, plane, x)
        nbytes = x.numel() * x.element_size()
        self._count("allgather", n - 1, (n - 1) * nbytes)
        return out

    def neighbor_allreduce(self, x: torch.Tensor, topology, *, weights: str = "receiver",
                           timeout: float | None = None, tag: str | None = None):
        self._site = call_site(2) if tag is None and self._check_sites else self._tagged(tag)
        x = self._tensor(x, floating="neighbor_allreduce")
        plane = self._plane(x)
        call = self._neighbor_call("neighbor_allreduce", topology, x, plane, weights)
        plan = call.plan
        with self._operation("neighbor_allreduce", timeout, call.moved) as state:
            if plan.in_nbrs or plan.out_nbrs:
                if plane.direct:  # CPU: MPI reads x's and writes the cached buffers' memory
                    state.requests.keep.append(x)  # x stays alive while MPI may read it
                    send = self._address_buffer(x.data_ptr(), x.nbytes)
                    self._exchange_neighbors(state, call, [send] * len(plan.out_nbrs),
                                             call.views)
                else:
                    self._move_neighbors(state, call, plane, [x] * len(plan.out_nbrs),
                                         call.bufs)
            out = torch.mul(x, plan.self_w)  # a fresh tensor
            for buf, w in zip(call.bufs, plan.in_w):
                out.add_(buf, alpha=w)
        self._count("neighbor_allreduce", len(plan.out_nbrs), len(plan.out_nbrs) * call.nbytes)
        return out

    def neighbor_allgather(self, x: torch.Tensor, topology, *, timeout: float | None = None,
                           tag: str | None = None):
        self._site = call_site(2) if tag is None and self._check_sites else self._tagged(tag)
        x = self._tensor(x)
        plane = self._plane(x)
        call = self._neighbor_call("neighbor_allgather", topology, x, plane)
        plan = call.plan
        with self._operation("neighbor_allgather", timeout, call.moved) as state:
            out = _empty((plan.d_in, *x.shape), x)
            out[len(plan.in_nbrs):].zero_()
            if plan.in_nbrs or plan.out_nbrs:
                self._move_neighbors(state, call, plane, [x] * len(plan.out_nbrs),
                                     list(out[:len(plan.in_nbrs)]))
        self._count("neighbor_allgather", len(plan.out_nbrs), len(plan.out_nbrs) * call.nbytes)
        return out

    def neighbor_alltoall(self, m: torch.Tensor, topology, *, timeout: float | None = None,
                          tag: str | None = None):
        self._site = call_site(2) if tag is None and self._check_sites else self._tagged(tag)
        m = self._tensor(m, "m")
        plane = self._plane(m)
        call = self._neighbor_call("neighbor_alltoall", topology, m, plane)
        plan = call.plan
        if m.dim() < 1 or m.shape[0] != plan.d_out:
            raise ValueError(
                f"m must have shape (D_out, *s) with D_out = {plan.d_out}, the largest "
                f"out-degree of {topology.name} (slot s goes to the s-th out-neighbor); got "
                f"shape {tuple(m.shape)}."
            )
        with self._operation("neighbor_alltoall", timeout, call.moved) as state:
            out = _empty((plan.d_in, *m.shape[1:]), m)
            out[len(plan.in_nbrs):].zero_()
            if plan.in_nbrs or plan.out_nbrs:
                self._move_neighbors(state, call, plane, list(m[:len(plan.out_nbrs)]),
                                     list(out[:len(plan.in_nbrs)]))
        self._count("neighbor_alltoall", len(plan.out_nbrs), len(plan.out_nbrs) * call.nbytes)
        return out

    def close(self) -> None:
        """Release the two MPI communicators (call it on every rank, as for creating the
        MPIComm; also done when the object is garbage collected). Later operations raise."""
        if self._closed:
            return
        self._closed = True
        self._broken = "this communicator was closed; create a new MPIComm() on every rank."
        self._abandon_in_flight("the communicator was closed")
        _LIVE.discard(self)
        if len(self._graveyard):
            _ORPHANS.append(self._graveyard)  # MPI may still use those buffers
        if self._MPI.Is_finalized():
            return
        for comm in (self._p2p, self._coll, *self._retired):
            try:
                comm.Free()  # pending requests complete normally (MPI marks it for freeing)
            except Exception:  # noqa: BLE001 - freeing is best effort
                pass

    def __del__(self):
        try:
            if not getattr(self, "_closed", True):
                self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass

    # ------------------------------------------------------------------ resync
    def resync(self, *, timeout: float | None = None) -> None:
        """Bring every rank back in step after an abandoned operation. Every rank must call it
        (from a notebook: ``%px comm.resync()``); it is harmless on a healthy communicator.

        It succeeds only when every rank is in resync *at the same time* (see
        :meth:`_handshake`): a rank that was busy while the others resynced and gave up
        cannot complete on their stale messages. All ranks then move to the same new epoch
        (so messages of abandoned operations can never match new ones) and, if a native
        collective was abandoned anywhere, get a fresh collective communicator. Otherwise
        it raises CollectiveTimeoutError naming the ranks that did not take part, and the
        communicator stays out of sync until a resync that every rank calls together.
        """
        if self._broken is not None:
            raise CommunicatorOutOfSyncError(self._broken)
        deadline = Deadline(resolve_timeout(timeout, self._timeout))
        self._abandon_in_flight("resync() was called before it completed")
        self._graveyard.sweep()
        if self._size > 1:
            epoch, poisoned = self._handshake(deadline)
        else:
            epoch, poisoned = self._epoch + 1, self._coll_poisoned
        self._epoch, self._seq = epoch, 0
        self._drain(deadline)
        if poisoned:
            self._renew_coll(deadline)
        self._graveyard.sweep()
        self._drop_buffers()
        self._out_of_sync = None

    def _handshake(self, deadline: Deadline) -> tuple[int, bool]:
        """The control exchange of :meth:`resync`: returns the new epoch and whether some rank
        abandoned a native collective, the same on every rank, once all are in resync together.

        Rank r's k-th call has generation ``g_r = k``. It sends every rank j the control
        message ``[MAGIC, g_r, epoch_r, poisoned_r, seen_r[j]]``, where ``seen_r[j]`` is the
        newest generation r has received from j, and re-sends it to j each time ``seen_r[j]``
        grows. Control messages are only sent from inside resync, so a message from j whose
        last field equals ``g_r`` proves that j was in resync after r's call began. r
        completes when the newest message from every j carries ``g_r``; the new epoch is
        ``1 + max`` of the epochs in those messages (and r's). Messages of earlier calls
        (a resync that timed out on some rank) are still received, but only move ``seen``:
        they can never complete a later call. Control messages are received with matched
        probes (``Improbe``), so nothing is left posted when a call gives up.
        """
        n, r = self._size, self._rank
        self._resync_gen += 1
        gen = self._resync_gen
        seen, last = self._ctrl_seen, self._ctrl_last
        sends = RequestSet(self._MPI)

        def send(j: int) -> None:
            msg = np.array([_MAGIC, gen, self._epoch, int(self._coll_poisoned), seen[j]],
                           np.int64)
            sends.add(self._p2p.Isend(msg, j, _CTRL_TAG), ("send-ctrl", j), msg)

        def confirmed() -> bool:
            while True:
                message = self._p2p.Improbe(self._MPI.ANY_SOURCE, _CTRL_TAG, status)
                if message is None:
                    break
                j = status.Get_source()
                if self._take_ctrl(message, j):
                    send(j)  # tell j that its call is seen
            sends.test()
            return bool((last[others, 4] == gen).all())

        status = self._MPI.Status()
        others = np.array([j for j in range(n) if j != r])
        for j in others:
            send(int(j))
        try:
            done = wait_until(confirmed, deadline)
        except BaseException:  # Ctrl-C: MPI may still read the send buffers
            sends.abandon(self._graveyard)
            self._out_of_sync = self._out_of_sync or "resync() was interrupted"
            raise
        sends.abandon(self._graveyard)  # sends not finished yet: j receives them later
        if not done:
            missing = [int(j) for j in others if last[j, 4] != gen]
            self._out_of_sync = self._out_of_sync or "resync() timed out"
            raise CollectiveTimeoutError(
                "resync", missing, deadline.timeout, r,
                hint="resync completes only when every rank calls it at the same time: call "
                "comm.resync() on every rank together (from a notebook: %px comm.resync(); "
                "first cluster.interrupt() if some engine is still busy); if it keeps "
                "failing, restart the engines.",
            )
        epoch = max(self._epoch, int(last[others, 2].max())) + 1
        poisoned = self._coll_poisoned or bool(last[others, 3].any())
        return epoch, poisoned

    def _take_ctrl(self, message, j: int) -> bool:
        """Receive control message ``message`` (matched, from rank ``j``) and note it; True
        when it is the first one of a new call of ``j``."""
        buf = np.zeros(_CTRL_LEN, np.int64)
        message.Recv(buf)
        if buf[0] != _MAGIC:
            return False
        self._ctrl_last[j] = buf
        if buf[1] <= self._ctrl_seen[j]:
            return False
        self._ctrl_seen[j] = buf[1]
        return True

    def _renew_coll(self, deadline: Deadline) -> None:
        """Replace ``coll`` (a native collective was abandoned on it) by a fresh duplicate
        of ``p2p``; every rank does it in the same resync."""
        r = self._rank
        new, request = self._p2p.Idup()
        done = False
        try:
            done = wait_until(request.Test, deadline)
        finally:
            if not done:  # timed out or interrupted: the duplication cannot be cancelled
                self._graveyard.bury(request, new)
                self._broken = (
                    f"resync() could not renew the collective communicator on rank {r}. "
                    + _RESTART_HINT
                )
        if not done:
            raise CollectiveTimeoutError("resync", (), deadline.timeout, r, hint=_RESTART_HINT)
        self._retired.append(self._coll)
        self._coll = new
        self._coll_poisoned = False

    def _drain(self, deadline: Deadline) -> None:
        """Receive and drop the messages of earlier epochs already queued here (best effort:
        their senders' requests can then complete and leave the graveyard). Control messages
        on the way are noted (see :meth:`_handshake`: one may belong to a peer's next
        resync), and the first message of the current epoch from a peer ends its queue's
        drain: it sent nothing older after it."""
        MPI = self._MPI
        status = MPI.Status()
        current = self._epoch % self._epoch_slots
        for j in range(self._size):
            if j == self._rank:
                continue
            while self._p2p.Iprobe(j, MPI.ANY_TAG, status):
                tag = status.Get_tag()
                if tag == _CTRL_TAG:
                    message = self._p2p.Improbe(j, _CTRL_TAG, status)
                    if message is None:
                        break
                    self._take_ctrl(message, j)
                    continue
                if tag < _TAG_BASE or ((tag - _TAG_BASE) // 2) // self._seq_slots == current:
                    break
                message = self._p2p.Improbe(j, tag, status)
                if message is None:
                    break
                scratch = np.empty(status.Get_count(MPI.BYTE), np.uint8)
                request = message.Irecv(scratch)
                done = False
                try:
                    done = wait_until(request.Test, deadline)
                finally:
                    if not done:
                        self._graveyard.bury(request, scratch)
                if not done:
                    return

    # ------------------------------------------------------------------ machinery
    def _operation(self, name: str, timeout, nbytes: float = 0) -> "_Operation":
        """``with self._operation(...) as state:`` runs one operation: refuse if out of sync;
        on an exception while messages are in flight, abandon them and mark the communicator
        out of sync; count the operation in ``seq`` either way."""
        if self._broken is not None or self._out_of_sync is not None:
            self._check_usable(name)
        if timeout is None:  # the communicator's deadline, validated when it was set
            seconds = self._timeout if self._timeout is not None else get_default_timeout()
        else:
            seconds = resolve_timeout(timeout)
        if self._graveyard.requests:
            self._graveyard.sweep()
        return _Operation(self, name, Deadline(seconds), RequestSet(self._MPI),
                          spin_for(nbytes))

    def _check_usable(self, name: str) -> None:
        """Refuse operation ``name`` on a closed, broken or out-of-sync communicator."""
        if self._broken is not None:
            raise CommunicatorOutOfSyncError(f"{name} refused: {self._broken}")
        if self._out_of_sync is not None:
            raise CommunicatorOutOfSyncError(
                f"{name} refused on rank {self._rank}: this communicator is out of sync since "
                f"{self._out_of_sync}. Call comm.resync() on every rank (from a notebook: "
                "%px comm.resync(), or declearn.comm.mpi.resync_all() on every engine)."
            )

    def _abandon(self, state: _Operation, exc: BaseException) -> None:
        in_flight = len(state.requests) > 0 or state.native is not None
        if not in_flight and not isinstance(exc, (CollectiveTimeoutError, KeyboardInterrupt)):
            return  # every message had moved (e.g. a mismatch): the ranks are still in step
        state.requests.abandon(self._graveyard)
        self._abandon_in_flight(f"{state.name} (operation {self._seq}) was abandoned")
        if state.native is not None:
            kind, handle, keep = state.native
            if kind == "mpi":
                self._graveyard.bury(handle, keep)
                self._coll_poisoned = True
            else:
                self._broken = (
                    f"an NCCL operation ({state.name}) was abandoned on rank {self._rank}. "
                    + _RESTART_HINT
                )
        self._drop_buffers()
        why = "it timed out" if isinstance(exc, CollectiveTimeoutError) else (
            "it was interrupted" if isinstance(exc, KeyboardInterrupt)
            else f"it failed with {type(exc).__name__}"
        )
        self._out_of_sync = f"{state.name} (operation {self._seq} of epoch {self._epoch}) " \
            f"was abandoned because {why}"

    def _drop_buffers(self) -> None:
        """Forget the cached buffers and call plans (MPI may still use those of an abandoned
        operation: the graveyard keeps them alive, later operations get new ones)."""
        self._bufs.clear()
        self._calls.clear()

    def _timeout_error(self, state: _Operation, missing, hint: str = "") -> CollectiveTimeoutError:
        return CollectiveTimeoutError(
            state.name, sorted(set(int(m) for m in missing)), state.deadline.timeout,
            self._rank, hint=(hint + " " + _RESYNC_HINT).strip(),
        )

    def _tag(self, kind: int) -> int:
        slot = (self._epoch % self._epoch_slots) * self._seq_slots + self._seq % self._seq_slots
        return _TAG_BASE + 2 * slot + kind

    def _header(self, op, shape, dtype, *, extra=0, topo=0, nbytes=0, plane=None):
        """This rank's header for the current operation (a fresh int64 array: it stays
        referenced by the pending sends)."""
        nccl = plane is not None and not plane.uses_mpi
        key = (op, shape, dtype, extra, topo, nbytes, nccl)
        template = self._headers.get(key)
        if template is None:
            shape = tuple(int(d) for d in shape)
            dims = list(shape[:_MAXDIM])
            template = np.array(
                [_MAGIC, _OP_CODE[op], _DTYPE_CODE.get(dtype, 0), len(shape), nbytes, extra,
                 topo, _PLANE_NCCL if nccl else _PLANE_MPI, 0, hash(shape), -1]
                + [0] * SITE_WORDS + dims + [0] * (_MAXDIM - len(dims)),
                dtype=np.int64,
            )
            if len(self._headers) > 256:
                self._headers.clear()
            self._headers[key] = template
        h = template.copy()
        h[_H_SEQ] = self._seq
        h[_H_ITER] = self._iteration_word()
        h[_H_SITE:_H_DIMS] = self._site
        return h

    def _iteration_word(self) -> int:
        k = self.iteration
        return -1 if k is None else k

    def _tagged(self, tag) -> np.ndarray:
        """The header words of ``tag`` (calls pair by tag), or of no call site when call
        sites are not checked. Every operation starts by noting where it was called from
        (``self._site``; see :mod:`declearn.comm.callsite`)."""
        if tag is None:
            return NO_SITE
        return tag_site(self._check_tag(tag))

    def _exchange_all(self, state: _Operation, hdr: np.ndarray) -> np.ndarray:
        """All-to-all header exchange of a global collective; raise on any mismatch."""
        requests = state.requests
        table = self._post_headers(requests, hdr, self._tag(0))
        if not requests.wait(state.deadline, state.spin):
            pending = requests.pending()
            missing = [note[1] for note in pending if note[0] == "recv-header"]
            raise self._timeout_error(state, missing or [note[1] for note in pending])
        error = self._table_mismatch(state.name, table)
        if error is not None:
            self._drain_payloads(state, table)
            raise error
        return table

    def _post_headers(self, requests: RequestSet, hdr: np.ndarray, tag: int) -> np.ndarray:
        """Post the all-to-all exchange of ``hdr`` on ``tag`` into ``requests``; return the
        table (row j: rank j's header) the receives fill."""
        n, r, p2p = self._size, self._rank, self._p2p
        table = np.empty((n, _HLEN), np.int64)
        table[r] = hdr
        for j in range(n):
            if j != r:
                requests.add(p2p.Irecv(table[j], j, tag), ("recv-header", j), table)
        for j in range(n):
            if j != r:
                requests.add(p2p.Isend(hdr, j, tag), ("send-header", j), hdr)
        return table

    def _table_mismatch(self, name: str, table: np.ndarray) -> CollectiveMismatchError | None:
        """The error to raise when the ranks' headers differ (every rank sees the same
        table, so every rank decides the same), else None."""
        keys = [row.tobytes() for row in table]  # matching ranks send identical headers
        if all(key == keys[0] for key in keys):
            return None
        groups: dict = {}
        for rank, key in enumerate(keys):
            groups.setdefault(key, []).append(rank)
        return _mismatch_error(
            f"{name} mismatch (seen on rank {self._rank})",
            [(ranks, table[ranks[0]]) for ranks in groups.values()], self._rank,
            "Every rank must call the same collective operations in the same order, with "
            "tensors of the same shape and dtype (and the same root/op).",
        )

    # ------------------------------------------------------------------ operations in flight
    def _progress(self) -> None:
        """Move every iallreduce in flight forward without blocking: post the native
        collectives whose headers are all in (in call order: a later one never starts
        before an earlier one), and collect those that completed."""
        if not self._in_flight:
            return
        may_post = True
        for pending in self._in_flight:
            if pending.stage == _HEADERS:
                if not may_post or not pending.requests.test():
                    may_post = False
                    continue
                self._start_native(pending)
            if pending.stage == _DRAINING and pending.requests.test():
                pending.stage = _FAILED
                pending.requests = None
            if pending.stage == _NATIVE and pending.native[0].Test():
                out = pending.out
                if pending.op == "mean":
                    out.div_(self._size)
                pending.result = out
                pending.stage = _DONE
                pending.native = pending.x = pending.out = None
        if any(p.finished for p in self._in_flight):
            self._in_flight = [p for p in self._in_flight if not p.finished]

    def _start_native(self, pending: _InFlight) -> None:
        """Every header of ``pending`` has arrived: post its native Iallreduce, or, on a
        mismatch (every rank sees it), fail it after receiving what mismatching peers send."""
        error = self._table_mismatch("iallreduce", pending.table)
        if error is not None:
            pending.error = error
            pending.stage = _DRAINING
            ptag = pending.tag + 1
            for j, h in enumerate(pending.table):
                if j != self._rank and _sends_payload(h):
                    scratch = np.empty(int(h[_H_BYTES]), np.uint8)
                    pending.requests.add(self._p2p.Irecv(scratch, j, ptag), ("recv-drain", j),
                                         scratch)
            return
        x = pending.x
        pending.out = out = _empty(x.shape, x)
        send, recv = x.numpy(), out.numpy()
        request = self._coll.Iallreduce(send, recv, self._MPI.SUM)
        pending.native = (request, (send, recv, x, out))
        pending.stage = _NATIVE
        pending.requests = None

    def _headers_settled(self) -> bool:
        self._progress()
        return all(p.stage != _HEADERS for p in self._in_flight)

    def _settle_in_flight(self, state: _Operation) -> None:
        """Before ``state`` posts a native collective on ``coll``: post those of the
        iallreduces started before it (same order on every rank). Their headers are due:
        every rank called them before this operation."""
        if not self._in_flight or self._headers_settled():
            return
        if not wait_until(self._headers_settled, state.deadline, state.spin):
            stuck = next(p for p in self._in_flight if p.stage == _HEADERS)
            missing = [note[1] for note in stuck.requests.pending() if note[0] == "recv-header"]
            raise self._timeout_error(
                state, missing,
                hint=f"They had not arrived at the iallreduce (operation {stuck.seq}) started "
                "before this operation.",
            )

    def _wait_in_flight(self, pending: _InFlight) -> None:
        """``pending.wait()``: wait up to its deadline (counted from now)."""
        deadline = Deadline(pending.timeout)
        try:
            done = wait_until(lambda: pending.done(), deadline, pending.spin)
        except BaseException:  # Ctrl-C: abandon, as a blocking operation would
            self._fail_in_flight(pending, "it was interrupted")
            raise
        if done:
            return
        stuck = next((p for p in self._in_flight if p.stage == _HEADERS), None)
        if stuck is not None:
            missing = [note[1] for note in stuck.requests.pending() if note[0] == "recv-header"]
            hint = ""
        else:
            missing, hint = (), ("Every rank had arrived, but the data did not move in time: "
                                 "another rank probably timed out or was interrupted meanwhile.")
        error = CollectiveTimeoutError(
            "iallreduce", missing, pending.timeout, self._rank,
            hint=(hint + " " + _RESYNC_HINT).strip(),
        )
        self._fail_in_flight(pending, "it timed out")
        pending.error = error

    def _fail_in_flight(self, pending: _InFlight, why: str) -> None:
        self._abandon_in_flight(
            f"iallreduce (operation {pending.seq} of epoch {pending.epoch}) was abandoned "
            f"because {why}"
        )
        self._out_of_sync = self._out_of_sync or (
            f"iallreduce (operation {pending.seq} of epoch {pending.epoch}) was abandoned "
            f"because {why}"
        )

    def _abandon_in_flight(self, why: str) -> None:
        """Give up every iallreduce in flight: its requests and buffers go to the graveyard
        (a posted native collective poisons ``coll``, renewed by resync), and its
        ``wait()`` raises CommunicatorOutOfSyncError saying ``why``."""
        if not self._in_flight:
            return
        for pending in self._in_flight:
            if pending.requests is not None:
                pending.requests.abandon(self._graveyard)
            if pending.native is not None:
                self._graveyard.bury(*pending.native)
                self._coll_poisoned = True
            pending.native = pending.requests = None
            pending.stage = _FAILED
            pending.error = CommunicatorOutOfSyncError(
                f"iallreduce (operation {pending.seq} of epoch {pending.epoch}) on rank "
                f"{self._rank} was abandoned: {why}. " + _RESYNC_HINT
            )
        self._in_flight = []

    def _drain_payloads(self, state: _Operation, table: np.ndarray) -> None:
        """Receive and drop the payloads that peers announced in their headers (a peer that
        called a neighbor operation where we called a global one), so none is left blocked."""
        ptag = self._tag(1)
        for j, h in enumerate(table):
            if j != self._rank and _sends_payload(h):
                scratch = np.empty(int(h[_H_BYTES]), np.uint8)
                state.requests.add(self._p2p.Irecv(scratch, j, ptag), ("recv-drain", j), scratch)
        if not state.requests.wait(state.deadline, state.spin):
            raise self._timeout_error(state, [note[1] for note in state.requests.pending()])

    def _exchange_neighbors(self, state: _Operation, call: _NeighborCall, sends, recvs):
        """Headers and payloads with the neighbors over MPI, in one round.

        ``sends[k]`` (an MPI buffer) goes to the k-th out-neighbor, the payload of the
        in-neighbor in slot s lands in ``recvs[s]``. Every receive is posted at once: the
        header of slot s into ``call.hdrs[s]`` and its payload into ``recvs[s]``, sized for
        a peer that matches us (it sends exactly our header and our number of bytes); then
        our header and payload go to each out-neighbor, and :meth:`_complete_neighbors`
        waits.
        """
        p2p = self._p2p
        plan = call.plan
        hdr, hdrs = call.header(self._seq, self.iteration, self._site), call.hdrs
        htag = self._tag(0)
        ptag = htag + 1
        ins = plan.in_nbrs
        requests = [p2p.Irecv(hdrs[s], j, htag) for s, j in enumerate(ins)]
        requests += [p2p.Irecv(buf, j, ptag) for buf, j in zip(recvs, ins)]
        for peer, buf in zip(plan.out_nbrs, sends):
            requests.append(p2p.Isend(hdr, peer, htag))
            requests.append(p2p.Isend(buf, peer, ptag))
        state.requests.extend(requests, plan.notes, (call, recvs, sends))  # call: hdrs, bufs
        self._complete_neighbors(state, call)

    def _complete_neighbors(self, state: _Operation, call: _NeighborCall) -> None:
        """Wait for the exchange :meth:`_exchange_neighbors` started. When every header has
        arrived and equals ours, wait for the rest and return; otherwise
        :meth:`_settle_mismatch` consumes what the mismatching peers send and raises."""
        pending = state.requests
        d = len(call.plan.in_nbrs)
        if not pending.wait(state.deadline, state.spin, d):  # the headers
            raise self._timeout_error(state, [note[1] for note in pending.pending(d)])
        if call.hdrs.tobytes() != call.hdr.tobytes() * d:
            self._settle_mismatch(state, call, call.hdr)
        if not pending.wait(state.deadline, state.spin):
            raise self._timeout_error(state, [note[1] for note in pending.pending()])
        if pending.failed:  # matching peers send exactly what we receive: a real MPI error
            raise pending.failed[0][1]

    def _settle_mismatch(self, state: _Operation, call: _NeighborCall, hdr) -> None:
        """Some in-neighbor sent another header than ours: consume what it sends, then raise
        CollectiveMismatchError naming it.

        Its payload receive (posted for our size) takes whatever payload the peer sends us
        (:func:`_sends_payload`): whole if it fits, else truncated (MPI reports
        ``MPI_ERR_TRUNCATE``, drops the rest, and the sender completes). A peer that sends
        none (a global operation, the NCCL plane) would leave the receive pending forever,
        so it is cancelled. Every request then completes, so no message of this operation
        is left behind and the communicator stays in sync.
        """
        requests = state.requests
        ins = call.plan.in_nbrs
        expected = hdr.tobytes()
        mismatched, truncatable = [], set()
        for s, j in enumerate(ins):
            h = call.hdrs[s]
            if h.tobytes() == expected:
                continue
            mismatched.append((j, h.copy()))
            if _sends_payload(h):
                truncatable.add(call.plan.notes[len(ins) + s])
            else:
                requests.cancel(len(ins) + s)
        if not requests.wait(state.deadline, state.spin):
            raise self._timeout_error(state, [note[1] for note in requests.pending()])
        errors = [exc for note, exc in requests.failed if note not in truncatable]
        if errors:
            raise errors[0]
        raise self._neighbor_mismatch(state.name, hdr, mismatched)

    def _exchange_neighbors_nccl(self, state: _Operation, call: _NeighborCall, sends, recvs):
        """Like :meth:`_exchange_neighbors`, with the payloads (tensors: ``sends[k]`` to the
        k-th out-neighbor, slot s into ``recvs[s]``) in one NCCL batch after every header
        has arrived (NCCL needs each receive's size before the batch starts)."""
        dist = self._gpu.dist
        p2p = self._p2p
        plan = call.plan
        requests = state.requests
        hdr, hdrs = call.header(self._seq, self.iteration, self._site), call.hdrs
        htag, ptag = self._tag(0), self._tag(1)
        requests.keep.append((hdrs, hdr))
        for slot, j in enumerate(plan.in_nbrs):
            requests.add(p2p.Irecv(hdrs[slot], j, htag), ("recv-header", j, slot))
        for peer in plan.out_nbrs:
            requests.add(p2p.Isend(hdr, peer, htag), ("send-header", peer))
        if not requests.wait(state.deadline, state.spin):
            raise self._timeout_error(state, [note[1] for note in requests.pending()])
        expected = hdr.tobytes()
        ops, keep, mismatched = [], [], []
        for slot, j in enumerate(plan.in_nbrs):
            h = hdrs[slot]
            if h.tobytes() == expected:
                ops.append(dist.P2POp(dist.irecv, as_bytes(recvs[slot]), j))
                continue
            mismatched.append((j, h.copy()))
            size = int(h[_H_BYTES]) if int(h[_H_MAGIC]) == _MAGIC else 0
            if size > 0 and int(h[_H_PLANE]) == _PLANE_NCCL:
                scratch = torch.empty(size, dtype=torch.uint8, device=self._device)
                keep.append(scratch)
                ops.append(dist.P2POp(dist.irecv, scratch, j))
            elif _sends_payload(h):
                scratch = np.empty(size, np.uint8)
                requests.add(p2p.Irecv(scratch, j, ptag), ("recv-drain", j), scratch)
        for peer, t in zip(plan.out_nbrs, sends):
            ops.append(dist.P2POp(dist.isend, as_bytes(t), peer))
        if ops:
            torch.cuda.current_stream(self._device).synchronize()
            self._wait_nccl(state, dist.batch_isend_irecv(ops), keep)
        if not requests.wait(state.deadline, state.spin):
            raise self._timeout_error(state, [note[1] for note in requests.pending()])
        if mismatched:
            raise self._neighbor_mismatch(state.name, hdr, mismatched)

    def _move_neighbors(self, state: _Operation, call: _NeighborCall, plane, sends, recvs):
        """Exchange with the neighbors through ``plane``: the tensor ``sends[k]`` goes to the
        k-th out-neighbor, the in-neighbor in slot s fills the tensor ``recvs[s]``."""
        if not plane.uses_mpi:
            self._exchange_neighbors_nccl(state, call, sends, recvs)
            return
        io = plane.session()
        send_bufs, converted = [], {}  # a tensor sent to several out-neighbors: once
        for k, t in enumerate(sends):
            if id(t) not in converted:
                converted[id(t)] = io.send(t, ("send", k))
            send_bufs.append(converted[id(t)])
        recv_bufs = [io.recv(t, ("recv", s)) for s, t in enumerate(recvs)]
        self._exchange_neighbors(state, call, send_bufs, recv_bufs)
        io.finish()

    def _neighbor_mismatch(self, name, hdr, mismatched) -> CollectiveMismatchError:
        other_topology = any(int(h[_H_TOPO]) != int(hdr[_H_TOPO])
                             and int(h[_H_OP]) == int(hdr[_H_OP]) for _, h in mismatched)
        return _mismatch_error(
            f"{name} mismatch on rank {self._rank} (this rank and the in-neighbors it heard "
            "from)", [([self._rank], hdr)] + [([j], h) for j, h in mismatched], self._rank,
            ("Rank(s) " + ", ".join(str(j) for j, h in mismatched
                                     if int(h[_H_TOPO]) != int(hdr[_H_TOPO]))
             + " used a different topology. " if other_topology else "")
            + "Every rank must call the same operation with tensors of the same shape and "
            "dtype and the same topology (for a dynamic topology, topology.at(k) with the "
            "same k on every rank).",
        )

    def _wait_native(self, state: _Operation, request, keep) -> None:
        state.native = ("mpi", request, keep)
        if not wait_until(request.Test, state.deadline, state.spin):
            raise self._timeout_error(
                state, (),
                hint="Every rank had arrived, but the data did not move in time: another rank "
                "probably timed out or was interrupted meanwhile.",
            )
        state.native = None

    def _wait_nccl(self, state: _Operation, works, keep) -> None:
        works = [w for w in (works or []) if w is not None]
        state.native = ("nccl", works, keep)
        if not wait_until(lambda: all(w.is_completed() for w in works), state.deadline,
                          state.spin):
            raise self._timeout_error(
                state, (), hint="The NCCL transfer did not finish in time. " + _RESTART_HINT
            )
        state.native = None

    def _gather_bytes(self, state: _Operation, plane, x: torch.Tensor) -> torch.Tensor:
        """``(n, *s)`` stack of every rank's ``x`` through the native allgather."""
        out = _empty((self._size, *x.shape), x)
        if not plane.uses_mpi:
            self._wait_nccl(
                state, [plane.dist.all_gather_into_tensor(out, x, async_op=True)], (out, x)
            )
            return out
        io = plane.session()
        send, recv = io.send(x, "gather-in"), io.recv(out, "gather")
        self._settle_in_flight(state)
        self._wait_native(state, self._coll.Iallgather(send, recv), (send, recv))
        io.finish()
        return out

    def _plan(self, topology, weights: str | None = None) -> _Plan:
        topo = self._check_topology(topology)
        cache = topo._cache
        if weights is not None and ("weights-ok", weights) not in cache:
            self._check_topology(topo, weights)
            cache[("weights-ok", weights)] = True
        key = ("mpi-plan", self._rank)
        plan = cache.get(key)
        if plan is None:
            r = self._rank
            lo, hi = int(topo.indptr[r]), int(topo.indptr[r + 1])
            cols, vals = topo.indices[lo:hi], topo.data[lo:hi]
            off = cols != r
            in_nbrs = tuple(int(j) for j in cols[off])
            out_nbrs = tuple(int(j) for j in topo.out_neighbors(r))
            plan = _Plan(
                in_nbrs=in_nbrs,
                in_w=tuple(float(w) for w in vals[off]),
                self_w=float(vals[~off].sum()),
                out_nbrs=out_nbrs,
                d_in=int(topo.in_degrees.max()),
                d_out=int(topo.out_degrees.max()),
                fingerprint=_fingerprint(topo),
                notes=(
                    *(("recv-header", j, s) for s, j in enumerate(in_nbrs)),
                    *(("recv", j, s) for s, j in enumerate(in_nbrs)),
                    *(note for p in out_nbrs for note in (("send-header", p), ("send", p))),
                ),
            )
            cache[key] = plan
        return plan

    def _neighbor_call(self, op: str, topology, t: torch.Tensor, plane,
                       weights: str | None = None) -> _NeighborCall:
        """The call plan of neighbor operation ``op`` on ``t`` (see :class:`_NeighborCall`):
        the cached one when this topology object was used with the same weights, shape,
        dtype, device and plane (it was checked then: topologies are immutable), else a new
        one, built after checking the topology (and the weights) as :meth:`_plan` does."""
        key = (op, id(topology), weights, t.shape, t.dtype, t.device, plane)
        call = self._calls.get(key)
        if call is not None and call.topo is topology:
            return call
        plan = self._plan(topology, weights)
        item = t.shape[1:] if op == "neighbor_alltoall" else t.shape  # one message's shape
        nbytes = math.prod(item) * t.element_size()
        hdr = self._header(
            op, t.shape, t.dtype, extra=WEIGHT_MODES.index(weights) if weights else 0,
            topo=plan.fingerprint, nbytes=nbytes, plane=plane,
        )
        call = _NeighborCall(topology, plan, hdr, nbytes)
        if op == "neighbor_allreduce":
            call.bufs = [
                self._bufs.get((op, slot), t.shape, t.dtype, t.device)
                for slot in range(len(plan.in_nbrs))
            ]
            if t.is_cpu:  # zero-copy views by address: call.bufs keeps the memory alive
                call.views = [self._address_buffer(b.data_ptr(), b.nbytes) for b in call.bufs]
        if len(self._calls) >= _MAX_CALLS:
            del self._calls[next(iter(self._calls))]  # the oldest
        self._calls[key] = call
        return call

    def _plane(self, t: torch.Tensor):
        if t.is_cpu:
            return self._host
        if t.is_cuda:
            if self._gpu is None:
                aware = self.data_plane == "cuda-aware" or (
                    self.data_plane == "auto" and cuda_aware_mpi()
                )
                self._gpu = (CudaAwarePlane if aware else StagedPlane)(self._bufs)
            return self._gpu
        raise TypeError(
            f"MPIComm moves CPU and CUDA tensors; this one is on {t.device}. "
            "Move it with x.to(comm.device)."
        )

    def _tensor(self, x, what: str = "x", *, floating: str | None = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            self._check_tensor(x, what)  # raises, saying what to pass
        if x.layout != torch.strided:
            raise TypeError(f"{what} must be a dense tensor, got layout {x.layout}; use "
                            f"{what}.to_dense().")
        if floating and not (x.is_floating_point() or x.is_complex()):
            raise TypeError(
                f"{floating} forms weighted sums, so {what} must be floating point or "
                f"complex, got {x.dtype}; convert with {what}.double() (or .float())."
            )
        if x.requires_grad:  # results never require grad (and MPI cannot read such x)
            x = x.detach()
        if x.is_conj():
            x = x.resolve_conj()
        if x.is_neg():
            x = x.resolve_neg()
        return x if x.is_contiguous() else x.contiguous()

    def _count(self, op: str, messages: int, nbytes) -> None:
        if isinstance(nbytes, float) and nbytes.is_integer():
            nbytes = int(nbytes)
        t = self._traffic
        t.messages += messages
        t.bytes += nbytes
        entry = t.by_op.get(op)
        if entry is None:
            entry = t.by_op[op] = {"calls": 0, "messages": 0, "bytes": 0}
        entry["calls"] += 1
        entry["messages"] += messages
        entry["bytes"] += nbytes
