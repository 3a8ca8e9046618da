"""Block (de)quantization for GGUF tensors: which stored types hearth runs as they are, and what
the others become at load."""

from __future__ import annotations

import functools

import ml_dtypes
import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants

T = GGMLQuantizationType

# stored types used without conversion -> hearth's name for them
NATIVE = {T.F32: "float32", T.F16: "float16", T.BF16: "bfloat16", T.Q8_0: "q8_0", T.Q4_0: "q4_0"}
FLOAT_DTYPES = {T.F32: np.dtype(np.float32), T.F16: np.dtype(np.float16), T.BF16: np.dtype(ml_dtypes.bfloat16)}
GGML_TYPE = {"q8_0": T.Q8_0, "q4_0": T.Q4_0, "f16": T.F16, "f32": T.F32, "bf16": T.BF16}


def bits_per_weight(qtype: GGMLQuantizationType) -> float:
    block, size = GGML_QUANT_SIZES[qtype]
    return 8.0 * size / block


def requantize_target(qtype: GGMLQuantizationType) -> str:
    """The native block format a non-native matrix type is converted to: q4_0 below 5.5 bits per
    weight (Q2_K, Q3_K, Q4_K, Q4_1, IQ*), q8_0 from 5.5 bits up (Q5_0, Q5_1, Q5_K, Q6_K, Q8_K).
    5- and 6-bit types go up to 8 bits rather than down to 4: the conversion should add as little
    error as it can, and memory is the lesser cost."""
    return "q4_0" if bits_per_weight(qtype) < 5.5 else "q8_0"


@functools.cache
def can_dequantize(qtype: GGMLQuantizationType) -> bool:
    """Whether the gguf package can turn `qtype` blocks back into floats."""
    if qtype in FLOAT_DTYPES:
        return True
    _, size = GGML_QUANT_SIZES[qtype]
    try:
        quants.dequantize(np.zeros((1, size), dtype=np.uint8), qtype)
    except NotImplementedError:
        return False
    return True


def dequantize(raw: np.ndarray, qtype: GGMLQuantizationType, shape: tuple[int, ...]) -> np.ndarray:
    """float32 `shape` from the stored bytes/values of one tensor."""
    if qtype in FLOAT_DTYPES:
        return np.asarray(raw).view(FLOAT_DTYPES[qtype]).reshape(shape).astype(np.float32)
    return quants.dequantize(np.asarray(raw), qtype).reshape(shape).astype(np.float32, copy=False)


def quantize(w: np.ndarray, fmt: str) -> np.ndarray:
    """uint8 [N, row_bytes] blocks of float matrix `w` [N, K] in "q8_0" or "q4_0" (K % 32 == 0)."""
    from hearth.kernels.cpu import (
        quantize as compiled,  # bit-identical to gguf's numpy code, much faster
    )

    return compiled(np.ascontiguousarray(w, dtype=np.float32), fmt)
