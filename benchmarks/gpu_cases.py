"""The cases of bench_gpu.py: each kernel at a model's shapes and a batch size, with the bytes it
must move and the FLOPs it must do counted from the shapes (not from the implementation)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from hearth.benchmarks import counts

BF16 = "bfloat16"


@dataclass
class Case:
    """One kernel at one shape: `run` launches it once; bytes/flops are what one launch moves/does."""

    name: str
    shape: dict
    dtype: str
    run: Callable[[], Any]
    nbytes: int
    flops: int = 0


def linear_cases(dev, dims, batch, context) -> list[Case]:
    """The fused gate/up projection [2*inter, hidden] and the down projection, in bf16 (cuBLAS)
    and the two quantized formats (Triton, weight-only)."""
    import hearth.kernels.cpu as K
    from hearth.kernels.triton.dense_matmul import linear
    from hearth.kernels.triton.quant_matmul import quant_linear
    from hearth.kernels.triton.quant_pack import repack

    h, inter = dims["hidden"], dims["inter"]
    out = []
    for label, (n, k) in (("gate_up", (2 * inter, h)), ("down", (h, inter))):
        x = dev.randn((batch, k), BF16)
        w = dev.randn((n, k), BF16, scale=0.02)
        work = counts.linear(batch, k, n, "bf16", act="bf16")
        out.append(Case(f"linear_{label}", {"N": n, "K": k}, BF16, lambda x=x, w=w: linear(x, w),
                        work.bytes, work.flops))
        host = np.random.default_rng(1).standard_normal((n, k), dtype=np.float32) * 0.02
        for fmt in ("q8_0", "q4_0"):
            packed = repack(K.quantize(host, fmt), fmt).to_device(dev.asarray)
            # the repacked layout holds the same bytes as GGUF's blocks, so the count is the format's
            work = counts.linear(batch, k, n, fmt, act="bf16")
            out.append(Case(f"quant_linear_{label}", {"N": n, "K": k}, fmt,
                            lambda x=x, p=packed: quant_linear(x, p), work.bytes, work.flops))
    return out


def _paged_cache(dev, num_seqs, context, dims, block_size=16):
    """Caches holding num_seqs sequences of `context` tokens in shuffled blocks, and their tables."""
    per_seq = -(-context // block_size)
    num_blocks = num_seqs * per_seq
    shape = (num_blocks, block_size, dims["kv_heads"], dims["head_dim"])
    k_cache, v_cache = dev.randn(shape, BF16), dev.randn(shape, BF16)
    tables = np.random.default_rng(2).permutation(num_blocks).astype(np.int32).reshape(num_seqs, per_seq)
    seq_lens = np.full(num_seqs, context, np.int32)
    return k_cache, v_cache, dev.asarray(tables), dev.asarray(seq_lens)


def attention_cases(dev, dims, batch, context) -> list[Case]:
    """Decode attention at this batch (bytes: the K/V read); prefill attention of one prompt of
    `context` tokens, counted once per model (at batch 1; FLOPs: the causal half of QK^T and PV)."""
    from hearth.kernels.triton.decode_attention import decode_attention
    from hearth.kernels.triton.prefill_attention import prefill_attention

    hq, hk, d = dims["heads"], dims["kv_heads"], dims["head_dim"]
    scale = d**-0.5
    k_cache, v_cache, tables, seq_lens = _paged_cache(dev, batch, context, dims)
    q = dev.randn((batch, hq, d), BF16)
    work = counts.decode_attention(batch, context, hq, hk, d, kv="bf16", act="bf16")
    cases = [Case("decode_attention", {"context": context, "heads": f"{hq}/{hk}x{d}"}, BF16,
                  lambda: decode_attention(q, k_cache, v_cache, tables, seq_lens, scale), work.bytes, work.flops)]
    if batch == 1:
        prompt = context // 4 if not dev.smoke else context
        kc, vc, pt, ps = _paged_cache(dev, 1, prompt, dims)
        pq = dev.randn((prompt, hq, d), BF16)
        starts = dev.asarray(np.array([0, prompt], np.int32))
        work = counts.prefill_attention(prompt, hq, hk, d, "bf16")
        cases.append(Case("prefill_attention", {"prompt": prompt, "heads": f"{hq}/{hk}x{d}"}, BF16,
                          lambda: prefill_attention(pq, kc, vc, pt, ps, starts, scale), work.bytes, work.flops))
    return cases


def pointwise_cases(dev, dims, batch, context) -> list[Case]:
    """Norm, activation, RoPE + cache write, embedding gather: bytes read + written."""
    from hearth.kernels.triton.embedding import embedding
    from hearth.kernels.triton.rms_norm import add_rms_norm
    from hearth.kernels.triton.rope_cache import rope_and_cache
    from hearth.kernels.triton.silu_and_mul import silu_and_mul

    h, inter, hq, hk, d = dims["hidden"], dims["inter"], dims["heads"], dims["kv_heads"], dims["head_dim"]
    x, res, w = dev.randn((batch, h), BF16), dev.randn((batch, h), "float32"), dev.randn((h,), BF16)
    gate_up = dev.randn((batch, 2 * inter), BF16)
    q, k, v = dev.randn((batch, hq, d), BF16), dev.randn((batch, hk, d), BF16), dev.randn((batch, hk, d), BF16)
    k_cache, v_cache, _, _ = _paged_cache(dev, batch, 16, dims)
    positions = dev.asarray(np.arange(batch, dtype=np.int64))
    slots = dev.asarray(np.arange(batch, dtype=np.int64) * 16)
    cos, sin = dev.randn((batch + 16, d // 2), "float32"), dev.randn((batch + 16, d // 2), "float32")
    table = dev.randn((dims["vocab"], h), BF16)
    ids = dev.asarray(np.random.default_rng(3).integers(0, dims["vocab"], batch).astype(np.int32))
    return [
        Case("add_rms_norm", {"hidden": h}, BF16, lambda: add_rms_norm(x, res, w, 1e-5),
             batch * h * (2 + 4 + 4 + 2) + 2 * h),
        Case("silu_and_mul", {"inter": inter}, BF16, lambda: silu_and_mul(gate_up), batch * inter * 2 * 3),
        Case("rope_and_cache", {"heads": f"{hq}/{hk}x{d}"}, BF16,
             lambda: rope_and_cache(q, k, v, positions, cos, sin, k_cache, v_cache, slots),
             2 * batch * d * (2 * hq + 2 * hk + hk + 2 * hk) + 8 * batch * d // 2),
        Case("embedding", {"hidden": h}, BF16, lambda: embedding(table, ids), 2 * 2 * batch * h),
    ]


def sampling_cases(dev, dims, batch, context) -> list[Case]:
    """The sampler over [batch, vocab] fp32 logits with top-k, top-p and temperature on: bytes of
    one read of the logits (the floor any sampler pays)."""
    from hearth.kernels.numba.sampling import sample

    if dev.smoke and batch > 1:  # the CUDA simulator runs one Python thread per CUDA thread
        return []
    v = dims["vocab"]
    rng = np.random.default_rng(4)
    as_dev = (lambda a: a) if dev.smoke else dev.asarray
    logits = as_dev(rng.standard_normal((batch, v), dtype=np.float32) * 3)
    temp = as_dev(np.full(batch, 0.8, np.float32))
    top_k = as_dev(np.full(batch, 50, np.int32))
    top_p = as_dev(np.full(batch, 0.9, np.float32))
    min_p = as_dev(np.zeros(batch, np.float32))
    seeds = as_dev(np.arange(batch, dtype=np.int64))
    steps = as_dev(np.zeros(batch, np.int64))
    threads = 32 if dev.smoke else 1024
    return [Case("sample", {"vocab": v}, "float32",
                 lambda: sample(logits, temp, top_k, top_p, min_p, seeds, steps, threads=threads), 4 * batch * v)]
