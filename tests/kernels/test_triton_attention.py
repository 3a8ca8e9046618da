"""Paged attention Triton kernels (decode, prefill) against ref.paged_attention (interpreter in CI,
`-m gpu` on a device at Llama head configurations)."""

from __future__ import annotations

import numpy as np
import pytest
from device_arrays import poisoned, rounded, to_device, to_host
from tolerances import assert_close

from hearth.kernels import reference as ref
from hearth.kernels.triton.decode_attention import (
    choose_num_splits,
    decode_attention,
    decode_workspace_size,
)
from hearth.kernels.triton.prefill_attention import prefill_attention

TOL_KEY = {
    "float32": "float32",
    "float16": "float16 output",
    "bfloat16": "bfloat16 output",
}
DTYPES = ["float32", "float16", "bfloat16"]


def _paged_cache(rng, seq_lens, hk, d, block_size, dtype):
    """Random K/V in a paged cache with each sequence's blocks scattered at random (a shuffled
    pool, spare blocks left over) and the unused tail of each block-table row pointing at other
    sequences' blocks (stale entries a kernel must not read). Returns the device arrays and the
    oracle's float64 copies of the caches."""
    blocks_per_seq = [-(-n // block_size) for n in seq_lens]
    max_blocks = max(blocks_per_seq) + 1
    num_blocks = sum(blocks_per_seq) + 3
    pool = rng.permutation(num_blocks)
    tables = rng.integers(0, num_blocks, (len(seq_lens), max_blocks)).astype(np.int32)
    used = 0
    for s, nb in enumerate(blocks_per_seq):
        tables[s, :nb] = pool[used : used + nb]
        used += nb
    shape = (num_blocks, block_size, hk, d)
    k = rng.standard_normal(shape).astype(np.float32)
    v = rng.standard_normal(shape).astype(np.float32)
    lens = np.asarray(seq_lens, np.int32)
    dev = (to_device(k, dtype), to_device(v, dtype), to_device(tables), to_device(lens))
    return dev, (rounded(k, dtype), rounded(v, dtype), tables, lens)


# ------------------------------------------------------------------------------------ decode


def _check_decode(
    rng, seq_lens, hq, hk, d, block_size, dtype, num_splits, workspace=False
):
    (k, v, tables, lens), (k64, v64, _, _) = _paged_cache(
        rng, seq_lens, hk, d, block_size, dtype
    )
    s = len(seq_lens)
    # x2: a sharper softmax than N(0, 1) gives, so the running max matters
    q = rng.standard_normal((s, hq, d)).astype(np.float32) * 2
    scale = d**-0.5
    # Rows with seq_len 0 (batch padding) must come out 0; the oracle sees the others.
    live = np.flatnonzero(np.asarray(seq_lens) > 0)
    want = np.zeros((s, hq, d))
    want[live] = ref.paged_attention(
        rounded(q, dtype)[live],
        k64,
        v64,
        to_host(tables)[live],
        to_host(lens)[live],
        np.arange(len(live) + 1),
        scale,
    )
    out = poisoned((s, hq, d), dtype)
    ws = None
    if workspace:  # NaN-filled: every slot the merge reads must have been written
        ws = poisoned((decode_workspace_size(s, hq, d, num_splits) + 5,), "float32")
    got = decode_attention(
        to_device(q, dtype),
        k,
        v,
        tables,
        lens,
        scale,
        out=out,
        num_splits=num_splits,
        workspace=ws,
    )
    assert got is out
    assert_close(
        to_host(got),
        want,
        TOL_KEY[dtype],
        msg=f"lens={seq_lens} hq={hq} hk={hk} d={d} bs={block_size} splits={num_splits}",
    )


# (hq, hk, d, block_size): GQA ratios 1, 2, 4
DECODE_HEADS = [(2, 2, 16, 4), (4, 2, 32, 16), (8, 2, 64, 4)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads", DECODE_HEADS)
def test_decode_attention(rng, dtype, heads):
    hq, hk, d, bs = heads
    lens = [1, 37, 5, 0, 64, 18]  # 1 key, block-size multiples and not, a padding row
    for splits in (1, 3, 8):  # 8 splits of 37 keys: 16-key tiles, so empty splits
        _check_decode(rng, lens, hq, hk, d, bs, dtype, splits, workspace=splits > 1)


def test_decode_attention_default_splits(rng):
    _check_decode(rng, [70, 3], 4, 1, 32, 16, "float32", None)


def test_choose_num_splits():
    # batch 1 at a long context fills ~2 waves of 132 SMs; big batches need no split
    assert choose_num_splits(1, 8, 8192) == 32
    assert choose_num_splits(16, 8, 8192) == 3
    assert choose_num_splits(256, 8, 8192) == 1
    assert choose_num_splits(1, 8, 300) == 2  # >= MIN_KEYS_PER_SPLIT keys per split
    assert choose_num_splits(1, 1, 1 << 20) == 64  # capped


# (hq, hk, d): Llama-3.1-8B, Llama-3.2-1B
MODEL_HEADS = [(32, 8, 128), (32, 8, 64)]
# (batch, longest context): long contexts at small batch, where the splits matter
MODEL_BATCHES = [(1, 8192), (16, 8192), (64, 2048), (256, 1024)]


def _model_lens(rng, batch, longest):
    lens = rng.integers(1, longest + 1, batch)
    lens[0] = longest
    return [int(n) for n in lens]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads", MODEL_HEADS)
def test_decode_attention_model_shapes(rng, dtype, heads):
    hq, hk, d = heads
    for batch, longest in MODEL_BATCHES:
        _check_decode(rng, _model_lens(rng, batch, longest), hq, hk, d, 16, dtype, None)
    _check_decode(rng, [8192], hq, hk, d, 16, dtype, 7, workspace=True)


def test_decode_attention_errors(rng):
    (k, v, tables, lens), _ = _paged_cache(rng, [5, 9], 2, 16, 4, "float32")
    q = to_device(rng.standard_normal((2, 4, 16)).astype(np.float32))
    with pytest.raises(ValueError, match="k_cache must have dtype"):
        decode_attention(q, to_device(to_host(k), "float16"), v, tables, lens, 0.25)
    with pytest.raises(ValueError, match="head_dim"):
        decode_attention(
            to_device(rng.standard_normal((2, 4, 32)).astype(np.float32)),
            k,
            v,
            tables,
            lens,
            0.25,
        )
    with pytest.raises(ValueError, match="multiple of k_cache heads"):
        decode_attention(
            to_device(rng.standard_normal((2, 3, 16)).astype(np.float32)),
            k,
            v,
            tables,
            lens,
            0.25,
        )
    with pytest.raises(ValueError, match="seq_lens"):
        decode_attention(q, k, v, tables, to_device(np.array([5], np.int32)), 0.25)
    with pytest.raises(ValueError, match="block_tables must have dtype"):
        decode_attention(
            q, k, v, to_device(to_host(tables).astype(np.int64)), lens, 0.25
        )
    with pytest.raises(ValueError, match="v_cache shape"):
        decode_attention(
            q, k, to_device(np.zeros((1, 4, 2, 16), np.float32)), tables, lens, 0.25
        )
    with pytest.raises(ValueError, match="out must have shape"):
        decode_attention(
            q, k, v, tables, lens, 0.25, out=poisoned((2, 4, 8), "float32")
        )
    with pytest.raises(ValueError, match="num_splits"):
        decode_attention(q, k, v, tables, lens, 0.25, num_splits=0)
    with pytest.raises(ValueError, match="workspace must hold"):
        decode_attention(
            q,
            k,
            v,
            tables,
            lens,
            0.25,
            num_splits=2,
            workspace=poisoned((10,), "float32"),
        )
    with pytest.raises(ValueError, match="CuPy array"):
        decode_attention(np.zeros((2, 4, 16), np.float32), k, v, tables, lens, 0.25)


# ----------------------------------------------------------------------------------- prefill


def _check_prefill(rng, seqs, hq, hk, d, block_size, dtype):
    """seqs: (q_len, seq_len) per sequence; the queries are the last q_len positions."""
    q_lens = [ql for ql, _ in seqs]
    seq_lens = [sl for _, sl in seqs]
    (k, v, tables, lens), (k64, v64, _, _) = _paged_cache(
        rng, seq_lens, hk, d, block_size, dtype
    )
    qsl = np.concatenate([[0], np.cumsum(q_lens)]).astype(np.int32)
    t = int(qsl[-1])
    q = rng.standard_normal((t, hq, d)).astype(np.float32) * 2
    scale = d**-0.5
    want = ref.paged_attention(
        rounded(q, dtype), k64, v64, to_host(tables), to_host(lens), qsl, scale
    )
    out = poisoned((t, hq, d), dtype)
    got = prefill_attention(
        to_device(q, dtype), k, v, tables, lens, to_device(qsl), scale, out=out
    )
    assert got is out
    assert_close(
        to_host(got),
        want,
        TOL_KEY[dtype],
        msg=f"seqs={seqs} hq={hq} hk={hk} d={d} bs={block_size}",
    )


# (q_len, seq_len): fresh prefills (q_len == seq_len) across query-tile boundaries, chunked
# prefill / prefix hits (q_len < seq_len), a decode token in the batch, an empty sequence.
PREFILL_SEQS = [(13, 13), (5, 40), (1, 1), (0, 9), (20, 37), (1, 18), (33, 33)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads", DECODE_HEADS)
def test_prefill_attention(rng, dtype, heads):
    hq, hk, d, bs = heads
    _check_prefill(rng, PREFILL_SEQS, hq, hk, d, bs, dtype)


def test_prefill_attention_single_sequence(rng):
    _check_prefill(rng, [(7, 7)], 4, 4, 32, 16, "float32")
    _check_prefill(rng, [(17, 50)], 4, 1, 16, 4, "bfloat16")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads", MODEL_HEADS)
def test_prefill_attention_model_shapes(rng, dtype, heads):
    hq, hk, d = heads
    # The float64 oracle materialises every (query, key) score single-threaded (~60 s for
    # 4M pairs on a slow CPU), so the shapes are kept to ~1M pairs: a chunk at the end of an
    # 8192-token context, a fresh 512-token prompt with a decode token, and a chunked-prefill batch.
    _check_prefill(rng, [(64, 8192)], hq, hk, d, 16, dtype)
    _check_prefill(rng, [(512, 512), (1, 300)], hq, hk, d, 16, dtype)
    lens = _model_lens(rng, 16, 1024)
    seqs = [(int(rng.integers(1, min(n, 64) + 1)), n) for n in lens]
    _check_prefill(rng, seqs, hq, hk, d, 16, dtype)


def test_prefill_attention_errors(rng):
    (k, v, tables, lens), _ = _paged_cache(rng, [5, 9], 2, 16, 4, "float32")
    qsl = to_device(np.array([0, 2, 5], np.int32))
    q = to_device(rng.standard_normal((5, 4, 16)).astype(np.float32))
    with pytest.raises(ValueError, match="v_cache must have dtype"):
        prefill_attention(
            q, k, to_device(to_host(v), "bfloat16"), tables, lens, qsl, 0.25
        )
    with pytest.raises(ValueError, match="head_dim"):
        q32 = to_device(rng.standard_normal((5, 4, 32)).astype(np.float32))
        prefill_attention(q32, k, v, tables, lens, qsl, 0.25)
    with pytest.raises(ValueError, match="multiple of k_cache heads"):
        q3 = to_device(rng.standard_normal((5, 3, 16)).astype(np.float32))
        prefill_attention(q3, k, v, tables, lens, qsl, 0.25)
    with pytest.raises(ValueError, match="query_start_loc must have 3"):
        prefill_attention(
            q, k, v, tables, lens, to_device(np.array([0, 5], np.int32)), 0.25
        )
    with pytest.raises(ValueError, match="query_start_loc must have dtype"):
        prefill_attention(q, k, v, tables, lens, to_device(np.array([0, 2, 5])), 0.25)
    with pytest.raises(ValueError, match="block_tables must have one row"):
        prefill_attention(q, k, v, tables[:1], lens, qsl, 0.25)
    with pytest.raises(ValueError, match="out must have shape"):
        prefill_attention(
            q, k, v, tables, lens, qsl, 0.25, out=poisoned((4, 4, 16), "float32")
        )
    with pytest.raises(ValueError, match="q must be 3-D"):
        prefill_attention(
            to_device(np.zeros((5, 64), np.float32)), k, v, tables, lens, qsl, 0.25
        )
