"""float64 numpy oracles for every kernel: slow, obvious, no cleverness.

Same names and semantics as `hearth.kernels.cpu`, except that nothing is done in
place: ops that mutate (rope, add_rms_norm, reshape_and_cache) return new
arrays instead. Inputs of any float dtype (incl. ml_dtypes.bfloat16) are
widened to float64 first.
"""

from __future__ import annotations

import numpy as np


def _f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).astype(np.float64)


def linear(x, w, bias=None) -> np.ndarray:
    """x[M, K] @ w[N, K].T + bias[N]."""
    out = _f64(x) @ _f64(w).T
    if bias is not None:
        out = out + _f64(bias)
    return out


def rms_norm(x, weight, eps: float) -> np.ndarray:
    """x / sqrt(mean(x**2) + eps) * weight, row-wise."""
    x = _f64(x)
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * _f64(weight)


def add_rms_norm(x, residual, weight, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Returns (rms_norm(residual + x) * weight, residual + x)."""
    new_residual = _f64(residual) + _f64(x)
    return rms_norm(new_residual, weight, eps), new_residual


def rope(x, positions, cos, sin) -> np.ndarray:
    """Rotate-half RoPE of x[T, H, D] at positions[T]; cos, sin [max_pos, D//2]."""
    x = _f64(x)
    half = x.shape[-1] // 2
    c = _f64(cos)[positions][:, None, :]  # [T, 1, D/2]
    s = _f64(sin)[positions][:, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)


def silu_and_mul(gate, up) -> np.ndarray:
    """gate * sigmoid(gate) * up."""
    g = _f64(gate)
    return g / (1.0 + np.exp(-g)) * _f64(up)


def softmax(x) -> np.ndarray:
    """Row-wise softmax, max-subtracted."""
    x = _f64(x)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def reshape_and_cache(k, v, k_cache, v_cache, slot_mapping):
    """Returns copies of the caches with k[t], v[t] written at slot_mapping[t]
    (slots < 0 skipped)."""
    k_cache, v_cache = k_cache.copy(), v_cache.copy()
    kf = k_cache.reshape(-1, *k_cache.shape[2:])
    vf = v_cache.reshape(-1, *v_cache.shape[2:])
    for t, slot in enumerate(slot_mapping):
        if slot >= 0:
            kf[slot] = k[t]
            vf[slot] = v[t]
    return k_cache, v_cache


def attention_dense(q, k, v, scale: float, offset: int = 0) -> np.ndarray:
    """Causal attention: q[Tq, Hq, D] over k, v [Tk, Hk, D] (GQA by repeating
    kv heads). Query i sits at position offset + i and sees keys 0..offset+i."""
    q, k, v = _f64(q), _f64(k), _f64(v)
    group = q.shape[1] // k.shape[1]
    k = np.repeat(k, group, axis=1)
    v = np.repeat(v, group, axis=1)
    scores = np.einsum("qhd,khd->hqk", q, k) * scale
    qpos = offset + np.arange(q.shape[0])[:, None]
    mask = np.arange(k.shape[0])[None, :] > qpos  # [Tq, Tk]
    scores = np.where(mask[None], -np.inf, scores)
    p = np.exp(scores - scores.max(axis=-1, keepdims=True))
    p = p / p.sum(axis=-1, keepdims=True)
    return np.einsum("hqk,khd->qhd", p, v)


def paged_attention(
    q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale: float
) -> np.ndarray:
    """Gather each sequence's K/V through its block table, then dense causal
    attention with the new tokens at the end of the context."""
    out = np.zeros(q.shape, dtype=np.float64)
    block_size = k_cache.shape[1]
    for s in range(len(seq_lens)):
        q0, q1 = int(query_start_loc[s]), int(query_start_loc[s + 1])
        if q1 == q0:
            continue
        seq_len = int(seq_lens[s])
        pos = np.arange(seq_len)
        blocks = block_tables[s][pos // block_size]
        k = k_cache[blocks, pos % block_size]  # [seq_len, Hk, D]
        v = v_cache[blocks, pos % block_size]
        out[q0:q1] = attention_dense(q[q0:q1], k, v, scale, offset=seq_len - (q1 - q0))
    return out


# ------------------------------------------------------------- GGUF block formats
# Q8_0: fp16 d then 32 int8 q, w = d * q. Q4_0: fp16 d then 16 bytes, byte j holding element j
# (low nibble) and j + 16 (high nibble), w = d * (q - 8). Written independently of gguf-py, with
# its fp32 arithmetic, so the bytes must match it exactly (the tests check that too).

QUANT_BLOCK_BYTES = {"q8_0": 34, "q4_0": 18}


def _to_int(v: np.ndarray, dtype) -> np.ndarray:
    """Cast float32 values to int; non-finite ones (1/d overflowed on tiny blocks) become 0, as
    numpy's own cast does on x86."""
    ok = np.isfinite(v)
    return np.where(ok, v, 0).astype(dtype)


def quantize(w, fmt: str) -> np.ndarray:
    """w[N, K] (any float dtype, K % 32 == 0) -> uint8 [N, K // 32 * block bytes]."""
    w = np.asarray(w).astype(np.float32)
    n = w.shape[0]
    blocks = w.reshape(-1, 32)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        if fmt == "q8_0":
            d = np.abs(blocks).max(axis=1) / np.float32(127)
            inv = np.where(d == 0, np.float32(0), np.float32(1) / d)
            v = blocks * inv[:, None]
            a = np.abs(v)
            t = np.trunc(a)
            r = t + (a - t >= np.float32(0.5))  # round half away from zero
            q = _to_int(np.copysign(r, v), np.int8).view(np.uint8)
        else:
            first = np.abs(blocks).argmax(axis=1)
            d = blocks[np.arange(len(blocks)), first] / np.float32(-8)
            inv = np.where(d == 0, np.float32(0), np.float32(1) / d)
            t = np.trunc(blocks * inv[:, None] + np.float32(8.5))
            q = np.minimum(_to_int(t, np.int32), 15).astype(np.uint8)
            q = q[:, :16] | (q[:, 16:] << 4)
        scale = d.astype(np.float16).view(np.uint8).reshape(-1, 2)
    return np.concatenate([scale, q], axis=1).reshape(n, -1)


def dequantize(data, fmt: str) -> np.ndarray:
    """uint8 blocks [N, K // 32 * block bytes] -> float32 [N, K]."""
    data = np.asarray(data, dtype=np.uint8)
    n = data.shape[0]
    blocks = data.reshape(-1, QUANT_BLOCK_BYTES[fmt])
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # [blocks, 1]
    if fmt == "q8_0":
        q = blocks[:, 2:].view(np.int8).astype(np.float32)
    else:
        qs = blocks[:, 2:]
        q = np.concatenate([qs & 15, qs >> 4], axis=1).astype(np.float32) - 8
    with np.errstate(invalid="ignore"):
        return (d * q).reshape(n, -1)


def linear_quant(x, w, fmt: str, bias=None) -> np.ndarray:
    """x[M, K] @ dequantize(w)[N, K].T + bias[N], in float64 with x as given (not quantized)."""
    return linear(x, dequantize(w, fmt), bias)


_M32 = 0xFFFFFFFF


def _mul32(a, c: int):
    return ((a * (c & 0xFFFF)) + (((a * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _mix32(x):
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def sampling_uniform(seeds, steps) -> np.ndarray:
    """The GPU sampler's uniform in [0, 1) for each (seed, step): lowbias32 hashes chained over
    the 32-bit halves of seed and step, 53 bits (int64 arithmetic, as in the kernel)."""
    seeds, steps = np.asarray(seeds, np.int64), np.asarray(steps, np.int64)
    h = _mix32(((seeds >> 32) & _M32) ^ 0x9E3779B9)
    h = _mix32((seeds & _M32) ^ h)
    h = _mix32(((steps >> 32) & _M32) ^ h)
    h = _mix32((steps & _M32) ^ h)
    h2 = _mix32(h ^ 0x85EBCA6B)
    return (h.astype(np.float64) * 2097152.0 + (h2 >> 11).astype(np.float64)) / 2.0**53


def sampling_distribution(
    logits,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    repetition_penalty: float = 1.0,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    output_counts=None,
    prompt_mask=None,
    logit_bias=None,
) -> tuple[np.ndarray, np.ndarray]:
    """One row's final distribution: candidate ids best first (logit descending, lower id first)
    and their probabilities (summing to 1). Penalties over the dense output_counts [V] and
    prompt_mask [V], then logit_bias [V], temperature, min-p, top-k, top-p, as hearth.engine.core.sampler.
    Greedy (temperature 0 or top_k 1): the argmax of the penalized logits, probability 1."""
    x = _f64(logits).copy()
    x[np.isnan(x)] = -np.inf
    if output_counts is not None:
        c = np.asarray(output_counts)
        seen = (c > 0) | np.asarray(prompt_mask, bool)
        x[seen] = np.where(
            x[seen] > 0, x[seen] / repetition_penalty, x[seen] * repetition_penalty
        )
        x[c > 0] -= frequency_penalty * c[c > 0] + presence_penalty
    if logit_bias is not None:
        x = x + _f64(logit_bias)
    if temperature == 0 or top_k == 1:
        return np.array([int(np.argmax(x))]), np.ones(1)
    y = (x - x.max()) / temperature
    p = np.exp(y)
    p[p < min_p] = 0.0
    order = np.lexsort((np.arange(len(y)), -y))  # best first, lower id first on ties
    order = order[p[order] > 0]
    if 0 < top_k < len(order):
        order = order[:top_k]
    probs = p[order]
    if top_p < 1.0:
        keep = (
            int(np.searchsorted(np.cumsum(probs), top_p * probs.sum(), side="left")) + 1
        )
        order, probs = order[:keep], probs[:keep]
    return order, probs / probs.sum()


def sampling_draw(ids: np.ndarray, probs: np.ndarray, u: float) -> int:
    """Inverse-CDF draw over candidates in their best-first order with one uniform u."""
    pos = int(np.searchsorted(np.cumsum(probs), u * probs.sum(), side="right"))
    return int(ids[min(pos, len(ids) - 1)])
