"""Every hearth.kernels.cpu op against its float64 oracle, on every SIMD level."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
from tolerances import assert_close

from hearth.kernels import cpu
from hearth.kernels import reference as ref

BF16 = ml_dtypes.bfloat16


def poison(shape) -> np.ndarray:
    return np.full(shape, np.nan, dtype=np.float32)


def randn(rng, *shape, scale=1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# ---------------------------------------------------------------- linear


@pytest.mark.parametrize("wdtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("k", [1, 7, 33, 257, 4097])
@pytest.mark.parametrize("m", [1, 3, 17, 64])
def test_linear(simd, rng, m, k, wdtype):
    n = 131 if k < 257 else 37
    x = randn(rng, m, k)
    w = randn(rng, n, k).astype(BF16 if wdtype == "bfloat16" else np.float32)
    bias = randn(rng, n) if m % 2 else None
    out = cpu.linear(x, w, bias, out=poison((m, n)))
    assert_close(out, ref.linear(x, w, bias), wdtype, reduce_len=k)


@pytest.mark.parametrize("wdtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("m", [2, 4, 5, 6, 7, 8, 9])
def test_linear_small_batches(simd, rng, m, wdtype):
    k, n = 300, 67  # odd N: exercises every dot-tile width and the N tail
    x = randn(rng, m, k)
    w = randn(rng, n, k).astype(BF16 if wdtype == "bfloat16" else np.float32)
    bias = randn(rng, n)
    assert_close(
        cpu.linear(x, w, bias, out=poison((m, n))),
        ref.linear(x, w, bias),
        wdtype,
        reduce_len=k,
    )


@pytest.mark.parametrize("m", [1, 40])
def test_linear_threaded_shapes(simd, rng, m):
    k, n = 896, 1203  # enough work for every thread; N not a multiple of tiles
    x = randn(rng, m, k)
    w = randn(rng, n, k).astype(BF16)
    assert_close(cpu.linear(x, w), ref.linear(x, w), "bfloat16", reduce_len=k)


def test_linear_random_shapes(simd, rng):
    for _ in range(12):
        m, k, n = rng.integers(1, 70), rng.integers(1, 600), rng.integers(1, 300)
        wdtype = rng.choice(["float32", "bfloat16"])
        x = randn(rng, m, k)
        w = randn(rng, n, k).astype(BF16 if wdtype == "bfloat16" else np.float32)
        out = cpu.linear(x, w, out=poison((m, n)))
        assert_close(
            out, ref.linear(x, w), wdtype, reduce_len=k, msg=f"M={m} K={k} N={n}"
        )


def test_linear_zero_sizes(rng):
    x = randn(rng, 0, 5)
    assert cpu.linear(x, randn(rng, 3, 5)).shape == (0, 3)
    out = cpu.linear(randn(rng, 2, 0), randn(rng, 3, 0), bias=np.ones(3, np.float32))
    np.testing.assert_array_equal(out, np.ones((2, 3), np.float32))


def test_linear_errors(rng):
    x, w = randn(rng, 2, 8), randn(rng, 4, 8)
    with pytest.raises(ValueError, match="dtype"):
        cpu.linear(x.astype(np.float64), w)
    with pytest.raises(ValueError, match="dtype"):
        cpu.linear(x, w.astype(np.float16))
    with pytest.raises(ValueError, match="shape"):
        cpu.linear(x, randn(rng, 4, 9))
    with pytest.raises(ValueError, match="shape"):
        cpu.linear(x, w, bias=randn(rng, 5))
    with pytest.raises(ValueError, match="shape"):
        cpu.linear(x, w, out=poison((2, 5)))
    with pytest.raises(ValueError, match="contiguous"):
        cpu.linear(randn(rng, 8, 2).T, w)
    with pytest.raises(ValueError, match="contiguous"):
        cpu.linear(x, randn(rng, 8, 8)[:, ::2].copy().T.copy()[::2])
    with pytest.raises(ValueError, match="ndarray"):
        cpu.linear(x.tolist(), w)
    with pytest.raises(ValueError, match="overlap"):
        sq = randn(rng, 8, 8)
        cpu.linear(sq, sq, out=sq)


def test_binding_validates_too(rng):
    """The C++ layer rejects bad input on its own (ValueError via pybind11)."""
    with pytest.raises(ValueError, match="dtype"):
        cpu._C.linear(
            randn(rng, 2, 8).astype(np.float64), randn(rng, 4, 8), None, poison((2, 4))
        )
    with pytest.raises(ValueError, match="contiguous"):
        cpu._C.linear(randn(rng, 8, 2).T, randn(rng, 4, 8), None, poison((2, 4)))
    with pytest.raises(ValueError, match="shape"):
        cpu._C.softmax(randn(rng, 2, 8), poison((2, 7)))


# ---------------------------------------------------------------- norms


@pytest.mark.parametrize("m,d", [(1, 1), (1, 896), (5, 7), (3, 4097), (64, 128)])
def test_rms_norm(simd, rng, m, d):
    x, w = randn(rng, m, d, scale=3.0), randn(rng, d)
    out = cpu.rms_norm(x, w, 1e-6, out=poison((m, d)))
    assert_close(out, ref.rms_norm(x, w, 1e-6))


@pytest.mark.parametrize("alias", [False, True])
@pytest.mark.parametrize("m,d", [(1, 896), (5, 7), (33, 1000)])
def test_add_rms_norm(simd, rng, m, d, alias):
    x, res, w = randn(rng, m, d), randn(rng, m, d, scale=2.0), randn(rng, d)
    want_out, want_res = ref.add_rms_norm(x, res, w, 1e-5)
    out = cpu.add_rms_norm(x, res, w, 1e-5, out=x if alias else poison((m, d)))
    assert_close(out, want_out)
    assert_close(res, want_res)
    if alias:
        assert out is x


def test_norm_errors(rng):
    x, w = randn(rng, 2, 8), randn(rng, 8)
    with pytest.raises(ValueError, match="shape"):
        cpu.rms_norm(x, randn(rng, 7), 1e-6)
    with pytest.raises(ValueError, match="dtype"):
        cpu.rms_norm(x.astype(np.float16), w, 1e-6)
    with pytest.raises(ValueError, match="contiguous"):
        cpu.rms_norm(randn(rng, 2, 16)[:, ::2], w, 1e-6)
    with pytest.raises(ValueError, match="shape"):
        cpu.add_rms_norm(x, randn(rng, 3, 8), w, 1e-6)
    with pytest.raises(ValueError, match="dtype"):
        cpu.add_rms_norm(x, randn(rng, 2, 8).astype(np.float64), w, 1e-6)


# ---------------------------------------------------------------- rope


def rope_tables(max_pos: int, d: int, theta: float = 10000.0):
    inv_freq = 1.0 / theta ** (np.arange(0, d, 2) / d)
    ang = np.outer(np.arange(max_pos), inv_freq)
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


@pytest.mark.parametrize("d", [6, 64, 80, 96, 128])
@pytest.mark.parametrize("t,h", [(1, 1), (9, 3), (40, 14)])
def test_rope(simd, rng, t, h, d):
    cos, sin = rope_tables(512, d)
    x = randn(rng, t, h, d)
    pos = rng.integers(0, 512, t).astype(np.int64)
    want = ref.rope(x, pos, cos, sin)
    assert cpu.rope(x, pos, cos, sin) is None
    assert_close(x, want)


def test_rope_errors(rng):
    cos, sin = rope_tables(16, 8)
    x = randn(rng, 3, 2, 8)
    before = x.copy()
    for bad in ([0, 16, 1], [0, -1, 2]):
        with pytest.raises(ValueError, match="position"):
            cpu.rope(x, np.array(bad, np.int64), cos, sin)
        with pytest.raises(ValueError, match="position"):
            cpu._C.rope(x, np.array(bad, np.int64), cos, sin)
    np.testing.assert_array_equal(x, before)  # nothing written
    pos = np.zeros(3, np.int64)
    with pytest.raises(ValueError, match="dtype"):
        cpu.rope(x, pos.astype(np.int32), cos, sin)
    with pytest.raises(ValueError, match="even"):
        cpu.rope(randn(rng, 3, 2, 7), pos, cos, sin)
    with pytest.raises(ValueError, match="shape"):
        cpu.rope(x, pos, *rope_tables(16, 10))
    with pytest.raises(ValueError, match="shape"):
        cpu.rope(x, np.zeros(2, np.int64), cos, sin)
    with pytest.raises(ValueError, match="contiguous"):
        cpu.rope(randn(rng, 3, 4, 8)[:, ::2], pos, cos, sin)


# ---------------------------------------------------------------- activations


@pytest.mark.parametrize("m,i", [(1, 1), (3, 4864), (17, 33)])
def test_silu_and_mul(simd, rng, m, i):
    gate, up = randn(rng, m, i, scale=6.0), randn(rng, m, i)
    gate.flat[::7] = rng.choice([-100.0, -30.0, 30.0, 90.0], gate.flat[::7].shape)
    out = cpu.silu_and_mul(gate, up, out=poison((m, i)))
    assert_close(out, ref.silu_and_mul(gate, up))


@pytest.mark.parametrize("m,n", [(1, 1), (4, 7), (3, 5003), (65, 128)])
def test_softmax(simd, rng, m, n):
    x = randn(rng, m, n, scale=10.0)
    x[0, ::3] += 1000.0  # large values must not overflow
    x[-1, 1::2] = -np.inf  # masked entries get exactly 0
    out = cpu.softmax(x, out=poison((m, n)))
    assert_close(out, ref.softmax(x))
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=1e-5)


def test_activation_errors(rng):
    g = randn(rng, 2, 8)
    with pytest.raises(ValueError, match="shape"):
        cpu.silu_and_mul(g, randn(rng, 2, 9))
    with pytest.raises(ValueError, match="dtype"):
        cpu.silu_and_mul(g, g.astype(np.float64))
    with pytest.raises(ValueError, match="contiguous"):
        cpu.softmax(randn(rng, 8, 2).T)
    with pytest.raises(ValueError, match="shape"):
        cpu.softmax(g, out=poison((2, 9)))
    with pytest.raises(ValueError, match="writable"):
        o = poison((2, 8))
        o.flags.writeable = False
        cpu.softmax(g, out=o)


# ---------------------------------------------------------------- KV cache


@pytest.mark.parametrize("block_size", [1, 16])
def test_reshape_and_cache(rng, block_size):
    num_blocks, hk, d, t = 20, 2, 80, 12
    k, v = randn(rng, t, hk, d), randn(rng, t, hk, d)
    k_cache = randn(rng, num_blocks, block_size, hk, d)
    v_cache = randn(rng, num_blocks, block_size, hk, d)
    slots = rng.permutation(num_blocks * block_size)[:t].astype(np.int64)
    slots[[2, 7]] = -1  # padding
    want_k, want_v = ref.reshape_and_cache(k, v, k_cache, v_cache, slots)
    cpu.reshape_and_cache(k, v, k_cache, v_cache, slots)
    np.testing.assert_array_equal(k_cache, want_k)
    np.testing.assert_array_equal(v_cache, want_v)


def test_reshape_and_cache_errors(rng):
    k = randn(rng, 3, 2, 4)
    kc, vc = randn(rng, 2, 4, 2, 4), randn(rng, 2, 4, 2, 4)
    before = kc.copy()
    for fn in (cpu.reshape_and_cache, cpu._C.reshape_and_cache):
        with pytest.raises(ValueError, match="slot"):
            fn(k, k, kc, vc, np.array([0, 8, 1], np.int64))
    np.testing.assert_array_equal(kc, before)
    with pytest.raises(ValueError, match="dtype"):
        cpu.reshape_and_cache(k, k, kc, vc, np.array([0, 1, 2], np.int32))
    with pytest.raises(ValueError, match="shape"):
        cpu.reshape_and_cache(k, k, randn(rng, 2, 4, 3, 4), vc, np.arange(3))
    with pytest.raises(ValueError, match="shape"):
        cpu.reshape_and_cache(k, randn(rng, 3, 2, 5), kc, vc, np.arange(3))
    with pytest.raises(ValueError, match="contiguous"):
        cpu.reshape_and_cache(k, k, randn(rng, 2, 4, 2, 8)[..., ::2], vc, np.arange(3))


# ---------------------------------------------------------------- attention

# (seq_len, q_len): prefill, decode, chunked prefill with prior context,
# a sequence scheduled for no tokens this step, a single-token prompt.
MIXED_BATCH = [(23, 23), (41, 1), (37, 10), (20, 0), (1, 1), (70, 1)]


def make_paged_batch(rng, seqs, hk, group, d, block_size, spare_blocks=3):
    need = [-(-s // block_size) for s, _ in seqs]
    num_blocks = sum(need) + spare_blocks
    max_blocks = max(need) + 1
    perm = rng.permutation(num_blocks)
    block_tables = np.full((len(seqs), max_blocks), -1, np.int32)  # unused: -1
    used = 0
    for i, nb in enumerate(need):
        block_tables[i, :nb] = perm[used : used + nb]
        used += nb
    q_lens = [q for _, q in seqs]
    qsl = np.concatenate([[0], np.cumsum(q_lens)]).astype(np.int32)
    t = int(qsl[-1])
    return {
        "q": randn(rng, t, hk * group, d),
        "k_cache": randn(rng, num_blocks, block_size, hk, d),
        "v_cache": randn(rng, num_blocks, block_size, hk, d),
        "block_tables": block_tables,
        "seq_lens": np.array([s for s, _ in seqs], np.int32),
        "query_start_loc": qsl,
        "scale": float(d) ** -0.5,
    }


@pytest.mark.parametrize(
    "group,block_size,d",
    list(itertools.product([1, 2, 4, 7], [1, 16], [64, 80, 96, 128])),
)
def test_paged_attention(simd, rng, group, block_size, d):
    args = make_paged_batch(rng, MIXED_BATCH, 2, group, d, block_size)
    out = cpu.paged_attention(**args, out=poison(args["q"].shape))
    assert_close(out, ref.paged_attention(**args), reduce_len=d)


def test_paged_attention_random_batches(simd, rng):
    for _ in range(6):
        seqs = []
        for _ in range(rng.integers(1, 6)):
            seq_len = int(rng.integers(1, 100))
            seqs.append((seq_len, int(rng.integers(0, seq_len + 1))))
        hk, group = int(rng.integers(1, 4)), int(rng.integers(1, 5))
        d, bs = int(rng.choice([8, 16, 40, 64, 72])), int(rng.choice([1, 2, 5, 16]))
        args = make_paged_batch(rng, seqs, hk, group, d, bs)
        out = cpu.paged_attention(**args, out=poison(args["q"].shape))
        assert_close(
            out,
            ref.paged_attention(**args),
            reduce_len=d,
            msg=f"seqs={seqs} hk={hk} group={group} d={d} block_size={bs}",
        )


def test_paged_attention_long_decode_and_prefill(simd, rng):
    args = make_paged_batch(rng, [(700, 1), (300, 300)], 2, 7, 64, 16)
    out = cpu.paged_attention(**args)
    assert_close(out, ref.paged_attention(**args), reduce_len=64)


def test_paged_attention_empty(rng):
    args = make_paged_batch(rng, [(5, 0)], 1, 1, 64, 16)
    assert cpu.paged_attention(**args).shape == (0, 1, 64)


def test_paged_attention_errors(rng):
    def call(**over):
        args = make_paged_batch(rng, [(20, 4), (9, 1)], 2, 2, 64, 4)
        args.update(over)
        return cpu.paged_attention(**args)

    base = make_paged_batch(rng, [(20, 4), (9, 1)], 2, 2, 64, 4)
    bt = base["block_tables"].copy()
    bt[0, 4] = bt.max() + 100  # a block actually read, out of range
    with pytest.raises(ValueError, match="block_tables"):
        call(block_tables=bt)
    bt[0, 4] = -2
    with pytest.raises(ValueError, match="block_tables"):
        call(block_tables=bt)
    with pytest.raises(ValueError, match="q_len"):
        call(seq_lens=np.array([3, 9], np.int32))
    with pytest.raises(ValueError, match="query_start_loc"):
        call(query_start_loc=np.array([0, 4, 6], np.int32))
    with pytest.raises(ValueError, match="blocks"):
        call(seq_lens=np.array([20, 40], np.int32))
    with pytest.raises(ValueError, match="multiple"):
        call(q=randn(rng, 5, 3, 64))
    with pytest.raises(ValueError, match="dtype"):
        call(block_tables=base["block_tables"].astype(np.int64))
    with pytest.raises(ValueError, match="dtype"):
        call(seq_lens=base["seq_lens"].astype(np.int64))
    with pytest.raises(ValueError, match="shape"):
        call(seq_lens=np.array([20], np.int32))
    with pytest.raises(ValueError, match="shape"):
        call(q=randn(rng, 5, 4, 32))
    with pytest.raises(ValueError, match="contiguous"):
        call(q=randn(rng, 5, 4, 128)[..., ::2])
    out = poison((5, 4, 64))
    with pytest.raises(ValueError, match="block_tables"):
        call(block_tables=bt, out=out)
    assert np.isnan(out).all()  # validated before writing


# ---------------------------------------------------------------- probe & levels


def test_memory_read_probe(simd, rng):
    buf = rng.integers(0, 256, (3 << 20) + 17, dtype=np.uint8)
    assert cpu.memory_read_probe(buf) == float(buf.sum(dtype=np.uint64))
    f = randn(rng, 1001)
    assert cpu.memory_read_probe(f) == float(f.view(np.uint8).sum(dtype=np.uint64))
    with pytest.raises(ValueError, match="contiguous"):
        cpu.memory_read_probe(buf[::2])


@pytest.mark.parametrize(("a", "b"), [(1, 1), (3, -2), (127, 63)])
def test_int8_dot_probe_does_the_work_it_counts(simd, a, b):
    checksum, macs, path = cpu.int8_dot_probe(1000, a, b)
    assert path.startswith(simd if simd != "avx512" else "avx")  # avx512 without VNNI runs avx2
    assert macs == 1000 * cpu.num_threads() * {"avx512_vnni": 768, "avx2": 384, "scalar": 192}[path]
    assert checksum == macs * a * b
    assert cpu.int8_dot_probe(0, a, b)[:2] == (0, 0)
    with pytest.raises(ValueError, match="saturation"):
        cpu.int8_dot_probe(10, 200, 1)
    with pytest.raises(ValueError, match="iters"):
        cpu.int8_dot_probe(-1)


def test_simd_levels():
    levels = cpu.available_simd_levels()
    assert levels[0] == "scalar" and cpu.detected_simd_level() == levels[-1]
    assert cpu.simd_level() in levels
    assert cpu.num_threads() >= 1
    with pytest.raises(ValueError, match="unknown"):
        cpu.set_simd_level("sse9")
    if "avx512" not in levels:
        with pytest.raises(ValueError, match="not supported"):
            cpu.set_simd_level("avx512")


@pytest.mark.parametrize(
    "value,expect", [("scalar", "scalar"), ("bogus", "ValueError")]
)
def test_simd_env_var(value, expect):
    code = "from hearth.kernels import cpu; print(cpu.simd_level())"
    env = dict(os.environ, HEARTH_SIMD=value)
    res = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert expect in (res.stdout + res.stderr)
