"""Paged attention for decode: one new query token per sequence, split along the context.

Sequence s's query q[s] (all Hq heads) sits at position seq_lens[s] - 1 and attends to keys
0..seq_lens[s] - 1, found through block_tables[s] in the paged caches [num_blocks, block_size, Hk,
D]. At batch 1 there is one (sequence, kv head) pair per kv head, far too few programs to fill a
GPU, so the context is split (flash-decoding): program (s, kv head, split) reads one contiguous
slice of the sequence's keys for all Hq / Hk query heads of that kv head's group (K/V loaded once
per group, the group padded to the 16 rows `tl.dot` needs), keeps an online softmax, and writes
its normalised partial output and base-2 log-sum-exp to an fp32 workspace. A second kernel merges
the splits exactly: out = sum_j 2^(lse_j - M) o_j / sum_j 2^(lse_j - M), M = max_j lse_j. A split
whose slice is empty (short sequences) writes lse = -inf and weighs nothing. With one split the
first kernel writes the output directly and the merge is skipped.

The number of splits depends only on host-known shapes (batch, kv heads, the block table's
capacity), never on seq_lens, so a decode step stays a fixed sequence of launches (CUDA graphs).
Each sequence's own keys are divided evenly over the splits, whatever its length.
"""

from __future__ import annotations

from typing import Any

import triton
import triton.language as tl

from hearth.kernels.triton.launch import (
    cdiv,
    check,
    empty,
    interpreting,
    is_cupy,
    output,
    ptr,
    use_cupy_stream,
)
from hearth.kernels.triton.paged_kv import check_paged_kv

LOG2E = 1.4426950408889634
# Below this many keys a split's fixed cost (q load, merge traffic) dominates its work.
MIN_KEYS_PER_SPLIT = 256
MAX_SPLITS = 64


def _block_n() -> int:
    """Keys per tile: 64 on a GPU; 16 in the interpreter, so that tiny test contexts still span
    several tiles per split."""
    return 16 if interpreting() else 64


@triton.jit
def _decode_split_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    bt_ptr,
    seq_lens_ptr,
    part_ptr,
    lse_ptr,
    out_ptr,
    qk_scale,
    num_splits,
    stride_bt,
    GROUP: tl.constexpr,
    HK: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    DIRECT: tl.constexpr,
    UPCAST: tl.constexpr,
):
    s = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    seq_len = tl.load(seq_lens_ptr + s)
    # Even division of this sequence's key tiles over the splits; trailing splits may get none.
    tiles_per_split = tl.cdiv(tl.cdiv(seq_len, BLOCK_N), num_splits)
    start = split * tiles_per_split * BLOCK_N
    end = tl.minimum(seq_len, start + tiles_per_split * BLOCK_N)

    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    mask_h = offs_h < GROUP
    mask_d = offs_d < HEAD_DIM
    heads = kvh * GROUP + offs_h  # the q heads sharing this kv head
    q_rows = (s * (HK * GROUP) + heads).to(tl.int64) * HEAD_DIM
    q = tl.load(
        q_ptr + q_rows[:, None] + offs_d[None, :],
        mask=mask_h[:, None] & mask_d[None, :],
        other=0.0,
    )
    if UPCAST:  # the interpreter's 16-bit tl.dot is wrong
        q = q.to(tl.float32)

    m_i = tl.full([BLOCK_H], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, BLOCK_D], tl.float32)
    for n0 in range(start, end, BLOCK_N):
        pos = n0 + offs_n
        valid = pos < end
        block = tl.load(bt_ptr + s * stride_bt + pos // BLOCK_SIZE, mask=valid, other=0)
        # int64: a whole layer's cache can exceed 2^31 elements
        row = (
            (block.to(tl.int64) * BLOCK_SIZE + pos % BLOCK_SIZE) * HK + kvh
        ) * HEAD_DIM
        kv_mask = valid[:, None] & mask_d[None, :]
        k = tl.load(k_ptr + row[:, None] + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_ptr + row[:, None] + offs_d[None, :], mask=kv_mask, other=0.0)
        if UPCAST:
            k = k.to(tl.float32)
            v = v.to(tl.float32)
        # "ieee": fp32 caches must not be rounded to tf32 (no effect on 16-bit operands)
        # base-2 logits (qk_scale = scale * log2(e)), so exp2 below
        scores = tl.dot(q, tl.trans(k), input_precision="ieee") * qk_scale
        scores = tl.where(valid[None, :], scores, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(scores, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(scores - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
        m_i = m_new

    has_keys = l_i > 0
    l_safe = tl.where(has_keys, l_i, 1.0)  # an empty split has l = 0: no 0/0 or log2(0)
    o = acc / l_safe[:, None]
    out_mask = mask_h[:, None] & mask_d[None, :]
    if DIRECT:
        tl.store(
            out_ptr + q_rows[:, None] + offs_d[None, :],
            o.to(out_ptr.dtype.element_ty),
            mask=out_mask,
        )
    else:
        # workspace rows: ((s * Hq + head) * num_splits + split)
        ws_rows = (s * (HK * GROUP) + heads).to(tl.int64) * num_splits + split
        tl.store(
            part_ptr + ws_rows[:, None] * HEAD_DIM + offs_d[None, :], o, mask=out_mask
        )
        lse = tl.where(has_keys, m_i + tl.log2(l_safe), float("-inf"))
        tl.store(lse_ptr + ws_rows, lse, mask=mask_h)


@triton.jit
def _decode_combine_kernel(
    part_ptr,
    lse_ptr,
    out_ptr,
    num_splits,
    HEAD_DIM: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)  # s * Hq + head
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    mask_s = offs_s < num_splits
    mask_d = offs_d < HEAD_DIM
    lse = tl.load(lse_ptr + row * num_splits + offs_s, mask=mask_s, other=float("-inf"))
    # A padding row (seq_len 0, e.g. a CUDA-graph batch padded up) has no finite lse: m = 0
    # then keeps every weight 0 and the row's output 0, not NaN.
    m = tl.max(lse, axis=0)
    m = tl.where(m == float("-inf"), 0.0, m)
    w = tl.exp2(lse - m)  # 0 for empty splits (lse = -inf)
    part = tl.load(
        part_ptr + (row * num_splits + offs_s)[:, None] * HEAD_DIM + offs_d[None, :],
        mask=mask_s[:, None] & mask_d[None, :],
        other=0.0,
    )
    w_sum = tl.sum(w, axis=0)
    o = tl.sum(part * w[:, None], axis=0) / tl.where(w_sum > 0, w_sum, 1.0)
    tl.store(
        out_ptr + row * HEAD_DIM + offs_d, o.to(out_ptr.dtype.element_ty), mask=mask_d
    )


_sm_count_cache: dict[int, int] = {}


def _sm_count(like: Any) -> int:
    """Streaming multiprocessors of like's device (132 assumed under the interpreter)."""
    if not is_cupy(like):
        return 132
    import cupy

    dev = cupy.cuda.Device().id
    if dev not in _sm_count_cache:
        _sm_count_cache[dev] = cupy.cuda.Device(dev).attributes["MultiProcessorCount"]
    return _sm_count_cache[dev]


def choose_num_splits(
    num_seqs: int, num_kv_heads: int, max_context: int, num_sms: int = 132
) -> int:
    """Splits per sequence so that num_seqs * num_kv_heads * splits programs cover about two
    waves of `num_sms`, with at least MIN_KEYS_PER_SPLIT keys of `max_context` per split."""
    programs = max(1, num_seqs * num_kv_heads)
    splits = min(
        cdiv(2 * num_sms, programs), cdiv(max_context, MIN_KEYS_PER_SPLIT), MAX_SPLITS
    )
    return max(1, splits)


def decode_workspace_size(
    num_seqs: int, num_q_heads: int, head_dim: int, num_splits: int
) -> int:
    """float32 elements of the workspace `decode_attention` needs (0 with one split)."""
    if num_splits <= 1:
        return 0
    return num_seqs * num_q_heads * num_splits * (head_dim + 1)


def decode_attention(
    q: Any,
    k_cache: Any,
    v_cache: Any,
    block_tables: Any,
    seq_lens: Any,
    scale: float,
    out: Any | None = None,
    num_splits: int | None = None,
    workspace: Any | None = None,
) -> Any:
    """Attention of one query token per sequence over a paged KV cache.

    q [S, Hq, D] (row s is sequence s's newest token, at position seq_lens[s] - 1); k_cache,
    v_cache [num_blocks, block_size, Hk, D] of q's dtype (float32/float16/bfloat16), Hq % Hk == 0;
    block_tables int32 [S, max_blocks]; seq_lens int32 [S], each in 0..max_blocks * block_size
    (not checked: reading it would synchronise the device; a 0 row, batch padding, gives 0). Returns out [S, Hq, D] in q's dtype.

    num_splits: context splits per sequence (default `choose_num_splits` from the batch and the
    block table's capacity). workspace: a float32 1-D array of at least `decode_workspace_size`
    elements, allocated per call when None (pass one to keep the decode loop allocation-free)."""
    dtype, block_size, hk = check_paged_kv(q, k_cache, v_cache, block_tables, seq_lens)
    num_seqs, hq, head_dim = (int(x) for x in q.shape)
    if tuple(seq_lens.shape) != (num_seqs,) or int(block_tables.shape[0]) != num_seqs:
        raise ValueError(
            f"seq_lens {tuple(seq_lens.shape)} and block_tables "
            f"{tuple(block_tables.shape)} must have one row per q row ({num_seqs})"
        )
    out = output(out, (num_seqs, hq, head_dim), dtype, like=q)
    max_context = int(block_tables.shape[1]) * block_size
    if num_splits is None:
        num_splits = choose_num_splits(num_seqs, hk, max_context, _sm_count(q))
    if int(num_splits) != num_splits or num_splits < 1:
        raise ValueError(f"num_splits must be a positive integer, got {num_splits}")
    num_splits = int(num_splits)
    if num_seqs == 0 or head_dim == 0:
        return out
    need = decode_workspace_size(num_seqs, hq, head_dim, num_splits)
    if need:
        if workspace is None:
            workspace = empty((need,), "float32", like=q)
        else:
            check(workspace, "workspace", ("float32",), 1)
            if int(workspace.shape[0]) < need:
                raise ValueError(
                    f"workspace must hold {need} float32 elements, got {workspace.shape[0]}"
                )
        n_part = num_seqs * hq * num_splits * head_dim
        part, lse = workspace[:n_part], workspace[n_part:need]
    else:
        part = lse = out  # unused by the direct path
    use_cupy_stream()
    group = hq // hk
    block_d = triton.next_power_of_2(head_dim)
    _decode_split_kernel[(num_seqs, hk, num_splits)](
        ptr(q),
        ptr(k_cache),
        ptr(v_cache),
        ptr(block_tables),
        ptr(seq_lens),
        ptr(part),
        ptr(lse),
        ptr(out),
        scale * LOG2E,
        num_splits,
        int(block_tables.shape[1]),
        GROUP=group,
        HK=hk,
        HEAD_DIM=head_dim,
        BLOCK_SIZE=block_size,
        BLOCK_H=max(16, triton.next_power_of_2(group)),
        BLOCK_N=_block_n(),
        BLOCK_D=max(16, block_d),
        DIRECT=num_splits == 1,
        UPCAST=interpreting() and dtype != "float32",
    )
    if num_splits > 1:
        _decode_combine_kernel[(num_seqs * hq,)](
            ptr(part),
            ptr(lse),
            ptr(out),
            num_splits,
            HEAD_DIM=head_dim,
            BLOCK_S=triton.next_power_of_2(num_splits),
            BLOCK_D=block_d,
        )
    return out
