"""The decoder of the Llama family (Llama 2/3.x, Mistral, Qwen2, Qwen3), written once against the
backend op interface. Variants differ only in flags read from the config: q/k/v bias (Qwen2),
per-head q/k RMSNorm (Qwen3), tied embeddings, the rope scaling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hearth.engine.backend.base import Array, Backend
from hearth.engine.model.config import ModelConfig
from hearth.engine.model.loader import Checkpoint
from hearth.engine.model.rope import rope_tables
from hearth.engine.model.quant import QuantizedMatrix


@dataclass
class ForwardBatch:
    """Flat inputs of one step (device arrays). T tokens from S sequences."""

    token_ids: Array  # [T] int64
    positions: Array  # [T] int64
    slot_mapping: Array  # [T] int64
    block_tables: Array  # [S, max_blocks] int32
    seq_lens: Array  # [S] int32, context length including this step's tokens
    query_start_loc: Array  # [S + 1] int32
    logits_indices: Array  # [L] int64, rows of the hidden states whose logits are wanted
    decode_only: bool = False  # every sequence has one query token this step (host-known)


@dataclass
class DecoderLayer:
    input_norm: Array
    q: Array
    k: Array
    v: Array
    o: Array
    q_bias: Array | None
    k_bias: Array | None
    v_bias: Array | None
    o_bias: Array | None
    q_norm: Array | None
    k_norm: Array | None
    post_norm: Array
    gate: Array
    up: Array
    down: Array
    gate_bias: Array | None
    up_bias: Array | None
    down_bias: Array | None


class LlamaForCausalLM:
    """Weights plus the forward pass; the KV caches are owned by the caller."""

    def __init__(self, config: ModelConfig, backend: Backend, checkpoint: Checkpoint,
                 weight_dtype: str | None, max_model_len: int, progress: Any = None,
                 quantization: str | None = None) -> None:
        self.config = config
        self.backend = backend
        c = config
        self._ckpt, self._dtype, self._quant = checkpoint, weight_dtype, quantization
        # the embedding is only gathered from (a few rows per step), so quantizing it on load
        # would save memory but no time: it stays as stored
        self.embed = self._place(self._ckpt.get("model.embed_tokens.weight", (c.vocab_size, c.hidden_size)), None)
        self.layers = []
        for i in range(c.num_hidden_layers):
            self.layers.append(self._load_layer(i))
            if progress is not None:
                progress(i + 1, c.num_hidden_layers)
        self.norm = self._vector("model.norm.weight", c.hidden_size)
        self.lm_head = self._load_lm_head()
        cos, sin = rope_tables(c.rope, c.head_dim, max_model_len)
        self.cos, self.sin = backend.asarray(cos), backend.asarray(sin)
        self.scale = float(c.head_dim) ** -0.5
        del self._ckpt

    # ------------------------------------------------------------ loading

    # The output head in a quantized model: every logit's error comes from it directly, so it
    # keeps 8 bits even in a 4-bit model (llama.cpp keeps it at 6 bits or more for the same reason).
    HEAD_FORMAT = "q8_0"

    def _matrix(self, name: str, shape: tuple[int, int]) -> Array:
        return self._place(self._ckpt.get(name, shape), self._quant)

    def _place(self, host: np.ndarray | QuantizedMatrix, fmt: str | None) -> Array:
        """A matrix on the backend: as stored when it is already quantized (GGUF), quantized
        to `fmt` when one is given, else in the weight dtype."""
        if isinstance(host, QuantizedMatrix):
            return self.backend.quantized_weight(host, None)
        if fmt is not None:
            return self.backend.quantized_weight(host, fmt)
        return self.backend.weight(host, self._dtype)

    def _load_lm_head(self) -> Array:
        c = self.config
        if c.tie_word_embeddings and (self._quant is None or isinstance(self.embed, QuantizedMatrix)):
            return self.embed  # one matrix serves both
        # untied, or tied and quantized on load: the head gets its own (quantized) matrix
        name = "model.embed_tokens.weight" if c.tie_word_embeddings else "lm_head.weight"
        host = self._ckpt.get(name, (c.vocab_size, c.hidden_size))
        return self._place(host, self.HEAD_FORMAT if self._quant is not None else None)

    def _vector(self, name: str, size: int) -> Array:
        return self.backend.weight(self._ckpt.get(name, (size,)), "float32")

    def _maybe_vector(self, name: str, size: int, present: bool) -> Array | None:
        return self._vector(name, size) if present else None

    def _load_layer(self, i: int) -> DecoderLayer:
        c = self.config
        p = f"model.layers.{i}."
        q_out, kv_out = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
        h, inter = c.hidden_size, c.intermediate_size
        return DecoderLayer(
            input_norm=self._vector(p + "input_layernorm.weight", h),
            q=self._matrix(p + "self_attn.q_proj.weight", (q_out, h)),
            k=self._matrix(p + "self_attn.k_proj.weight", (kv_out, h)),
            v=self._matrix(p + "self_attn.v_proj.weight", (kv_out, h)),
            o=self._matrix(p + "self_attn.o_proj.weight", (h, q_out)),
            q_bias=self._maybe_vector(p + "self_attn.q_proj.bias", q_out, c.qkv_bias),
            k_bias=self._maybe_vector(p + "self_attn.k_proj.bias", kv_out, c.qkv_bias),
            v_bias=self._maybe_vector(p + "self_attn.v_proj.bias", kv_out, c.qkv_bias),
            o_bias=self._maybe_vector(p + "self_attn.o_proj.bias", h, c.o_bias),
            q_norm=self._maybe_vector(p + "self_attn.q_norm.weight", c.head_dim, c.qk_norm),
            k_norm=self._maybe_vector(p + "self_attn.k_norm.weight", c.head_dim, c.qk_norm),
            post_norm=self._vector(p + "post_attention_layernorm.weight", h),
            gate=self._matrix(p + "mlp.gate_proj.weight", (inter, h)),
            up=self._matrix(p + "mlp.up_proj.weight", (inter, h)),
            down=self._matrix(p + "mlp.down_proj.weight", (h, inter)),
            gate_bias=self._maybe_vector(p + "mlp.gate_proj.bias", inter, c.mlp_bias),
            up_bias=self._maybe_vector(p + "mlp.up_proj.bias", inter, c.mlp_bias),
            down_bias=self._maybe_vector(p + "mlp.down_proj.bias", h, c.mlp_bias),
        )

    # ------------------------------------------------------------ forward

    def forward(self, batch: ForwardBatch, kv_caches: list[tuple[Array, Array]]) -> Array:
        """Run all layers over the batch's tokens; return float32 logits [L, vocab] of the rows
        named by `batch.logits_indices`."""
        be, c = self.backend, self.config
        hidden = be.embedding(self.embed, batch.token_ids)  # [T, hidden]
        residual = hidden
        x = be.rms_norm(hidden, self.layers[0].input_norm, c.rms_norm_eps)
        for i, layer in enumerate(self.layers):
            if i > 0:
                x = be.add_rms_norm(hidden, residual, layer.input_norm, c.rms_norm_eps)
            hidden = self._attention(layer, x, batch, kv_caches[i])
            x = be.add_rms_norm(hidden, residual, layer.post_norm, c.rms_norm_eps)
            gate, up = be.linear_many(x, (layer.gate, layer.up), (layer.gate_bias, layer.up_bias))
            hidden = be.linear(be.silu_and_mul(gate, up), layer.down, layer.down_bias)
        if batch.logits_indices.shape[0] == 0:  # a step of prefill chunks that sample nothing
            return hidden[:0, :0]
        selected_hidden = hidden[batch.logits_indices]
        selected_residual = residual[batch.logits_indices]
        x = be.add_rms_norm(selected_hidden, selected_residual, self.norm, c.rms_norm_eps)
        return be.logits(x, self.lm_head)

    def _attention(self, layer: DecoderLayer, x: Array, batch: ForwardBatch,
                   kv_cache: tuple[Array, Array]) -> Array:
        be, c = self.backend, self.config
        num_tokens = x.shape[0]
        q, k, v = be.linear_many(x, (layer.q, layer.k, layer.v), (layer.q_bias, layer.k_bias, layer.v_bias))
        q = q.reshape(num_tokens, c.num_attention_heads, c.head_dim)
        k = k.reshape(num_tokens, c.num_key_value_heads, c.head_dim)
        v = v.reshape(num_tokens, c.num_key_value_heads, c.head_dim)
        if layer.q_norm is not None:
            q = be.rms_norm(q.reshape(-1, c.head_dim), layer.q_norm, c.rms_norm_eps).reshape(q.shape)
            k = be.rms_norm(k.reshape(-1, c.head_dim), layer.k_norm, c.rms_norm_eps).reshape(k.shape)
        k_cache, v_cache = kv_cache
        be.rope_and_cache(q, k, v, batch.positions, self.cos, self.sin, k_cache, v_cache, batch.slot_mapping)
        attn = be.paged_attention(q, k_cache, v_cache, batch.block_tables, batch.seq_lens,
                                  batch.query_start_loc, self.scale, batch.decode_only)
        return be.linear(attn.reshape(num_tokens, -1), layer.o, layer.o_bias)


def host_logits(backend: Backend, logits: Array) -> np.ndarray:
    """Logits as a host float32 array for the sampler."""
    return np.asarray(backend.to_host(logits), dtype=np.float32)
