"""The op interface the model is written against. A backend owns array memory (numpy on the CPU,
CuPy on CUDA) and implements each op with its kernels; the model never touches an array library
directly, so one model definition runs on every backend."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from hearth.engine.model.quant import QuantizedMatrix

Array = Any  # the backend's array type


class Backend(ABC):
    """Memory and ops of one device. Shapes in comments: T tokens, H heads, D head_dim."""

    name: str

    # ---------------------------------------------------------------- memory
    @abstractmethod
    def weight(self, host: np.ndarray, dtype: str | None) -> Array:
        """Place a weight (a host array, often memory-mapped) on the device, converted to
        `dtype` ("bfloat16" / "float32"; None keeps what the backend can compute with)."""

    @abstractmethod
    def quantized_weight(self, host: np.ndarray | QuantizedMatrix, fmt: str | None) -> Any:
        """Place a matrix for `linear` in block format `fmt` ("q8_0" / "q4_0"): a float matrix
        is quantized, a QuantizedMatrix (from a GGUF file) is placed as it is (fmt None)."""

    @abstractmethod
    def asarray(self, host: np.ndarray) -> Array:
        """Copy a small host array (ids, positions, tables) to the device."""

    @abstractmethod
    def to_host(self, x: Array) -> np.ndarray:
        """Copy a device array back to host numpy."""

    @abstractmethod
    def kv_cache(self, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int) -> tuple[Array, Array]:
        """Allocate one layer's K and V caches, [num_blocks, block_size, num_kv_heads, head_dim]."""

    # ---------------------------------------------------------------- ops
    @abstractmethod
    def embedding(self, table: Array, token_ids: Array) -> Array:
        """Rows of `table` (a weight or a quantized matrix) for `token_ids`, as float32 [T, hidden]."""

    @abstractmethod
    def linear(self, x: Array, w: Array, bias: Array | None = None) -> Array:
        """x [M, K] @ w[N, K].T + bias -> float32 [M, N]; w a weight or a quantized matrix."""

    def linear_many(self, x: Array, ws: tuple[Array, ...], biases: tuple[Array | None, ...]) -> list[Array]:
        """[linear(x, w, b) for w, b in zip(ws, biases)]: the projections that read the same
        input (q/k/v, gate/up). A backend may run them as one fused call."""
        return [self.linear(x, w, b) for w, b in zip(ws, biases, strict=True)]

    @abstractmethod
    def rms_norm(self, x: Array, weight: Array, eps: float) -> Array:
        """Row-wise RMSNorm of x [M, D] times weight [D]."""

    @abstractmethod
    def add_rms_norm(self, x: Array, residual: Array, weight: Array, eps: float) -> Array:
        """residual += x in place; return rms_norm(residual) * weight."""

    def rope(self, x: Array, positions: Array, cos: Array, sin: Array) -> None:
        """Rotate-half rotary embedding of x [T, H, D] in place."""
        raise NotImplementedError(f"the {self.name} backend only rotates fused with the cache write")

    @abstractmethod
    def silu_and_mul(self, gate: Array, up: Array) -> Array:
        """silu(gate) * up."""

    def reshape_and_cache(self, k: Array, v: Array, k_cache: Array, v_cache: Array, slot_mapping: Array) -> None:
        """Write k, v [T, Hk, D] into the paged caches at `slot_mapping` [T]."""
        raise NotImplementedError(f"the {self.name} backend only writes the cache fused with RoPE")

    def rope_and_cache(self, q: Array, k: Array, v: Array, positions: Array, cos: Array, sin: Array,
                       k_cache: Array, v_cache: Array, slot_mapping: Array) -> None:
        """Rotate q [T, Hq, D] and k [T, Hk, D] in place, then write k and v into the paged caches
        at `slot_mapping` (slots < 0 are batch padding and skipped). A backend may fuse the three."""
        self.rope(q, positions, cos, sin)
        self.rope(k, positions, cos, sin)
        self.reshape_and_cache(k, v, k_cache, v_cache, slot_mapping)

    @abstractmethod
    def paged_attention(self, q: Array, k_cache: Array, v_cache: Array, block_tables: Array,
                        seq_lens: Array, query_start_loc: Array, scale: float,
                        decode_only: bool = False) -> Array:
        """Causal attention of q [T, Hq, D] over each sequence's cached K/V -> [T, Hq, D].
        `decode_only`: every sequence has exactly one query token (a backend may take a faster
        path; query_start_loc is then arange(S + 1))."""

    def logits(self, x: Array, head: Array) -> Array:
        """float32 logits [L, vocab] = x [L, hidden] @ head.T."""
        return self.linear(x, head)
