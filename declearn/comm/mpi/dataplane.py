"""How MPIComm's data moves once the headers matched: native collectives and NCCL works
waited for with the operation's deadline, the byte-wise allgather, and the checks that turn
a user's tensor into one MPI can read (see :mod:`declearn.comm.mpi`, *Data planes*)."""

from __future__ import annotations

import torch

from declearn.comm.mpi.deadline import (
    wait_until,
)
from declearn.comm.mpi.headers import _RESTART_HINT
from declearn.comm.mpi.operation import _Operation
from declearn.comm.mpi.planes import (
    CudaAwarePlane,
    StagedPlane,
    cuda_aware_mpi,
)


def _empty(shape, like: torch.Tensor) -> torch.Tensor:
    """A new uninitialised tensor of ``shape`` with the dtype and device of ``like`` (large
    CPU ones reuse freed memory thanks to :mod:`declearn.comm.memory`)."""
    return torch.empty(tuple(shape), dtype=like.dtype, device=like.device)


def _copy(x: torch.Tensor) -> torch.Tensor:
    """A fresh copy of ``x`` (allocated by :func:`_empty`)."""
    return _empty(x.shape, x).copy_(x)


class DataPlaneOps:
    """Waiting for native collectives and NCCL, and tensor checks (a part of
    :class:`~declearn.comm.mpi.MPIComm`)."""

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
