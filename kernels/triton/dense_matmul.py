"""Dense linear for unquantized (fp32/fp16/bf16) weights: out[M, N] = x[M, K] @ w[N, K].T + bias.

No Triton kernel: cuBLAS already runs this at the hardware's peak, reached through CuPy
(`cupy.matmul` on the current stream; fp32 stays fp32 unless CUPY_TF32=1 is set, 16-bit inputs
accumulate in fp32). Under the interpreter the arrays are torch CPU tensors and the product is
taken in fp32 with torch, so the same tests and callers run without a GPU.
"""

from __future__ import annotations

from typing import Any

from hearth.kernels.triton.launch import check, check_bias, dtype_name, is_torch, output

FLOAT_DTYPES = ("float32", "float16", "bfloat16")


def linear(x: Any, w: Any, bias: Any | None = None, out: Any | None = None) -> Any:
    """x[M, K] @ w[N, K].T + bias[N] -> out [M, N] (allocated when None), all in x's dtype (w and
    out must match it; bias may be any float dtype)."""
    check(x, "x", FLOAT_DTYPES, 2)
    dtype = dtype_name(x)
    check(w, "w", (dtype,), 2)
    m, k = x.shape
    n = w.shape[0]
    if w.shape[1] != k:
        raise ValueError(
            f"w must have K={k} columns like x, got shape {tuple(w.shape)}"
        )
    check_bias(bias, n, FLOAT_DTYPES)
    out = output(out, (m, n), dtype, like=x)
    if is_torch(x):
        y = x.float() @ w.float().T
        if bias is not None:
            y += bias.float()
        out.copy_(
            y
        )  # one rounding to x's dtype, as cuBLAS's fp32-accumulating epilogue does
        return out
    import cupy

    cupy.matmul(x, w.T, out=out)
    if bias is not None:
        out += bias  # a second rounding in 16-bit dtypes; cuBLASLt's bias epilogue would fuse it
    return out
