r"""A small CPU ``neighbor_allreduce`` in one message per neighbor: the payload rides in the
header's message (see :mod:`declearn.comm.mpi`, *Inline payloads*).

For a payload of at most :data:`~declearn.comm.mpi.headers.INLINE_MAX` bytes, rank i sends
each out-neighbor the single message

.. math::  m_i = [\,h_i \mid \text{bytes of } x_i\,]

on the header tag, and receives the message of the in-neighbor in slot s into row s of
``call.hdrs``, whose rows hold ``_HCAP`` words (a header plus the largest inline payload), as
every receive on a header tag does: no message on a header tag is ever truncated. When
every row's header equals ours, row s holds ``x_j`` right after its header, and

.. math::  y_i = W_{ii}\, x_i + \sum_s W_{i j_s}\, x_{j_s}

is computed without copying the payloads, in one BLAS call for the usual dtypes: our
message sits next to the received ones (rows of one array), so ``y = c S`` with ``S`` the
``(d + 1, numel)`` strided view of the payloads (ours first) and ``c = (W_ii, W_{i j_0},
...)``. The header's plane word says ``inline`` (``_PLANE_INLINE``), so a peer that
called something else knows that no payload follows on the payload tag; and a mismatching
in-neighbor that sends its payload separately (a larger neighbor operation,
:func:`~declearn.comm.mpi.headers._sends_payload`) has it received and dropped here before
CollectiveMismatchError is raised. Either way every message of the operation is consumed
and the communicator stays in sync.

At this size the time goes to per-call overheads, not to moving bytes: halving the messages
and requests, and one BLAS call instead of ``d + 1`` torch operations, bring a 1 KiB
neighbor_allreduce to about twice the raw mpi4py exchange
(bench/bench_mpi_neighbor_allreduce.py). The cost is one copy of ``x`` (at most 4 KiB)
into the send message.
"""

from __future__ import annotations

import numpy as np
import torch

from declearn.comm.base import Traffic
from declearn.comm.mpi.deadline import Deadline, RequestSet, spin_for, wait_until
from declearn.comm.mpi.headers import _H_BYTES, _HCAP, _HLEN, _sends_payload
from declearn.comm.mpi.operation import _Operation

__all__ = ["InlineBuffers", "InlineOps"]

_Tensor = torch.Tensor
_STRIDED = torch.strided

#: Dtypes combined by one BLAS call (through numpy: a cheaper call than torch's on tensors
#: this small), with their numpy dtypes.
_BLAS = {torch.float32: np.float32, torch.float64: np.float64,
         torch.complex64: np.complex64, torch.complex128: np.complex128}


class InlineBuffers:
    """The memory of an inline neighbor_allreduce for one call plan, reused by every call.

    One int64 array ``block`` of ``d + 1`` rows of ``_HCAP`` words: row 0 is the message
    sent to every out-neighbor (the header in its first ``_HLEN`` words, ``header``, a view
    the call plan fills in, then ``nbytes`` bytes of ``x``), rows ``1..d`` (``rows``, the
    call plan's ``hdrs``) receive the in-neighbors' messages. ``send`` is the MPI view of
    the message, ``payload`` that of its ``x`` part, ``recvs[s]`` that of row ``s + 1``.
    ``views[s]`` is slot s's payload as a tensor shaped like ``x``.

    ``stack`` (a numpy ``(d + 1, numel)`` view: row 0 our ``x``, row ``s + 1`` slot s's
    payload) and ``coeffs`` (``(W_ii, W_{i j_0}, ...)`` in x's dtype) give ``y`` in one
    BLAS call, ``coeffs @ stack``. They are None where that does not apply: no
    in-neighbor, an empty ``x``, a dtype BLAS lacks, or a zero weight (BLAS may skip the
    term of a zero coefficient and so drop a NaN that ``0 * x`` keeps). The result is a
    fresh numpy array of ``shape`` handed to torch as it is (``torch.from_numpy``: cheaper
    than a torch operation on tensors this small)."""

    __slots__ = ("block", "header", "nbytes", "shape", "complex", "send", "payload", "rows",
                 "recvs", "views", "stack", "coeffs")

    def __init__(self, address_buffer, header: np.ndarray, t: torch.Tensor, nbytes: int,
                 plan):
        d = len(plan.in_nbrs)
        self.nbytes = nbytes
        self.shape = tuple(t.shape)
        self.complex = t.is_complex()  # the only dtypes with a conjugate bit
        self.block = block = np.zeros((d + 1, _HCAP), np.int64)
        block[0, :_HLEN] = header
        self.header = block[0, :_HLEN]
        base = block.ctypes.data
        self.send = address_buffer(base, 8 * _HLEN + nbytes)
        self.payload = address_buffer(base + 8 * _HLEN, nbytes)
        self.rows = block[1:]
        self.recvs = [address_buffer(row.ctypes.data, 8 * _HCAP) for row in self.rows]
        raw = torch.from_numpy(block.view(np.uint8)[:, 8 * _HLEN:8 * _HLEN + nbytes])
        self.views = [raw[s + 1].view(t.dtype).view(t.shape) for s in range(d)]
        self.stack = self.coeffs = None
        weights = (plan.self_w, *plan.in_w)
        if d and t.numel() and t.dtype in _BLAS and all(weights):
            self.stack = raw.numpy().view(_BLAS[t.dtype])  # unit inner stride: BLAS-ready
            self.coeffs = np.array(weights, _BLAS[t.dtype])


class InlineOps:
    """neighbor_allreduce's inline exchange (a part of :class:`~declearn.comm.mpi.MPIComm`)."""

    def _inline_call(self, x, topology, weights):
        """The inline call plan that ``neighbor_allreduce(x, topology, weights=weights)``
        can use as it is, or None (then the full checks run, and build one if it fits).

        ``x`` must be a plain CPU tensor (strided, contiguous, no conjugate or negative bit:
        its memory holds its values) whose shape and dtype, with this topology object and
        weights, already have one: it was checked when it was built (topologies are
        immutable), so only the properties of ``x`` that a call plan does not fix are
        checked here. (Whether ``x`` requires grad does not matter: only its memory is
        read, and the result is a fresh tensor.)"""
        if not isinstance(x, _Tensor):
            return None
        call = self._inline_calls.get((id(topology), weights, x.shape, x.dtype))
        if call is None or call.topo is not topology or x.layout is not _STRIDED \
                or not x.is_cpu or not x.is_contiguous() or x.is_neg() \
                or (call.inline.complex and x.is_conj()):
            return None
        return call

    def _allreduce_inline(self, x: torch.Tensor, call, timeout) -> torch.Tensor:
        """``y = W[i,i] x + sum_s W[i,j_s] x_{j_s}`` with one message per neighbor (see the
        module docstring); ``call`` is a call plan with ``inline`` buffers.

        This is what ``with self._operation(...)`` does, with the operation's
        :class:`_Operation` and :class:`RequestSet` built only when it leaves the path where
        every message arrives in time (:meth:`_inline_state`: a timeout, an MPI error, a
        mismatch, an exception): this is the hot path of small-d algorithms, where each
        avoided call shows."""
        if self._broken is not None or self._out_of_sync is not None:
            self._check_usable("neighbor_allreduce")
        deadline = Deadline(self._seconds(timeout))
        if self._graveyard.requests:
            self._graveyard.sweep()
        plan, buf = call.plan, call.inline
        ins, outs = plan.in_nbrs, plan.out_nbrs
        requests: list = []
        state = None
        try:
            if ins or outs:
                call.header(self._seq, self.iteration, self._site)
                if buf.nbytes:
                    buf.payload[:] = self._address_buffer(x.data_ptr(), buf.nbytes)
                p2p, tag, message = self._p2p, self._tag(0), buf.send
                for p in outs:
                    requests.append(p2p.Isend(message, p, tag))
                for m, j in zip(buf.recvs, ins):
                    requests.append(p2p.Irecv(m, j, tag))
                if buf.stack is not None:  # the result's memory, while the messages travel
                    flat = np.empty(buf.stack.shape[1], buf.stack.dtype)
                    out = torch.from_numpy(flat.reshape(buf.shape))
                if not self._wait_inline(requests, deadline, call):
                    state = self._inline_state(call, requests, deadline)
                    if not state.requests.wait(deadline, state.spin):
                        raise self._timeout_error(state, _missing(state.requests))
                if not call.headers_match():
                    state = state or self._inline_state(call, requests, deadline)
                    self._settle_inline_mismatch(state, call)
                if state is not None and state.requests.failed:  # a real MPI error
                    raise state.requests.failed[0][1]
            if buf.stack is not None:
                np.dot(buf.coeffs, buf.stack, out=flat)
            else:
                out = torch.mul(x, plan.self_w)  # a fresh tensor
                for view, w in zip(buf.views, plan.in_w):
                    out.add_(view, alpha=w)
        except BaseException as exc:
            self._abandon(state or self._inline_state(call, requests, deadline), exc)
            raise
        finally:
            self._seq += 1
        if not call.tally:  # counted in traffic when traffic is read (MPIComm._fold_tallies)
            if len(self._tallied) >= 64:
                self._fold_tallies()
            self._tallied.append(call)
        call.tally += 1
        return out

    def _wait_inline(self, requests: list, deadline: Deadline, call) -> bool:
        """Wait for ``requests`` with plain ``Testall`` calls (see
        :func:`~declearn.comm.mpi.deadline.wait_until`): True when every one completed;
        False when one ended in an error, or the deadline passed (the caller then asks
        :meth:`RequestSet.wait`, which says which)."""
        testall, error = self._MPI.Request.Testall, self._MPI.Exception
        try:
            return wait_until(lambda: testall(requests), deadline, spin_for(call.moved))
        except error:
            return False

    def _inline_state(self, call, requests: list, deadline: Deadline) -> _Operation:
        """The :class:`_Operation` of an inline exchange that posted ``requests``: for
        waiting past the first test, a mismatch, or abandoning it."""
        state = _Operation(self, "neighbor_allreduce", deadline, RequestSet(self._MPI),
                           spin_for(call.moved))
        state.requests.extend(requests, call.plan.inline_notes, call)
        return state

    @property
    def traffic(self) -> Traffic:
        """Messages and bytes sent so far (see :class:`~declearn.comm.base.Traffic`)."""
        if self._tallied:
            self._fold_tallies()
        return self._traffic

    def reset_traffic(self) -> None:
        for call in self._tallied:
            call.tally = 0
        self._tallied = []
        self._traffic = self._new_traffic()

    def _fold_tallies(self) -> None:
        """Count in ``traffic`` the calls that inline neighbor_allreduces only tallied on
        their call plans (:meth:`_allreduce_inline`: one increment on the hot path)."""
        tallied, self._tallied = self._tallied, []
        for call in tallied:
            calls, call.tally = call.tally, 0
            messages = calls * len(call.plan.out_nbrs)
            self._count("neighbor_allreduce", messages, messages * call.nbytes, calls)

    def _settle_inline_mismatch(self, state: _Operation, call) -> None:
        """Some in-neighbor sent another header than ours (every message has arrived):
        receive and drop the payloads that mismatching peers send on the payload tag, then
        raise CollectiveMismatchError naming them."""
        requests = state.requests
        hdr = call.inline.header
        expected = hdr.tobytes()
        ptag = self._tag(1)
        mismatched = []
        for j, h in zip(call.plan.in_nbrs, call.inline.rows[:, :_HLEN]):
            if h.tobytes() == expected:
                continue
            mismatched.append((j, h.copy()))
            if _sends_payload(h):
                scratch = np.empty(int(h[_H_BYTES]), np.uint8)
                requests.add(self._p2p.Irecv(scratch, j, ptag), ("recv-drain", j), scratch)
        if not requests.wait(state.deadline, state.spin):
            raise self._timeout_error(state, [note[1] for note in requests.pending()])
        if requests.failed:
            raise requests.failed[0][1]
        raise self._neighbor_mismatch(state.name, hdr, mismatched)


def _missing(pending) -> list:
    """The ranks to name in a timeout: the in-neighbors not heard from, else the
    out-neighbors whose message did not leave."""
    notes = pending.pending()
    return [note[1] for note in notes if note[0] == "recv-header"] or [n[1] for n in notes]
