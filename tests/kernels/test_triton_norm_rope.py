"""Triton rms_norm / add_rms_norm, rope fused with the KV cache write, and the embedding gather
against kernels/reference.py (interpreter in CI, `-m gpu` on a device at Llama shapes)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from device_arrays import poisoned, rounded, to_device, to_host
from tolerances import assert_close

from hearth.kernels import reference as ref
from hearth.kernels.triton.embedding import embedding
from hearth.kernels.triton.rms_norm import add_rms_norm, rms_norm
from hearth.kernels.triton.rope_cache import rope_and_cache

TOL_KEY = {
    "float32": "float32",
    "float16": "float16 output",
    "bfloat16": "bfloat16 output",
}
FLOATS = ["float32", "float16", "bfloat16"]
EPS = 1e-5


def _assert_cast(got, want, src: str, dst: str, msg: str) -> None:
    """Values copied from dtype `src` into dtype `dst`: exact when the cast is lossless; one
    rounding otherwise, because the interpreter truncates fp32 -> bf16 (and fp16 -> bf16) where a
    GPU rounds to nearest even, so only a tolerance holds on both."""
    if src == dst or dst == "float32":
        assert np.array_equal(got, want), f"not an exact copy: {src} -> {dst} {msg}"
    else:
        assert_close(got, want, TOL_KEY[dst], msg=f"{src} -> {dst} {msg}")


# ------------------------------------------------------------------------------ rms_norm


def _rows(rng, m, cols):
    # an offset and a spread per row, so the norm is not ~1 everywhere
    return (rng.standard_normal((m, cols)) * rng.uniform(0.1, 4, (m, 1)) + 0.3).astype(
        np.float32
    )


def _check_rms_norm(rng, m, cols, dtype, w_dtype=None, out_dtype=None, in_place=False):
    w_dtype, out_dtype = w_dtype or dtype, out_dtype or dtype
    x = _rows(rng, m, cols)
    w = rng.uniform(0.5, 1.5, cols).astype(np.float32)
    want = ref.rms_norm(rounded(x, dtype), rounded(w, w_dtype), EPS)
    xd = to_device(x, dtype)
    out = xd if in_place else poisoned((m, cols), out_dtype)
    got = rms_norm(xd, to_device(w, w_dtype), EPS, out=out)
    assert got is out
    assert_close(
        to_host(got),
        want,
        TOL_KEY[out_dtype],
        msg=f"{m}x{cols} {dtype}/{w_dtype}->{out_dtype}",
    )


@pytest.mark.parametrize("dtype", FLOATS)
def test_rms_norm(rng, dtype):
    for m, cols in [(1, 7), (3, 130), (2, 1000), (2, 5000)]:  # 5000: two column chunks
        _check_rms_norm(rng, m, cols, dtype)


def test_rms_norm_mixed_dtypes_and_in_place(rng):
    _check_rms_norm(rng, 3, 130, "bfloat16", w_dtype="float32", out_dtype="float32")
    _check_rms_norm(rng, 2, 1000, "float32", w_dtype="bfloat16", out_dtype="float16")
    _check_rms_norm(rng, 3, 130, "float16", in_place=True)
    got = rms_norm(to_device(_rows(rng, 2, 7)), to_device(np.ones(7, np.float32)), EPS)
    assert got.dtype == to_device(np.zeros(1, np.float32)).dtype and tuple(
        got.shape
    ) == (2, 7)


def _check_add_rms_norm(
    rng, m, cols, dtype, res_dtype=None, out_is_x=False, out_dtype=None
):
    res_dtype, out_dtype = res_dtype or dtype, out_dtype or dtype
    x, res = _rows(rng, m, cols), _rows(rng, m, cols)
    w = rng.uniform(0.5, 1.5, cols).astype(np.float32)
    _, want_res = ref.add_rms_norm(
        rounded(x, dtype), rounded(res, res_dtype), rounded(w, dtype), EPS
    )
    xd, resd = to_device(x, dtype), to_device(res, res_dtype)
    out = xd if out_is_x else poisoned((m, cols), out_dtype)
    got = add_rms_norm(xd, resd, to_device(w, dtype), EPS, out=out)
    assert got is out
    msg = f"{m}x{cols} x {dtype} residual {res_dtype} out_is_x={out_is_x}"
    assert_close(to_host(resd), want_res, TOL_KEY[res_dtype], msg=msg)
    # out normalises the residual as stored, in the residual's dtype
    want = ref.rms_norm(to_host(resd), rounded(w, dtype), EPS)
    assert_close(to_host(got), want, TOL_KEY[out_dtype], msg=msg)


@pytest.mark.parametrize("dtypes", [("float32", None), ("float16", None), ("bfloat16", None),
                                    ("bfloat16", "float32")])  # fmt: skip
def test_add_rms_norm(rng, dtypes):
    dtype, res_dtype = dtypes
    for m, cols in [(1, 7), (3, 130), (2, 1000), (2, 5000)]:
        _check_add_rms_norm(rng, m, cols, dtype, res_dtype)
    _check_add_rms_norm(rng, 3, 130, dtype, res_dtype, out_is_x=True)
    # an fp32 out resolves the residual's rounding: out must normalise the sum as stored
    _check_add_rms_norm(rng, 3, 130, dtype, res_dtype, out_dtype="float32")


def test_rms_norm_errors(rng):
    x = to_device(_rows(rng, 2, 6))
    w = to_device(np.ones(6, np.float32))
    with pytest.raises(ValueError, match="weight must have 6"):
        rms_norm(x, to_device(np.ones(5, np.float32)), EPS)
    with pytest.raises(ValueError, match="x must have dtype"):
        rms_norm(to_device(np.ones((2, 6), np.int32)), w, EPS)
    with pytest.raises(ValueError, match="x must be 2-D"):
        rms_norm(to_device(np.ones(6, np.float32)), w, EPS)
    with pytest.raises(ValueError, match="out must have shape"):
        rms_norm(x, w, EPS, out=poisoned((3, 6), "float32"))
    with pytest.raises(ValueError, match="CuPy array"):
        rms_norm(np.ones((2, 6), np.float32), w, EPS)
    with pytest.raises(ValueError, match="residual shape"):
        add_rms_norm(x, to_device(_rows(rng, 3, 6)), w, EPS)
    with pytest.raises(ValueError, match="residual must have dtype"):
        add_rms_norm(x, to_device(np.ones((2, 6), np.int64)), w, EPS)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", FLOATS)
def test_rms_norm_model_shapes(rng, dtype):
    for m in (1, 16, 64, 256):
        for cols in (2048, 4096, 16384):
            _check_rms_norm(rng, m, cols, dtype)
            _check_add_rms_norm(rng, m, cols, dtype)
            _check_add_rms_norm(rng, m, cols, dtype, "float32", out_is_x=True)


# ------------------------------------------------------------------------------ rope + cache


def _check_rope_cache(
    rng, num_tokens, hq, hk, d, dtype, cache_dtype, block_size=4, strided=False
):
    max_pos = 3 * num_tokens + 5
    num_blocks = (num_tokens + 3) // block_size + 2
    q = rng.standard_normal((num_tokens, hq, d)).astype(np.float32)
    k = rng.standard_normal((num_tokens, hk, d)).astype(np.float32)
    v = rng.standard_normal((num_tokens, hk, d)).astype(np.float32)
    angles = rng.uniform(0, 2 * np.pi, (max_pos, d // 2))
    cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    positions = rng.integers(0, max_pos, num_tokens).astype(np.int64)
    slots = rng.permutation(num_blocks * block_size)[:num_tokens].astype(np.int64)
    slots[rng.random(num_tokens) < 0.3] = -1  # padding: rotated, not cached
    shape = (num_blocks, block_size, hk, d)
    k_cache0 = rounded(rng.standard_normal(shape).astype(np.float32), cache_dtype)
    v_cache0 = rounded(rng.standard_normal(shape).astype(np.float32), cache_dtype)

    if (
        strided
    ):  # q, k, v as views into one fused qkv projection output [T, (hq + 2 hk) d]
        qkv_dev = to_device(
            np.concatenate([a.reshape(num_tokens, -1) for a in (q, k, v)], 1), dtype
        )
        cuts = np.cumsum([0, hq * d, hk * d, hk * d])
        qd, kd, vd = (
            qkv_dev[:, a:b].reshape(num_tokens, -1, d)
            for a, b in itertools.pairwise(cuts)
        )
    else:
        qd, kd, vd = to_device(q, dtype), to_device(k, dtype), to_device(v, dtype)
    k_cache, v_cache = (
        to_device(k_cache0, cache_dtype),
        to_device(v_cache0, cache_dtype),
    )
    rope_and_cache(qd, kd, vd, to_device(positions), to_device(cos), to_device(sin), k_cache, v_cache,
                   to_device(slots))  # fmt: skip

    msg = f"T={num_tokens} hq={hq} hk={hk} d={d} {dtype} cache {cache_dtype} strided={strided}"
    assert_close(
        to_host(qd),
        ref.rope(rounded(q, dtype), positions, cos, sin),
        TOL_KEY[dtype],
        msg=msg,
    )
    assert_close(
        to_host(kd),
        ref.rope(rounded(k, dtype), positions, cos, sin),
        TOL_KEY[dtype],
        msg=msg,
    )
    assert np.array_equal(to_host(vd), rounded(v, dtype)), f"v was modified {msg}"
    # data movement: the written slots hold k as rotated in place, and v, in the cache's dtype;
    # every other slot keeps its old value, bit for bit
    want_k, want_v = ref.reshape_and_cache(
        rounded(to_host(kd), cache_dtype),
        rounded(rounded(v, dtype), cache_dtype),
        k_cache0,
        v_cache0,
        slots,
    )
    written = np.zeros(num_blocks * block_size, bool)
    written[slots[slots >= 0]] = True
    for got, want, name in ((k_cache, want_k, "k_cache"), (v_cache, want_v, "v_cache")):
        got = to_host(got).reshape(written.size, hk, d)
        want = want.reshape(written.size, hk, d)
        assert np.array_equal(got[~written], want[~written]), (
            f"{name} untouched slots {msg}"
        )
        _assert_cast(got[written], want[written], dtype, cache_dtype, f"{name} {msg}")


@pytest.mark.parametrize("dtypes", [("float32", "float32"), ("float16", "float16"), ("bfloat16", "bfloat16"),
                                    ("bfloat16", "float32"), ("float32", "bfloat16")])  # fmt: skip
def test_rope_and_cache(rng, dtypes):
    dtype, cache_dtype = dtypes
    for num_tokens, hq, hk, d in [(1, 4, 2, 8), (3, 5, 1, 10), (17, 6, 3, 16)]:
        _check_rope_cache(rng, num_tokens, hq, hk, d, dtype, cache_dtype)


def test_rope_and_cache_real_heads_and_views(rng):
    # 24 q heads of 128: two q head blocks, the second partial; 8 kv heads in one
    _check_rope_cache(rng, 3, 24, 8, 128, "bfloat16", "bfloat16", block_size=16)
    _check_rope_cache(rng, 5, 6, 2, 16, "float32", "float32", strided=True)
    _check_rope_cache(rng, 3, 4, 2, 10, "float16", "bfloat16", strided=True)


def test_rope_and_cache_out_of_range_indices(rng):
    """Not checked on the host (that would sync the GPU); the kernel must still stay inside the
    arrays: an out-of-range slot is skipped, an out-of-range position rotates by cos = sin = 0."""
    q, k, v = (
        to_device(rng.standard_normal((2, 2, 4)).astype(np.float32)) for _ in range(3)
    )
    cache0 = rng.standard_normal((2, 2, 2, 4)).astype(np.float32)
    k_cache, v_cache = to_device(cache0), to_device(cache0)
    cs = to_device(rng.standard_normal((3, 2)).astype(np.float32))
    rope_and_cache(
        q,
        k,
        v,
        to_device(np.array([3, -1])),
        cs,
        cs,
        k_cache,
        v_cache,
        to_device(np.array([4, 99])),
    )
    assert np.array_equal(to_host(k_cache), cache0) and np.array_equal(
        to_host(v_cache), cache0
    )
    assert not to_host(q).any() and not to_host(k).any()


def test_rope_and_cache_errors(rng):
    def arrays(**over):
        a = {
            "q": to_device(np.ones((3, 4, 8), np.float32)),
            "k": to_device(np.ones((3, 2, 8), np.float32)),
            "v": to_device(np.ones((3, 2, 8), np.float32)),
            "positions": to_device(np.zeros(3, np.int64)),
            "cos": to_device(np.ones((9, 4), np.float32)),
            "sin": to_device(np.ones((9, 4), np.float32)),
            "k_cache": to_device(np.ones((2, 4, 2, 8), np.float32)),
            "v_cache": to_device(np.ones((2, 4, 2, 8), np.float32)),
            "slot_mapping": to_device(np.zeros(3, np.int64)),
        }
        a.update(over)
        return a

    rope_and_cache(**arrays())  # the baseline is valid
    cases = [
        ({"q": np.ones((3, 4, 8), np.float32)}, "q must be a CuPy array"),
        ({"q": to_device(np.ones((3, 32), np.float32))}, "q must be 3-D"),
        ({"q": to_device(np.ones((3, 8, 8), np.float32))[:, ::2]}, "q must be dense"),
        ({"q": to_device(np.ones((3, 4, 8), np.int32))}, "q must have dtype"),
        ({"k": to_device(np.ones((3, 2, 6), np.float32))}, "k must have shape"),
        ({"k": to_device(np.ones((2, 2, 8), np.float32))}, "k must have shape"),
        ({"v": to_device(np.ones((3, 1, 8), np.float32))}, "v shape"),
        ({"k": to_device(np.ones((3, 2, 8), np.float16))}, "k must have q's dtype"),
        ({"positions": to_device(np.zeros(4, np.int64))}, "positions must have 3"),
        (
            {"positions": to_device(np.zeros(3, np.float32))},
            "positions must have dtype",
        ),
        (
            {"slot_mapping": to_device(np.zeros((3, 1), np.int64))},
            "slot_mapping must be 1-D",
        ),
        ({"cos": to_device(np.ones((9, 8), np.float32))}, "cos must have shape"),
        ({"sin": to_device(np.ones((8, 4), np.float32))}, "sin must have shape"),
        ({"cos": to_device(np.ones((9, 4), np.float16))}, "cos must have dtype"),
        (
            {"k_cache": to_device(np.ones((2, 4, 4, 8), np.float32))},
            "k_cache must have shape",
        ),
        (
            {"v_cache": to_device(np.ones((2, 4, 2, 8), np.float16))},
            "v_cache .* must match",
        ),
    ]
    for over, match in cases:
        with pytest.raises(ValueError, match=match):
            rope_and_cache(**arrays(**over))
    odd = to_device(np.ones((3, 2, 7), np.float32))
    with pytest.raises(ValueError, match="even"):
        rope_and_cache(
            **arrays(q=to_device(np.ones((3, 4, 7), np.float32)), k=odd, v=odd)
        )


@pytest.mark.gpu
@pytest.mark.parametrize("dtypes", [("bfloat16", "bfloat16"), ("float16", "float16"), ("float32", "float32"),
                                    ("bfloat16", "float32")])  # fmt: skip
def test_rope_and_cache_model_shapes(rng, dtypes):
    for hq, hk, d in [(32, 8, 128), (32, 8, 64)]:  # Llama-3.1-8B, Llama-3.2-1B
        for num_tokens in (1, 16, 64, 256):
            _check_rope_cache(rng, num_tokens, hq, hk, d, *dtypes, block_size=16)
        _check_rope_cache(rng, 64, hq, hk, d, *dtypes, block_size=16, strided=True)


# ------------------------------------------------------------------------------ embedding


def _check_embedding(
    rng, table, table_dev, num_tokens, dtype, out_dtype=None, ids_dtype="int64"
):
    """table: float64 numpy [V, H] holding `dtype` values, table_dev the same on the device (both
    made once by the caller: big at model shapes)."""
    vocab, cols = table.shape
    ids = rng.integers(0, vocab, num_tokens)
    ids[: min(2, num_tokens)] = [0, vocab - 1][:num_tokens]  # both ends of the table
    want = rounded(table[ids], out_dtype or dtype)
    out = poisoned((num_tokens, cols), out_dtype or dtype)
    got = embedding(table_dev, to_device(ids.astype(ids_dtype)), out=out)
    assert got is out
    msg = f"V={vocab} H={cols} T={num_tokens}"
    _assert_cast(to_host(got), want, dtype, out_dtype or dtype, msg)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("out_dtype", [None, "float32", "bfloat16"])
def test_embedding(rng, dtype, out_dtype):
    # 1500: two column blocks; int32 ids once
    for cols, num_tokens in [(7, 1), (130, 3), (1000, 17), (1500, 2)]:
        table = rounded(rng.standard_normal((50, cols)).astype(np.float32), dtype)
        ids_dtype = "int32" if cols == 7 else "int64"
        table_dev = to_device(table, dtype)
        _check_embedding(rng, table, table_dev, num_tokens, dtype, out_dtype, ids_dtype)


def test_embedding_allocates_and_guards(rng):
    table = rng.standard_normal((10, 6)).astype(np.float32)
    got = embedding(
        to_device(table, "bfloat16"),
        to_device(np.array([4, 10, -1, 9])),
        dtype="float32",
    )
    want = rounded(table, "bfloat16")[[4, 0, 0, 9]]
    want[1:3] = 0  # ids outside [0, V) give zero rows (never read outside the table)
    assert str(got.dtype).endswith("float32") and np.array_equal(to_host(got), want)
    assert str(
        embedding(to_device(table, "float16"), to_device(np.array([1]))).dtype
    ).endswith("float16")


def test_embedding_errors(rng):
    table = to_device(rng.standard_normal((10, 6)).astype(np.float32))
    ids = to_device(np.array([1, 2], np.int64))
    with pytest.raises(ValueError, match="token_ids must be 1-D"):
        embedding(table, to_device(np.array([[1, 2]], np.int64)))
    with pytest.raises(ValueError, match="token_ids must have dtype"):
        embedding(table, to_device(np.array([1.0, 2.0], np.float32)))
    with pytest.raises(ValueError, match="table must have dtype"):
        embedding(to_device(np.ones((10, 6), np.int32)), ids)
    with pytest.raises(ValueError, match="dtype must be one of"):
        embedding(table, ids, dtype="int32")
    with pytest.raises(ValueError, match="out must have shape"):
        embedding(table, ids, out=poisoned((3, 6), "float32"))
    with pytest.raises(ValueError, match="disagrees"):
        embedding(table, ids, out=poisoned((2, 6), "float32"), dtype="float16")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", FLOATS)
def test_embedding_model_shapes(rng, dtype):
    for vocab, cols in [(128256, 2048), (32000, 4096)]:
        table = rounded(rng.standard_normal((vocab, cols), dtype=np.float32), dtype)
        table_dev = to_device(table, dtype)
        for num_tokens in (1, 16, 64, 256):
            _check_embedding(rng, table, table_dev, num_tokens, dtype)
            _check_embedding(
                rng, table, table_dev, num_tokens, dtype, out_dtype="float32"
            )
