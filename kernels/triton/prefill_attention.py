"""Causal flash attention for ragged prefill batches over a paged KV cache.

Sequence s owns query rows query_start_loc[s]:query_start_loc[s + 1] of q [T, Hq, D]; its i-th
query sits at position seq_lens[s] - q_len + i and attends to keys 0..that position, read through
block_tables[s] from the caches [num_blocks, block_size, Hk, D] (the new tokens' K/V already
written there). q_len < seq_len covers chunked prefill and prefix-cache hits; q_len == 1 is a
decode token riding along in a mixed batch.

Program (tile, q head) takes BLOCK_M query rows of one sequence and walks its keys in BLOCK_N
tiles (`tl.dot` for Q K^T and P V, fp32 accumulation, online softmax in base 2), stopping at the
tile's last query position. The grid is sized from host-known numbers only, T // BLOCK_M + S
tiles (sequence s's tiles start at query_start_loc[s] // BLOCK_M + s, which is strictly increasing
in s and leaves room for every sequence's partial last tile), and each program finds its sequence
by binary search over query_start_loc, so a launch never waits for the device to report lengths.
Tiles past a sequence's last query exit at once.
"""

from __future__ import annotations

from typing import Any

import triton
import triton.language as tl

from hearth.kernels.triton.launch import (
    check,
    interpreting,
    output,
    ptr,
    use_cupy_stream,
)
from hearth.kernels.triton.paged_kv import check_paged_kv

LOG2E = 1.4426950408889634


@triton.jit
def _find_seq(qsl_ptr, tile, num_seqs, BLOCK_M: tl.constexpr):
    """The last sequence s whose first tile (query_start_loc[s] // BLOCK_M + s) is <= tile."""
    lo = 0
    hi = num_seqs
    while lo < hi:
        mid = (lo + hi) // 2
        if tl.load(qsl_ptr + mid) // BLOCK_M + mid <= tile:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


@triton.jit
def _prefill_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    bt_ptr,
    seq_lens_ptr,
    qsl_ptr,
    out_ptr,
    qk_scale,
    num_seqs,
    stride_bt,
    GROUP: tl.constexpr,
    HK: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr,
):
    tile = tl.program_id(0)
    head = tl.program_id(1)
    kvh = head // GROUP
    s = _find_seq(qsl_ptr, tile, num_seqs, BLOCK_M)
    q_start = tl.load(qsl_ptr + s)
    q_len = tl.load(qsl_ptr + s + 1) - q_start
    m0 = (tile - (q_start // BLOCK_M + s)) * BLOCK_M  # first query row of this tile
    if m0 >= q_len:
        return
    seq_len = tl.load(seq_lens_ptr + s)
    context = seq_len - q_len  # keys before this step's first query

    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    mask_m = offs_m < q_len
    mask_d = offs_d < HEAD_DIM
    q_pos = context + offs_m
    q_rows = ((q_start + offs_m).to(tl.int64) * (HK * GROUP) + head) * HEAD_DIM
    io_mask = mask_m[:, None] & mask_d[None, :]
    q = tl.load(q_ptr + q_rows[:, None] + offs_d[None, :], mask=io_mask, other=0.0)
    if UPCAST:  # the interpreter's 16-bit tl.dot is wrong
        q = q.to(tl.float32)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    # Causal: no query of this tile sees past its last row's position.
    end = tl.minimum(seq_len, context + m0 + BLOCK_M)
    for n0 in range(0, end, BLOCK_N):
        pos = n0 + offs_n
        valid = pos < end
        block = tl.load(bt_ptr + s * stride_bt + pos // BLOCK_SIZE, mask=valid, other=0)
        # int64: a whole layer's cache can exceed 2^31 elements
        row = (block.to(tl.int64) * BLOCK_SIZE + pos % BLOCK_SIZE) * HK + kvh
        kv_off = row[:, None] * HEAD_DIM + offs_d[None, :]
        kv_mask = valid[:, None] & mask_d[None, :]
        k = tl.load(k_ptr + kv_off, mask=kv_mask, other=0.0)
        v = tl.load(v_ptr + kv_off, mask=kv_mask, other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        # base-2 logits (qk_scale = scale * log2(e)); "ieee" keeps fp32 inputs out of tf32
        scores = tl.dot(q, tl.trans(k), input_precision="ieee") * qk_scale
        # Key 0 is visible to every row (padded rows too), so the row max is finite after the
        # first tile and no exp2(-inf - -inf) NaN can appear.
        visible = (pos[None, :] <= q_pos[:, None]) & valid[None, :]
        scores = tl.where(visible, scores, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(scores - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
        m_i = m_new

    o = acc / l_i[:, None]
    tl.store(
        out_ptr + q_rows[:, None] + offs_d[None, :],
        o.to(out_ptr.dtype.element_ty),
        mask=io_mask,
    )


def _tiles() -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N): 64 x 64 on a GPU; 16 x 16 in the interpreter, so that tiny test
    sequences still span several query and key tiles."""
    return (16, 16) if interpreting() else (64, 64)


def prefill_attention(
    q: Any,
    k_cache: Any,
    v_cache: Any,
    block_tables: Any,
    seq_lens: Any,
    query_start_loc: Any,
    scale: float,
    out: Any | None = None,
) -> Any:
    """Causal attention of q [T, Hq, D] over a paged KV cache, for a ragged batch.

    k_cache, v_cache [num_blocks, block_size, Hk, D] of q's dtype (float32/float16/bfloat16),
    Hq % Hk == 0; block_tables int32 [S, max_blocks]; seq_lens int32 [S] (tokens of each sequence
    after this step, each >= its query count and <= max_blocks * block_size); query_start_loc
    int32 [S + 1], non-decreasing from 0 to T. The values are the caller's contract (checking them
    would synchronise the device). Returns out [T, Hq, D] in q's dtype (allocated when None)."""
    dtype, block_size, hk = check_paged_kv(q, k_cache, v_cache, block_tables, seq_lens)
    check(query_start_loc, "query_start_loc", ("int32",), 1)
    num_tokens, hq, head_dim = (int(x) for x in q.shape)
    num_seqs = int(seq_lens.shape[0])
    if int(block_tables.shape[0]) != num_seqs:
        raise ValueError(
            f"block_tables must have one row per sequence ({num_seqs}), "
            f"got shape {tuple(block_tables.shape)}"
        )
    if int(query_start_loc.shape[0]) != num_seqs + 1:
        raise ValueError(
            f"query_start_loc must have {num_seqs + 1} entries (sequences + 1), "
            f"got {query_start_loc.shape[0]}"
        )
    out = output(out, (num_tokens, hq, head_dim), dtype, like=q)
    if num_tokens == 0 or num_seqs == 0 or head_dim == 0:
        return out
    use_cupy_stream()
    block_m, block_n = _tiles()
    _prefill_kernel[(num_tokens // block_m + num_seqs, hq)](
        ptr(q),
        ptr(k_cache),
        ptr(v_cache),
        ptr(block_tables),
        ptr(seq_lens),
        ptr(query_start_loc),
        ptr(out),
        scale * LOG2E,
        num_seqs,
        int(block_tables.shape[1]),
        GROUP=hq // hk,
        HK=hk,
        HEAD_DIM=head_dim,
        BLOCK_SIZE=block_size,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_D=max(16, triton.next_power_of_2(head_dim)),
        UPCAST=interpreting() and dtype != "float32",
    )
    return out
