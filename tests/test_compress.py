"""Compressors (declearn.compress): the messages, the draws and the omega of each.

Oracles: a pure-Python SplitMix64 for the counter-based draws; numpy re-implementations of
top-k, scaled sign, QSGD and rand-k from their definitions; closed forms of the bytes; and,
over many draws, the compression assumption ``E||Q(x) - x||^2 <= (1 - omega) ||x||^2`` (and
``E Q(x) = x`` for the unbiased ones) within a stated statistical tolerance.

Statistical tolerance. For N independent draws of ``Y = ||Q(x) - x||^2 / ||x||^2`` the sample
mean has standard error ``SE = sd(Y) / sqrt(N)``; a mean above ``bound + 4 SE`` would happen
with probability < 4e-5 (one-sided normal tail) if the bound held. Unbiasedness is checked per
coordinate at 5 SE (< 6e-7 each, < 1e-4 over the d = 60 coordinates). The draws are seeded,
so the tests are deterministic; the tolerance says why they are not loose.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from declearn.compress import QSGD, Compressor, Identity, RandK, Sign, TopK
from declearn.compress.message import (
    bytes_to_values,
    index_dtype,
    join,
    pack_bits,
    split,
    unpack_bits,
    values_to_bytes,
)
from declearn.compress.rng import uniform

M64 = 1 << 64
G = 0x9E3779B97F4A7C15


def _mix_py(z: int) -> int:
    z ^= z >> 30
    z = z * 0xBF58476D1CE4E5B9 % M64
    z ^= z >> 27
    z = z * 0x94D049BB133111EB % M64
    return z ^ (z >> 31)


def _uniform_py(seed: int, node: int, step: int, d: int) -> list[float]:
    h = _mix_py((_mix_py((_mix_py((seed + G) % M64) + node) % M64) + step) % M64)
    return [(_mix_py((h + (j + 1) * G) % M64) >> 11) / 2.0 ** 53 for j in range(d)]


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


ALL = [Identity(), TopK(3), TopK(ratio=0.1), RandK(4), RandK(4, unbiased=True), Sign(),
       QSGD(1), QSGD(4), QSGD(15, unbiased=True), QSGD(300)]


# ----------------------------------------------------------------- draws and messages
def test_draws_are_splitmix64_keyed_by_seed_node_step():
    for seed, node, step in [(0, 0, 0), (7, 3, 11), (2 ** 40 + 5, 1000, 2 ** 33)]:
        got = uniform(seed, node, step, 6).tolist()
        assert got == _uniform_py(seed, node, step, 6)
    rows = uniform(5, torch.arange(4), 9, 7)
    for i in range(4):
        assert torch.equal(rows[i], uniform(5, i, 9, 7))
    u = uniform(1, torch.arange(50), 2, 400)
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    assert abs(float(u.mean()) - 0.5) < 4 * math.sqrt(1 / 12 / u.numel())
    with pytest.raises(ValueError, match="seed must be an integer"):
        uniform(-1, 0, 0, 3)


@pytest.mark.parametrize("bits", [1, 2, 3, 5, 8, 9])
def test_bit_packing_round_trips_and_takes_ceil_m_bits_over_8_bytes(bits):
    gen = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 2 ** bits, (3, 37), generator=gen)
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8 and packed.shape == (3, math.ceil(37 * bits / 8))
    assert torch.equal(unpack_bits(packed, bits, 37).to(torch.int64), codes)
    assert torch.equal(pack_bits(codes[1], bits), packed[1])  # one node alone: same bytes
    # the documented layout: bit planes (most significant first), bit t of the string is
    # bit 7 - t // B of byte t % B
    nbytes = packed.shape[-1]
    string = np.zeros((3, 8 * nbytes), dtype=np.uint8)
    for p, s in enumerate(range(bits - 1, -1, -1)):
        string[:, p * 37:(p + 1) * 37] = (codes.numpy() >> s) & 1
    ref = np.zeros((3, nbytes), dtype=np.uint8)
    for t in range(8 * nbytes):
        ref[:, t % nbytes] |= string[:, t] << (7 - t // nbytes)
    assert np.array_equal(packed.numpy(), ref)


def test_values_and_segments_round_trip():
    x, idx = _x(4, 5), torch.tensor([[1, 300, 7]] * 4, dtype=torch.int16)
    message = join(values_to_bytes(x), values_to_bytes(idx))
    assert message.shape == (4, 5 * 8 + 3 * 2)
    a, b = split(message, (40, 6))
    assert torch.equal(bytes_to_values(a, torch.float64), x)
    assert torch.equal(bytes_to_values(b, torch.int16), idx)
    assert [index_dtype(d) for d in (2, 256, 257, 2 ** 15, 2 ** 15 + 1)] == \
        [torch.uint8, torch.uint8, torch.int16, torch.int16, torch.int32]
    with pytest.raises(ValueError, match="segments take 45 bytes"):
        split(message, (40, 5))


@pytest.mark.parametrize("comp", ALL, ids=repr)
def test_message_is_bytes_d_long_and_nodes_alone_give_the_same(comp):
    x = _x(5, 60, seed=1)
    message = comp.compress(x, step=3)
    assert message.dtype == torch.uint8 and message.shape == (5, comp.bytes(60))
    q = comp.decompress(message, x.shape)
    for i in range(5):  # an MPI rank compresses its own vector, node index i
        assert torch.equal(comp.compress(x[i], nodes=i, step=3), message[i])
        assert torch.equal(comp(x[i], nodes=i, step=3), q[i])
    zero = comp.decompress(torch.zeros_like(message), x.shape)  # a padded gather slot
    assert torch.equal(zero, torch.zeros_like(x))


def test_bytes_have_their_closed_forms():
    d = 1000
    assert Identity().bytes(d) == 8 * d and Identity().bytes(d, torch.float32) == 4 * d
    assert TopK(10).bytes(d) == 10 * (8 + 2)           # int16 indices for d <= 2^15
    assert TopK(ratio=0.01).bytes(200) == 2 * (8 + 1)  # k = 2, uint8 indices
    assert RandK(10).bytes(d) == TopK(10).bytes(d)
    assert Sign().bytes(d) == 8 + 125
    assert QSGD(4).bytes(d) == 8 + math.ceil(d * (3 + 1) / 8)
    assert QSGD(255).bytes(d) == 8 + math.ceil(d * 9 / 8)
    assert Sign().compression_ratio(d) == pytest.approx(8 * d / 133)


# ----------------------------------------------------------------- against numpy definitions
def test_top_k_keeps_the_k_largest_magnitudes_and_k_equal_d_is_the_identity():
    x = _x(6, 40, seed=2)
    q = TopK(7)(x).numpy()
    xs = x.numpy()
    keep = np.argsort(-np.abs(xs), axis=1)[:, :7]
    ref = np.zeros_like(xs)
    np.put_along_axis(ref, keep, np.take_along_axis(xs, keep, 1), 1)
    assert np.array_equal(q, ref)
    assert torch.equal(TopK(40)(x), x)
    assert torch.equal(TopK(ratio=1.0)(x[0]), x[0])
    assert torch.equal(RandK(40)(x), x)


def test_sign_is_the_scaled_sign_with_its_exact_error():
    x = _x(3, 50, seed=3)
    x[0, 4] = 0.0
    xs = x.numpy()
    ref = np.abs(xs).sum(1, keepdims=True) / 50 * np.where(xs >= 0, 1.0, -1.0)
    q = Sign()(x)
    assert np.allclose(q.numpy(), ref, rtol=1e-15, atol=0)
    err = ((q - x) ** 2).sum(-1)
    exact = (x ** 2).sum(-1) - x.abs().sum(-1) ** 2 / 50  # ||x||^2 - ||x||_1^2 / d
    assert torch.allclose(err, exact, rtol=1e-12)
    assert torch.allclose(err, (1 - Sign.omega_of(x)) * (x ** 2).sum(-1), rtol=1e-12)


@pytest.mark.parametrize("s,unbiased", [(1, False), (4, False), (4, True), (100, True)])
def test_qsgd_rounds_levels_with_the_seeded_draws(s, unbiased):
    comp, d = QSGD(s, unbiased=unbiased, seed=9), 30
    x = _x(4, d, seed=4)
    q = comp(x, step=5).numpy()
    xs, u = x.numpy(), uniform(9, torch.arange(4), 5, d).numpy()
    norm = np.linalg.norm(xs, axis=1, keepdims=True)
    level = np.floor(s * np.abs(xs) / norm + u)
    tau = 1 + min(d / s ** 2, math.sqrt(d) / s)
    ref = np.sign(xs) * norm * level / s / (1.0 if unbiased else tau)
    assert np.allclose(q, ref, rtol=1e-13, atol=1e-15)
    assert level.min() >= 0 and level.max() <= s


def test_rand_k_keeps_k_distinct_seeded_coordinates():
    x = _x(5, 40, seed=5)
    q = RandK(6, seed=2)(x, step=8).numpy()
    keys = uniform(2, torch.arange(5), 8, 40).numpy()
    keep = np.argsort(-keys, axis=1)[:, :6]
    ref = np.zeros_like(q)
    np.put_along_axis(ref, keep, np.take_along_axis(x.numpy(), keep, 1), 1)
    assert np.array_equal(q, ref)
    scaled = RandK(6, unbiased=True, seed=2)(x, step=8).numpy()
    assert np.allclose(scaled, ref * 40 / 6, rtol=1e-15)
    other = RandK(6, seed=2)(x, step=9).numpy()
    assert not np.array_equal(other != 0, q != 0)  # a new draw at the next step


# ----------------------------------------------------------------- omega, over many draws
def _errors(comp, x, draws):
    """``Q(x)`` and ``||Q(x) - x||^2 / ||x||^2`` for ``draws`` independent draws at once (the
    streams of nodes ``0 .. draws-1``)."""
    q = comp(x.expand(draws, -1).contiguous(), nodes=torch.arange(draws), step=0)
    return q, ((q - x) ** 2).sum(-1) / (x ** 2).sum()


@pytest.mark.parametrize("comp", ALL, ids=repr)
def test_compression_assumption_holds_with_the_stated_omega(comp):
    d, draws = 60, 1500
    for x in (_x(d, seed=6), _x(d, seed=7) ** 3, torch.eye(d, dtype=torch.float64)[3]):
        q, y = _errors(comp, x, draws if comp.random else 1)
        se = float(y.std()) / math.sqrt(len(y)) if comp.random else 0.0
        assert float(y.mean()) <= 1 - comp.omega(d) + 4 * se + 1e-12, (comp, float(y.mean()))
        if comp.unbiased and comp.random:
            se = _coordinate_sd(comp, x) / math.sqrt(draws)
            assert bool(((q.mean(0) - x).abs() <= 5 * se + 1e-12).all()), comp


def _coordinate_sd(comp, x):
    """The standard deviation of each ``Q(x)_j`` of an unbiased compressor, from its
    definition (the sample's own would be 0 for a coordinate never rounded up)."""
    if isinstance(comp, RandK):  # x_j d/k with probability k/d, else 0
        d, k = x.numel(), comp.k(x.numel())
        return x.abs() * math.sqrt(d / k - 1)
    norm = float(torch.linalg.vector_norm(x))  # QSGD: (||x||/s) (floor(a) + Bernoulli(frac a))
    a = comp.s * x.abs() / norm
    p = a - torch.floor(a)
    return norm / comp.s * torch.sqrt(p * (1 - p))


def test_the_omegas_are_tight_where_the_theory_says_so():
    d, draws = 60, 1500
    flat = torch.ones(d, dtype=torch.float64)  # every |x_j| equal: top-k loses exactly 1 - k/d
    _, y = _errors(TopK(6), flat, 1)
    assert float(y) == pytest.approx(1 - 6 / d, rel=1e-12)
    one_hot = torch.eye(d, dtype=torch.float64)[0]  # the sign's worst case: omega = 1/d
    _, y = _errors(Sign(), one_hot, 1)
    assert float(y) == pytest.approx(1 - 1 / d, rel=1e-12)
    x = _x(d, seed=8)
    for comp, expected in [(RandK(6), 1 - 6 / d), (RandK(6, unbiased=True), d / 6 - 1)]:
        _, y = _errors(comp, x, draws)  # E||Q(x) - x||^2 = expected ||x||^2, exactly
        se = float(y.std()) / math.sqrt(draws)
        assert abs(float(y.mean()) - expected) <= 4 * se, (comp, float(y.mean()), expected)
    assert RandK(6, unbiased=True).omega(d) == pytest.approx(2 - d / 6)
    assert QSGD(4).omega(d) == pytest.approx(1 / (1 + min(d / 16, math.sqrt(d) / 4)))


def test_contractive_versions_are_the_papers_rescalings():
    assert repr(RandK(5, unbiased=True, seed=3).contractive()) == "RandK(k=5, seed=3)"
    assert repr(QSGD(8, unbiased=True).contractive()) == "QSGD(s=8)"
    top = TopK(2)
    assert top.contractive() is top
    x = _x(3, 50, seed=9)
    assert torch.allclose(QSGD(8, unbiased=True)(x, step=2) / QSGD(8).tau(50), QSGD(8)(x, step=2),
                          rtol=1e-14)


# ----------------------------------------------------------------- bad input
def test_bad_parameters_say_what_to_pass():
    with pytest.raises(ValueError, match="k must be a positive integer"):
        TopK(0)
    with pytest.raises(ValueError, match="exactly one of k"):
        TopK(2, ratio=0.1)
    with pytest.raises(ValueError, match=r"ratio must be in \(0, 1\]"):
        RandK(ratio=1.5)
    with pytest.raises(ValueError, match=r"k=5 coordinates but a node's vector has only d=3: "
                                         r"use k in 1..3"):
        TopK(5).compress(_x(3))
    with pytest.raises(ValueError, match="s, the number of quantisation levels, must be"):
        QSGD(0)
    with pytest.raises(TypeError, match="floating point tensor"):
        Sign().compress(torch.arange(4))
    with pytest.raises(ValueError, match=r"expects uint8 messages of shape \(2, 11\)"):
        Sign().decompress(torch.zeros(2, 10, dtype=torch.uint8), (2, 20))


class _WrongMessage(Compressor):
    name = "wrong"

    def omega(self, d):
        return 1.0

    def bytes(self, d, dtype=torch.float64):
        return 8 * d

    def _encode(self, x, nodes, step):
        return values_to_bytes(x[..., :-1])  # one value short

    def _decode(self, message, d, dtype):
        return bytes_to_values(message, dtype)[..., :-1]


def test_a_user_compressor_with_wrong_shapes_is_refused_clearly():
    comp = _WrongMessage()
    with pytest.raises(ValueError, match=r"_encode must return the message as a uint8 tensor "
                                         r"of shape \(4, 40\)"):
        comp.compress(_x(4, 5))
    with pytest.raises(ValueError, match=r"_decode must return Q\(x\) as a torch.float64 tensor "
                                         r"of shape \(4, 5\)"):
        comp.decompress(torch.zeros(4, 40, dtype=torch.uint8), (4, 5))
