r"""The gradient allreduce of :class:`~declearn.optim.Decentralized` (``mode="allreduce"``)
overlapped with the backward pass.

Backward produces the gradients roughly from the last layer to the first. The parameters are
cut into *buckets*: runs of consecutive parameters (in the model's order) of about
``bucket_bytes`` each, which are contiguous slices ``grad[..., a:b]`` of the flat gradient
buffer (:class:`~declearn.optim.flat.FlatParameters`). A hook on each parameter
(``register_post_accumulate_grad_hook``) counts the gradients a bucket still waits for; when
the last one is in, the bucket's ``comm.iallreduce`` starts at once, while backward goes on
with the earlier layers, and ``comm.progress()`` is called at every hook so that MPI moves the
operations in flight (MPICH moves nonblocking collectives only inside MPI calls).
:meth:`GradientBuckets.finish` (called by ``step()``) starts the buckets whose gradients never
came (unused parameters), waits for all, and writes the means into the gradient buffer.

Every rank has the same model and data flow, so the buckets start in the same order on every
rank, which the collectives' call-site checks require. Under SimComm, ``iallreduce``
completes at once: the same numbers, nothing to overlap.
"""

from __future__ import annotations

import torch

__all__ = ["GradientBuckets", "BUCKET_BYTES"]

#: Default size of a bucket (bytes of one node's gradients).
BUCKET_BYTES = 1 << 20


class GradientBuckets:
    """Buckets of a :class:`FlatParameters`, allreduced as their gradients become ready."""

    def __init__(self, flat, comm, bucket_bytes: int = BUCKET_BYTES):
        if isinstance(bucket_bytes, bool) or not isinstance(bucket_bytes, int) or \
                bucket_bytes < 1:
            raise ValueError(f"bucket_bytes must be an integer >= 1, got {bucket_bytes!r}.")
        self.flat, self.comm = flat, comm
        itemsize = flat.grad.element_size()
        self.bounds: list[tuple[int, int]] = []  # (first column, end column) per bucket
        self.bucket_of: dict[int, int] = {}  # id(param) -> bucket
        start = used = 0
        first = 0
        for i, (p, size) in enumerate(zip(flat.params, flat.sizes)):
            self.bucket_of[id(p)] = len(self.bounds)
            used += size * itemsize
            if used >= bucket_bytes or i == len(flat.params) - 1:
                end = start + sum(flat.sizes[first:i + 1])
                self.bounds.append((start, end))
                start, used, first = end, 0, i + 1
        self.view_ptr = {id(p): v.data_ptr() for p, v in zip(flat.params, flat.grad_views)}
        self.members = [0] * len(self.bounds)
        for p in flat.params:
            self.members[self.bucket_of[id(p)]] += 1
        self.pending: list = [None] * len(self.bounds)
        self.waiting = list(self.members)
        self.handles = [p.register_post_accumulate_grad_hook(self._ready)
                        for p in flat.params]

    def _slice(self, b: int) -> torch.Tensor:
        a, e = self.bounds[b]
        return self.flat.grad[..., a:e]

    def _ready(self, p: torch.Tensor) -> None:
        b = self.bucket_of[id(p)]
        if p.grad is None or p.grad.data_ptr() != self.view_ptr[id(p)]:
            return  # a gradient outside the flat buffer: finish() reduces it once gathered
        self.waiting[b] -= 1
        if self.waiting[b] == 0 and self.pending[b] is None:
            self.pending[b] = self._start(b)
        self.comm.progress()

    def _start(self, b: int):
        # one tag for the hook's and finish()'s calls: a bucket may start in either
        return self.comm.iallreduce(self._slice(b), tag="gradient bucket")

    @torch.no_grad()
    def finish(self) -> None:
        """Start what backward did not, wait for every bucket, write the means."""
        for b in range(len(self.bounds)):
            if self.pending[b] is None:
                self.pending[b] = self._start(b)
        for b, pending in enumerate(self.pending):
            self._slice(b).copy_(pending.wait())
        self.pending = [None] * len(self.bounds)
        self.waiting = list(self.members)

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self.handles:
            handle.remove()
        self.handles = []
