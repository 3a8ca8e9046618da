"""CUDA backend: weights, KV cache and activations in GPU memory (CuPy arrays), ops from the Triton
kernels in hearth.kernels.triton and cuBLAS through CuPy.

Activations and the KV cache are in one compute dtype (bf16, fp16 or fp32) with fp32 accumulation
inside every kernel; norm weights and biases stay fp32; logits are returned in fp32. Matrices are
in the compute dtype, or q8_0 / q4_0 repacked at load into the layout the quantized matmul reads
(`hearth.kernels.triton.quant_pack`, the same numbers as the GGUF blocks).
"""

from __future__ import annotations

from typing import Any

import numpy as np

import hearth.kernels.cpu as K
from hearth.engine.backend.base import Array, Backend
from hearth.engine.model.quant import QuantizedMatrix, check_format
from hearth.kernels.triton.decode_attention import decode_attention
from hearth.kernels.triton.dense_matmul import linear as dense_linear
from hearth.kernels.triton.embedding import embedding
from hearth.kernels.triton.prefill_attention import prefill_attention
from hearth.kernels.triton.quant_matmul import quant_linear
from hearth.kernels.triton.quant_pack import PackedWeight, repack, unpack
from hearth.kernels.triton.rms_norm import add_rms_norm, rms_norm
from hearth.kernels.triton.rope_cache import rope_and_cache
from hearth.kernels.triton.silu_and_mul import silu_and_mul

COMPUTE_DTYPES = ("bfloat16", "float16", "float32")


def check_compute_dtype(dtype: str) -> str:
    """`dtype` if the CUDA backend computes in it, else ValueError."""
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported on CUDA; use one of {', '.join(COMPUTE_DTYPES)}")
    return dtype


def compute_dtype_for(requested: str | None, stored: str | None) -> str:
    """The GPU compute dtype: the one asked for, else the checkpoint's 16-bit dtype, else bf16
    (fp32 checkpoints run in bf16 unless dtype='float32' is asked for, as vLLM does)."""
    if requested is not None:
        return check_compute_dtype(requested)
    return stored if stored in ("bfloat16", "float16") else "bfloat16"


class CUDABackend(Backend):
    """The op interface on one GPU. `device` owns memory and the stream (hearth.engine.backend.cuda.device)."""

    name = "cuda"

    def __init__(self, device: Any, dtype: str = "bfloat16") -> None:
        if check_compute_dtype(dtype) == "bfloat16":
            try:
                device.zeros((1,), "bfloat16")
            except Exception as e:  # CuPy before 14 has no bfloat16 arrays
                raise ValueError(f"this CuPy cannot hold bfloat16 arrays ({e}); install cupy>=14 with "
                                 "ml_dtypes, or use dtype='float16'") from None
        self.device = device
        self.dtype = dtype
        self._dense_tables: dict[int, Array] = {}  # quantized embedding tables, dequantized once

    # ---------------------------------------------------------------- memory
    def weight(self, host: np.ndarray, dtype: str | None) -> Array:
        return self.device.asarray(host, check_compute_dtype(dtype or self.dtype))

    def quantized_weight(self, host: np.ndarray | QuantizedMatrix, fmt: str | None) -> PackedWeight:
        if isinstance(host, QuantizedMatrix):
            if fmt is not None and check_format(fmt) != host.fmt:
                raise ValueError(f"the weight is stored as {host.fmt}; it cannot be used as {fmt}")
            blocks, fmt = host.data, host.fmt
        else:
            if host.ndim != 2:
                raise ValueError(f"only matrices are quantized, got shape {host.shape}")
            fmt = check_format(fmt)
            src = host if host.dtype == np.float32 else host.astype(np.float32)
            blocks = K.quantize(np.ascontiguousarray(src), fmt)  # GGUF bytes, then the GPU layout
        return repack(blocks, fmt).to_device(self.device.asarray)

    def asarray(self, host: np.ndarray) -> Array:
        return self.device.asarray(host)

    def to_host(self, x: Array) -> np.ndarray:
        return self.device.to_host(x)

    def kv_cache(self, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int) -> tuple[Array, Array]:
        shape = (num_blocks, block_size, num_kv_heads, head_dim)
        return self.device.zeros(shape, self.dtype), self.device.zeros(shape, self.dtype)

    def kv_block_bytes(self, block_size: int, num_kv_heads: int, head_dim: int) -> int:
        """Bytes of one block of one layer's K and V caches together."""
        return 2 * block_size * num_kv_heads * head_dim * (4 if self.dtype == "float32" else 2)

    # ---------------------------------------------------------------- ops
    def embedding(self, table: Array, token_ids: Array) -> Array:
        if isinstance(table, PackedWeight):
            dense = self._dense_tables.get(id(table))
            if dense is None:  # a GGUF's quantized embedding: rows are gathered from a dense copy
                dense = self._dense_tables[id(table)] = self.device.asarray(unpack(table), self.dtype)
            table = dense
        return embedding(table, token_ids, dtype=self.dtype)

    def linear(self, x: Array, w: Array, bias: Array | None = None) -> Array:
        if isinstance(w, PackedWeight):
            return quant_linear(x, w, bias)
        return dense_linear(x, w, bias)

    def rms_norm(self, x: Array, weight: Array, eps: float) -> Array:
        return rms_norm(x, weight, eps)

    def add_rms_norm(self, x: Array, residual: Array, weight: Array, eps: float) -> Array:
        return add_rms_norm(x, residual, weight, eps)

    def silu_and_mul(self, gate: Array, up: Array) -> Array:
        return silu_and_mul(gate, up)

    def rope_and_cache(self, q, k, v, positions, cos, sin, k_cache, v_cache, slot_mapping) -> None:
        rope_and_cache(q, k, v, positions, cos, sin, k_cache, v_cache, slot_mapping)

    def paged_attention(self, q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale,
                        decode_only=False):
        if decode_only:
            return decode_attention(q, k_cache, v_cache, block_tables, seq_lens, scale)
        return prefill_attention(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale)

    def logits(self, x: Array, head: Array) -> Array:
        out = self.linear(x, head)
        return out if self.dtype == "float32" else self.device.astype(out, "float32")
