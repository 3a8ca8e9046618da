"""Rotary embedding of q and k in place, fused with writing k (rotated) and v into the paged KV cache.

Rotate-half RoPE (as hearth.kernels.cpu.rope): for x[t, h] = (x1, x2), halves of head_dim D,
    x1' = x1 * cos[pos[t]] - x2 * sin[pos[t]],   x2' = x2 * cos[pos[t]] + x1 * sin[pos[t]]
with cos/sin fp32 [max_pos, D // 2]. Then k_cache.reshape(-1, Hk, D)[slot_mapping[t]] = k'[t] and
the same for v (as hearth.kernels.cpu.reshape_and_cache); slots < 0 are padding and skipped. The cache gets
k' as stored in k's dtype, then cast to the cache's, so it holds exactly what a separate rope +
reshape_and_cache would write.

Grid (T, q head blocks + kv head blocks): a program rotates BLOCK_H heads of q, or BLOCK_H heads of
k and copies the same heads of v, so even a one-token decode step spreads over several programs.
q/k/v may be views into a fused qkv projection output: only their head and dim axes must be dense.
Index ranges are not checked on the host (that would sync the GPU); the kernel still never touches
memory outside the arrays: an out-of-range position reads cos = sin = 0, an out-of-range slot is
skipped like padding.
"""

from __future__ import annotations

from typing import Any

import triton
import triton.language as tl

from hearth.kernels.triton.launch import (
    cdiv,
    check,
    dtype_name,
    is_cupy,
    is_torch,
    ptr,
    use_cupy_stream,
)

FLOAT_DTYPES = ("float32", "float16", "bfloat16")
INDEX_DTYPES = ("int64", "int32")


@triton.jit
def _rope_cache_kernel(
    q_ptr,  # [T, Hq, D], token stride stride_q
    k_ptr,  # [T, Hk, D], token stride stride_k
    v_ptr,  # [T, Hk, D], token stride stride_v
    pos_ptr,  # [T]
    cos_ptr,  # [max_pos, HALF] fp32
    sin_ptr,
    slot_ptr,  # [T]
    k_cache_ptr,  # [num_slots, Hk, D]
    v_cache_ptr,
    num_q_heads,
    num_kv_heads,
    max_pos,
    num_slots,
    stride_q,
    stride_k,
    stride_v,
    HALF: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    head_block = tl.program_id(1)
    num_q_blocks = tl.cdiv(num_q_heads, BLOCK_H)
    is_q = head_block < num_q_blocks
    h0 = tl.where(is_q, head_block, head_block - num_q_blocks) * BLOCK_H
    num_heads = tl.where(is_q, num_q_heads, num_kv_heads)

    offs_h = h0 + tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HALF
    mask = (offs_h < num_heads)[:, None] & mask_d[None, :]
    # [BLOCK_H, BLOCK_D]: offsets of the first halves; the second halves are at + HALF
    offs = offs_h[:, None] * (2 * HALF) + offs_d[None, :]

    pos = tl.load(pos_ptr + t).to(tl.int64)
    # a scalar condition folds into the bound of one comparison rather than `mask & scalar`,
    # which the interpreter turns into an int mask it then rejects
    cs_mask = offs_d < tl.where((pos >= 0) & (pos < max_pos), HALF, 0)
    cos = tl.load(cos_ptr + pos * HALF + offs_d, mask=cs_mask, other=0.0)[None, :]
    sin = tl.load(sin_ptr + pos * HALF + offs_d, mask=cs_mask, other=0.0)[None, :]

    if is_q:
        x_ptr = q_ptr + t * stride_q
    else:
        x_ptr = k_ptr + t * stride_k
    x1 = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(x_ptr + offs + HALF, mask=mask, other=0.0).to(tl.float32)
    # rounded to the activation dtype here, so k and the cache hold the same values
    y1 = (x1 * cos - x2 * sin).to(q_ptr.dtype.element_ty)
    y2 = (x2 * cos + x1 * sin).to(q_ptr.dtype.element_ty)
    tl.store(x_ptr + offs, y1, mask=mask)
    tl.store(x_ptr + offs + HALF, y2, mask=mask)

    if head_block >= num_q_blocks:  # a kv program: also fill the cache
        # int64: slot * Hk * D passes 2**31 in big caches
        slot = tl.load(slot_ptr + t).to(tl.int64)
        slot_ok = (slot >= 0) & (slot < num_slots)
        heads_ok = offs_h < tl.where(slot_ok, num_heads, 0)
        cache_mask = heads_ok[:, None] & mask_d[None, :]
        cache_offs = slot * num_kv_heads * (2 * HALF) + offs
        cache_ty = k_cache_ptr.dtype.element_ty
        tl.store(k_cache_ptr + cache_offs, y1.to(cache_ty), mask=cache_mask)
        tl.store(k_cache_ptr + cache_offs + HALF, y2.to(cache_ty), mask=cache_mask)
        v_row = v_ptr + t * stride_v
        v1 = tl.load(v_row + offs, mask=cache_mask, other=0.0)
        v2 = tl.load(v_row + offs + HALF, mask=cache_mask, other=0.0)
        tl.store(v_cache_ptr + cache_offs, v1.to(cache_ty), mask=cache_mask)
        tl.store(v_cache_ptr + cache_offs + HALF, v2.to(cache_ty), mask=cache_mask)


def _token_stride(a: Any, name: str) -> int:
    """Check a float [T, H, D] array whose head and dim axes are dense (the token axis may be
    strided: a view into a fused qkv output); return its token stride in elements."""
    if not (is_cupy(a) or is_torch(a)):
        raise ValueError(
            f"{name} must be a CuPy array (or a torch tensor under the interpreter), "
            f"got {type(a).__name__}"
        )
    if dtype_name(a) not in FLOAT_DTYPES:
        raise ValueError(
            f"{name} must have dtype {' or '.join(FLOAT_DTYPES)}, got {dtype_name(a)}"
        )
    if a.ndim != 3:
        raise ValueError(
            f"{name} must be 3-D [tokens, heads, head_dim], got shape {tuple(a.shape)}"
        )
    strides = (
        tuple(a.stride()) if is_torch(a) else tuple(s // a.itemsize for s in a.strides)
    )
    _, heads, dim = a.shape
    if (
        (heads > 1 and strides[1] != dim)
        or (dim > 1 and strides[2] != 1)
        or strides[0] < heads * dim
    ):
        raise ValueError(
            f"{name} must be dense over its head and head_dim axes, got strides {strides}"
        )
    return strides[0]


def rope_and_cache(
    q: Any,
    k: Any,
    v: Any,
    positions: Any,
    cos: Any,
    sin: Any,
    k_cache: Any,
    v_cache: Any,
    slot_mapping: Any,
) -> None:
    """Rotate q [T, Hq, D] and k [T, Hk, D] in place by RoPE at positions [T] (cos, sin fp32
    [max_pos, D // 2]), and write k (rotated) and v [T, Hk, D] into k_cache / v_cache
    [num_blocks, block_size, Hk, D] at slot_mapping[t] (slots < 0 skipped).

    q, k, v share one float dtype; the caches share one float dtype, possibly another;
    positions and slot_mapping are int64 (or int32). Raises ValueError naming the bad argument."""
    stride_q = _token_stride(q, "q")
    stride_k = _token_stride(k, "k")
    stride_v = _token_stride(v, "v")
    num_tokens, num_q_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    if head_dim % 2:
        raise ValueError(
            f"q head_dim must be even for rotate-half RoPE, got {head_dim}"
        )
    if k.shape[0] != num_tokens or k.shape[2] != head_dim:
        raise ValueError(
            f"k must have shape ({num_tokens}, Hk, {head_dim}), got {tuple(k.shape)}"
        )
    if tuple(v.shape) != tuple(k.shape):
        raise ValueError(f"v shape {tuple(v.shape)} != k shape {tuple(k.shape)}")
    for a, name in ((k, "k"), (v, "v")):
        if dtype_name(a) != dtype_name(q):
            raise ValueError(
                f"{name} must have q's dtype {dtype_name(q)}, got {dtype_name(a)}"
            )
    for a, name in ((positions, "positions"), (slot_mapping, "slot_mapping")):
        check(a, name, INDEX_DTYPES, 1)
        if a.shape[0] != num_tokens:
            raise ValueError(
                f"{name} must have {num_tokens} entries (one per token), got {a.shape[0]}"
            )
    for a, name in ((cos, "cos"), (sin, "sin")):
        check(a, name, ("float32",), 2)
        if a.shape[1] != head_dim // 2 or tuple(a.shape) != tuple(cos.shape):
            raise ValueError(
                f"{name} must have shape (max_pos, {head_dim // 2}) like cos, "
                f"got {tuple(a.shape)}"
            )
    for a, name in ((k_cache, "k_cache"), (v_cache, "v_cache")):
        check(a, name, FLOAT_DTYPES, 4)
        if tuple(a.shape[2:]) != (num_kv_heads, head_dim):
            raise ValueError(
                f"{name} must have shape (num_blocks, block_size, {num_kv_heads}, "
                f"{head_dim}), got {tuple(a.shape)}"
            )
    if tuple(v_cache.shape) != tuple(k_cache.shape) or dtype_name(
        v_cache
    ) != dtype_name(k_cache):
        raise ValueError(
            f"v_cache ({tuple(v_cache.shape)}, {dtype_name(v_cache)}) must match "
            f"k_cache ({tuple(k_cache.shape)}, {dtype_name(k_cache)})"
        )
    if num_tokens == 0 or head_dim == 0:
        return
    use_cupy_stream()
    half = head_dim // 2
    block_d = triton.next_power_of_2(half)
    # ~1024 elements per half-tile: enough work per program, without spilling at head_dim 128
    block_h = min(
        triton.next_power_of_2(max(num_q_heads, num_kv_heads, 1)),
        max(1, 1024 // block_d),
    )
    grid = (num_tokens, cdiv(num_q_heads, block_h) + cdiv(num_kv_heads, block_h))
    _rope_cache_kernel[grid](
        ptr(q), ptr(k), ptr(v), ptr(positions), ptr(cos), ptr(sin), ptr(slot_mapping),
        ptr(k_cache), ptr(v_cache),
        num_q_heads, num_kv_heads, cos.shape[0], k_cache.shape[0] * k_cache.shape[1],
        stride_q, stride_k, stride_v,
        HALF=half, BLOCK_H=block_h, BLOCK_D=block_d,
    )  # fmt: skip
