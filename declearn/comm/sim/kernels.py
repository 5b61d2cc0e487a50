r"""Mixing and slot-gathering kernels of the one-process simulator (:class:`SimComm`).

Node-local tensors have the node as their leading dim: ``x`` has shape ``(n, *s)`` and is
seen here as the matrix ``X`` of shape ``(n, d)``, ``d = prod(s)``. The kernels compute

* mixing (``neighbor_allreduce``): ``out = W @ X``, i.e. ``out_i = sum_j W[i, j] x_j``;
* slot gathering (``neighbor_allgather`` / ``neighbor_alltoall``): ``out[i, t] = src[p(i, t)]``
  for a precomputed flat source row ``p(i, t)``, zero where slot t of node i is empty.

Nothing loops over nodes in Python. Every kernel works from a *plan*: tensors on the target
device built once per (topology, device, dtype) from the topology's CSR arrays in O(nnz) numpy
and kept in ``topology._cache`` (topologies are immutable; dynamic topologies keep their
per-step Topology objects, so periodic sequences reuse their plans).

Three mixing kernels, all giving ``W @ X`` up to rounding:

``"circulant"``
    For ``W[i, (i - s) mod n] = w_s`` (``topology.shifts``): ``out = sum_s w_s roll(X, s)``,
    computed with in-place shifted slice adds into the output,
    ``out[s:] += w_s X[:-s]`` and ``out[:s] += w_s X[-s:]``. Never ``torch.roll`` (it copies:
    about 10 to 40 times a plain copy here, against about 3 for the slices on a ring).
``"sparse"``
    ``torch.sparse_csr_tensor(W) @ X`` (MKL on CPU, cuSPARSE on CUDA): one pass that reads,
    for each output row, the rows of its in-neighbors. On CPU, once X is too large for the
    cache, the product runs over column blocks, ``out[:, c:c+b] = W @ X[:, c:c+b]``, each
    written in place into the output (MKL reads and writes the strided blocks directly: no
    copy), with ``b`` from :func:`sparse_block_width` so that every in-neighbor row an output
    row reads is still in cache when the next output row reads it again.
``"dense"``
    ``W_dense @ X`` (BLAS), for small n or dense W (complete graph, D-EquiStatic with large M).

How ``"auto"`` chooses, from measurements on the 2-core AMD EPYC development VM (torch 2.13
CPU, MKL, float64, one thread, best of 5-7; times as multiples of ``out.copy_(x)`` into a
preallocated ``out``, allocator tuned as in :mod:`declearn.comm.memory`):

* Circulant W with S shifts (self included), large tensors (n d >= 2.6e5): slices cost
  about S passes (S = 2: 1.8-2.6x copy, ring S = 3: 2.2-3.9x) against 3-6x for CSR; at
  S = 4 they tie, beyond S = 5 CSR wins (static exponential: slices 8-16x, CSR 5-10x):
  slices only up to :data:`CIRCULANT_MAX_SHIFTS`. Small tensors pay ~3 torch calls per
  shift: CSR wins below about 2^15 elements per shift (ring: n d = 65536 ties,
  16384 is 11x vs 7x copy): :data:`CIRCULANT_MIN_ELEMENTS_PER_SHIFT`.
* Sparse vs dense: MKL's CSR product streams ~1.5 G multiply-adds/s once X leaves the cache
  against ~25 G for BLAS, so dense wins from a density (nnz / n^2) that falls as the data
  grows: above ~0.5 for d ~ 10 (BLAS is slow on thin X), ~0.2 while X stays in cache
  (n = 256, d = 1e3: CSR 66x vs dense 61x copy at density 0.2, 32x vs 61x at 0.1; n = 64,
  d = 1e4: 11x vs 17x at 0.12), ~0.1 beyond (n = 1024, d = 1e4: 91x vs 61x at 0.1, 55x vs
  62x at 0.05): :func:`dense_min_density`. Complete graphs and D-EquiStatic with large M end
  up dense; n <= :data:`DENSE_MAX_N` always does (one BLAS call: n = 16, d = 100: dense 2.8x
  copy, CSR 6x, slices 15x), and n > :data:`DENSE_MAX_N_ANY` never does (memory).
* Column blocks of the CSR product (a shared, loaded 2-core VM, torch 2.13, float64, best
  of 25 interleaved rounds, times as multiples of a copy): blocks of ``2^19`` elements
  (:data:`SPARSE_BLOCK_ELEMENTS`) took the static exponential graph at n = 256, d = 1e4 from
  10x to 4.4x (one thread) and Erdos-Renyi (degree ~ 2 ln n) at n = 256, d = 1e4 from 11-17x
  to 5-8x in one run, but only 4.93x to 4.92x and 6.2x to 5.9x in another (the VM was
  loaded 3-4x over); blocks of ``2^15`` to ``2^16`` elements were 1.5-2x slower than
  ``2^19``, and narrow blocks lose (n = 4096, d = 1000, 128 columns: 18-21x against 13-18x
  unblocked; n = 1024, d = 1e4, 512 columns: 8.3x against 6.5x in one run), hence blocks
  only from :data:`SPARSE_MIN_BLOCK_WIDTH` columns (n <= 512). The slices of "circulant" gain
  nothing from column blocks (their S passes stay S passes; 256 to 4096 columns: 5-16x
  against 7x unblocked for the exponential graph).
* Also measured and not used: ``torch.roll`` (10-50x copy), a per-slot gather over a padded
  in-neighbor table (index_select + addcmul per slot: 26-73x where CSR takes 5-18x), the same
  gather blocked over columns with one ``mv`` over the S gathered copies per block (8-11x),
  ``index_add_`` over the COO entries (16-110x), ``embedding_bag`` with per-sample weights
  and scipy's CSR product (both 1.3-2x slower than MKL in float64).
* What bounds them: a copy moves each element once at memory (or cache) speed; mixing needs
  ``nnz / n`` multiply-adds per element. Torch's in-cache ``add_`` runs at ~4.7 G
  elements/s on one core, so nine shifts cost at least 3-4 copies of a 20 MB tensor even
  with no cache misses, and 18 in-neighbors per row (Erdos-Renyi at n = 4096) cost ~10
  copies of a 3 MB tensor that a copy reads and writes at cache speed.

These constants come from one CPU; on CUDA the same rule applies untested.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "mixer",
    "KERNELS",
    "CIRCULANT_MAX_SHIFTS",
    "CIRCULANT_MIN_ELEMENTS_PER_SHIFT",
    "DENSE_MAX_N",
    "DENSE_MAX_N_ANY",
    "dense_min_density",
    "CACHED_ELEMENTS",
    "SPARSE_BLOCK_ELEMENTS",
    "SPARSE_MIN_BLOCK_WIDTH",
    "sparse_block_width",
    "MixPlan",
    "SlotPlan",
    "choose_kernel",
    "mix_plan",
    "mix",
    "allgather_plan",
    "alltoall_plan",
    "gather_slots",
]

#: The mixing kernels, in the order "auto" considers them.
KERNELS = ("circulant", "sparse", "dense")

#: Slices are used for circulant W with at most this many shifts (self included) ...
CIRCULANT_MAX_SHIFTS = 3

#: ... and node-local tensors of at least this many elements (all nodes) per shift; below it
#: the ~3 torch calls per shift cost more than one sparse product.
CIRCULANT_MIN_ELEMENTS_PER_SHIFT = 1 << 15

#: W is multiplied as a dense matrix when n is at most this, ...
DENSE_MAX_N = 32

#: ... never when n exceeds this (a dense float64 W would take over 512 MiB), ...
DENSE_MAX_N_ANY = 8192


def dense_min_density(n: int, d: int) -> float:
    """... and otherwise when nnz / n^2 reaches this, for n node-local values of d elements.
    CSR slows down once X (n d elements) leaves the cache, BLAS does not."""
    if d < 256:
        return 0.5
    return 0.2 if n * d < CACHED_ELEMENTS else 0.1


#: Node-local tensors below this many elements count as cache-resident (16 MiB in float64).
CACHED_ELEMENTS = 1 << 21

#: On CPU, the sparse product runs over column blocks of X of about this many elements
#: (all nodes; 4 MiB in float64), ...
SPARSE_BLOCK_ELEMENTS = 1 << 19

#: ... when such a block is at least this many columns wide (and X has more columns).
SPARSE_MIN_BLOCK_WIDTH = 1024


def sparse_block_width(n: int, d: int, device: torch.device | str = "cpu") -> int:
    """Width ``b`` of the column blocks ``X[:, c:c+b]`` that the sparse product runs over for
    node-local values of ``d`` elements on ``n`` nodes. The blocks split ``d`` as evenly as
    multiples of 8 columns allow (64-byte rows in float64), as few as hold at most about
    :data:`SPARSE_BLOCK_ELEMENTS` elements each; ``d`` itself (one block) off CPU, for small
    X, or when the blocks would be narrower than :data:`SPARSE_MIN_BLOCK_WIDTH`."""
    if n < 1 or d < 1:
        raise ValueError(f"n and d must be positive, got n={n}, d={d}.")
    widest = SPARSE_BLOCK_ELEMENTS // n // 8 * 8
    if torch.device(device).type != "cpu" or d <= widest or widest < SPARSE_MIN_BLOCK_WIDTH:
        return d
    blocks = -(-d // widest)  # as few blocks as fit, then as even as multiples of 8 allow
    width = math.ceil(math.ceil(d / blocks) / 8) * 8
    return width if width >= SPARSE_MIN_BLOCK_WIDTH else d


# ---------------------------------------------------------------------------------- mixing
@dataclass(frozen=True)
class MixPlan:
    """What :func:`mix` needs for one (topology, device, dtype): a kernel name and its data.

    ``shifts``: tuple of ``(s, w)`` for "circulant"; ``matrix``: the CSR or dense W on the
    device for "sparse"/"dense"; ``compute_dtype``: the dtype the matrix product runs in (the
    input's, or float32/complex64 where the device has no sparse kernel for it, e.g. half on
    CPU).
    """

    kernel: str
    n: int
    device: torch.device
    dtype: torch.dtype
    shifts: tuple = ()
    matrix: torch.Tensor | None = None
    compute_dtype: torch.dtype | None = None


def choose_kernel(topology, d: int | None = None) -> str:
    """The kernel ``"auto"`` picks for ``topology`` and node-local values of ``d`` elements
    each (``d=None``: large values). See the module docstring for the measurements."""
    n = topology.n
    if n <= DENSE_MAX_N:
        return "dense"
    shifts = topology.shifts
    if shifts is not None and len(shifts) <= CIRCULANT_MAX_SHIFTS and (
        d is None or n * d >= len(shifts) * CIRCULANT_MIN_ELEMENTS_PER_SHIFT
    ):
        return "circulant"
    if n <= DENSE_MAX_N_ANY and topology.nnz >= dense_min_density(n, d or 1 << 30) * n * n:
        return "dense"
    return "sparse"


def mix_plan(
    topology, device: torch.device, dtype: torch.dtype, kernel: str = "auto",
    d: int | None = None,
) -> MixPlan:
    """The cached :class:`MixPlan` of ``topology`` for tensors of ``dtype`` on ``device``.

    ``kernel="auto"`` uses :func:`choose_kernel` (for node-local values of ``d`` elements,
    if given); naming one of :data:`KERNELS` forces it ("circulant" needs
    ``topology.shifts``).
    """
    cache = topology._cache
    if kernel == "auto":
        kernel = cache.get(("sim.kernel", d))
        if kernel is None:
            kernel = choose_kernel(topology, d)
            if len(cache) < 64:  # a topology meets few distinct sizes; never grow unbounded
                cache[("sim.kernel", d)] = kernel
    key = ("sim.mix", kernel, device, dtype)
    plan = cache.get(key)
    if plan is None:
        plan = cache[key] = _build_mix_plan(topology, device, dtype, kernel)
    return plan


def _build_mix_plan(topology, device, dtype, kernel) -> MixPlan:
    n = topology.n
    if kernel == "circulant":
        if topology.shifts is None:
            raise ValueError(
                f"The 'circulant' kernel needs a circulant topology (one built with "
                f"Topology.from_circulant), and {topology.name} is not; use kernel='auto', "
                "'sparse' or 'dense'."
            )
        return MixPlan("circulant", n, device, dtype, shifts=tuple(topology.shifts.items()))
    if kernel == "dense":
        W = torch.tensor(topology.W, dtype=dtype, device=device)
        return MixPlan("dense", n, device, dtype, matrix=W, compute_dtype=dtype)
    if kernel == "sparse":
        compute = dtype if _sparse_supported(device, dtype) else (
            torch.complex64 if dtype.is_complex else torch.float32
        )
        with warnings.catch_warnings():  # "sparse CSR support is in beta": we rely on matmul only
            warnings.simplefilter("ignore", UserWarning)
            W = torch.sparse_csr_tensor(
                torch.from_numpy(np.array(topology.indptr)),
                torch.from_numpy(np.array(topology.indices)),
                torch.from_numpy(np.array(topology.data)).to(compute),
                size=(n, n),
            ).to(device)
        return MixPlan("sparse", n, device, dtype, matrix=W, compute_dtype=compute)
    raise ValueError(f"kernel must be 'auto' or one of {KERNELS}, got {kernel!r}.")


_SPARSE_SUPPORT: dict = {}


def _sparse_supported(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``CSR @ dense`` runs for ``dtype`` on this device type (probed once)."""
    key = (device.type, dtype)
    if key not in _SPARSE_SUPPORT:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                one = torch.ones(1, dtype=dtype, device=device)
                W = torch.sparse_csr_tensor(
                    torch.tensor([0, 1], device=device), torch.tensor([0], device=device),
                    one, size=(1, 1),
                )
                W @ one.reshape(1, 1)
            _SPARSE_SUPPORT[key] = True
        except (RuntimeError, NotImplementedError, TypeError):
            _SPARSE_SUPPORT[key] = False
    return _SPARSE_SUPPORT[key]


def mix(x: torch.Tensor, plan: MixPlan) -> torch.Tensor:
    """``W @ X`` for a node-local ``x`` of shape ``(n, *s)``: a new tensor of the same shape.

    ``x`` is never modified; the result does not share memory with it.
    """
    if plan.kernel == "circulant":
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        _mix_circulant(x, out, plan.shifts)
        return out
    if x.numel() == 0:
        return torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if plan.kernel == "sparse" and plan.compute_dtype == x.dtype and x.dim() >= 2:
        d = x.numel() // x.shape[0]
        width = sparse_block_width(plan.n, d, x.device)
        if width < d and x.is_contiguous():
            return _mix_sparse_blocked(x, plan.matrix, width)
    flat = x.dim() <= 2  # W @ x directly (matrix-vector for 1-D x), else flatten to (n, d)
    X = x if flat else x.reshape(x.shape[0], -1)
    if plan.compute_dtype != x.dtype:
        out = (plan.matrix @ X.to(plan.compute_dtype)).to(x.dtype)
    else:
        out = plan.matrix @ X
    return out if flat else out.view(x.shape)


def mixer(plan: MixPlan, shape: torch.Size):
    """``mix(., plan)`` specialised for node-local tensors of ``shape`` (and the plan's dtype):
    a callable ``f(x) -> W @ X`` with every decision taken here once, for hot loops."""
    if plan.kernel == "circulant" or math.prod(shape) == 0 or plan.compute_dtype != plan.dtype:
        return lambda x: mix(x, plan)
    if plan.kernel == "sparse" and len(shape) >= 2:
        d = math.prod(shape[1:])
        width = sparse_block_width(plan.n, d, plan.device)
        if width < d:
            matrix = plan.matrix
            return lambda x: (
                _mix_sparse_blocked(x, matrix, width) if x.is_contiguous() else mix(x, plan)
            )
    if len(shape) <= 2:
        return plan.matrix.matmul
    flat = (shape[0], math.prod(shape[1:]))
    matmul = plan.matrix.matmul
    return lambda x: matmul(x.reshape(flat)).view(shape)


def _mix_sparse_blocked(x: torch.Tensor, matrix: torch.Tensor, width: int) -> torch.Tensor:
    """``W @ X`` for a contiguous ``x`` of shape ``(n, *s)`` seen as ``X`` of shape ``(n, d)``,
    one column block at a time: ``out[:, c:c+b] = W @ X[:, c:c+b]`` for ``c = 0, b, 2b, ...``
    (the last block narrower), so the rows of ``X[:, c:c+b]`` stay in cache while every
    output row that reads them is formed. Each product writes into its block of ``out``."""
    n = x.shape[0]
    X = x.view(n, -1)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    O = out.view(n, -1)
    d = X.shape[1]
    for c in range(0, d, width):
        b = min(width, d - c)
        torch.mm(matrix, X.narrow(1, c, b), out=O.narrow(1, c, b))
    return out


def _mix_circulant(x: torch.Tensor, out: torch.Tensor, shifts) -> None:
    """``out = sum_s w_s roll(x, s, dim=0)``, with ``out[i] += w_s x[i - s]`` written as two
    slice adds per shift (rows ``s..n-1`` read ``0..n-1-s``; rows ``0..s-1`` wrap around)."""
    n = x.shape[0]
    first = True
    for s, w in shifts:
        if s == 0:
            if first:
                torch.mul(x, w, out=out)
            else:
                out.add_(x, alpha=w)
        elif first:
            torch.mul(x.narrow(0, 0, n - s), w, out=out.narrow(0, s, n - s))
            torch.mul(x.narrow(0, n - s, s), w, out=out.narrow(0, 0, s))
        else:
            out.narrow(0, s, n - s).add_(x.narrow(0, 0, n - s), alpha=w)
            out.narrow(0, 0, s).add_(x.narrow(0, n - s, s), alpha=w)
        first = False
    if first:  # W = 0 (no entries at all)
        out.zero_()


# ---------------------------------------------------------------------------- slot gathering
@dataclass(frozen=True)
class SlotPlan:
    """A gather ``out.view(n * slots, d)[r] = src.view(-1, d)[index[r]]``, then zero rows
    ``empty``. ``slots`` is the largest in-degree (self excluded)."""

    n: int
    slots: int
    index: torch.Tensor
    empty: torch.Tensor


def _in_slots(topology):
    """Off-diagonal entries in CSR order with, for each, its receiver, sender and slot (the
    rank of the sender among the receiver's in-neighbors, ascending); and D_in."""
    rows, cols = topology.rows, topology.indices
    off = rows != cols
    recv, send = rows[off], cols[off]  # sorted by receiver, then sender (canonical CSR)
    deg = np.bincount(recv, minlength=topology.n)
    start = np.concatenate(([0], np.cumsum(deg)[:-1]))
    slot = np.arange(recv.size) - start[recv]
    return recv, send, slot, int(deg.max()) if deg.size else 0


def _out_slots(recv, send, n):
    """For each off-diagonal entry (receiver, sender): the rank of the receiver among the
    sender's out-neighbors (ascending), and D_out."""
    order = np.lexsort((recv, send))
    deg = np.bincount(send, minlength=n)
    start = np.concatenate(([0], np.cumsum(deg)[:-1]))
    slot = np.empty(send.size, dtype=np.int64)
    slot[order] = np.arange(send.size) - start[send[order]]
    return slot, int(deg.max()) if deg.size else 0


def _slot_plan(topology, device, src_index_of_entry, recv, slot, D) -> SlotPlan:
    n = topology.n
    index = np.zeros(n * D, dtype=np.int64)
    dest = recv * D + slot
    index[dest] = src_index_of_entry
    filled = np.zeros(n * D, dtype=bool)
    filled[dest] = True
    return SlotPlan(
        n, D,
        torch.from_numpy(index).to(device),
        torch.from_numpy(np.flatnonzero(~filled)).to(device),
    )


def allgather_plan(topology, device: torch.device) -> SlotPlan:
    """Plan of ``neighbor_allgather``: slot t of node i reads node i's t-th in-neighbor."""
    key = ("sim.allgather", device)
    plan = topology._cache.get(key)
    if plan is None:
        recv, send, slot, D = _in_slots(topology)
        plan = topology._cache[key] = _slot_plan(topology, device, send, recv, slot, D)
    return plan


def alltoall_plan(topology, device: torch.device) -> tuple[SlotPlan, int]:
    """Plan of ``neighbor_alltoall`` and D_out: slot t of node i reads message row
    ``j * D_out + r`` where j is i's t-th in-neighbor and i is j's r-th out-neighbor."""
    key = ("sim.alltoall", device)
    cached = topology._cache.get(key)
    if cached is None:
        recv, send, slot, D_in = _in_slots(topology)
        out_slot, D_out = _out_slots(recv, send, topology.n)
        plan = _slot_plan(topology, device, send * D_out + out_slot, recv, slot, D_in)
        cached = topology._cache[key] = (plan, D_out)
    return cached


def gather_slots(src: torch.Tensor, plan: SlotPlan, tail: tuple) -> torch.Tensor:
    """Gather the rows of ``src`` (shape ``(rows, *tail)``) into a new tensor of shape
    ``(n, slots, *tail)`` following ``plan``; empty slots are zero."""
    flat = src.reshape(src.shape[0], math.prod(tail))
    out = flat.index_select(0, plan.index)
    if plan.empty.numel():
        out.index_fill_(0, plan.empty, 0)
    return out.reshape((plan.n, plan.slots) + tuple(tail))
