"""linear_quant on the CPU: against the float64 oracle (exact x) within a named tolerance for the
int8 rounding of x, against an exact model of its own arithmetic within fp32 accumulation
error, bit-identical across SIMD levels and batch sizes, and its argument checks."""

from __future__ import annotations

import ctypes
import mmap

import numpy as np
import pytest

from hearth.kernels import cpu
from hearth.kernels import reference as ref

FORMATS = ["q8_0", "q4_0"]

# The kernel rounds x to int8 per block of 32 (step d = max|x_block| / 127): each x gets an
# error e, |e| <= d/2, close to uniform, so an output's error is a sum of w * e over K terms
# with standard deviation sigma = sqrt(sum_blocks d^2/12 * sum w^2) (the block maximum itself
# has e = 0, so this overestimates slightly). Measured over 8.8e5 outputs per format (K from 32
# to 4128; normal, Laplace, uniform and Student-t x) the largest |error| / sigma was 4.6 for
# Q8_0 and 4.3 for Q4_0, and its spread matched a normal's (std of |N(0,1)| is 0.60; measured
# 0.59). Allowing 7 sigma leaves a false failure rate near 3e-12 per output. The formats
# differ only in w, so their entries agree.
X_ROUNDING_SIGMAS = {"q8_0": 7.0, "q4_0": 7.0}
FP32_EPS = float(np.finfo(np.float32).eps)


def poison(shape) -> np.ndarray:
    return np.full(shape, np.nan, dtype=np.float32)


def randn(rng, *shape, scale=1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def random_quantized(rng, n: int, k: int, fmt: str) -> np.ndarray:
    """Weights quantized from random rows at assorted scales."""
    scale = np.exp(rng.uniform(np.log(1e-3), np.log(10.0), (n, 1))).astype(np.float32)
    return cpu.quantize(randn(rng, n, k) * scale, fmt)


def x_blocks(x: np.ndarray):
    """The kernel's quantization of x: (q as float64 [M, K], d as float64 [M, K/32])."""
    m, k = x.shape
    xb = x.reshape(m, k // 32, 32)
    amax = np.abs(xb).max(axis=2)
    d = np.where(amax >= np.float32(2.0**-120), amax / np.float32(127), np.float32(0))
    with np.errstate(divide="ignore"):
        inv = np.where(d != 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
    q = np.rint(xb * inv[..., None])  # fp32 product, round half to even
    return q.reshape(m, k).astype(np.float64), d.astype(np.float64)


def assert_matches_oracle(out, x, w, fmt, bias=None, msg=""):
    """|out - oracle| <= X_ROUNDING_SIGMAS * sigma + fp32 accumulation error, per output."""
    want = ref.linear_quant(x, w, fmt, bias)
    wd = ref.dequantize(w, fmt).astype(np.float64)
    k = x.shape[1]
    _, d = x_blocks(x)
    # sigma^2[m, n] = sum_b d[m, b]^2 / 12 * sum_{i in b} w[n, i]^2
    w2 = (wd * wd).reshape(len(wd), k // 32, 32).sum(axis=2)
    sigma = np.sqrt(d * d / 12 @ w2.T)
    fp32 = 4 * FP32_EPS * (k / 512 + 8) * (np.abs(x.astype(np.float64)) @ np.abs(wd).T)
    err = np.abs(out - want)
    tol = (
        X_ROUNDING_SIGMAS[fmt] * sigma
        + fp32
        + (0 if bias is None else FP32_EPS * np.abs(bias))
    )
    assert np.all(np.isfinite(out)), f"non-finite output (poison left?) {msg}"
    bad = err > tol
    if bad.any():
        i = np.unravel_index(np.argmax(err / tol), err.shape)
        raise AssertionError(
            f"{bad.sum()}/{bad.size} off; worst {i}: out={out[i]} ref={want[i]} "
            f"err/sigma={err[i] / sigma[i]:.2f} {msg}"
        )


def assert_matches_int8_model(out, x, w, fmt, bias=None, msg=""):
    """Against the exact value of what the kernel computes (quantized x times w, summed per
    block in exact integers): only fp32 rounding of the scales, products and the 16-lane
    accumulation over K/512 terms remains."""
    q, d = x_blocks(x)
    xq = (q.reshape(*d.shape, 32) * d[..., None]).reshape(x.shape)
    wd = ref.dequantize(w, fmt).astype(np.float64)
    want = xq @ wd.T + (0 if bias is None else bias.astype(np.float64))
    tol = 4 * FP32_EPS * (x.shape[1] / 512 + 8) * (np.abs(xq) @ np.abs(wd).T)
    tol += FP32_EPS * np.abs(want)  # adding the bias
    err = np.abs(out - want)
    assert np.all(err <= tol), (
        f"max err/tol {np.max(err / np.maximum(tol, 1e-300)):.2f} {msg}"
    )


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("k", [32, 96, 544, 4128])
@pytest.mark.parametrize("m", [1, 2, 3, 5, 8, 17, 33])
def test_linear_quant(simd, rng, m, k, fmt):
    n = 37 if k > 544 else 131
    x = randn(rng, m, k, scale=rng.uniform(0.1, 10))
    w = random_quantized(rng, n, k, fmt)
    bias = randn(rng, n) if m % 2 else None
    out = cpu.linear_quant(x, w, fmt, bias, out=poison((m, n)))
    assert_matches_oracle(out, x, w, fmt, bias, msg=f"M={m} K={k}")
    assert_matches_int8_model(out, x, w, fmt, bias)


@pytest.mark.parametrize("fmt", FORMATS)
def test_linear_quant_random_shapes(simd, rng, fmt):
    for _ in range(8):
        m, n, k = (
            int(rng.integers(1, 40)),
            int(rng.integers(1, 300)),
            32 * int(rng.integers(1, 70)),
        )
        x = randn(rng, m, k)
        w = random_quantized(rng, n, k, fmt)
        out = cpu.linear_quant(x, w, fmt, out=poison((m, n)))
        assert_matches_oracle(out, x, w, fmt, msg=f"M={m} N={n} K={k}")


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_level_gives_the_same_bits(rng, fmt):
    m, n, k = 19, 203, 1056  # threaded; K = 2 super-blocks + a partial one
    x = randn(rng, m, k)
    x[3, 100:140] *= 1e-3  # blocks at other scales
    x[5, :64] = np.round(x[5, :64] * 4) / 4  # ties in x * (1/d)
    w = random_quantized(rng, n, k, fmt)
    bias = randn(rng, n)
    previous = cpu.simd_level()
    try:
        outs = {}
        for level in cpu.available_simd_levels():
            cpu.set_simd_level(level)
            outs[level] = cpu.linear_quant(x, w, fmt, bias, out=poison((m, n)))
    finally:
        cpu.set_simd_level(previous)
    for level, out in outs.items():
        np.testing.assert_array_equal(out, outs["scalar"], err_msg=level)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_row_alone_equals_it_in_a_batch(simd, rng, fmt):
    m, n, k = 21, 77, 640
    x = randn(rng, m, k)
    w = random_quantized(rng, n, k, fmt)
    batch = cpu.linear_quant(x, w, fmt)
    for i in (0, 7, 8, 20):
        np.testing.assert_array_equal(
            cpu.linear_quant(x[i : i + 1], w, fmt)[0], batch[i]
        )


def test_arbitrary_weight_bytes(simd, rng):
    """Q8_0 values of -128 and every nibble: the integer paths stay exact."""
    m, n, k = 3, 45, 256
    x = randn(rng, m, k)
    for fmt in FORMATS:
        w = rng.integers(
            0, 256, (n, k // 32 * cpu.QUANT_BLOCK_BYTES[fmt]), dtype=np.uint8
        )
        blocks = w.reshape(-1, cpu.QUANT_BLOCK_BYTES[fmt])
        blocks[:, :2] = np.array([0.01], np.float16).view(np.uint8)  # finite scales
        blocks[::3, 2:] = 0x80  # Q8_0: q = -128; Q4_0: q = (0, 8)
        out = cpu.linear_quant(x, w, fmt, out=poison((m, n)))
        assert_matches_int8_model(out, x, w, fmt, msg=fmt)


def test_tiny_and_zero_blocks_of_x(simd, rng):
    m, n, k = 4, 30, 128
    x = randn(rng, m, k)
    x[0] = 0
    x[1, :32] = 1e-37  # below 2**-120: treated as zero
    x[2, 32:64] = randn(rng, 32) * np.float32(1e-30)
    w = random_quantized(rng, n, k, "q8_0")
    out = cpu.linear_quant(x, w, "q8_0")
    np.testing.assert_array_equal(out[0], np.zeros(n, np.float32))
    assert_matches_int8_model(out, x, w, "q8_0")


def test_non_finite_x_gives_nan_in_its_row_only(simd, rng):
    m, n, k = 4, 50, 96
    x = randn(rng, m, k)
    x[1, 40] = np.inf
    x[3, 95] = np.nan
    out = cpu.linear_quant(x, random_quantized(rng, n, k, "q4_0"), "q4_0")
    assert np.isnan(out[[1, 3]]).all() and np.isfinite(out[[0, 2]]).all()


def test_zero_sizes(rng):
    w = random_quantized(rng, 3, 64, "q8_0")
    assert cpu.linear_quant(randn(rng, 0, 64), w, "q8_0").shape == (0, 3)
    out = cpu.linear_quant(randn(rng, 2, 64), w[:0], "q8_0")
    assert out.shape == (2, 0)
    bias = randn(rng, 3)
    got = cpu.linear_quant(randn(rng, 2, 0), np.zeros((3, 0), np.uint8), "q4_0", bias)
    np.testing.assert_array_equal(got, np.broadcast_to(bias, (2, 3)))


# ---------------------------------------------------------------- errors


def test_linear_quant_errors(rng):
    x, w = randn(rng, 2, 64), random_quantized(rng, 5, 64, "q8_0")
    cases = [
        ((x.astype(np.float64), w, "q8_0"), {}, "x must have dtype"),
        ((randn(rng, 2, 48), w, "q8_0"), {}, "multiple of 32"),
        ((x, w.view(np.int8), "q8_0"), {}, "w must have dtype"),
        ((x, w[:, :-1].copy(), "q8_0"), {}, "w has shape"),
        ((x, w, "q4_0"), {}, "w has shape"),  # Q8_0 rows are not Q4_0 rows
        ((x, w, "f16"), {}, "fmt"),
        ((randn(rng, 64, 2).T, w, "q8_0"), {}, "contiguous"),
        ((x, np.asfortranarray(w), "q8_0"), {}, "contiguous"),
        ((x.tolist(), w, "q8_0"), {}, "ndarray"),
        ((x, w, "q8_0"), {"bias": randn(rng, 4)}, "bias has shape"),
        (
            (x, w, "q8_0"),
            {"bias": randn(rng, 5).astype(np.float16)},
            "bias must have dtype",
        ),
        ((x, w, "q8_0"), {"out": poison((2, 4))}, "out has shape"),
        (
            (x, w, "q8_0"),
            {"out": poison((2, 5)).astype(np.float64)},
            "out must have dtype",
        ),
    ]
    for args, kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            cpu.linear_quant(*args, **kwargs)
    ro = poison((2, 5))
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        cpu.linear_quant(x, w, "q8_0", out=ro)


def test_binding_validates_too(rng):
    x, w, out = randn(rng, 2, 64), random_quantized(rng, 5, 64, "q4_0"), poison((2, 5))
    with pytest.raises(ValueError, match="multiple of 32"):
        cpu._C.linear_quant(randn(rng, 2, 40), [w], "q4_0", [None], [out])
    with pytest.raises(ValueError, match="w has shape"):
        cpu._C.linear_quant(x, [w], "q8_0", [None], [out])
    with pytest.raises(ValueError, match="fmt"):
        cpu._C.linear_quant(x, [w], "q4_k", [None], [out])
    with pytest.raises(ValueError, match="dtype"):
        cpu._C.linear_quant(x, [w.view(np.int8)], "q4_0", [None], [out])
    with pytest.raises(ValueError, match="one bias"):
        cpu._C.linear_quant(x, [w, w], "q4_0", [None], [out, out])
    with pytest.raises(ValueError, match="one bias"):
        cpu._C.linear_quant(x, [], "q4_0", [], [])
    with pytest.raises(ValueError, match="out has shape"):
        cpu._C.linear_quant(x, [w, random_quantized(rng, 7, 64, "q4_0")], "q4_0", [None, None], [out, out])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("m", [1, 3, 6, 40])
def test_many_matrices_in_one_call_equal_one_at_a_time(simd, rng, m, fmt):
    """q/k/v-like parts of different heights (some tiny, one not a multiple of 16), with and
    without biases: each output bit-equal to its own linear_quant call."""
    k = 224
    x = randn(rng, m, k)
    heights = [int(n) for n in rng.integers(1, 300, size=3)] + [7, 1000]
    ws = [random_quantized(rng, n, k, fmt) for n in heights]
    biases = [randn(rng, n) if i % 2 else None for i, n in enumerate(heights)]
    outs = cpu.linear_quant_many(x, ws, fmt, biases)
    assert [o.shape for o in outs] == [(m, n) for n in heights]
    for out, w, b in zip(outs, ws, biases, strict=True):
        np.testing.assert_array_equal(out, cpu.linear_quant(x, w, fmt, b))
    assert_matches_oracle(outs[-1], x, ws[-1], fmt, biases[-1])
    for out, w in zip(cpu.linear_quant_many(x, ws, fmt), ws, strict=True):  # biases omitted
        np.testing.assert_array_equal(out, cpu.linear_quant(x, w, fmt))


def guarded_bytes(nbytes: int) -> np.ndarray:
    """A uint8 array whose last byte is followed by a page that faults when read."""
    page = mmap.PAGESIZE
    total = -(-nbytes // page) * page + page
    buf = mmap.mmap(-1, total)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    assert libc.mprotect(addr + total - page, page, 0) == 0  # PROT_NONE
    return np.frombuffer(buf, np.uint8, count=nbytes, offset=total - page - nbytes)


@pytest.mark.parametrize("fmt", FORMATS)
def test_reads_stay_inside_w(simd, rng, fmt):
    """The last row ends right before an unreadable page: no kernel reads past it (a GGUF
    tensor may end at the end of its memory map)."""
    m, n, k = 3, 5, 416  # 13 blocks: a partial super-block at the end of every row
    w = random_quantized(rng, n, k, fmt)
    guarded = guarded_bytes(w.nbytes).reshape(w.shape)
    guarded[...] = w
    x = randn(rng, m, k)
    np.testing.assert_array_equal(
        cpu.linear_quant(x, guarded, fmt), cpu.linear_quant(x, w, fmt)
    )
