r"""How tensor bytes reach MPI: host memory, CUDA-aware MPI, staging, or NCCL.

MPIComm moves a tensor ``t`` through a *data plane*, chosen per device:

* CPU tensors (:class:`HostPlane`): MPI reads and writes the tensor's own memory through a
  zero-copy numpy view (``t.numpy()``), never a pickle.
* CUDA tensors, ``data_plane="cuda-aware"`` (:class:`CudaAwarePlane`): the device pointer is
  handed to MPI (mpi4py takes it through DLPack). MPI knows nothing of CUDA streams, so the
  current stream is synchronised first: every kernel that writes ``t`` has finished.
* CUDA tensors, ``data_plane="staged"`` (:class:`StagedPlane`): ``t`` is copied to a cached
  page-locked (pinned) host buffer, MPI moves host memory, and received bytes are copied back
  to the device.
* ``data_plane="auto"`` is "cuda-aware" when :func:`cuda_aware_mpi` says the loaded MPI
  library supports CUDA, else "staged". It never picks NCCL.
* ``data_plane="nccl"`` (:class:`NcclPlane`): payloads go through ``torch.distributed`` with
  the NCCL backend (``batch_isend_irecv``, ``all_reduce``, ...), set up from the MPI ranks.
  MPI still carries the small headers, so deadlines and mismatch detection work as before;
  but a timed-out NCCL operation cannot be cancelled, so after one the engines must be
  restarted (NCCL's own watchdog may also end the process after its timeout, at least 30 s).

CUDA-aware detection (:func:`cuda_aware_mpi`): the environment variable
``DECLEARN_CUDA_AWARE=0/1`` decides if set; otherwise the loaded libmpi is asked with ctypes,
``MPIX_Query_cuda_support()`` (Open MPI, MPICH >= 4) or
``MPIX_GPU_query_support(MPIX_GPU_SUPPORT_CUDA, &flag)`` (MPICH). Neither symbol -> False.

The MPI planes give MPIComm, for one operation (a :class:`Session`):
``send(t, key)`` (an MPI buffer holding ``t``'s bytes, ready to send), ``recv(dst, key)`` (an
MPI buffer whose bytes end up in ``dst`` once :meth:`Session.finish` has run) and
``typed_send`` / ``typed_recv`` (typed MPI buffers for a reduction). Buffers are cached per
``(key, dtype, shape)`` so the hot path allocates nothing. A plane whose ``direct`` is True
(:class:`HostPlane`) hands MPI the tensors' own memory and has nothing to finish, so MPIComm
may skip the session and hand MPI views of the tensors itself (neighbor_allreduce keeps the
views of its cached receive buffers).
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections import OrderedDict

import numpy as np
import torch

__all__ = [
    "DATA_PLANES",
    "cuda_aware_mpi",
    "libmpi_path",
    "query_cuda_support",
    "BufferCache",
    "HostPlane",
    "CudaAwarePlane",
    "StagedPlane",
    "NcclPlane",
    "as_bytes",
    "gpu_identity",
    "refuse_shared_gpus",
    "shared_gpus",
]

DATA_PLANES = ("auto", "cuda-aware", "staged", "nccl")

_MPIX_GPU_SUPPORT_CUDA = 0  # mpi.h of MPICH: #define MPIX_GPU_SUPPORT_CUDA (0)


# ----------------------------------------------------------------------- detection
def libmpi_path() -> str | None:
    """Path of the MPI library loaded in this process (from ``/proc/self/maps``), or None."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rsplit(None, 1)[-1] if "/" in line else ""
                name = os.path.basename(path)
                if name.startswith(("libmpi.so", "libmpi_abi.so", "libmpich.so")):
                    return path
    except OSError:
        pass
    return None


def query_cuda_support(path: str | None = None) -> bool | None:
    """Ask the loaded MPI library whether it was built with CUDA support (True/False), or
    None when it offers no way to ask (or none is loaded)."""
    path = path or libmpi_path()
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    fn = getattr(lib, "MPIX_Query_cuda_support", None)
    if fn is not None:
        fn.restype = ctypes.c_int
        fn.argtypes = []
        try:
            return bool(fn())
        except Exception:  # noqa: BLE001 - a broken symbol means "cannot tell"
            pass
    fn = getattr(lib, "MPIX_GPU_query_support", None)
    if fn is not None:
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        flag = ctypes.c_int(0)
        try:
            if fn(_MPIX_GPU_SUPPORT_CUDA, ctypes.byref(flag)) == 0:
                return bool(flag.value)
        except Exception:  # noqa: BLE001
            pass
    return None


def cuda_aware_mpi() -> bool:
    """Whether device pointers may be handed to MPI: ``DECLEARN_CUDA_AWARE=0/1`` if set,
    else what the loaded MPI library says (False when it cannot say). Call after MPI is
    initialised (importing ``mpi4py.MPI`` does it)."""
    env = os.environ.get("DECLEARN_CUDA_AWARE", "").strip().lower()
    if env in ("1", "true", "yes", "on"):
        return True
    if env in ("0", "false", "no", "off"):
        return False
    if env:
        raise ValueError(
            f"DECLEARN_CUDA_AWARE must be 0 or 1, got {os.environ['DECLEARN_CUDA_AWARE']!r}."
        )
    return _library_cuda_support()


@functools.lru_cache(maxsize=1)
def _library_cuda_support() -> bool:
    return bool(query_cuda_support())


# ----------------------------------------------------------------------- buffers
def as_bytes(t: torch.Tensor) -> torch.Tensor:
    """``t``'s memory seen as a flat uint8 tensor (no copy; ``t`` must be contiguous)."""
    flat = t.reshape(-1)
    return flat.view(torch.uint8) if flat.dtype != torch.uint8 else flat


def _host_view(t: torch.Tensor):
    """A numpy uint8 view of ``t``'s bytes for mpi4py (contiguous CPU tensors only)."""
    try:
        return t.detach().numpy().reshape(-1).view(np.uint8)
    except (TypeError, RuntimeError):  # a dtype numpy lacks (bfloat16, ...)
        return as_bytes(t.detach()).numpy()


class BufferCache:
    """Tensors reused across operations, keyed by ``(key, device, dtype, shape)`` (pass the
    same kinds of objects each time, e.g. ``x.device`` and ``x.shape``), least recently used
    dropped beyond ``capacity`` entries."""

    def __init__(self, capacity: int = 128):
        self.capacity = int(capacity)
        self._items: OrderedDict = OrderedDict()

    def get(self, key, shape, dtype, device, *, pin: bool = False) -> torch.Tensor:
        full = (key, device, dtype, shape, pin)
        t = self._items.get(full)
        if t is None:
            t = torch.empty(tuple(shape), dtype=dtype, device=device, pin_memory=pin)
            self._items[full] = t
            if len(self._items) > self.capacity:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(full)
        return t

    def clear(self) -> None:
        self._items.clear()


# ----------------------------------------------------------------------- planes
class Session:
    """One operation's use of a plane (see the module docstring)."""

    def __init__(self, plane):
        self.plane = plane
        self._landings: list = []

    def send(self, t: torch.Tensor, key):
        return _host_view(t)

    def recv(self, dst: torch.Tensor, key):
        return _host_view(dst)

    def typed_send(self, t: torch.Tensor, key):
        return t.detach().numpy()

    def typed_recv(self, dst: torch.Tensor, key):
        return dst.numpy()

    def finish(self) -> None:
        pass


class HostPlane:
    """CPU tensors: MPI works on the tensors' own memory."""

    name = "host"
    uses_mpi = True
    #: The session's buffers are views of the tensors themselves and ``finish`` does
    #: nothing, so a caller may hand MPI such views itself (and keep those of tensors it
    #: reuses) instead of opening a session for each operation.
    direct = True

    def __init__(self, cache: BufferCache):
        self.cache = cache

    def session(self) -> Session:
        return Session(self)


class _CudaAwareSession(Session):
    def __init__(self, plane):
        super().__init__(plane)
        self._synced = False

    def _sync(self, t):
        if not self._synced:
            torch.cuda.current_stream(t.device).synchronize()
            self._synced = True

    def send(self, t, key):
        self._sync(t)
        return as_bytes(t.detach())

    def recv(self, dst, key):
        self._sync(dst)
        return as_bytes(dst)

    def typed_send(self, t, key):
        self._sync(t)
        return t.detach()

    def typed_recv(self, dst, key):
        self._sync(dst)
        return dst


class CudaAwarePlane(HostPlane):
    """CUDA tensors handed to a CUDA-aware MPI (after a stream synchronisation)."""

    name = "cuda-aware"
    direct = False  # the stream must be synchronised before MPI touches the memory

    def session(self) -> Session:
        return _CudaAwareSession(self)


class _StagedSession(Session):
    def _pinned(self, key, t):
        return self.plane.cache.get(("pinned", key), t.shape, t.dtype, "cpu", pin=True)

    def send(self, t, key):
        host = self._pinned(key, t)
        host.copy_(t.detach())  # device -> pinned host, synchronous
        return _host_view(host)

    def recv(self, dst, key):
        host = self._pinned(key, dst)
        self._landings.append((host, dst))
        return _host_view(host)

    def typed_send(self, t, key):
        host = self._pinned(key, t)
        host.copy_(t.detach())
        return host.numpy()

    def typed_recv(self, dst, key):
        host = self._pinned(key, dst)
        self._landings.append((host, dst))
        return host.numpy()

    def finish(self):
        for host, dst in self._landings:
            dst.copy_(host)  # pinned host -> device; the next op reuses `host`, so no async
        self._landings.clear()


class StagedPlane(HostPlane):
    """CUDA tensors copied through cached pinned host buffers."""

    name = "staged"
    direct = False  # received bytes land in pinned buffers, copied out by finish()

    def session(self) -> Session:
        return _StagedSession(self)


def gpu_identity(device: torch.device) -> str:
    """A name of the physical GPU behind ``device``, the same in every process that uses it:
    the host name and the device's UUID (``CUDA_VISIBLE_DEVICES`` renumbers devices per
    process, so ``cuda:0`` of two processes may be two GPUs, or one)."""
    import socket

    props = torch.cuda.get_device_properties(device)
    uuid = getattr(props, "uuid", None)
    return f"{socket.gethostname()}/{uuid if uuid is not None else device}"


def shared_gpus(identities: list[str]) -> dict[str, list[int]]:
    """The GPUs that more than one rank would use, each with those ranks (``identities[r]``
    is rank r's :func:`gpu_identity`)."""
    ranks: dict[str, list[int]] = {}
    for rank, ident in enumerate(identities):
        ranks.setdefault(ident, []).append(rank)
    return {ident: rs for ident, rs in ranks.items() if len(rs) > 1}


def refuse_shared_gpus(device: torch.device, allgather, id_bytes: int = 192) -> None:
    """Raise ValueError on every rank when ranks would share a GPU under NCCL, which refuses
    two ranks of one communicator on one GPU (it fails, or hangs, in its set-up).
    ``allgather(t)`` stacks every rank's uint8 tensor ``t`` (MPIComm's, deadline-bounded)."""
    name = gpu_identity(device).encode()[:id_bytes]
    mine = torch.zeros(id_bytes, dtype=torch.uint8)
    mine[: len(name)] = torch.frombuffer(bytearray(name), dtype=torch.uint8)
    rows = allgather(mine)
    shared = shared_gpus([bytes(row.tolist()).rstrip(b"\0").decode() for row in rows])
    if shared:
        which = "; ".join(f"ranks {', '.join(map(str, rs))} on {ident}"
                          for ident, rs in shared.items())
        raise ValueError(
            f"data_plane='nccl' needs one GPU per rank, but some ranks share one ({which}): "
            "NCCL refuses two ranks on one GPU. Use data_plane='staged' (or 'auto') to share "
            "GPUs, or start as many engines as there are GPUs."
        )


def _master_address() -> str:
    """This host's address as the other hosts see it: ``DECLEARN_MASTER_ADDR`` or
    ``MASTER_ADDR`` if set, else the address of the interface that routes outwards (a UDP
    "connect" sends nothing), else the host name's address."""
    import socket

    for name in ("DECLEARN_MASTER_ADDR", "MASTER_ADDR"):
        if os.environ.get(name):
            return os.environ[name]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            return s.getsockname()[0]
    except OSError:
        pass
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


class NcclPlane:
    """Payloads through ``torch.distributed`` (NCCL), set up from the MPI ranks.

    ``init(rank, size, broadcast_bytes, device, timeout)`` creates (or reuses) the default
    process group: rank 0 picks a free TCP port, its address (:func:`_master_address`) and
    port reach the other ranks through ``broadcast_bytes`` (MPIComm's deadline-bounded
    broadcast), and every rank calls ``init_process_group("nccl", ...)``.
    """

    name = "nccl"
    uses_mpi = False
    direct = False

    def __init__(self, cache: BufferCache):
        self.cache = cache
        self.dist = None

    def init(self, rank: int, size: int, broadcast_bytes, device: torch.device,
             timeout: float) -> None:
        import datetime
        import socket

        import torch.distributed as dist

        if not (dist.is_available() and dist.is_nccl_available()):
            raise RuntimeError(
                "data_plane='nccl' needs a PyTorch build with NCCL (the CUDA wheels on Linux); "
                "use data_plane='auto' (CUDA-aware MPI or pinned-host staging) instead."
            )
        if dist.is_initialized():
            if dist.get_world_size() != size or dist.get_rank() != rank:
                raise RuntimeError(
                    f"torch.distributed is already initialised with rank {dist.get_rank()} of "
                    f"{dist.get_world_size()}, but this MPIComm is rank {rank} of {size}: the "
                    "NCCL data plane needs the default process group to match the communicator. "
                    "Use data_plane='auto' for sub-communicators."
                )
            self.dist = dist
            return
        payload = torch.zeros(256, dtype=torch.uint8)
        if rank == 0:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("", 0))
                port = s.getsockname()[1]
            text = f"{_master_address()}:{port}".encode()
            payload[: len(text)] = torch.tensor(list(text), dtype=torch.uint8)
        payload = broadcast_bytes(payload)
        addr, port = bytes(payload.tolist()).rstrip(b"\0").decode().rsplit(":", 1)
        torch.cuda.set_device(device)
        dist.init_process_group(
            "nccl", init_method=f"tcp://{addr}:{port}", rank=rank, world_size=size,
            timeout=datetime.timedelta(seconds=max(timeout, 30.0)),
        )
        # NCCL requires every rank in the first P2P batch of a group; a first collective on
        # all ranks lifts that rule (a rank with no neighbor at some k sends nothing).
        warm = torch.zeros(1, device=device)
        dist.all_reduce(warm)
        torch.cuda.current_stream(device).synchronize()
        self.dist = dist
