"""CPU backend: numpy memory, ops from the compiled kernels in hearth.kernels.cpu."""

from __future__ import annotations

import ml_dtypes
import numpy as np

import hearth.kernels.cpu as K
from hearth.engine.backend.arena import WeightArena
from hearth.engine.backend.base import Array, Backend
from hearth.engine.model.quant import BLOCK, QuantizedMatrix, check_format, row_bytes

_BF16 = np.dtype(ml_dtypes.bfloat16)


class CPUBackend(Backend):
    """Weights stay as they are on disk when the kernels read that dtype (bf16 and fp32 are
    used straight from the memory map, so no second copy exists); fp16 is widened to fp32."""

    name = "cpu"

    def __init__(self) -> None:
        self._arena = WeightArena()  # matrices quantized on load live here, on huge pages

    def weight(self, host: np.ndarray, dtype: str | None) -> np.ndarray:
        if dtype is None:
            dtype = "bfloat16" if host.dtype == _BF16 else "float32"
        target = {"bfloat16": _BF16, "float32": np.dtype(np.float32)}.get(dtype)
        if target is None:
            raise ValueError(f"dtype {dtype!r} is not supported on the CPU; use bfloat16 or float32")
        if host.dtype == target:
            return host if host.flags.c_contiguous else np.ascontiguousarray(host)
        return np.ascontiguousarray(host.astype(target))

    def quantized_weight(self, host: np.ndarray | QuantizedMatrix, fmt: str | None) -> QuantizedMatrix:
        if isinstance(host, QuantizedMatrix):
            if fmt is not None and check_format(fmt) != host.fmt:
                raise ValueError(f"the weight is stored as {host.fmt}; it cannot be used as {fmt}")
            return host  # the GGUF memory map, read in place
        if host.ndim != 2:
            raise ValueError(f"only matrices are quantized, got shape {host.shape}")
        fmt = check_format(fmt)
        src = host if host.dtype in (_BF16, np.dtype(np.float32)) else host.astype(np.float32)
        n, k = host.shape
        out = self._arena.take((n, row_bytes(fmt, k))) if k % BLOCK == 0 else None
        return QuantizedMatrix(fmt, K.quantize(np.ascontiguousarray(src), fmt, out), (n, k))

    def asarray(self, host: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(host)

    def to_host(self, x: np.ndarray) -> np.ndarray:
        return x

    def kv_cache(self, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int) -> tuple[Array, Array]:
        # np.zeros maps fresh pages lazily: blocks never touched cost no memory
        shape = (num_blocks, block_size, num_kv_heads, head_dim)
        return np.zeros(shape, np.float32), np.zeros(shape, np.float32)

    def embedding(self, table: np.ndarray | QuantizedMatrix, token_ids: np.ndarray) -> np.ndarray:
        if isinstance(table, QuantizedMatrix):
            return K.dequantize(np.ascontiguousarray(table.data[token_ids]), table.fmt)
        return table[token_ids].astype(np.float32)

    def linear(self, x, w, bias=None):
        if isinstance(w, QuantizedMatrix):
            return K.linear_quant(x, w.data, w.fmt, bias)
        return K.linear(x, w, bias)

    def linear_many(self, x, ws, biases):
        fmt = ws[0].fmt if isinstance(ws[0], QuantizedMatrix) else None
        if fmt is not None and all(isinstance(w, QuantizedMatrix) and w.fmt == fmt for w in ws):
            return K.linear_quant_many(x, [w.data for w in ws], fmt, biases)
        return super().linear_many(x, ws, biases)

    def rms_norm(self, x, weight, eps):
        return K.rms_norm(x, weight, eps)

    def add_rms_norm(self, x, residual, weight, eps):
        return K.add_rms_norm(x, residual, weight, eps)

    def rope(self, x, positions, cos, sin):
        K.rope(x, positions, cos, sin)

    def silu_and_mul(self, gate, up):
        return K.silu_and_mul(gate, up)

    def reshape_and_cache(self, k, v, k_cache, v_cache, slot_mapping):
        K.reshape_and_cache(k, v, k_cache, v_cache, slot_mapping)

    def paged_attention(self, q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale,
                        decode_only=False):
        return K.paged_attention(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale)

