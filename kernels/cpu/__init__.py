"""CPU kernels: the typed Python face of the compiled ``_C`` module.

Every op takes C-contiguous numpy arrays, checks dtypes and shapes (raising
``ValueError`` with the offending argument named), allocates ``out`` when it
is ``None`` and returns it. bf16 weights are ``ml_dtypes.bfloat16`` arrays;
they are passed to C++ as a ``uint16`` view of the same memory (no copy).

The SIMD path (``avx512``, ``avx2`` or ``scalar``) is picked at import from
the CPU; ``set_simd_level`` or the ``HEARTH_SIMD`` environment variable force
a lower one (tests use this to run every path).
"""

from __future__ import annotations

import os
import warnings

import ml_dtypes
import numpy as np

from . import _C

__all__ = [
    "QUANT_BLOCK_BYTES",
    "add_rms_norm",
    "available_simd_levels",
    "dequantize",
    "detected_simd_level",
    "int8_dot_probe",
    "linear",
    "linear_quant",
    "linear_quant_many",
    "memory_read_probe",
    "num_threads",
    "paged_attention",
    "quantize",
    "reshape_and_cache",
    "rms_norm",
    "rope",
    "set_simd_level",
    "silu_and_mul",
    "simd_level",
    "softmax",
]

F32 = np.dtype(np.float32)
BF16 = np.dtype(ml_dtypes.bfloat16)
I32 = np.dtype(np.int32)
I64 = np.dtype(np.int64)
U8 = np.dtype(np.uint8)
_LEVELS = ("scalar", "avx2", "avx512")  # lowest to highest


def _check(a, name: str, dtypes, shape: tuple) -> np.ndarray:
    """Check type, dtype, shape (None = any size) and C-contiguity."""
    if not isinstance(a, np.ndarray):
        # ValueError, not TypeError: the API promises one exception type for bad input.
        raise ValueError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")  # noqa: TRY004
    dtypes = dtypes if isinstance(dtypes, tuple) else (dtypes,)
    if a.dtype not in dtypes:
        want = " or ".join(str(d) for d in dtypes)
        raise ValueError(f"{name} must have dtype {want}, got {a.dtype}")
    if a.ndim != len(shape) or any(
        w is not None and s != w for s, w in zip(a.shape, shape)
    ):
        want = tuple("*" if w is None else w for w in shape)
        raise ValueError(f"{name} has shape {a.shape}, expected {want}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    return a


def _arrays(*named) -> None:
    """The cheap half of validation for the per-token ops: each argument is a 2-D-or-more numpy
    array. The binding checks the rest (dtype, exact shape, contiguity, writability, index
    ranges), naming the argument, at a fraction of the cost of doing it here: a decode step
    calls these a few hundred times, and checks in Python cost more than the kernels."""
    for a, name in zip(named[::2], named[1::2], strict=True):
        if not isinstance(a, np.ndarray):
            raise ValueError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")


def _out(out, shape: tuple, name: str = "out") -> np.ndarray:
    """Allocate a float32 output, or check the caller's one."""
    if out is None:
        return np.empty(shape, dtype=F32)
    _check(out, name, F32, shape)
    if not out.flags.writeable:
        raise ValueError(f"{name} must be writable")
    return out


def linear(
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """out[M, N] = x[M, K] @ w[N, K].T + bias[N]; w is float32 or bfloat16."""
    for a, name in ((x, "x"), (w, "w")):  # lean: the binding checks shapes (see _arrays)
        if not isinstance(a, np.ndarray) or a.ndim != 2:
            _check(a, name, (F32,) if name == "x" else (F32, BF16), (None, None))
    if w.dtype == BF16:
        w_bits = w.view(np.uint16)
    elif w.dtype == F32:
        w_bits = w
    else:
        raise ValueError(f"w must have dtype float32 or bfloat16, got {w.dtype}")
    if out is None:
        out = np.empty((x.shape[0], w.shape[0]), dtype=F32)
    elif np.may_share_memory(out, x) or np.may_share_memory(out, w):
        raise ValueError("out must not overlap x or w")
    _C.linear(x, w_bits, bias, out)
    return out


def rms_norm(
    x: np.ndarray, weight: np.ndarray, eps: float, out: np.ndarray | None = None
) -> np.ndarray:
    """out = x / sqrt(mean(x**2, -1) + eps) * weight, for x[M, D]."""
    _arrays(x, "x", weight, "weight")
    if out is None:
        out = np.empty(x.shape, dtype=F32)
    _C.rms_norm(x, weight, float(eps), out)
    return out


def add_rms_norm(
    x: np.ndarray,
    residual: np.ndarray,
    weight: np.ndarray,
    eps: float,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """residual += x (in place); out = rms_norm(residual) * weight.

    ``out`` may be ``x`` itself."""
    _arrays(x, "x", residual, "residual", weight, "weight")
    if out is None:
        out = np.empty(x.shape, dtype=F32)
    _C.add_rms_norm(x, residual, weight, float(eps), out)
    return out


def rope(
    x: np.ndarray, positions: np.ndarray, cos: np.ndarray, sin: np.ndarray
) -> None:
    """Rotate-half RoPE in place on x[T, H, D] (float32, writable); positions
    is int64 [T], each in [0, max_pos); cos, sin are float32 [max_pos, D//2]."""
    _arrays(x, "x", positions, "positions", cos, "cos", sin, "sin")
    _C.rope(x, positions, cos, sin)


def silu_and_mul(
    gate: np.ndarray, up: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """out = silu(gate) * up, all float32 [M, I]."""
    _arrays(gate, "gate", up, "up")
    if out is None:
        out = np.empty(gate.shape, dtype=F32)
    _C.silu_and_mul(gate, up, out)
    return out


def softmax(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Row-wise, numerically stable softmax of x[M, N]."""
    _check(x, "x", F32, (None, None))
    out = _out(out, x.shape)
    _C.softmax(x, out)
    return out


def reshape_and_cache(
    k: np.ndarray,
    v: np.ndarray,
    k_cache: np.ndarray,
    v_cache: np.ndarray,
    slot_mapping: np.ndarray,
) -> None:
    """k_cache.reshape(-1, Hk, D)[slot_mapping[t]] = k[t] (same for v).

    k, v are float32 [T, Hk, D]; caches are float32 [blocks, block_size, Hk,
    D]; slot_mapping is int64 [T], slots < 0 are padding and skipped."""
    _arrays(k, "k", v, "v", k_cache, "k_cache", v_cache, "v_cache", slot_mapping, "slot_mapping")
    _C.reshape_and_cache(k, v, k_cache, v_cache, slot_mapping)


def paged_attention(
    q: np.ndarray,
    k_cache: np.ndarray,
    v_cache: np.ndarray,
    block_tables: np.ndarray,
    seq_lens: np.ndarray,
    query_start_loc: np.ndarray,
    scale: float,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Causal attention of q[T, Hq, D] over a paged KV cache.

    Sequence s owns tokens query_start_loc[s]:query_start_loc[s+1] of q; its
    i-th token sits at position seq_lens[s] - q_len + i and attends to key
    positions 0..that position, found through block_tables[s]. Serves
    prefill, chunked prefill and decode in one batch. Hq % Hk == 0 (GQA).
    q and the caches are float32, the metadata int32; the binding checks
    every shape and index before anything is written."""
    _arrays(q, "q", k_cache, "k_cache", v_cache, "v_cache", block_tables, "block_tables",
            seq_lens, "seq_lens", query_start_loc, "query_start_loc")
    if out is None:
        out = np.empty(q.shape, dtype=F32)
    _C.paged_attention(
        q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, float(scale), out
    )
    return out


def memory_read_probe(buf: np.ndarray) -> float:
    """Read every byte of a contiguous buffer on all threads; return the byte
    sum. Timing it gives the machine's read-bandwidth ceiling."""
    if not isinstance(buf, np.ndarray) or not buf.flags.c_contiguous:
        raise ValueError("buf must be a C-contiguous numpy.ndarray")
    return _C.memory_read_probe(buf)


def int8_dot_probe(iters: int, a: int = 1, b: int = 1) -> tuple[int, int, str]:
    """Run `iters` rounds of register-only u8 x s8 multiply-adds on all threads,
    with the instructions the quantized kernels use at the active SIMD level
    (VNNI vpdpbusd, or AVX2 pmaddubsw + pmaddwd). Returns (checksum, macs,
    path) where checksum == macs * a * b. Timing it gives the peak integer
    dot-product rate (2 * macs ops) that the quantized GEMM is judged against."""
    return _C.int8_dot_probe(int(iters), int(a), int(b))


# ------------------------------------------------------------- GGUF block formats

QUANT_BLOCK = 32
QUANT_BLOCK_BYTES = {"q8_0": 34, "q4_0": 18}  # same table as hearth.engine.model.quant (a contract)


def _quant_format(fmt) -> str:
    name = str(fmt).lower()
    if name not in QUANT_BLOCK_BYTES:
        raise ValueError(f"fmt must be one of {tuple(QUANT_BLOCK_BYTES)}, got {fmt!r}")
    return name


def quantize(w: np.ndarray, fmt: str, out: np.ndarray | None = None) -> np.ndarray:
    """Quantize w[N, K] (float32 or bfloat16, K % 32 == 0) to GGUF blocks.

    Returns uint8 [N, K // 32 * block_bytes] ("q8_0": 34, "q4_0": 18 bytes per
    32 values), bit for bit what ``gguf.quants.quantize`` gives for
    ``w.astype(np.float32)``. Threaded over rows; ValueError if w holds
    inf or NaN. `out` (uint8, that shape, C-contiguous) receives the blocks
    when given, e.g. a slice of a larger weight arena."""
    fmt = _quant_format(fmt)
    _check(w, "w", (F32, BF16), (None, None))
    n, k = w.shape
    if k % QUANT_BLOCK:
        raise ValueError(
            f"w: K = {k} must be a multiple of {QUANT_BLOCK} (the block size)"
        )
    if out is None:
        out = np.empty((n, k // QUANT_BLOCK * QUANT_BLOCK_BYTES[fmt]), dtype=U8)
    _C.quantize(w.view(np.uint16) if w.dtype == BF16 else w, fmt, out)
    return out


def dequantize(data: np.ndarray, fmt: str) -> np.ndarray:
    """The float32 [N, K] values of GGUF blocks data[N, K // 32 * block_bytes]
    (uint8); bit for bit ``gguf.quants.dequantize``."""
    fmt = _quant_format(fmt)
    _check(data, "data", U8, (None, None))
    n, row_bytes = data.shape
    if row_bytes % QUANT_BLOCK_BYTES[fmt]:
        raise ValueError(
            f"data: row bytes {row_bytes} must be a multiple of "
            f"{QUANT_BLOCK_BYTES[fmt]} (one {fmt} block)"
        )
    out = np.empty((n, row_bytes // QUANT_BLOCK_BYTES[fmt] * QUANT_BLOCK), dtype=F32)
    _C.dequantize(data, fmt, out)
    return out


def linear_quant(
    x: np.ndarray,
    w: np.ndarray,
    fmt: str,
    bias: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """out[M, N] = x[M, K] @ dequantize(w, fmt)[N, K].T + bias[N].

    w is uint8 [N, K // 32 * block_bytes] in GGUF layout (as from
    ``quantize``). Like llama.cpp, x is quantized to int8 per block of 32
    (scale max|x| / 127, kept in fp32) and each block pair meets in an
    integer dot product, so the result differs from the float product by
    that rounding of x (at most max|x| / 254 per element, max over its
    block of 32). Blocks of x with max|x| < 2**-120 count as zero.
    Results are identical on every SIMD level and for every M (a row of x
    gives the same outputs alone or in a batch). Non-finite x gives NaN in
    its rows."""
    # Lean on purpose (a decode step makes one call per weight matrix): the
    # binding checks dtypes, shapes, contiguity and K % 32, naming the argument.
    fmt = (
        fmt if fmt.__class__ is str and fmt in QUANT_BLOCK_BYTES else _quant_format(fmt)
    )
    for a, name in ((x, "x"), (w, "w")):
        if not isinstance(a, np.ndarray) or a.ndim != 2:
            _check(a, name, (F32,) if name == "x" else (U8,), (None, None))
    if out is None:
        out = np.empty((x.shape[0], w.shape[0]), dtype=F32)
    elif np.may_share_memory(out, x) or np.may_share_memory(out, w):
        raise ValueError("out must not overlap x or w")
    _C.linear_quant(x, [w], fmt, [bias], [out])
    return out


def linear_quant_many(
    x: np.ndarray,
    ws: list[np.ndarray] | tuple[np.ndarray, ...],
    fmt: str,
    biases: list[np.ndarray | None] | tuple[np.ndarray | None, ...] | None = None,
) -> list[np.ndarray]:
    """[linear_quant(x, w, fmt, b) for w, b in zip(ws, biases)], bit for bit,
    in one call: x is quantized once and the threads split the rows of all
    the matrices together, which is what makes q/k/v or gate/up of a small
    model cheap at decode (one start-up instead of one per matrix)."""
    fmt = (
        fmt if fmt.__class__ is str and fmt in QUANT_BLOCK_BYTES else _quant_format(fmt)
    )
    if not isinstance(x, np.ndarray) or x.ndim != 2:
        _check(x, "x", F32, (None, None))
    for w in ws:
        if not isinstance(w, np.ndarray) or w.ndim != 2:
            _check(w, "w", U8, (None, None))
    outs = [np.empty((x.shape[0], w.shape[0]), dtype=F32) for w in ws]
    _C.linear_quant(x, list(ws), fmt, [None] * len(ws) if biases is None else list(biases), outs)
    return outs


def simd_level() -> str:
    """The SIMD path in use: "avx512", "avx2" or "scalar"."""
    return _C.simd_level()


def detected_simd_level() -> str:
    """The best SIMD path this CPU supports."""
    return _C.detected_simd_level()


def available_simd_levels() -> list[str]:
    """Every level this CPU can run, lowest first."""
    return list(_LEVELS[: _LEVELS.index(detected_simd_level()) + 1])


def set_simd_level(name: str) -> None:
    """Force a SIMD level (ValueError if unknown or above the CPU's)."""
    _C.set_simd_level(name)


def num_threads() -> int:
    """OpenMP threads the kernels use (OMP_NUM_THREADS)."""
    return _C.num_threads()


def _level_from_env() -> None:
    name = os.environ.get("HEARTH_SIMD", "").strip().lower()
    if not name:
        return
    if name not in _LEVELS:
        raise ValueError(f"HEARTH_SIMD={name!r}: expected one of {_LEVELS}")
    if name not in available_simd_levels():
        warnings.warn(
            f"HEARTH_SIMD={name!r} is not supported by this CPU; "
            f"using {detected_simd_level()!r}",
            RuntimeWarning,
            stacklevel=2,
        )
        return
    set_simd_level(name)


_level_from_env()
