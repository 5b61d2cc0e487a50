r"""Random numbers that every backend draws alike: a counter-based generator in torch.

A random compressor on node ``i`` at iteration ``k`` needs the same draws whether node i is
row i of a SimComm tensor (all nodes at once, no loop over nodes) or an MPI rank on its own.
A stateful ``torch.Generator`` per node cannot be vectorised over nodes, so the draws here are
a pure function of ``(seed, node, step, j)``, computed with int64 tensor arithmetic:

* the stream key ``h = mix(mix(mix(seed + G) + node) + step)`` (one per node and step);
* the j-th draw, ``j = 0 .. d-1``, is ``z_j = mix(h + (j + 1) G)`` (SplitMix64's sequence
  started at ``h``), and ``u_j = floor(z_j / 2^11) 2^-53``, uniform on ``[0, 1)``;

with ``G = 0x9E3779B97F4A7C15`` and ``mix`` SplitMix64's finaliser (Steele, Lea, Flood 2014):
``z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB;
z ^= z >> 31``, all modulo 2^64 with logical shifts. torch's int64 multiply wraps modulo 2^64
and its right shift is arithmetic, so :func:`_shr` masks the sign bits off.
"""

from __future__ import annotations

import numbers

import torch

__all__ = ["uniform", "random_bits", "stream_keys", "check_seed"]

_TWO64 = 1 << 64


def _signed(c: int) -> int:
    """The int64 with the same 64 bits as the unsigned constant ``c``."""
    return c - _TWO64 if c >= 1 << 63 else c


GOLDEN = _signed(0x9E3779B97F4A7C15)
_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)


def _shr(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's shift copies the sign bit in): a new tensor."""
    return torch.bitwise_right_shift(z, s).bitwise_and_((1 << (64 - s)) - 1)


def _mix_(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser, in place on the (new) int64 tensor ``z``."""
    z.bitwise_xor_(_shr(z, 30)).mul_(_M1)
    z.bitwise_xor_(_shr(z, 27)).mul_(_M2)
    return z.bitwise_xor_(_shr(z, 31))


def check_seed(seed, what: str = "seed") -> int:
    """``seed`` as a non-negative int below 2^63, or a ValueError."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) \
            or not 0 <= int(seed) < 1 << 63:
        raise ValueError(f"{what} must be an integer in 0 .. 2^63 - 1, got {seed!r}.")
    return int(seed)


def stream_keys(seed: int, nodes, step: int, device=None) -> torch.Tensor:
    """The int64 stream key ``h`` of each node in ``nodes`` (an int or an int tensor) at
    ``step``: shape ``nodes.shape``."""
    nodes = torch.as_tensor(nodes, dtype=torch.int64, device=device)
    z = _mix_(torch.full_like(nodes, _signed((check_seed(seed) + GOLDEN) % _TWO64)))
    z = _mix_(z.add_(nodes))
    return _mix_(z.add_(check_seed(step, "step")))


def random_bits(seed: int, nodes, step: int, d: int, device=None) -> torch.Tensor:
    """The int64 words ``z_j`` (64 random bits each) of shape ``nodes.shape + (d,)``."""
    h = stream_keys(seed, nodes, step, device).unsqueeze(-1)
    j = torch.arange(1, d + 1, dtype=torch.int64, device=h.device).mul_(GOLDEN)
    return _mix_(torch.add(h, j))


def uniform(seed: int, nodes, step: int, d: int, device=None) -> torch.Tensor:
    """float64 draws on ``[0, 1)`` of shape ``nodes.shape + (d,)``: row ``nodes[i]`` holds the
    d draws of that node at ``step`` (the same on every backend; see the module docstring)."""
    z = random_bits(seed, nodes, step, d, device)
    return _shr(z, 11).to(torch.float64).mul_(2.0 ** -53)
