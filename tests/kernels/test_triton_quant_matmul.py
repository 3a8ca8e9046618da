"""Weight-only quantized linear (Triton) and the dense cuBLAS linear against kernels/reference.py.

The oracle is float64 x @ dequantize(W).T (+ bias) on the same x the kernel reads (rounded to
its dtype): the GPU path does not quantize activations. 16-bit runs use the "... output" entries:
besides the final rounding, the tiled path rounds the dequantized weights to x's dtype before
tl.dot (relative 2**-12 / 2**-9 a term, well inside those bounds scaled by sqrt(K)).
"""

from __future__ import annotations

import numpy as np
import pytest
from device_arrays import poisoned, rounded, to_device, to_host
from tolerances import assert_close

from hearth.kernels import reference as ref
from hearth.kernels.triton.dense_matmul import linear
from hearth.kernels.triton.quant_matmul import matvec_plan, quant_linear
from hearth.kernels.triton.quant_pack import BLOCK_BYTES, PackedWeight, repack, unpack

TOL_KEY = {
    "float32": "float32",
    "float16": "float16 output",
    "bfloat16": "bfloat16 output",
}
FORMATS = ("q8_0", "q4_0")
DTYPES = ("float32", "float16", "bfloat16")


def _device_packed(data: np.ndarray, fmt: str) -> PackedWeight:
    return repack(data, fmt).to_device(lambda a: to_device(a))


def _random_blocks(
    rng, n: int, k: int, fmt: str, finite_bits: bool = False
) -> np.ndarray:
    """GGUF bytes [N, K/32*bb]: random quants and random finite scales. By default scales are
    sized so |w| ~ 1 (q8_0 quants span +-128, q4_0 +-8), the scale of x, so errors and
    tolerances are on the same footing; `finite_bits` draws any finite fp16 bit pattern
    (subnormals, zeros, both signs) for the byte-level round trip."""
    bb = BLOCK_BYTES[fmt]
    data = rng.integers(0, 256, (n, k // 32, bb), dtype=np.uint8)
    if finite_bits:
        bits = rng.integers(0, 1 << 16, (n, k // 32), dtype=np.uint16)
        bits[(bits & 0x7C00) == 0x7C00] &= (
            0xBFFF  # exponent all ones (inf/nan) -> finite
        )
        d = bits.view(np.float16)
    else:
        size = 1 / 74 if fmt == "q8_0" else 1 / 4.6  # 1 / std of the quants
        sign = rng.choice([-1.0, 1.0], (n, k // 32))
        d = (sign * rng.uniform(0.5, 1.5, (n, k // 32)) * size).astype(np.float16)
    data[:, :, :2] = d.view(np.uint8).reshape(n, k // 32, 2)
    return data.reshape(n, -1)


@pytest.mark.parametrize("fmt", FORMATS)
def test_repack_round_trip_is_bit_exact(rng, fmt):
    for n, k in [(1, 32), (7, 96), (40, 160), (3, 1024)]:
        data = _random_blocks(rng, n, k, fmt, finite_bits=True)
        packed = repack(data, fmt)
        assert packed.shape == (n, k)
        assert packed.scales.dtype == np.float16 and packed.scales.shape == (n, k // 32)
        assert packed.qs.shape == ((n, k) if fmt == "q8_0" else (n, k // 2))
        want = ref.dequantize(data, fmt)
        assert np.array_equal(unpack(packed).view(np.uint32), want.view(np.uint32)), (
            f"{fmt} {n}x{k}"
        )
        on_device = _device_packed(data, fmt)
        assert np.array_equal(unpack(on_device).view(np.uint32), want.view(np.uint32))


def _check_quant(
    rng, fmt, dtype, m, n, k, use_bias, path=None, split_k=None, rows=None
):
    """One quant_linear call against the oracle; `rows` checks only those output columns (for
    model-sized N, where the float64 oracle on all of W would dominate the run)."""
    data = _random_blocks(rng, n, k, fmt)
    x = rng.standard_normal((m, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32) if use_bias else None
    out = poisoned((m, n), dtype)
    got = quant_linear(
        to_device(x, dtype),
        _device_packed(data, fmt),
        None if bias is None else to_device(bias, dtype),
        out=out,
        path=path,
        split_k=split_k,
    )
    assert got is out
    got = to_host(got)
    cols = np.arange(n) if rows is None else rows
    want = ref.linear_quant(
        rounded(x, dtype),
        data[cols],
        fmt,
        None if bias is None else rounded(bias, dtype)[cols],
    )
    assert np.all(np.isfinite(got)), "non-finite output (poison left?)"
    msg = (
        f"{fmt} {dtype} M={m} N={n} K={k} bias={use_bias} path={path} split_k={split_k}"
    )
    assert_close(got[:, cols], want, TOL_KEY[dtype], reduce_len=k, msg=msg)


# (M, N, K, split_k, bias, splits the plan must make): N odd or off the tile grid, K an odd
# multiple of 32 and not a multiple of BLOCK_K (a partly masked last tile), splits 1 (direct store)
# and > 1 (workspace + reduce), uneven ones (2 + 1 tiles) and the automatic choice.
MATVEC_CASES = [
    (1, 7, 544, 2, True, 2),
    (2, 40, 160, 1, False, 1),
    (5, 100, 352, 4, True, 3),
    (3, 9, 1024, None, True, 2),
    (16, 9, 288, 5, False, 5),
]
MATMUL_CASES = [(1, 7, 64), (2, 40, 160), (5, 100, 96), (33, 40, 224)]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_quant_linear_matvec(rng, fmt, dtype):
    for m, n, k, split_k, use_bias, splits in MATVEC_CASES:
        assert matvec_plan(m, n, k, split_k)[-1] == splits, (
            "test case no longer covers its split"
        )
        _check_quant(rng, fmt, dtype, m, n, k, use_bias, path="matvec", split_k=split_k)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_quant_linear_matmul(rng, fmt, dtype):
    for i, (m, n, k) in enumerate(MATMUL_CASES):
        _check_quant(rng, fmt, dtype, m, n, k, use_bias=i % 2 == 0, path="matmul")


def test_quant_linear_default_path_and_allocation(rng):
    """No path/split_k/out: M <= 16 takes the matvec (with the automatic K split), M = 33 the
    tiled path; the result is allocated in x's dtype."""
    for m in (1, 5, 33):
        data = _random_blocks(rng, 40, 256, "q4_0")
        x = rng.standard_normal((m, 256)).astype(np.float32)
        got = quant_linear(to_device(x, "bfloat16"), _device_packed(data, "q4_0"))
        assert "bfloat16" in str(got.dtype)
        want = ref.linear_quant(rounded(x, "bfloat16"), data, "q4_0")
        assert_close(
            to_host(got), want, TOL_KEY["bfloat16"], reduce_len=256, msg=f"M={m}"
        )


def test_quant_linear_errors(rng):
    data = _random_blocks(rng, 8, 64, "q8_0")
    packed = _device_packed(data, "q8_0")
    x = to_device(rng.standard_normal((2, 64)).astype(np.float32))
    with pytest.raises(ValueError, match="x: K must be a multiple of 32"):
        quant_linear(to_device(rng.standard_normal((2, 40)).astype(np.float32)), packed)
    with pytest.raises(ValueError, match="x has K=96"):
        quant_linear(to_device(rng.standard_normal((2, 96)).astype(np.float32)), packed)
    with pytest.raises(ValueError, match="x must have dtype"):
        quant_linear(to_device(rng.integers(0, 3, (2, 64)).astype(np.int32)), packed)
    with pytest.raises(ValueError, match="x must be 2-D"):
        quant_linear(to_device(rng.standard_normal(64).astype(np.float32)), packed)
    with pytest.raises(ValueError, match="packed must be a PackedWeight"):
        quant_linear(x, data)
    with pytest.raises(ValueError, match="packed.scales must have dtype"):
        quant_linear(
            x,
            PackedWeight(
                "q8_0", 8, 64, packed.qs, to_device(np.ones((8, 2), np.float32))
            ),
        )
    with pytest.raises(ValueError, match="packed.qs must have dtype"):
        quant_linear(x, PackedWeight("q4_0", 8, 64, packed.qs, packed.scales))
    with pytest.raises(ValueError, match="packed.k"):
        quant_linear(x, PackedWeight("q8_0", 8, 40, packed.qs, packed.scales))
    with pytest.raises(ValueError, match="bias must have shape"):
        quant_linear(x, packed, to_device(np.ones(7, np.float32)))
    with pytest.raises(ValueError, match="out must have dtype"):
        quant_linear(x, packed, out=poisoned((2, 8), "float16"))
    with pytest.raises(ValueError, match="out must have shape"):
        quant_linear(x, packed, out=poisoned((2, 9), "float32"))
    with pytest.raises(ValueError, match="split_k"):
        quant_linear(x, packed, split_k=0)
    with pytest.raises(ValueError, match="path"):
        quant_linear(to_device(np.ones((33, 64), np.float32)), packed, path="matvec")
    with pytest.raises(ValueError, match="data must be uint8"):
        repack(data[:, :-1], "q8_0")
    with pytest.raises(ValueError, match="fmt must be"):
        repack(data, "q5_0")


def _check_dense(rng, dtype, m, n, k, use_bias):
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32) if use_bias else None
    out = poisoned((m, n), dtype)
    got = linear(
        to_device(x, dtype),
        to_device(w, dtype),
        None if bias is None else to_device(bias, dtype),
        out=out,
    )
    assert got is out
    want = ref.linear(
        rounded(x, dtype),
        rounded(w, dtype),
        None if bias is None else rounded(bias, dtype),
    )
    assert_close(
        to_host(got), want, TOL_KEY[dtype], reduce_len=k, msg=f"{dtype} {m}x{n}x{k}"
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_linear(rng, dtype):
    for m, n, k, use_bias in [(1, 7, 5, False), (33, 40, 96, True)]:
        _check_dense(rng, dtype, m, n, k, use_bias)


def test_dense_linear_errors(rng):
    x = to_device(rng.standard_normal((2, 8)).astype(np.float32))
    with pytest.raises(ValueError, match="w must have dtype"):
        linear(x, to_device(np.ones((3, 8), np.float32), "float16"))
    with pytest.raises(ValueError, match="w must have K=8"):
        linear(x, to_device(np.ones((3, 9), np.float32)))
    with pytest.raises(ValueError, match="bias must have shape"):
        linear(
            x, to_device(np.ones((3, 8), np.float32)), to_device(np.ones(2, np.float32))
        )
    with pytest.raises(ValueError, match="out must have shape"):
        linear(
            x, to_device(np.ones((3, 8), np.float32)), out=poisoned((2, 4), "float32")
        )


# Llama-3.1-8B (q/o 4096x4096, gate/up 14336x4096, down 4096x14336, lm_head 128256x4096) and
# Llama-3.2-1B (gate/up 8192x2048 -> down 2048x8192) linear shapes, as (N, K).
MODEL_SHAPES = [
    (4096, 4096),
    (14336, 4096),
    (4096, 14336),
    (2048, 8192),
    (128256, 4096),
]


@pytest.mark.gpu
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("m", [1, 16, 64, 256])
def test_quant_linear_model_shapes(rng, fmt, dtype, m):
    for n, k in MODEL_SHAPES:
        rows = np.sort(rng.choice(n, size=min(n, 512), replace=False))
        _check_quant(rng, fmt, dtype, m, n, k, use_bias=False, rows=rows)


@pytest.mark.gpu
@pytest.mark.parametrize("split_k", [1, 4, 16])
def test_quant_linear_split_k_model_shapes(rng, split_k):
    for fmt in FORMATS:
        rows = np.sort(rng.choice(4096, size=512, replace=False))
        _check_quant(
            rng,
            fmt,
            "bfloat16",
            1,
            4096,
            14336,
            True,
            path="matvec",
            split_k=split_k,
            rows=rows,
        )


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_linear_model_shapes(rng, dtype):
    for m in (1, 64):
        for n, k in [(4096, 4096), (2048, 8192)]:
            _check_dense(rng, dtype, m, n, k, use_bias=m == 1)
