"""Bytes and FLOPs each benchmark case must move and do, counted from its shapes alone.

The counts are the work the operation needs, not what an implementation happens to do: every
input byte read once, every output byte written once, 2 FLOPs per multiply-add (for integer
kernels: 2 ops per multiply-add). A kernel that re-reads its inputs shows up as a lower
fraction of the bandwidth ceiling, which is the point.

Element sizes: float formats by name; GGUF block formats per block of 32 weights (q8_0: a 2-byte
fp16 scale + 32 int8 = 34 bytes; q4_0: 2 + 16 = 18 bytes).
"""

from __future__ import annotations

from dataclasses import dataclass

BLOCK = 32
_FLOAT_BYTES = {"f32": 4, "fp32": 4, "float32": 4, "bf16": 2, "bfloat16": 2, "f16": 2, "fp16": 2, "float16": 2}
_BLOCK_BYTES = {"q8_0": 34, "q4_0": 18}


@dataclass(frozen=True)
class Work:
    """What one call must move (bytes) and compute (FLOPs or int ops)."""

    bytes: int
    flops: int

    def __add__(self, other: Work) -> Work:
        return Work(self.bytes + other.bytes, self.flops + other.flops)

    def __mul__(self, times: int) -> Work:
        return Work(self.bytes * times, self.flops * times)


def element_bytes(fmt: str) -> int:
    if fmt not in _FLOAT_BYTES:
        raise ValueError(f"{fmt!r} is not a float format: one of {sorted(_FLOAT_BYTES)}")
    return _FLOAT_BYTES[fmt]


def matrix_bytes(rows: int, cols: int, fmt: str) -> int:
    """Bytes of a rows x cols weight matrix stored in `fmt` (block formats: cols a multiple of 32)."""
    if fmt in _BLOCK_BYTES:
        if cols % BLOCK:
            raise ValueError(f"{fmt} needs rows of a multiple of {BLOCK} elements, got {cols}")
        return rows * (cols // BLOCK) * _BLOCK_BYTES[fmt]
    return rows * cols * element_bytes(fmt)


def linear(m: int, k: int, n: int, fmt: str, act: str = "f32") -> Work:
    """y[m, n] = x[m, k] @ W[n, k]^T: the weights once, x read, y written."""
    act_b = element_bytes(act)
    return Work(matrix_bytes(n, k, fmt) + m * k * act_b + m * n * act_b, 2 * m * n * k)


def decode_attention(batch: int, context: int, heads: int, kv_heads: int, head_dim: int,
                     kv: str = "f32", act: str = "f32") -> Work:
    """One query token per sequence against `context` cached tokens (GQA): every K and V row of
    each sequence read once; QK^T and PV are 2 x 2 x heads x context x head_dim FLOPs each."""
    kv_read = 2 * batch * context * kv_heads * head_dim * element_bytes(kv)
    q_and_out = 2 * batch * heads * head_dim * element_bytes(act)
    return Work(kv_read + q_and_out, 4 * batch * heads * context * head_dim)


def prefill_attention(tokens: int, heads: int, kv_heads: int, head_dim: int, dtype: str = "f32") -> Work:
    """Causal attention of one prompt of `tokens` tokens: token i attends to i + 1 keys, so
    tokens(tokens+1)/2 query-key pairs, 4 x head_dim FLOPs each per head; q, k, v read and the
    output written once."""
    pairs = tokens * (tokens + 1) // 2
    e = element_bytes(dtype)
    return Work(tokens * head_dim * e * (2 * heads + 2 * kv_heads), 4 * heads * head_dim * pairs)


def rms_norm(rows: int, hidden: int, act: str = "f32", weight: str = "f32", residual: bool = False) -> Work:
    """y = x / rms(x) * w (with `residual`: x += r first, x written back too)."""
    a = element_bytes(act)
    streams = 4 if residual else 2  # read x (and r), write y (and the new residual)
    return Work(rows * hidden * a * streams + hidden * element_bytes(weight), rows * hidden * (5 if residual else 4))


def silu_and_mul(rows: int, inter: int, act: str = "f32") -> Work:
    """out = silu(gate) * up from a [rows, 2 x inter] input."""
    return Work(3 * rows * inter * element_bytes(act), 4 * rows * inter)


def rope(rows: int, heads: int, head_dim: int, act: str = "f32") -> Work:
    """Rotary embedding in place on x[rows, heads, head_dim]: x read and written, each row's
    cos and sin tables (head_dim / 2 each) and its position read; 6 FLOPs per rotated pair."""
    a = element_bytes(act)
    return Work(2 * rows * heads * head_dim * a + rows * (head_dim * a + 8), 3 * rows * heads * head_dim)


# ------------------------------------------------------------------ whole models (Llama family)

@dataclass(frozen=True)
class Dims:
    layers: int
    hidden: int
    inter: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    qkv_bias: bool
    qk_norm: bool

    @classmethod
    def from_config(cls, cfg: dict) -> Dims:
        heads = cfg["num_attention_heads"]
        return cls(layers=cfg["num_hidden_layers"], hidden=cfg["hidden_size"], inter=cfg["intermediate_size"],
                   heads=heads, kv_heads=cfg.get("num_key_value_heads") or heads,
                   head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads, vocab=cfg["vocab_size"],
                   tied=bool(cfg.get("tie_word_embeddings")),
                   qkv_bias=cfg.get("model_type") == "qwen2" or bool(cfg.get("attention_bias")),
                   qk_norm=cfg.get("model_type") == "qwen3")

    def layer_matrices(self) -> list[tuple[int, int]]:
        """(rows, cols) of each layer's weight matrices: q, k, v, o, gate, up, down."""
        q, kv, h = self.heads * self.head_dim, self.kv_heads * self.head_dim, self.hidden
        return [(q, h), (kv, h), (kv, h), (h, q), (self.inter, h), (self.inter, h), (h, self.inter)]

    def matmul_params(self, with_head: bool = True) -> int:
        """Weights multiplied per token: every layer matrix, and the output head."""
        per_layer = sum(r * c for r, c in self.layer_matrices())
        return self.layers * per_layer + (self.vocab * self.hidden if with_head else 0)


def model_weight_bytes(d: Dims, fmt: str, head_fmt: str, small: str = "f32") -> int:
    """Bytes of weights one decode step reads: every layer matrix in `fmt`, the output head in
    `head_fmt` (read once even when tied), norms and biases in `small` (the CPU engine widens
    them to fp32 on load). The embedding gather reads
    one row per token: not counted (a rounding error next to the matrices)."""
    s = element_bytes(small)
    per_layer = sum(matrix_bytes(r, c, fmt) for r, c in d.layer_matrices())
    per_layer += 2 * d.hidden * s  # the two norms
    if d.qkv_bias:
        per_layer += (d.heads + 2 * d.kv_heads) * d.head_dim * s
    if d.qk_norm:
        per_layer += 2 * d.head_dim * s
    return d.layers * per_layer + matrix_bytes(d.vocab, d.hidden, head_fmt) + d.hidden * s


def kv_bytes(d: Dims, tokens: int, kv: str = "f32") -> int:
    """K and V of `tokens` cached tokens in every layer."""
    return 2 * d.layers * tokens * d.kv_heads * d.head_dim * element_bytes(kv)


def decode_step(d: Dims, fmt: str, head_fmt: str, batch: int, context: int, kv: str = "f32",
                small: str = "f32") -> Work:
    """One decode step of `batch` sequences each at `context` tokens: the weights once, every
    sequence's KV cache once; the weight matrices' multiply-adds for each sequence plus attention."""
    attn_flops = 4 * d.layers * batch * d.heads * context * d.head_dim
    return Work(model_weight_bytes(d, fmt, head_fmt, small) + batch * kv_bytes(d, context, kv),
                2 * batch * d.matmul_params() + attn_flops)


def prefill(d: Dims, fmt: str, head_fmt: str, prompt: int, small: str = "f32", kv: str = "f32") -> Work:
    """One prompt prefilled in one step: every layer matrix for every token, the output head for
    the last token only (the only logits needed), causal attention, the KV cache written once."""
    pairs = prompt * (prompt + 1) // 2
    flops = 2 * (prompt * d.matmul_params(with_head=False) + d.vocab * d.hidden)
    flops += 4 * d.layers * d.heads * d.head_dim * pairs
    return Work(model_weight_bytes(d, fmt, head_fmt, small) + kv_bytes(d, prompt, kv), flops)
