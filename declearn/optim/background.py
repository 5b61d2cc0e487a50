r"""Neighbor averaging in flight while the next forward and backward run: the overlap of
``Decentralized(..., mode="awc", overlap=True)``.

Adapt-while-combine mixes the parameters *before* the local step, ``x_i' = sum_j W[i, j] x_j
+ Delta_i``, so the average of step k can start as soon as ``x^k`` exists, at the end of step
k - 1, and run during step k's forward and backward. :class:`BackgroundAveraging` does that:
:meth:`start` copies ``x`` and hands ``neighbor_allreduce(copy, W)`` to one worker thread;
:meth:`result` (called by ``step()``) waits for it. The numbers are exactly those of the
synchronous order.

On MPI the thread uses its own :class:`~declearn.comm.mpi.MPIComm` over a private duplicate of
the communicator (``comm.open_channel``; MPI must run at ``MPI_THREAD_MULTIPLE``), so that
whatever the main thread does with ``comm`` meanwhile (a metric's allreduce, a checkpoint)
never meets the averaging's messages. Every rank starts the same averages in the same order,
which is all the side communicator needs. A backend without ``open_channel`` (SimComm,
DelayedComm) computes the average at :meth:`start`, synchronously: the same numbers, no
overlap.
"""

from __future__ import annotations

import concurrent.futures

import torch

__all__ = ["BackgroundAveraging"]


class BackgroundAveraging:
    """One neighbor average of a copy of ``x`` at a time, in flight on a side channel."""

    def __init__(self, comm):
        self.comm = comm
        self.side = None
        self.worker = None
        if hasattr(comm, "open_channel") and not comm.node_dims:
            from declearn.comm.mpi.service import require_thread_multiple

            timeout = getattr(comm, "_timeout", None) or 60.0
            _, channel = comm.open_channel("overlapped averaging", timeout,
                                           check=require_thread_multiple)
            self.side = type(comm)(channel, device=comm.device, timeout=timeout)
            self.worker = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="declearn-averaging")
        self.future = None
        self.copy: torch.Tensor | None = None

    @property
    def overlapping(self) -> bool:
        """Whether averages really run in the background (MPI) rather than at start."""
        return self.worker is not None

    def start(self, x: torch.Tensor, topology) -> None:
        """Begin ``W x`` for the current ``x`` (copied: x may change meanwhile)."""
        if self.future is not None:
            raise RuntimeError("an average is already in flight: call result() first.")
        self.copy = x.detach().clone()
        if self.worker is None:
            done: concurrent.futures.Future = concurrent.futures.Future()
            done.set_result(self.comm.neighbor_allreduce(self.copy, topology))
            self.future = done
        else:
            self.future = self.worker.submit(self.side.neighbor_allreduce,  # type: ignore[union-attr]
                                             self.copy, topology)

    @property
    def in_flight(self) -> bool:
        return self.future is not None

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W x, x)`` of the average in flight (its errors re-raised here)."""
        if self.future is None:
            raise RuntimeError("no average in flight: call start(x, topology) first.")
        future, self.future = self.future, None
        return future.result(), self.copy  # type: ignore[return-value]

    def close(self) -> None:
        """Wait for the average in flight (every rank must), then stop the thread."""
        if self.future is not None:
            self.result()
        if self.worker is not None:
            self.worker.shutdown(wait=True)
            self.worker = None
