"""Weight-only quantized linear: out[M, N] = x[M, K] @ W[N, K].T (+ bias), W in Q8_0 / Q4_0.

W comes repacked by `quant_pack.repack` (fp16 scales [N, K/32] apart from the quants). The
activations are not quantized: x stays fp32/fp16/bf16, weights are dequantized in registers
(w = d * q, exact in fp32), products are accumulated in fp32 and the result is stored in x's dtype.

Two paths, picked by M:
- matvec (M <= 16, decode): each program owns BLOCK_N output rows for all M (<= 16) activation
  rows, so every weight byte is read from memory once; the product is a broadcast multiply and
  a sum over K in fp32 (tensor cores would idle at M this small). When N / BLOCK_N programs
  would not fill the GPU, K is split across SPLIT_K programs that write fp32 partials to a
  workspace, and a second small kernel sums them in a fixed order (deterministic, unlike atomics,
  and no zeroing pass), adds the bias and casts.
- matmul (prefill): BLOCK_M x BLOCK_N output tiles, a BLOCK_K loop that dequantizes the weight
  tile to x's dtype and feeds `tl.dot` with an fp32 accumulator. fp32 x uses
  input_precision="ieee" (no TF32), so fp32 results keep fp32 accuracy.
"""

from __future__ import annotations

import functools
from typing import Any

import triton
import triton.language as tl

from hearth.kernels.triton.launch import (
    cdiv,
    check,
    check_bias,
    dtype_name,
    empty,
    interpreting,
    is_cupy,
    output,
    ptr,
    use_cupy_stream,
)
from hearth.kernels.triton.quant_pack import BLOCK, PackedWeight

FLOAT_DTYPES = ("float32", "float16", "bfloat16")
MATVEC_MAX_M = 16


@triton.jit
def _load_w(
    qs_ptr,
    sc_ptr,
    offs_n,
    k0,
    N,
    K,
    IS_Q4: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """W[offs_n, k0:k0+BLOCK_K] dequantized to fp32; rows >= N and columns >= K read as 0."""
    NB: tl.constexpr = BLOCK_K // 32
    n_ok = offs_n[:, None] < N
    offs_b = k0 // 32 + tl.arange(0, NB)
    # A masked scale is 0, which zeroes its (masked, arbitrary) quants too.
    s = tl.load(
        sc_ptr + offs_n[:, None] * (K // 32) + offs_b[None, :],
        mask=n_ok & (offs_b[None, :] < K // 32),
        other=0.0,
    ).to(tl.float32)
    if IS_Q4:
        offs_c = k0 // 2 + tl.arange(0, BLOCK_K // 2)
        b = tl.load(
            qs_ptr + offs_n[:, None] * (K // 2) + offs_c[None, :],
            mask=n_ok & (offs_c[None, :] < K // 2),
            other=0,
        )
        lo = (b & 15).to(tl.float32) - 8.0
        hi = (b >> 4).to(tl.float32) - 8.0
        # Packed byte j holds elements 2j (low) and 2j+1 (high): joining on a new last axis and
        # flattening restores element order without moving data between threads.
        q = tl.reshape(tl.join(lo, hi), (BLOCK_N, BLOCK_K))
    else:
        offs_k = k0 + tl.arange(0, BLOCK_K)
        q = tl.load(
            qs_ptr + offs_n[:, None] * K + offs_k[None, :],
            mask=n_ok & (offs_k[None, :] < K),
            other=0,
        ).to(tl.float32)
    s_full = tl.reshape(
        tl.broadcast_to(s[:, :, None], (BLOCK_N, NB, 32)), (BLOCK_N, BLOCK_K)
    )
    return q * s_full


@triton.jit
def _matvec_kernel(
    x_ptr,
    qs_ptr,
    sc_ptr,
    bias_ptr,
    out_ptr,
    ws_ptr,
    M,
    N,
    K,
    iters_per_split,
    IS_Q4: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SPLIT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    m_ok = offs_m[:, None] < M
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for i in range(iters_per_split):
        # The last split may run past K: its loads are fully masked and add 0.
        k0 = (pid_k * iters_per_split + i) * BLOCK_K
        w = _load_w(qs_ptr, sc_ptr, offs_n, k0, N, K, IS_Q4, BLOCK_N, BLOCK_K)
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(
            x_ptr + offs_m[:, None] * K + offs_k[None, :],
            mask=m_ok & (offs_k[None, :] < K),
            other=0.0,
        ).to(tl.float32)
        acc += tl.sum(x[:, None, :] * w[None, :, :], axis=2)
    mask = m_ok & (offs_n[None, :] < N)
    if SPLIT:
        tl.store(
            ws_ptr + pid_k * M * N + offs_m[:, None] * N + offs_n[None, :],
            acc,
            mask=mask,
        )
    else:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(
                tl.float32
            )[None, :]
        tl.store(
            out_ptr + offs_m[:, None] * N + offs_n[None, :],
            acc.to(out_ptr.dtype.element_ty),
            mask=mask,
        )


@triton.jit
def _split_reduce_kernel(
    ws_ptr,
    bias_ptr,
    out_ptr,
    M,
    N,
    split_k,
    HAS_BIAS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in range(split_k):  # fixed order: the same bits on every run
        acc += tl.load(ws_ptr + s * M * N + row * N + offs, mask=mask, other=0.0)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * N + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _matmul_kernel(
    x_ptr,
    qs_ptr,
    sc_ptr,
    bias_ptr,
    out_ptr,
    M,
    N,
    K,
    IS_Q4: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    DOT_F32: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    # Grouped order: GROUP_M row tiles share each weight column tile while it is in L2.
    pid = tl.program_id(0)
    num_m, num_n = tl.cdiv(M, BLOCK_M), tl.cdiv(N, BLOCK_N)
    group = pid // (GROUP_M * num_n)
    first_m = group * GROUP_M
    size_m = min(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * num_n)) % size_m
    pid_n = (pid % (GROUP_M * num_n)) // size_m
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m[:, None] < M
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(
            x_ptr + offs_m[:, None] * K + offs_k[None, :],
            mask=m_ok & (offs_k[None, :] < K),
            other=0.0,
        )
        w = _load_w(qs_ptr, sc_ptr, offs_n, k0, N, K, IS_Q4, BLOCK_N, BLOCK_K)
        if DOT_F32:
            acc = tl.dot(x.to(tl.float32), tl.trans(w), acc, input_precision="ieee")
        else:
            acc = tl.dot(x, tl.trans(w.to(x_ptr.dtype.element_ty)), acc)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[
            None, :
        ]
    tl.store(
        out_ptr + offs_m[:, None] * N + offs_n[None, :],
        acc.to(out_ptr.dtype.element_ty),
        mask=m_ok & (offs_n[None, :] < N),
    )


@functools.cache
def _sm_count() -> int:
    if interpreting():
        return 4
    import cupy

    return cupy.cuda.Device().attributes["MultiProcessorCount"]


def _check_packed(packed: Any) -> tuple[int, int, bool]:
    if not isinstance(packed, PackedWeight):
        got = type(packed).__name__
        msg = f"packed must be a PackedWeight (quant_pack.repack), got {got}"
        raise ValueError(msg)  # noqa: TRY004
    if packed.fmt not in ("q8_0", "q4_0"):
        raise ValueError(f"packed.fmt must be q8_0 or q4_0, got {packed.fmt!r}")
    n, k = packed.n, packed.k
    if k % BLOCK or k <= 0:
        raise ValueError(
            f"packed.k (K) must be a positive multiple of {BLOCK}, got {k}"
        )
    q4 = packed.fmt == "q4_0"
    check(packed.qs, "packed.qs", ("uint8",) if q4 else ("int8",), 2)
    check(packed.scales, "packed.scales", ("float16",), 2)
    if tuple(packed.qs.shape) != (n, k // 2 if q4 else k):
        raise ValueError(
            f"packed.qs must have shape {(n, k // 2 if q4 else k)}, got {tuple(packed.qs.shape)}"
        )
    if tuple(packed.scales.shape) != (n, k // BLOCK):
        raise ValueError(
            f"packed.scales must have shape {(n, k // BLOCK)}, got {tuple(packed.scales.shape)}"
        )
    return n, k, q4


def matvec_plan(
    m: int, n: int, k: int, split_k: int | None = None
) -> tuple[int, int, int, int, int]:
    """The matvec path's (BLOCK_M, BLOCK_N, BLOCK_K, K iterations per split, splits) for an
    [m, k] x [n, k] product; `split_k` None picks enough programs to fill the GPU."""
    bm = triton.next_power_of_2(m)
    # Keep BLOCK_M * BLOCK_N * BLOCK_K (the broadcast product) near 8K fp32 values: 64 registers
    # a thread at 4 warps. Long K tiles for M = 1 give each row 256-byte (q8_0) loads.
    bk = 256 if bm <= 2 else 128 if bm <= 4 else 64
    bn = 16 if bm <= 4 else 8
    iters = cdiv(k, bk)
    if split_k is None:  # >= 4 K tiles a split, so the partials' round trip stays small
        split_k = max(1, min(iters // 4, cdiv(2 * _sm_count(), cdiv(n, bn))))
    if not isinstance(split_k, int) or split_k < 1:
        raise ValueError(f"split_k must be a positive int, got {split_k!r}")
    per_split = cdiv(iters, min(split_k, iters))
    return bm, bn, bk, per_split, cdiv(iters, per_split)  # no split left without work


def quant_linear(
    x: Any,
    packed: PackedWeight,
    bias: Any | None = None,
    out: Any | None = None,
    *,
    path: str | None = None,
    split_k: int | None = None,
) -> Any:
    """x[M, K] (fp32/fp16/bf16) @ dequantized W[N, K].T + bias[N] -> out [M, N] in x's dtype
    (allocated when None), fp32 accumulation. `path` forces "matvec" or "matmul" (default: matvec
    for M <= 16); `split_k` sets the matvec's K split (default: enough programs to fill the GPU;
    1 writes the output directly)."""
    n, k, q4 = _check_packed(packed)
    check(x, "x", FLOAT_DTYPES, 2)
    m = x.shape[0]
    if x.shape[1] % BLOCK:
        raise ValueError(f"x: K must be a multiple of {BLOCK}, got {x.shape[1]}")
    if x.shape[1] != k:
        raise ValueError(f"x has K={x.shape[1]} but the packed weight has K={k}")
    if is_cupy(x) != is_cupy(packed.qs):
        raise ValueError(
            "x and packed must live on the same device (both CuPy or both torch)"
        )
    dtype = dtype_name(x)
    check_bias(bias, n, FLOAT_DTYPES)
    out = output(out, (m, n), dtype, like=x)
    path = path or ("matvec" if m <= MATVEC_MAX_M else "matmul")
    if path not in ("matvec", "matmul"):
        raise ValueError(f"path must be 'matvec' or 'matmul', got {path!r}")
    if path == "matvec" and m > MATVEC_MAX_M:
        raise ValueError(f"path='matvec' takes M <= {MATVEC_MAX_M}, got {m}")
    if m == 0 or n == 0:
        return out
    use_cupy_stream()
    has_bias = bias is not None
    bias_arg = ptr(bias) if has_bias else ptr(out)  # never read without HAS_BIAS
    if path == "matmul":
        bm = 64 if m <= 64 else 128
        bn, bk = 128, 64
        grid = (cdiv(m, bm) * cdiv(n, bn),)
        # bf16 tl.dot is wrong in the interpreter, and fp32 must not round to TF32: dot in fp32.
        dot_f32 = interpreting() or dtype == "float32"
        _matmul_kernel[grid](
            ptr(x),
            ptr(packed.qs),
            ptr(packed.scales),
            bias_arg,
            ptr(out),
            m,
            n,
            k,
            IS_Q4=q4,
            HAS_BIAS=has_bias,
            DOT_F32=dot_f32,
            BLOCK_M=bm,
            BLOCK_N=bn,
            BLOCK_K=bk,
            GROUP_M=8,
            num_warps=8 if bm == 128 else 4,
            num_stages=3,
        )
        return out
    bm, bn, bk, per_split, split_k = matvec_plan(m, n, k, split_k)
    programs_n = cdiv(n, bn)
    ws = empty((split_k, m, n), "float32", like=x) if split_k > 1 else out
    _matvec_kernel[(programs_n, split_k)](
        ptr(x),
        ptr(packed.qs),
        ptr(packed.scales),
        bias_arg,
        ptr(out),
        ptr(ws),
        m,
        n,
        k,
        per_split,
        IS_Q4=q4,
        HAS_BIAS=has_bias,
        SPLIT=split_k > 1,
        BLOCK_M=bm,
        BLOCK_N=bn,
        BLOCK_K=bk,
        num_warps=4,
    )
    if split_k > 1:
        block = min(1024, triton.next_power_of_2(n))
        _split_reduce_kernel[(m, cdiv(n, block))](
            ptr(ws), bias_arg, ptr(out), m, n, split_k, HAS_BIAS=has_bias, BLOCK=block
        )
    return out
