"""RMSNorm and the fused residual add + RMSNorm of the decoder layers.

    rms_norm:      out[m] = x[m] / sqrt(mean(x[m] ** 2) + eps) * weight
    add_rms_norm:  residual[m] += x[m] (in place), then out[m] = rms_norm(residual[m]) * weight

add_rms_norm normalises the residual *as stored* (rounded to its dtype), so `out` equals
rms_norm(residual) after the call whatever the dtypes (same contract as hearth.kernels.cpu). One program
per row; the row is swept in chunks of at most MAX_BLOCK columns twice: once for the sum of squares
(and the residual update), once to normalise; the second sweep re-reads what the first touched
moments ago, from L1/L2. Math in fp32; x, residual, weight and out may each be fp32/fp16/bf16.
"""

from __future__ import annotations

from typing import Any

import triton
import triton.language as tl

from hearth.kernels.triton.launch import check, dtype_name, empty, ptr, use_cupy_stream

FLOAT_DTYPES = ("float32", "float16", "bfloat16")
MAX_BLOCK = 4096  # columns per chunk: 16 fp32 registers per thread at 8 warps


@triton.jit
def _rms_norm_kernel(
    x_ptr,
    res_ptr,  # the residual when HAS_RESIDUAL, else unused (x passed again)
    w_ptr,
    out_ptr,
    num_cols,
    stride_x,
    stride_res,
    stride_out,
    eps,
    HAS_RESIDUAL: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(
        tl.int64
    )  # int64: rows * stride may pass 2**31 in long prefills
    x_row = x_ptr + row * stride_x
    res_row = res_ptr + row * stride_res
    out_row = out_ptr + row * stride_out
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for c0 in range(0, num_cols, BLOCK):
        offs = c0 + tl.arange(0, BLOCK)
        mask = offs < num_cols
        v = tl.load(x_row + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_RESIDUAL:
            v += tl.load(res_row + offs, mask=mask, other=0.0).to(tl.float32)
            stored = v.to(res_ptr.dtype.element_ty)
            tl.store(res_row + offs, stored, mask=mask)
            v = stored.to(tl.float32)  # normalise exactly what the residual now holds
        acc += v * v
    rstd = 1.0 / tl.sqrt(tl.sum(acc, axis=0) / num_cols + eps)
    for c0 in range(0, num_cols, BLOCK):
        offs = c0 + tl.arange(0, BLOCK)
        mask = offs < num_cols
        # same offsets and layout as the first sweep: each thread reads back its own stores
        if HAS_RESIDUAL:
            v = tl.load(res_row + offs, mask=mask, other=0.0).to(tl.float32)
        else:
            v = tl.load(x_row + offs, mask=mask, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(out_row + offs, (v * rstd * w).to(out_ptr.dtype.element_ty), mask=mask)


def _check_out(out: Any, shape: tuple[int, ...], default_dtype: str, like: Any) -> Any:
    if out is None:
        return empty(shape, default_dtype, like=like)
    check(out, "out", FLOAT_DTYPES, 2)
    if tuple(out.shape) != shape:
        raise ValueError(f"out must have shape {shape}, got {tuple(out.shape)}")
    return out


def _check_weight(weight: Any, cols: int) -> None:
    check(weight, "weight", FLOAT_DTYPES, 1)
    if weight.shape[0] != cols:
        raise ValueError(
            f"weight must have {cols} elements (the row width), got {weight.shape[0]}"
        )


def _launch(
    x: Any, res: Any, weight: Any, out: Any, eps: float, has_residual: bool
) -> None:
    rows, cols = x.shape
    if rows == 0 or cols == 0:
        return
    use_cupy_stream()
    block = min(MAX_BLOCK, triton.next_power_of_2(cols))
    _rms_norm_kernel[(rows,)](
        ptr(x),
        ptr(res),
        ptr(weight),
        ptr(out),
        cols,
        cols,
        cols,
        cols,
        float(eps),
        HAS_RESIDUAL=has_residual,
        BLOCK=block,
        num_warps=4 if block <= 1024 else 8,
    )


def rms_norm(x: Any, weight: Any, eps: float, out: Any | None = None) -> Any:
    """out = x / sqrt(mean(x**2, -1) + eps) * weight for x [M, D], weight [D] (float dtypes,
    math in fp32). Returns out [M, D], allocated in x's dtype when None; out may be x."""
    check(x, "x", FLOAT_DTYPES, 2)
    _check_weight(weight, x.shape[1])
    out = _check_out(out, tuple(x.shape), dtype_name(x), like=x)
    _launch(x, x, weight, out, eps, has_residual=False)
    return out


def add_rms_norm(
    x: Any, residual: Any, weight: Any, eps: float, out: Any | None = None
) -> Any:
    """residual += x (in place, rounded to residual's dtype); out = rms_norm(residual) * weight.

    x, residual [M, D] and weight [D] of any float dtypes (e.g. a bf16 x on an fp32 residual
    stream). Returns out [M, D], allocated in x's dtype when None; out may be x itself."""
    check(x, "x", FLOAT_DTYPES, 2)
    check(residual, "residual", FLOAT_DTYPES, 2)
    if tuple(residual.shape) != tuple(x.shape):
        raise ValueError(
            f"residual shape {tuple(residual.shape)} != x shape {tuple(x.shape)}"
        )
    _check_weight(weight, x.shape[1])
    out = _check_out(out, tuple(x.shape), dtype_name(x), like=x)
    _launch(x, residual, weight, out, eps, has_residual=True)
    return out
