"""MPIComm's headers: their layout, the all-to-all header exchange of the global collectives,
and the errors that say in words how two ranks' calls differ (see :mod:`declearn.comm.mpi`,
*Headers*)."""

from __future__ import annotations

import hashlib
import zlib

import numpy as np
import torch

from declearn.comm.base import (
    REDUCE_OPS,
    WEIGHT_MODES,
)
from declearn.comm.mpi.callsite import NO_SITE, SITE_WORDS, describe_site, tag_site
from declearn.comm.mpi.deadline import (
    RequestSet,
)
from declearn.comm.mpi.operation import _Operation
from declearn.errors import (
    CollectiveMismatchError,
    CollectiveTimeoutError,
    IterationMismatchError,
)

_OPS = (
    "barrier", "allreduce", "broadcast", "allgather",
    "neighbor_allreduce", "neighbor_allgather", "neighbor_alltoall",
)
_OP_CODE = {name: i + 1 for i, name in enumerate(_OPS)}
_MAGIC = 0x44434C4E  # "DCLN"
_MAXDIM = 10
(_H_MAGIC, _H_OP, _H_DTYPE, _H_NDIM, _H_BYTES, _H_EXTRA, _H_TOPO, _H_PLANE, _H_SEQ,
 _H_SHAPE, _H_ITER) = range(11)
_H_SITE = 11  # SITE_WORDS words: the call site or tag (declearn.comm.mpi.callsite)
_H_DIMS = _H_SITE + SITE_WORDS
_HLEN = _H_DIMS + _MAXDIM
#: Data plane word: payload on the payload tag (MPI), through NCCL, or inside the header's
#: message (a small CPU neighbor_allreduce, see declearn.comm.mpi.inline).
_PLANE_MPI, _PLANE_NCCL, _PLANE_INLINE = 0, 1, 2
#: Largest payload (bytes) sent inside the header's message.
INLINE_MAX = 4096
#: int64 words of every receive posted on a header tag: a header and the largest inline
#: payload, so no message on a header tag is ever truncated.
_HCAP = _HLEN + INLINE_MAX // 8


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
_NEIGHBOR_OPS = frozenset(_OP_CODE[op] for op in _OPS if op.startswith("neighbor_"))

_RESYNC_HINT = (
    "This communicator is now out of sync: call comm.resync() on every rank (from a "
    "notebook: %px comm.resync()) before using it again."
)
_RESTART_HINT = (
    "The engines must be restarted (cluster.restart(), or restart the mpiexec job): a "
    "pending MPI duplication or NCCL operation cannot be cancelled."
)


def _sends_payload(h) -> bool:
    """Whether the rank that sent header ``h`` also sends us a payload on the payload tag,
    of ``h[_H_BYTES]`` bytes (possibly 0): it called a neighbor operation on the MPI data
    plane (a global operation, the NCCL plane or an inline payload sends none)."""
    return (int(h[_H_MAGIC]) == _MAGIC and int(h[_H_OP]) in _NEIGHBOR_OPS
            and int(h[_H_PLANE]) == _PLANE_MPI)


def _fingerprint(topo) -> int:
    """A 63-bit digest of the topology's sparsity and weights (rounded to 1e-10, so ranks
    that computed the weights with last-bit differences still agree)."""
    def digest() -> int:
        h = hashlib.blake2b(digest_size=8)
        h.update(np.int64(topo.n).tobytes())
        h.update(np.ascontiguousarray(topo.indptr, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(topo.indices, dtype=np.int64).tobytes())
        h.update(np.round(np.asarray(topo.data, dtype=np.float64), 10).tobytes())
        return int.from_bytes(h.digest(), "little") & 0x7FFFFFFFFFFFFFFF

    return topo.memo("mpi.fingerprint", digest)


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
        parts.append(f"weighted_by={WEIGHT_MODES[extra]!r}")
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


def _mismatch_error(head: str, groups, advice: str) -> CollectiveMismatchError:
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
            "...:` or a loop that runs a different number of times). If the ranks really "
            "mean to pair calls made on different lines, give those calls the same tag, e.g. "
            "comm.broadcast(x, tag='weights') on every rank."
        )
    return CollectiveMismatchError(f"{head}: {lines}. {advice}")


def _ranks_text(ranks) -> str:
    ranks = sorted(int(r) for r in ranks)
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


class HeaderExchange:
    """MPIComm's header machinery (a part of :class:`~declearn.comm.mpi.MPIComm`)."""

    def _tag(self, kind: int) -> int:
        slot = (self._epoch % self._epoch_slots) * self._seq_slots + self._seq % self._seq_slots
        return _TAG_BASE + 2 * slot + kind

    def _header(self, op, shape, dtype, *, extra=0, topo=0, nbytes=0, plane=None,
                inline=False):
        """This rank's header for the current operation (a fresh int64 array: it stays
        referenced by the pending sends); ``inline``: the payload travels in its message."""
        word = _PLANE_INLINE if inline else (
            _PLANE_NCCL if plane is not None and not plane.uses_mpi else _PLANE_MPI)
        key = (op, shape, dtype, extra, topo, nbytes, word)
        template = self._headers.get(key)
        if template is None:
            shape = tuple(int(d) for d in shape)
            dims = list(shape[:_MAXDIM])
            template = np.array(
                [_MAGIC, _OP_CODE[op], _DTYPE_CODE.get(dtype, 0), len(shape), nbytes, extra,
                 topo, word, 0, hash(shape), -1]
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
        (``self._site``; see :mod:`declearn.comm.mpi.callsite`)."""
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
        table (row j: rank j's header) the receives fill. Each receive has room for an
        inline payload (``_HCAP`` words), which a peer that called a small neighbor_allreduce
        sends with its header."""
        n, r, p2p = self._size, self._rank, self._p2p
        full = np.empty((n, _HCAP), np.int64)
        table = full[:, :_HLEN]
        table[r] = hdr
        for j in range(n):
            if j != r:
                requests.add(p2p.Irecv(full[j], j, tag), ("recv-header", j), full)
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
            [(ranks, table[ranks[0]]) for ranks in groups.values()],
            "Every rank must call the same collective operations in the same order, with "
            "tensors of the same shape and dtype (and the same root/op).",
        )

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

    def _timeout_error(self, state: _Operation, missing, hint: str = "") -> CollectiveTimeoutError:
        return CollectiveTimeoutError(
            state.name, sorted(set(int(m) for m in missing)), state.deadline.timeout,
            self._rank, hint=(hint + " " + _RESYNC_HINT).strip(),
        )
