"""The query/key row order of llama.cpp's ``llama`` architecture.

Hugging Face Llama checkpoints rotate the two halves of each head (rotate_half: element i pairs
with element i + head_dim/2). llama.cpp's rope pairs adjacent elements (2i, 2i+1) instead, so its
converter reorders the rows of attn_q / attn_k (weights and biases) per head: within each head,
row ``j * head_dim/2 + i`` of the HF matrix becomes row ``2*i + j``. qwen2/qwen3 files keep the HF
order (llama.cpp runs those with the NEOX rope, which pairs halves like HF).

The reorder moves whole rows, so it applies unchanged to block-quantized data (one row of blocks
per output row) and to 1-D biases.
"""

from __future__ import annotations

import numpy as np


def _check(num_rows: int, num_heads: int) -> int:
    if num_heads <= 0 or num_rows % num_heads or (num_rows // num_heads) % 2:
        raise ValueError(f"cannot reorder {num_rows} rows over {num_heads} heads: each head needs an even "
                         "number of rows")
    return num_rows // num_heads


def gguf_row_order(num_rows: int, num_heads: int) -> np.ndarray:
    """Indices `idx` with ``gguf_rows = hf_rows[idx]`` (what llama.cpp's converter does)."""
    head_dim = _check(num_rows, num_heads)
    return np.arange(num_rows).reshape(num_heads, 2, head_dim // 2).swapaxes(1, 2).reshape(-1)


def hf_row_order(num_rows: int, num_heads: int) -> np.ndarray:
    """Indices `idx` with ``hf_rows = gguf_rows[idx]`` (undoes `gguf_row_order`)."""
    head_dim = _check(num_rows, num_heads)
    return np.arange(num_rows).reshape(num_heads, head_dim // 2, 2).swapaxes(1, 2).reshape(-1)


def to_gguf_rows(a: np.ndarray, num_heads: int) -> np.ndarray:
    """HF-ordered q/k rows (weight [N, ...] or bias [N]) in llama.cpp's order (a new array)."""
    return np.ascontiguousarray(a[gguf_row_order(a.shape[0], num_heads)])


def to_hf_rows(a: np.ndarray, num_heads: int) -> np.ndarray:
    """llama.cpp-ordered q/k rows back in HF order (a new array)."""
    return np.ascontiguousarray(a[hf_row_order(a.shape[0], num_heads)])
