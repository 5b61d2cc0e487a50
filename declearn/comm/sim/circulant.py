r"""The circulant mixing kernel: ``out = W @ X`` for ``W[i, (i - s) mod n] = w_s``.

With ``x`` of shape ``(n, *s)`` and the shifts ``s -> w_s`` of ``topology.shifts`` (each
``s`` in ``[0, n)``, each ``w_s > 0``), row i of the result is

    out[i] = sum_s w_s x[(i - s) mod n].

It is built as a running weighted average, one shift at a time, with ``T_k = w_1 + ... + w_k``:

    a_1 = x[i - s_1],    a_k = lerp(a_{k-1}, x[i - s_k], w_k / T_k)
        = a_{k-1} + (w_k / T_k) (x[i - s_k] - a_{k-1}) = (1 / T_k) sum_{j <= k} w_j x[i - s_j],

so ``out = T_S a_S`` (``T_S = 1`` up to rounding for a stochastic W: no final pass). The
first two shifts take one pass together (``torch.lerp`` reads both, writes ``out``); each
further shift one in-place pass (``lerp_``). For two shifts (one-peer graphs) that is a
single read of each shifted copy and a single write: about the traffic of a copy. Rows are
cut where a shift wraps around (``i - s < 0``), so that every call works on contiguous row
ranges of ``x`` (no ``torch.roll``, which copies). Weights must be positive (a topology's
are, see :func:`declearn.topology.csr.check_values`); :func:`mix_circulant` checks it.
"""

from __future__ import annotations

from itertools import pairwise

import torch

__all__ = ["mix_circulant"]

#: Weights summing to 1 within this (the rounding of the sum itself) skip the final scaling.
_UNIT_SUM_TOL = 1e-14


def _segments(n: int, *shifts: int) -> list[tuple[int, int]]:
    """Row ranges ``[a, b)`` of ``[0, n)`` over which ``(i - s) mod n`` is contiguous for
    every given shift ``s``: the cuts are at 0, each s, and n."""
    cuts = sorted({0, n, *shifts})
    return list(pairwise(cuts))


def _rows(x: torch.Tensor, a: int, b: int, s: int) -> torch.Tensor:
    """``x[(i - s) mod n]`` for ``i`` in ``[a, b)``, a range that does not wrap (a view)."""
    n = x.shape[0]
    return x.narrow(0, (a - s) % n, b - a)


def mix_circulant(x: torch.Tensor, out: torch.Tensor, shifts) -> None:
    """``out = sum_s w_s roll(x, s, dim=0)`` for ``shifts``, a sequence of ``(s, w_s)`` pairs
    with ``0 <= s < n`` distinct and ``w_s > 0``; ``out`` is written, ``x`` only read."""
    n = x.shape[0]
    shifts = tuple(shifts)
    if any(not 0 <= s < n for s, _ in shifts) or any(not w > 0 for _, w in shifts):
        raise ValueError(
            f"mix_circulant takes shifts s in [0, {n}) with positive weights, got "
            f"{shifts!r}; build the topology with Topology.from_circulant, which reduces them."
        )
    if not shifts:  # W = 0
        out.zero_()
        return
    (s1, w1), rest = shifts[0], shifts[1:]
    if not rest:
        for a, b in _segments(n, s1):
            torch.mul(_rows(x, a, b, s1), w1, out=out.narrow(0, a, b - a))
        return
    (s2, w2), rest = rest[0], rest[1:]
    total = w1 + w2
    for a, b in _segments(n, s1, s2):
        torch.lerp(_rows(x, a, b, s1), _rows(x, a, b, s2), w2 / total,
                   out=out.narrow(0, a, b - a))
    for s, w in rest:
        total += w
        for a, b in _segments(n, s):
            out.narrow(0, a, b - a).lerp_(_rows(x, a, b, s), w / total)
    if abs(total - 1.0) > _UNIT_SUM_TOL:  # else the pass would change a few ulps at most
        out.mul_(total)
