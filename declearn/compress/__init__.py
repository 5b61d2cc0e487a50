r"""Compression operators for communication-efficient gossip, with their quality omega.

A compressor ``Q`` sends one node's vector as a short message (the bytes that really travel)
and has a quality ``omega`` in the sense of Koloskova, Stich & Jaggi (ICML 2019):
``E||Q(x) - x||^2 <= (1 - omega) ||x||^2`` (see :mod:`declearn.compress.base`).

================================  =========================  ========  ==================
compressor                        omega(d)                   unbiased  bytes (float64)
================================  =========================  ========  ==================
``Identity()``                    1                          yes       8 d
``TopK(k)`` / ``TopK(ratio=r)``   k / d                      no        k (8 + index)
``RandK(k)``                      k / d                      no        k (8 + index)
``RandK(k, unbiased=True)``       2 - d / k                  yes       k (8 + index)
``Sign()``                        1 / d (worst case)         no        8 + ceil(d / 8)
``QSGD(s)``                       1 / tau                    no        8 + ceil(d b / 8)
``QSGD(s, unbiased=True)``        2 - tau                    yes       8 + ceil(d b / 8)
================================  =========================  ========  ==================

with ``tau = 1 + min(d / s^2, sqrt(d) / s)``, ``b = ceil(log2(s + 1)) + 1`` bits per
coordinate and index the bytes of the smallest integer type holding ``d - 1``. Every
compressor works on ``(d,)`` (an MPI rank's vector) and on ``(n, d)`` (every node of the
simulator at once); random ones draw from ``(seed, node, step)`` (:mod:`declearn.compress.rng`)
so both backends draw the same. The message layout helpers are in
:mod:`declearn.compress.message`.
"""

from declearn.compress.base import Compressor, Identity, check_dim
from declearn.compress.quantize import QSGD, Sign
from declearn.compress.sparsify import RandK, TopK

__all__ = ["Compressor", "Identity", "TopK", "RandK", "Sign", "QSGD", "check_dim"]
