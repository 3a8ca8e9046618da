"""SiLU-and-multiply, the gated MLP's activation: out[m, i] = silu(gate[m, i]) * up[m, i].

The gate/up pair is read from one [M, 2I] array (the fused gate_up projection's output, gate in
the first half) or from two [M, I] arrays. Math in fp32, stored in the output dtype.
"""

from __future__ import annotations

from typing import Any

import triton
import triton.language as tl

from hearth.kernels.triton.launch import cdiv, check, dtype_name, empty, ptr, use_cupy_stream


@triton.jit
def _silu_and_mul_kernel(gate_ptr, up_ptr, out_ptr, num_cols, stride_gate, stride_up, stride_out,
                         BLOCK: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < num_cols
    g = tl.load(gate_ptr + row * stride_gate + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(up_ptr + row * stride_up + offs, mask=mask, other=0.0).to(tl.float32)
    y = g / (1.0 + tl.exp(-g)) * u
    tl.store(out_ptr + row * stride_out + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


FLOAT_DTYPES = ("float32", "float16", "bfloat16")


def silu_and_mul(gate: Any, up: Any | None = None, out: Any | None = None) -> Any:
    """silu(gate) * up for gate, up [M, I] of one float dtype; with `up` None, gate is the fused
    [M, 2I] array (gate columns first). Returns out [M, I] (allocated when None)."""
    check(gate, "gate", FLOAT_DTYPES, 2)
    m = gate.shape[0]
    if up is None:
        if gate.shape[1] % 2:
            raise ValueError(f"a fused gate_up must have an even width, got {gate.shape[1]}")
        cols = gate.shape[1] // 2
        gate_arg, up_arg, stride_in = gate, gate[:, cols:], gate.shape[1]
        stride_gate = stride_up = stride_in
    else:
        check(up, "up", FLOAT_DTYPES, 2)
        if tuple(up.shape) != tuple(gate.shape):
            raise ValueError(f"up shape {tuple(up.shape)} != gate shape {tuple(gate.shape)}")
        cols = gate.shape[1]
        gate_arg, up_arg, stride_gate, stride_up = gate, up, cols, cols
    dtype = dtype_name(gate)
    if out is None:
        out = empty((m, cols), dtype, like=gate)
    else:
        check(out, "out", FLOAT_DTYPES, 2)
        if tuple(out.shape) != (m, cols):
            raise ValueError(f"out must have shape {(m, cols)}, got {tuple(out.shape)}")
    if m == 0 or cols == 0:
        return out
    use_cupy_stream()
    block = min(1024, triton.next_power_of_2(cols))
    _silu_and_mul_kernel[(m, cdiv(cols, block))](ptr(gate_arg), ptr(up_arg), ptr(out), cols, stride_gate,
                                                 stride_up, cols, BLOCK=block)
    return out
