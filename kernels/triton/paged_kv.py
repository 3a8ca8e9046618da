"""The argument checks both attention launchers share: a query batch and the paged KV cache it
reads through block tables."""

from __future__ import annotations

from typing import Any, NamedTuple

from hearth.kernels.triton.launch import check, dtype_name

FLOAT_DTYPES = ("float32", "float16", "bfloat16")


class PagedShape(NamedTuple):
    dtype: str
    block_size: int
    num_kv_heads: int


def check_paged_kv(q: Any, k_cache: Any, v_cache: Any, block_tables: Any, seq_lens: Any) -> PagedShape:
    """ValueError naming the argument unless q [T, Hq, D] (a float dtype), k_cache and v_cache
    [num_blocks, block_size, Hk, D] (q's dtype, Hq % Hk == 0), block_tables int32 [S, max_blocks]
    and seq_lens int32 [S] fit together."""
    check(q, "q", FLOAT_DTYPES, 3)
    dtype = dtype_name(q)
    check(k_cache, "k_cache", (dtype,), 4)
    check(v_cache, "v_cache", (dtype,), 4)
    check(block_tables, "block_tables", ("int32",), 2)
    check(seq_lens, "seq_lens", ("int32",), 1)
    hq, head_dim = int(q.shape[1]), int(q.shape[2])
    _, block_size, hk, kd = (int(x) for x in k_cache.shape)
    if tuple(v_cache.shape) != tuple(k_cache.shape):
        raise ValueError(f"v_cache shape {tuple(v_cache.shape)} != k_cache shape {tuple(k_cache.shape)}")
    if kd != head_dim:
        raise ValueError(f"k_cache head_dim {kd} != q head_dim {head_dim}")
    if hk == 0 or hq % hk:
        raise ValueError(f"q heads {hq} must be a multiple of k_cache heads {hk}")
    return PagedShape(dtype, block_size, hk)
