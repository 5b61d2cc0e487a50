"""MPIComm's neighbor operations: the call plans, and the one-round exchange of headers and
payloads with the in- and out-neighbors (see :mod:`declearn.comm.mpi`, *Headers* and *Call
plans*)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from declearn.comm.base import (
    WEIGHT_MODES,
    old_weights_keyword,
)
from declearn.comm.mpi.callsite import call_site
from declearn.comm.mpi.dataplane import _empty
from declearn.comm.mpi.headers import (
    _H_BYTES,
    _H_DIMS,
    _H_ITER,
    _H_MAGIC,
    _H_OP,
    _H_PLANE,
    _H_SEQ,
    _H_SITE,
    _H_TOPO,
    _HCAP,
    _HLEN,
    _MAGIC,
    _PLANE_NCCL,
    INLINE_MAX,
    _fingerprint,
    _mismatch_error,
    _sends_payload,
)
from declearn.comm.mpi.inline import InlineBuffers
from declearn.comm.mpi.operation import _Operation
from declearn.comm.mpi.planes import (
    as_bytes,
)
from declearn.errors import (
    CollectiveMismatchError,
)

_MAX_CALLS = 256  # call plans kept per communicator (see _NeighborCall)


@dataclass(frozen=True)
class _Plan:
    """What rank ``rank`` needs of a topology: its in-neighbors with their weights
    ``W[rank, j]``, its self weight, its out-neighbors, the largest in/out degrees, a
    fingerprint of the whole matrix, and the notes of a neighbor exchange's requests in the
    order :meth:`MPIComm._exchange_neighbors` posts them: the header receives (slot s at
    index s), the payload receives (slot s at index ``len(in_nbrs) + s``), then a header
    send and a payload send per out-neighbor; ``inline_notes`` those of the inline
    exchange (:mod:`declearn.comm.mpi.inline`): a send per out-neighbor, then a receive
    per slot."""

    in_nbrs: tuple
    in_w: tuple
    self_w: float
    out_nbrs: tuple
    d_in: int
    d_out: int
    fingerprint: int
    notes: tuple
    inline_notes: tuple


class _NeighborCall:
    """The *call plan* of a neighbor operation: what it derives from (operation, topology,
    weights, shape, dtype, device, data plane) on this rank, built by the first such call and
    reused by the next ones, so that the hot path re-derives nothing.

    ``plan`` is the topology's :class:`_Plan`; ``hdr`` this rank's header (only ``seq``
    changes from call to call, see :meth:`header`); ``hdrs`` the array the in-neighbors'
    headers land in (row s: slot s, ``_HCAP`` words: room for an inline payload, which a
    small neighbor_allreduce sends with its header; :meth:`headers_match` compares them
    with ours); ``nbytes`` the payload bytes per message; ``moved`` the bytes the call
    sends and receives (for the wait's spin, see
    :func:`~declearn.comm.mpi.deadline.spin_for`). neighbor_allreduce also keeps its receive
    buffers ``bufs`` (one per in-neighbor slot, from the communicator's BufferCache) and,
    for CPU tensors, their MPI views ``views``; or, for a small CPU payload, ``inline``
    (:class:`~declearn.comm.mpi.inline.InlineBuffers`, whose message holds ``hdr`` and
    whose other rows are ``hdrs``).

    The arrays are reused, so the communicator drops every call plan when an operation is
    abandoned (MPI may still use them) and in resync. ``topo`` keeps the topology alive:
    the cache is keyed by its ``id``.
    """

    __slots__ = ("topo", "plan", "hdr", "hdrs", "head", "heads", "nbytes", "moved", "bufs",
                 "views", "inline", "tally", "iteration", "site")

    def __init__(self, topo, plan: _Plan, hdr: np.ndarray, nbytes: int,
                 inline: InlineBuffers | None = None):
        self.topo = topo
        self.plan = plan
        self.inline = inline
        self.hdr = hdr if inline is None else inline.header
        self.hdrs = np.zeros((len(plan.in_nbrs), _HCAP), np.int64) if inline is None \
            else inline.rows
        self.head = memoryview(self.hdr)  # comparing memoryviews: 28 words in C, no copy
        self.heads = [memoryview(row[:_HLEN]) for row in self.hdrs]
        self.nbytes = nbytes
        self.moved = (len(plan.in_nbrs) + len(plan.out_nbrs)) * nbytes
        self.bufs: list = []
        self.views: list | None = None
        self.tally = 0  # inline calls not counted in traffic yet (see MPIComm._fold_tallies)
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

    def headers_match(self) -> bool:
        """Whether every in-neighbor's header (as received) equals ours."""
        ours = self.head
        for theirs in self.heads:  # noqa: SIM110 - a loop, not a generator, on the hot path
            if theirs != ours:
                return False
        return True


_UNSET = object()


class NeighborOps:
    """neighbor_allreduce, neighbor_allgather and neighbor_alltoall (a part of
    :class:`~declearn.comm.mpi.MPIComm`)."""

    def neighbor_allreduce(self, x: torch.Tensor, topology, *, weighted_by: str = "receiver",
                           timeout: float | None = None, tag: str | None = None,
                           weights: str | None = None):
        self._site = call_site(2) if tag is None and self._check_sites else self._tagged(tag)
        if weights is not None:
            weighted_by = old_weights_keyword(weights)
        weights = weighted_by
        call = self._inline_call(x, topology, weights)  # a small CPU payload seen before
        if call is not None:
            return self._allreduce_inline(x, call, timeout)
        x = self._tensor(x, floating="neighbor_allreduce")
        plane = self._plane(x)
        call = self._neighbor_call("neighbor_allreduce", topology, x, plane, weights)
        if call.inline is not None:
            return self._allreduce_inline(x, call, timeout)
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
        if not call.headers_match():
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
            h = call.hdrs[s, :_HLEN]
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
            h = hdrs[slot, :_HLEN]
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
            "from)", [([self._rank], hdr)] + [([j], h) for j, h in mismatched],
            ("Rank(s) " + ", ".join(str(j) for j, h in mismatched
                                     if int(h[_H_TOPO]) != int(hdr[_H_TOPO]))
             + " used a different topology. " if other_topology else "")
            + "Every rank must call the same operation with tensors of the same shape and "
            "dtype and the same topology (for a dynamic topology, topology.at(k) with the "
            "same k on every rank).",
        )

    def _plan(self, topology, weights: str | None = None) -> _Plan:
        """This rank's :class:`_Plan` of ``topology``, checked (with ``weights``: the
        topology remembers that check) and kept on the topology."""
        topo = self._check_topology(topology, weights)
        return topo.memo(("mpi.plan", self._rank), lambda: self._build_plan(topo))

    def _build_plan(self, topo) -> _Plan:
        """Rank ``self._rank``'s :class:`_Plan` of the checked topology ``topo``."""
        r = self._rank
        lo, hi = int(topo.indptr[r]), int(topo.indptr[r + 1])
        cols, vals = topo.indices[lo:hi], topo.data[lo:hi]
        off = cols != r
        in_nbrs = tuple(int(j) for j in cols[off])
        out_nbrs = tuple(int(j) for j in topo.out_neighbors(r))
        return _Plan(
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
            inline_notes=(
                *(("send", p) for p in out_nbrs),
                *(("recv-header", j, s) for s, j in enumerate(in_nbrs)),
            ),
        )

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
        inline = op == "neighbor_allreduce" and plane.direct and nbytes <= INLINE_MAX
        hdr = self._header(
            op, t.shape, t.dtype, extra=WEIGHT_MODES.index(weights) if weights else 0,
            topo=plan.fingerprint, nbytes=nbytes, plane=plane, inline=inline,
        )
        call = _NeighborCall(topology, plan, hdr, nbytes, InlineBuffers(
            self._address_buffer, hdr, t, nbytes, plan) if inline else None)
        if inline:  # header() writes into the message; the in-neighbors' land next to it
            if len(self._inline_calls) >= _MAX_CALLS:
                self._inline_calls.clear()
            self._inline_calls[(id(topology), weights, t.shape, t.dtype)] = call
        elif op == "neighbor_allreduce":
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
