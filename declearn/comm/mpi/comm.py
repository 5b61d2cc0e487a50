"""MPIComm: one node per MPI rank. The class is assembled from one part per concern, each in
its own module: headers (:mod:`~declearn.comm.mpi.headers`), neighbor operations
(:mod:`~declearn.comm.mpi.neighbors`; small payloads: :mod:`~declearn.comm.mpi.inline`),
operations in flight (:mod:`~declearn.comm.mpi.inflight`),
resync (:mod:`~declearn.comm.mpi.resync`) and data planes (:mod:`~declearn.comm.mpi.dataplane`);
this module holds the construction, the global collectives and the bookkeeping of an operation
(see :mod:`declearn.comm.mpi` for the protocol)."""

from __future__ import annotations

import numpy as np
import torch

from declearn.comm.base import (
    REDUCE_OPS,
    Communicator,
    Traffic,
    get_default_timeout,
)
from declearn.comm.memory import ensure_cpu_allocator_tuned
from declearn.comm.mpi.callsite import NO_SITE, call_site
from declearn.comm.mpi.dataplane import DataPlaneOps, _copy, _empty
from declearn.comm.mpi.deadline import (
    Deadline,
    Graveyard,
    RequestSet,
    resolve_timeout,
    spin_for,
    wait_until,
)
from declearn.comm.mpi.gossip import MPIGossip
from declearn.comm.mpi.headers import (
    _CTRL_LEN,
    _MPI_REDUCIBLE,
    _RESTART_HINT,
    _TAG_BASE,
    HeaderExchange,
)
from declearn.comm.mpi.inflight import InFlightOps, _InFlight
from declearn.comm.mpi.inline import InlineOps
from declearn.comm.mpi.neighbors import NeighborOps
from declearn.comm.mpi.operation import _Operation
from declearn.comm.mpi.partial import MPIPartialAllreduce
from declearn.comm.mpi.planes import (
    DATA_PLANES,
    BufferCache,
    HostPlane,
    NcclPlane,
    refuse_shared_gpus,
)
from declearn.comm.mpi.registry import _LIVE, _ORPHANS, _SERIAL
from declearn.comm.mpi.resync import ResyncProtocol
from declearn.errors import (
    CollectiveTimeoutError,
    CommunicatorOutOfSyncError,
)


class MPIComm(HeaderExchange, NeighborOps, InlineOps, InFlightOps, ResyncProtocol,
              DataPlaneOps, Communicator):
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
        How CUDA tensors travel (see :mod:`declearn.comm.mpi.planes`); CPU tensors always go
        through MPI.
    check_call_sites : bool
        Every header carries the line the operation was called from, and calls paired from
        different lines raise CollectiveMismatchError (see :mod:`declearn.comm.mpi.callsite`).
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
        self._inline_calls: dict = {}  # the inline ones, by (topology, weights, shape, dtype)
        self._tallied: list = []  # inline call plans whose calls traffic does not count yet
        self._in_flight: list[_InFlight] = []  # iallreduces not finished, in call order
        self._host = HostPlane(self._bufs)
        self._gpu = None
        self._traffic = self._new_traffic()
        self._serial = next(_SERIAL)
        _LIVE.add(self)
        if data_plane == "nccl":
            refuse_shared_gpus(self._device, lambda t: self.allgather(t, tag="nccl-gpus"))
            self._gpu = NcclPlane(self._bufs)
            self._gpu.init(
                self._rank, self._size, lambda t: self.broadcast(t, 0), self._device,
                resolve_timeout(self._timeout),
            )

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
    def node_dims(self) -> tuple[int, ...]:
        return ()

    @property
    def reports(self) -> bool:
        return self._rank == 0

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

    def partial_allreduce(self, shape, **options):
        """eager-SGD's partial allreduce, for real: a
        :class:`~declearn.comm.partial.MPIPartialAllreduce` with its service thread (every
        rank must call this together)."""

        return MPIPartialAllreduce(self, shape, **options)

    def open_channel(self, what: str, timeout: float, check=None) -> tuple:
        """``(MPI, channel)``: the mpi4py module and a private duplicate of this communicator's
        point-to-point communicator, for a service thread of this rank
        (:class:`~declearn.comm.mpi.service.Service`; every rank must call it together).
        ``check(MPI)`` runs first (e.g. that MPI allows threads)."""
        if check is not None:
            check(self._MPI)
        self._check_usable(what)
        return self._MPI, self._duplicate(self._p2p, Deadline(timeout))

    def pairwise_gossip(self, topology, x: torch.Tensor, **options):
        """Asynchronous pairwise gossip of this rank's ``x``, with no global lock-step: a
        :class:`~declearn.comm.gossip.MPIGossip` (every rank must call this together)."""

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

    def _operation(self, name: str, timeout, nbytes: float = 0) -> _Operation:
        """``with self._operation(...) as state:`` runs one operation: refuse if out of sync;
        on an exception while messages are in flight, abandon them and mark the communicator
        out of sync; count the operation in ``seq`` either way."""
        if self._broken is not None or self._out_of_sync is not None:
            self._check_usable(name)
        seconds = self._seconds(timeout)
        if self._graveyard.requests:
            self._graveyard.sweep()
        return _Operation(self, name, Deadline(seconds), RequestSet(self._MPI),
                          spin_for(nbytes))

    def _seconds(self, timeout) -> float:
        """An operation's deadline in seconds: ``timeout`` (checked), else the
        communicator's (checked when it was set), else the global default."""
        if timeout is None:
            return self._timeout if self._timeout is not None else get_default_timeout()
        return resolve_timeout(timeout)

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
        self._inline_calls.clear()

    def _count(self, op: str, messages: int, nbytes, calls: int = 1) -> None:
        if isinstance(nbytes, float) and nbytes.is_integer():
            nbytes = int(nbytes)
        t = self._traffic
        t.messages += messages
        t.bytes += nbytes
        entry = t.by_op.get(op)
        if entry is None:
            entry = t.by_op[op] = {"calls": 0, "messages": 0, "bytes": 0}
        entry["calls"] += calls
        entry["messages"] += messages
        entry["bytes"] += nbytes

