"""GGUF block formats on the CPU: quantize/dequantize bit for bit against gguf-py, and
linear_quant against the float64 oracle, on every SIMD level."""

from __future__ import annotations

import gguf
import ml_dtypes
import numpy as np
import pytest
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize

from hearth.engine.model import quant as contract
from hearth.kernels import cpu
from hearth.kernels import reference as ref

FORMATS = ["q8_0", "q4_0"]
GGML = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}


def gguf_bytes(w: np.ndarray, fmt: str) -> np.ndarray:
    with np.errstate(
        all="ignore"
    ):  # gguf-py warns on its own 1/d overflow and fp16 casts
        return gguf_quantize(np.asarray(w).astype(np.float32), GGML[fmt])


def gguf_values(data: np.ndarray, fmt: str) -> np.ndarray:
    with np.errstate(all="ignore"):
        return gguf_dequantize(data, GGML[fmt])


def q4_fma_traps(rng, count: int) -> np.ndarray:
    """Q4_0 blocks holding values where trunc(x * id + 8.5) changes if the multiply and the add
    were fused into one rounding: catches a compiler contracting them (gguf-py does not).
    Such x have x * id just below h = -7.5, -6.5 or -5.5, in a wider binade than h + 8.5."""
    rows = []
    while len(rows) < count:
        top = np.float32(rng.uniform(1, 2) * rng.choice([-1, 1]))
        inv = np.float32(1) / (top / np.float32(-8))
        near = np.array([h / inv for h in (-7.5, -6.5, -5.5)], np.float32).view(
            np.int32
        )
        x = (near[:, None] + np.arange(-8, 9, dtype=np.int32)).view(np.float32).ravel()
        unfused = np.trunc((x * inv) + np.float32(8.5))
        fused = np.trunc(
            (x.astype(np.float64) * np.float64(inv) + 8.5).astype(np.float32)
        )
        trap = x[(unfused != fused) & (np.abs(x) < abs(top))]
        if len(trap):
            fill = rng.uniform(-abs(top), abs(top), 31 - len(trap))
            rows.append(np.concatenate([[top], trap, fill]))
    return np.stack(rows).astype(np.float32)


def edge_blocks(rng, fmt: str) -> np.ndarray:
    """32-value blocks that exercise every branch of the quantizers."""
    z = np.zeros(32, np.float32)
    ties = np.arange(-16, 16, dtype=np.float32) + np.float32(
        0.5
    )  # x * id lands on k + 0.5
    blocks = [
        z,  # zero block: d = 0 (Q4_0: d = -0.0, q = 8)
        -z,  # negative zeros: Q4_0 d = +0.0
        np.where(
            np.arange(32) == 7, np.float32(3e38), 1
        ),  # one huge value: fp16 d overflows
        np.where(
            np.arange(32) == 3, np.float32(-5), rng.uniform(-1, 1, 32)
        ),  # negative max
        np.where(
            np.arange(32) % 9 == 2, np.float32(4), np.float32(-4)
        ),  # +-max, first wins
        np.concatenate([[127.0], ties[1:] * 7]).astype(np.float32),  # Q8_0: d = 1, ties
        np.concatenate([[-8.0], ties[1:] / 2]).astype(np.float32),  # Q4_0: d = 1, ties
        rng.standard_normal(32).astype(np.float32) * np.float32(1e-38),  # 1/d overflows
        rng.standard_normal(32).astype(np.float32) * np.float32(3e-37),  # subnormal d
        rng.standard_normal(32).astype(np.float32)
        * np.float32(1e-6),  # fp16-subnormal d
        np.full(32, np.float32(65504 * 127)),  # d at the fp16 limit
    ]
    blocks = np.stack(blocks).astype(np.float32)
    if fmt == "q4_0":
        blocks = np.concatenate([blocks, q4_fma_traps(rng, 4)])
    return blocks


def random_weights(rng, n: int, k: int) -> np.ndarray:
    """Rows of normal values at scales from 1e-30 to 1e6."""
    scale = np.exp(rng.uniform(np.log(1e-30), np.log(1e6), (n, 1)))
    return (rng.standard_normal((n, k)) * scale).astype(np.float32)


# ---------------------------------------------------------------- quantize / dequantize


def test_format_table_matches_the_contract():
    assert cpu.QUANT_BLOCK_BYTES == contract.BLOCK_BYTES
    assert cpu.QUANT_BLOCK == contract.BLOCK


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize_matches_gguf(simd, rng, fmt, dtype):
    edges = edge_blocks(rng, fmt)  # tiled into rows of 11 blocks
    w = np.concatenate(
        [random_weights(rng, 37, 352), np.resize(edges, (len(edges), 352))]
    )
    w = rng.permutation(w, axis=0)  # edge rows land on both threads
    if dtype == "bfloat16":
        w = w.astype(ml_dtypes.bfloat16)
    got = cpu.quantize(w, fmt)
    assert got.dtype == np.uint8 and got.shape == (
        len(w),
        352 // 32 * contract.BLOCK_BYTES[fmt],
    )
    np.testing.assert_array_equal(got, gguf_bytes(w, fmt))


@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize_threaded_and_odd_shapes(simd, rng, fmt):
    for n, k in [(1, 32), (3, 64), (517, 256), (2, 4096 + 32)]:
        w = random_weights(rng, n, k)
        np.testing.assert_array_equal(
            cpu.quantize(w, fmt), gguf_bytes(w, fmt), err_msg=f"{n}x{k}"
        )


@pytest.mark.parametrize("fmt", FORMATS)
def test_dequantize_matches_gguf(simd, rng, fmt):
    quantized = gguf_bytes(random_weights(rng, 29, 320), fmt)
    # Arbitrary bytes too: every fp16 scale (subnormal, inf, NaN) and Q8_0's -128.
    arbitrary = rng.integers(0, 256, (300, quantized.shape[1]), dtype=np.uint8)
    for data in (quantized, arbitrary):
        want = gguf_values(data, fmt)
        np.testing.assert_array_equal(cpu.dequantize(data, fmt), want)
        np.testing.assert_array_equal(ref.dequantize(data, fmt), want)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_reference_quantize_matches_gguf(rng, fmt, dtype):
    edges = edge_blocks(rng, fmt)
    w = np.concatenate(
        [random_weights(rng, 40, 64), np.resize(edges, (len(edges), 64))]
    )
    if dtype == "bfloat16":
        w = w.astype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(ref.quantize(w, fmt), gguf_bytes(w, fmt))


def test_zero_sizes():
    for fmt in FORMATS:
        assert cpu.quantize(np.zeros((0, 64), np.float32), fmt).shape == (
            0,
            2 * contract.BLOCK_BYTES[fmt],
        )
        assert cpu.quantize(np.zeros((3, 0), np.float32), fmt).shape == (3, 0)
        assert cpu.dequantize(np.zeros((2, 0), np.uint8), fmt).shape == (2, 0)


def test_quantize_errors(rng):
    w = random_weights(rng, 4, 64)
    with pytest.raises(ValueError, match="multiple of 32"):
        cpu.quantize(random_weights(rng, 4, 48), "q8_0")
    with pytest.raises(ValueError, match="fmt"):
        cpu.quantize(w, "q5_1")
    with pytest.raises(ValueError, match="dtype"):
        cpu.quantize(w.astype(np.float64), "q8_0")
    with pytest.raises(ValueError, match="contiguous"):
        cpu.quantize(np.asfortranarray(w), "q4_0")
    with pytest.raises(ValueError, match="shape"):
        cpu.quantize(w.reshape(-1), "q4_0")
    for bad in (np.inf, -np.inf, np.nan):
        v = w.copy()
        v[2, 33] = bad
        with pytest.raises(ValueError, match="non-finite"):
            cpu.quantize(v, "q8_0")
    with pytest.raises(ValueError, match="row bytes"):
        cpu.dequantize(np.zeros((2, 35), np.uint8), "q8_0")
    with pytest.raises(ValueError, match="dtype"):
        cpu.dequantize(np.zeros((2, 34), np.int8), "q8_0")
    with pytest.raises(ValueError, match="fmt"):
        cpu._C.quantize(
            w, "q4_1", np.zeros((4, 36), np.uint8)
        )  # the binding checks too
