"""Byte and FLOP counts, checked against the arrays the kernels really touch."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import hearth.kernels.cpu as K
from hearth.benchmarks import counts


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_block_format_bytes_equal_the_quantized_arrays(fmt):
    w = np.random.default_rng(0).standard_normal((48, 160), dtype=np.float32)
    assert counts.matrix_bytes(48, 160, fmt) == K.quantize(w, fmt).nbytes


def test_float_matrix_bytes_and_block_alignment():
    assert counts.matrix_bytes(7, 33, "bf16") == np.zeros((7, 33), ml_dtypes.bfloat16).nbytes
    assert counts.matrix_bytes(7, 33, "f32") == 7 * 33 * 4
    with pytest.raises(ValueError, match="multiple of 32"):
        counts.matrix_bytes(7, 33, "q8_0")
    with pytest.raises(ValueError, match="not a float format"):
        counts.element_bytes("q5_k")


def test_linear_counts_every_operand_once():
    m, k, n = 3, 64, 40
    x, out = np.zeros((m, k), np.float32), np.zeros((m, n), np.float32)
    w = K.quantize(np.ones((n, k), np.float32), "q4_0")
    assert counts.linear(m, k, n, "q4_0") == counts.Work(x.nbytes + w.nbytes + out.nbytes, 2 * m * k * n)


def test_decode_attention_bytes_are_the_cache_rows_of_the_context():
    batch, ctx, hq, hk, d, block = 3, 48, 8, 2, 16, 16  # ctx fills whole blocks: the caches are exactly read
    k_cache = np.zeros((batch * ctx // block, block, hk, d), np.float32)
    q = np.zeros((batch, hq, d), np.float32)
    work = counts.decode_attention(batch, ctx, hq, hk, d)
    assert work.bytes == 2 * k_cache.nbytes + 2 * q.nbytes  # K and V read, q read and out written
    assert work.flops == 2 * 2 * batch * hq * ctx * d  # QK^T and PV, a multiply-add per element


def test_prefill_attention_flops_count_the_causal_pairs():
    t, hq, hk, d = 37, 4, 2, 8
    pairs = int(np.tril(np.ones((t, t))).sum())
    work = counts.prefill_attention(t, hq, hk, d)
    assert work.flops == 4 * hq * d * pairs
    assert work.bytes == 4 * t * d * (hq + hk + hk + hq)  # q, k, v read; out written


def test_pointwise_counts():
    x = np.zeros((5, 24), np.float32)
    assert counts.rms_norm(5, 24).bytes == 2 * x.nbytes + 24 * 4
    assert counts.rms_norm(5, 24, residual=True).bytes == 4 * x.nbytes + 24 * 4
    assert counts.silu_and_mul(5, 24).bytes == 3 * x.nbytes
    assert counts.rope(5, 3, 8).bytes == 2 * 5 * 3 * 8 * 4 + 5 * (8 * 4 + 8)


def test_roofline_ridge_puts_decode_below_and_long_prefill_above():
    """On an H200-like machine (4.8 TB/s, 989 TFLOP/s) decode attention is memory-bound and a
    2048-token prompt's attention compute-bound, as the GPU suite assumes."""
    ridge = 989e12 / 4.8e12
    dec = counts.decode_attention(64, 4096, 32, 8, 64, kv="bf16", act="bf16")
    pre = counts.prefill_attention(2048, 32, 8, 64, "bf16")
    assert dec.flops / dec.bytes < ridge < pre.flops / pre.bytes


def test_model_counts_scale_with_batch_and_context():
    cfg = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 4,
           "num_key_value_heads": 2, "vocab_size": 128, "tie_word_embeddings": True}
    d = counts.Dims.from_config(cfg)
    one, four = counts.decode_step(d, "bf16", "bf16", 1, 10), counts.decode_step(d, "bf16", "bf16", 4, 10)
    assert four.bytes - one.bytes == 3 * counts.kv_bytes(d, 10)  # weights read once for the batch
    assert four.flops == 4 * one.flops
    assert d.matmul_params() == 2 * (64 * 64 + 2 * 32 * 64 + 64 * 64 + 3 * 64 * 96) + 128 * 64
