r"""Mixing kernels of the one-process simulator (:class:`SimComm`): ``out = W @ X``.

Node-local tensors have the node as their leading dim: ``x`` has shape ``(n, *s)`` and is
seen here as the matrix ``X`` of shape ``(n, d)``, ``d = prod(s)``; row i of the result is
``out_i = sum_j W[i, j] x_j``. Nothing loops over nodes in Python. Every kernel works from
a *plan* (:class:`MixPlan`): what it needs on the target device, built once per
(topology, device, dtype) from the topology's CSR arrays and kept with
:meth:`~declearn.topology.base.BaseTopology.memo` (topologies are immutable; dynamic
topologies keep their per-step Topology objects, so periodic sequences reuse their plans).
:func:`mixer` then takes every decision once per tensor shape, for hot loops.

Three kernels, all giving ``W @ X`` up to rounding:

``"circulant"``
    For ``W[i, (i - s) mod n] = w_s`` (``topology.shifts``): a running weighted average of
    the shifted row ranges of ``x`` with ``torch.lerp`` (:mod:`declearn.comm.sim.circulant`):
    one pass for the first two shifts, one more per further shift, no ``torch.roll``.
``"sparse"``
    ``W`` in CSR. On CPU, for float32/float64 and ``d >=`` :data:`SPARSE_REDUCE_MIN_D`,
    ``torch.sparse.mm(W, X, reduce="sum")``: ATen's vectorised row-by-row product (each
    output row accumulates ``W[i, j] x_j`` over its in-neighbors j); below that, and for
    other dtypes or devices, ``W @ X`` (MKL on CPU, cuSPARSE on CUDA). For large X whose
    rows are read in no order a prefetcher could follow (random graphs:
    :func:`scattered_fraction`), or whose wide output rows take many updates each, the CPU
    product runs over column blocks ``out[:, c:c+b] = W @ X[:, c:c+b]``
    (:func:`sparse_block_width`), so that each block stays in cache while it is used.
``"dense"``
    ``W_dense @ X`` (BLAS), for small n or dense W (D-/U-EquiStatic with large M). When all
    rows of W are equal (the complete graph, ``W = 1 c^T``) it is ``out_i = c^T X`` for
    every i: one matrix-vector product and one broadcast write, about a copy.

How ``"auto"`` chooses (:func:`choose_kernel`), from measurements on the 2-core AMD EPYC
development VM (Zen 4, 1 MiB L2 per core, torch 2.13 CPU, float64, one thread, allocator
tuned as in :mod:`declearn.comm.memory`; CPU time of the calling thread, best of 5-9
interleaved rounds, because the VM was shared and loaded 4-6x over; times as multiples of
``out.copy_(x)`` into a preallocated ``out``):

* Circulant W with S <= :data:`CIRCULANT_MAX_SHIFTS` shifts, large tensors: lerp takes
  one-peer graphs (S = 2) to 1.0-1.7x copy (n = 256 ... 4096, d = 1e3 ... 1e5) against
  1.8-3x for the sparse product and 1.2-2.2x for the former per-shift slice adds (3 torch
  calls per shift); the ring (S = 3) to 1.8-2.9x, with the sparse product at 1.4-3.3x
  (each wins at some sizes: n = 4096, d = 100: 2.4x against 3.3x; d = 1000: 1.8x against
  1.4x) and the slices at 2.2-3.5x. Small tensors pay ~2 torch calls per shift: the sparse
  product wins below about 2^15 elements per shift (n = 256, d = 100, S = 2: lerp 4.7x,
  sparse 3.0x): :data:`CIRCULANT_MIN_ELEMENTS_PER_SHIFT`.
* Sparse engines: ``reduce="sum"`` beats MKL from ``d`` = 32-48 columns on (exponential
  graph, n = 256, d = 100: 5.0x against 7.6x; n = 4096, d = 1000: 5.8x against 7.3x;
  Erdos-Renyi, n = 1024, d = 1000: 4.0x against 10.9x); MKL wins for thinner X (d = 10:
  6.9x against 8.0x at n = 256, 12.8x against 24x at n = 4096).
* Column blocks (reduce engine, each timed call after an untimed one, data hot in cache):
  each block is copied in and out, so blocks only pay off when reads would otherwise miss
  the cache. Random graphs (Erdos-Renyi, degree ~ 2 ln n): n = 256, d = 1e4: 4.8-5.0x
  blocked against 6.0-6.6x; n = 1024, d = 1e4: 7.1x against 12.4x; n = 4096, d = 1000:
  10.3x against 15.3x. Structured graphs read rows in streams the prefetcher follows and
  lose with blocks (n = 4096, d = 1000: exponential 8.0x against 5.7x, star 4.0-4.7x
  against 2.0x, grid 5.4-6.1x against 2.1x; n = 256, d = 1e4: star 3.4x against 2.7x,
  chain 3.5x against 2.2x), except when wide rows take many updates each (n = 256,
  d = 1e4, 9 in-neighbors: exponential 4.1-4.5x against 4.8-5.0x, hypercube 4.3-4.5x
  against 5.0x; n = 1024: exponential 5.7x against 7.9x). Blocks of about 2^17 elements
  and at least 256 columns did best (:data:`SPARSE_BLOCK_ELEMENTS`,
  :data:`SPARSE_MIN_BLOCK_WIDTH`; 4096 columns: 5.4-6.4x).
* Sparse against dense: the sparse engines run ~2-5 G multiply-adds/s, BLAS ~40 G; dense
  wins from a density (nnz / n^2) that falls as X grows: 0.5 for d < 256 (BLAS is slow on
  thin X; D-EquiStatic n = 256, d = 100, density 0.3: sparse 62x, dense 78x), 0.3 while
  n d < 2^20 (Erdos-Renyi n = 256, d = 1000: sparse 40x vs dense 60x at density 0.2),
  0.25 beyond (n = 200, d = 1e4: dense 12.5x vs blocked sparse 15.4x at 0.3; n = 256,
  d = 1e4, density 0.035: sparse 4.6x vs dense 15x): :func:`dense_min_density`. n <=
  :data:`DENSE_MAX_N` always goes dense (one BLAS call), n > :data:`DENSE_MAX_N_ANY` never.
* What bounds them: a copy moves each element once; mixing needs ``nnz / n`` multiply-adds
  per element, and torch's CPU kernels do them at ~2-5 G/s on one core (one load of the
  output row per in-neighbor), against the 2-6 G elements/s of a copy. So a graph with
  more than about 6-8 in-neighbors per node (exponential, Erdos-Renyi, hypercube at
  n >= 256) stays above 3x a copy on this VM whatever the kernel; D-EquiStatic with the
  default M (78 shifts at n = 256) needs 78 multiply-adds per element, at least ~4x a
  copy even at BLAS speed.

These constants come from one CPU; on CUDA the same rule applies untested.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from declearn.comm.sim.circulant import mix_circulant
from declearn.comm.sim.slots import SlotPlan, allgather_plan, alltoall_plan, gather_slots

__all__ = [
    "mixer",
    "KERNELS",
    "CIRCULANT_MAX_SHIFTS",
    "CIRCULANT_MIN_ELEMENTS_PER_SHIFT",
    "DENSE_MAX_N",
    "DENSE_MAX_N_ANY",
    "dense_min_density",
    "CACHED_ELEMENTS",
    "SPARSE_REDUCE_MIN_D",
    "SPARSE_BLOCK_ELEMENTS",
    "SPARSE_MIN_BLOCK_WIDTH",
    "SPARSE_WIDE_ROW",
    "SPARSE_WIDE_MIN_DEGREE",
    "scattered_fraction",
    "sparse_block_width",
    "MixPlan",
    "choose_kernel",
    "mix_plan",
    "mix",
    # slot gathering, from declearn.comm.sim.slots
    "SlotPlan",
    "allgather_plan",
    "alltoall_plan",
    "gather_slots",
]

#: The mixing kernels, in the order "auto" considers them.
KERNELS = ("circulant", "sparse", "dense")

#: The circulant kernel is used for W with at most this many shifts (self included) ...
CIRCULANT_MAX_SHIFTS = 3

#: ... and node-local tensors of at least this many elements (all nodes) per shift; below it
#: the ~2 torch calls per shift cost more than one sparse product.
CIRCULANT_MIN_ELEMENTS_PER_SHIFT = 1 << 15

#: W is multiplied as a dense matrix when n is at most this, ...
DENSE_MAX_N = 32

#: ... never when n exceeds this (a dense float64 W would take over 512 MiB), ...
DENSE_MAX_N_ANY = 8192

#: Node-local tensors below this many elements count as cache-resident (16 MiB in float64).
CACHED_ELEMENTS = 1 << 21


def dense_min_density(n: int, d: int) -> float:
    """... and otherwise when nnz / n^2 reaches this, for n node-local values of d elements.
    The sparse products slow down once X (n d elements) leaves the cache, BLAS does not."""
    if d < 256:
        return 0.5
    return 0.3 if n * d < CACHED_ELEMENTS // 2 else 0.25


#: On CPU, float32/float64 X with at least this many columns go through
#: ``torch.sparse.mm(W, X, reduce="sum")``; thinner X through MKL's ``W @ X``.
SPARSE_REDUCE_MIN_D = 32

#: Column blocks of the CPU sparse product hold about this many elements (all nodes), ...
SPARSE_BLOCK_ELEMENTS = 1 << 17

#: ... and at least this many columns (narrower blocks cost more calls than they save).
SPARSE_MIN_BLOCK_WIDTH = 256

#: Rows of at least this many elements (32 KiB in float64, an L1 cache) are split into
#: blocks when every output row is updated at least :data:`SPARSE_WIDE_MIN_DEGREE` times.
SPARSE_WIDE_ROW = 4096

#: See :data:`SPARSE_WIDE_ROW`.
SPARSE_WIDE_MIN_DEGREE = 8


def scattered_fraction(topology) -> float:
    """The fraction of W's entries ``(i, j)`` whose input row ``j`` the hardware prefetcher
    cannot see coming: neither 0-2 rows after a row that output row ``i - 1`` read (a
    stream that moves with i: circulant shifts, grids, trees, a star's leaves) nor 1-2 rows
    after the previous entry of row i (a run of consecutive rows: a star's hub). About 1
    for random graphs (Erdos-Renyi, geometric), about 0 for the structured families."""
    rows, cols = topology.rows, topology.indices
    if cols.size == 0:
        return 0.0
    stride = topology.n + 3
    key = rows * stride + cols  # increasing: CSR entries are sorted by row, then column
    prev = (rows - 1) * stride + cols  # (i - 1, j): row i - 1 read some j' in [j - 2, j]?
    at = np.minimum(np.searchsorted(key, prev - 2), key.size - 1)
    follows = (key[at] >= prev - 2) & (key[at] <= prev)
    run = np.zeros(cols.size, dtype=bool)
    run[1:] = (rows[1:] == rows[:-1]) & (cols[1:] - cols[:-1] <= 2)
    return float(np.mean(~(follows | run)))


def sparse_block_width(n: int, d: int, device: torch.device | str = "cpu", *,
                       scattered: float = 1.0, degree: float = 0.0) -> int:
    """Width ``b`` of the column blocks ``X[:, c:c+b]`` that the CPU sparse product runs
    over, for node-local values of ``d`` elements on ``n`` nodes, a W with ``degree``
    entries per row on average and a :func:`scattered_fraction` of ``scattered``.

    Blocks cost a copy of each block in and out, and pay off only once X leaves the cache
    (``n d >=`` :data:`CACHED_ELEMENTS`) and either most reads are scattered (more than
    half: without blocks each would go to memory) or rows are wide (:data:`SPARSE_WIDE_ROW`)
    and updated often (:data:`SPARSE_WIDE_MIN_DEGREE`): a block keeps each output row in L1
    while its updates run. Otherwise, and off CPU, ``d`` (one block). Blocks hold about
    :data:`SPARSE_BLOCK_ELEMENTS` elements and at least :data:`SPARSE_MIN_BLOCK_WIDTH`
    columns, as few as fit and as even as multiples of 8 columns allow (64-byte rows)."""
    if n < 1 or d < 1:
        raise ValueError(f"n and d must be positive, got n={n}, d={d}.")
    wide = d >= SPARSE_WIDE_ROW and degree >= SPARSE_WIDE_MIN_DEGREE
    if (torch.device(device).type != "cpu" or n * d < CACHED_ELEMENTS
            or not (scattered > 0.5 or wide)):
        return d
    widest = max(SPARSE_MIN_BLOCK_WIDTH, SPARSE_BLOCK_ELEMENTS // n // 8 * 8)
    if d <= widest:
        return d
    blocks = -(-d // widest)
    return math.ceil(math.ceil(d / blocks) / 8) * 8


# ---------------------------------------------------------------------------------- plans
@dataclass(frozen=True)
class MixPlan:
    """What :func:`mixer` needs for one (topology, device, dtype): a kernel name and its data.

    ``shifts``: tuple of ``(s, w)`` for "circulant"; ``matrix``: the CSR or dense W on the
    device for "sparse"/"dense"; ``compute_dtype``: the dtype the matrix product runs in (the
    input's, or float32/complex64 where the device has no sparse kernel for it, e.g. half on
    CPU); ``row``: for "dense", the common row ``c`` when ``W = 1 c^T``, else None;
    ``scattered``, ``degree``: :func:`scattered_fraction` and ``nnz / n`` of the topology
    (for the column blocks of "sparse").
    """

    kernel: str
    n: int
    device: torch.device
    dtype: torch.dtype
    shifts: tuple = ()
    matrix: torch.Tensor | None = None
    compute_dtype: torch.dtype | None = None
    row: torch.Tensor | None = None
    scattered: float = 0.0
    degree: float = 0.0


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
    """The :class:`MixPlan` of ``topology`` for tensors of ``dtype`` on ``device``, built once.

    ``kernel="auto"`` uses :func:`choose_kernel` (for node-local values of ``d`` elements,
    if given); naming one of :data:`KERNELS` forces it ("circulant" needs
    ``topology.shifts``).
    """
    if kernel == "auto":
        kernel = choose_kernel(topology, d)
    elif kernel not in KERNELS:
        raise ValueError(f"kernel must be 'auto' or one of {KERNELS}, got {kernel!r}.")
    device = torch.device(device)
    return topology.memo(("sim.mix", kernel, device, dtype),
                         lambda: _build_mix_plan(topology, device, dtype, kernel))


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
        W = np.asarray(topology.W)
        common = n > 1 and bool(np.all(W[:1] == W))
        return MixPlan(
            "dense", n, device, dtype, matrix=torch.tensor(W, dtype=dtype, device=device),
            compute_dtype=dtype,
            row=torch.tensor(W[0], dtype=dtype, device=device) if common else None,
        )
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
        return MixPlan("sparse", n, device, dtype, matrix=W, compute_dtype=compute,
                       scattered=scattered_fraction(topology), degree=topology.nnz / n)
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


# ---------------------------------------------------------------------------------- mixing
def mix(x: torch.Tensor, plan: MixPlan) -> torch.Tensor:
    """``W @ X`` for a node-local ``x`` of shape ``(n, *s)``: a new tensor of the same shape.

    ``x`` is never modified; the result does not share memory with it.
    """
    return mixer(plan, x.shape, x.dtype)(x)


def mixer(plan: MixPlan, shape, dtype: torch.dtype | None = None):
    """``mix(., plan)`` specialised for node-local tensors of ``shape`` and ``dtype`` (the
    plan's by default): a callable ``f(x) -> W @ X`` with every decision taken here once,
    for hot loops. ``f`` returns a new contiguous tensor and never modifies ``x``."""
    shape = torch.Size(shape)
    dtype = plan.dtype if dtype is None else dtype
    n = plan.n
    d = math.prod(shape[1:])
    if math.prod(shape) == 0:
        return lambda x: torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if plan.kernel == "circulant":
        return _circulant_mixer(plan.shifts)
    if plan.row is not None:
        return _common_row_mixer(plan.row, shape, d)
    if plan.compute_dtype != dtype:  # e.g. half on CPU: the product runs in float32
        return _converting_mixer(plan.matrix, plan.compute_dtype, shape, d)
    matrix = plan.matrix
    flat = (n, d)
    if plan.kernel == "sparse" and len(shape) >= 2 and _reduce_engine(plan, dtype, d):
        width = sparse_block_width(n, d, plan.device, scattered=plan.scattered,
                                   degree=plan.degree)
        if width < d:
            return lambda x: _mix_sparse_blocked(x, matrix, width)
        if len(shape) == 2:
            return lambda x: torch.sparse.mm(matrix, x, reduce="sum")
        return lambda x: torch.sparse.mm(matrix, x.reshape(flat), reduce="sum").view(shape)
    if len(shape) <= 2:
        return lambda x: matrix.matmul(x).contiguous()
    return lambda x: matrix.matmul(x.reshape(flat)).view(shape)


def _reduce_engine(plan: MixPlan, dtype: torch.dtype, d: int) -> bool:
    """Whether the sparse product goes through ``torch.sparse.mm(..., reduce="sum")``."""
    return (plan.device.type == "cpu" and dtype in (torch.float32, torch.float64)
            and d >= SPARSE_REDUCE_MIN_D)


def _circulant_mixer(shifts):
    def f(x):
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        mix_circulant(x, out, shifts)
        return out

    return f


def _common_row_mixer(row: torch.Tensor, shape: torch.Size, d: int):
    """``W = 1 c^T``: every node gets ``c^T X`` (one reduction over the nodes, one broadcast
    write); ``c^T X`` is ``w * sum_j x_j`` when every ``c_j = w`` (the complete graph)."""
    n = shape[0]
    uniform = bool(torch.all(row == row[0]))
    w = float(row[0])

    def f(x):
        X = x.reshape(n, d)
        mean = X.sum(0).mul_(w) if uniform else torch.mv(X.t(), row)  # reads X once
        return mean.expand(n, d).clone(memory_format=torch.contiguous_format).view(shape)

    return f


def _converting_mixer(matrix, compute: torch.dtype, shape: torch.Size, d: int):
    flat = shape if len(shape) <= 2 else (shape[0], d)

    def f(x):
        return (matrix @ x.reshape(flat).to(compute)).to(x.dtype).view(shape)

    return f


def _mix_sparse_blocked(x: torch.Tensor, matrix: torch.Tensor, width: int) -> torch.Tensor:
    """``W @ X`` for ``x`` of shape ``(n, *s)`` seen as ``X`` of shape ``(n, d)``, one
    column block at a time: ``out[:, c:c+b] = W @ X[:, c:c+b]`` for ``c = 0, b, 2b, ...``
    (the last block narrower), so the rows of ``X[:, c:c+b]`` stay in cache while every
    output row that reads them is formed."""
    n = x.shape[0]
    X = x.reshape(n, -1)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    O = out.view(n, -1)
    d = X.shape[1]
    for c in range(0, d, width):
        b = min(width, d - c)
        O.narrow(1, c, b).copy_(torch.sparse.mm(matrix, X.narrow(1, c, b), reduce="sum"))
    return out
