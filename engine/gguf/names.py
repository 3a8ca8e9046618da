"""Tensor names: Hugging Face (``model.layers.3.self_attn.q_proj.weight``) <-> GGUF / llama.cpp
(``blk.3.attn_q.weight``) for the Llama-family decoders hearth runs."""

from __future__ import annotations

import re

# whole-model tensors
_GLOBAL = {
    "model.embed_tokens": "token_embd",
    "model.norm": "output_norm",
    "lm_head": "output",
}
# per-layer tensors: the part after "model.layers.N." -> the part after "blk.N."
_LAYER = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_GLOBAL_BACK = {v: k for k, v in _GLOBAL.items()}
_LAYER_BACK = {v: k for k, v in _LAYER.items()}
_HF_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")
_GGUF_LAYER = re.compile(r"blk\.(\d+)\.(.+)")

# llama.cpp's extra tensor holding Llama 3.1 rope scaling factors (no HF counterpart)
ROPE_FREQS = "rope_freqs.weight"


def _split_suffix(name: str) -> tuple[str, str] | None:
    stem, dot, suffix = name.rpartition(".")
    if not dot or suffix not in ("weight", "bias"):
        return None
    return stem, suffix


def hf_to_gguf(name: str) -> str | None:
    """The GGUF name of HF tensor `name`, or None when GGUF has no such tensor."""
    parts = _split_suffix(name)
    if parts is None:
        return None
    stem, suffix = parts
    if stem in _GLOBAL:
        return f"{_GLOBAL[stem]}.{suffix}"
    m = _HF_LAYER.fullmatch(stem)
    if m and m.group(2) in _LAYER:
        return f"blk.{m.group(1)}.{_LAYER[m.group(2)]}.{suffix}"
    return None


def gguf_to_hf(name: str) -> str | None:
    """The HF name of GGUF tensor `name`, or None for tensors with no HF counterpart (rope_freqs)."""
    parts = _split_suffix(name)
    if parts is None:
        return None
    stem, suffix = parts
    if stem in _GLOBAL_BACK:
        return f"{_GLOBAL_BACK[stem]}.{suffix}"
    m = _GGUF_LAYER.fullmatch(stem)
    if m and m.group(2) in _LAYER_BACK:
        return f"model.layers.{m.group(1)}.{_LAYER_BACK[m.group(2)]}.{suffix}"
    return None


def qk_role(name: str) -> str | None:
    """"q" or "k" for the query/key projections (GGUF or HF name, weight or bias), else None:
    the tensors whose rows llama.cpp reorders for the llama architecture."""
    if re.search(r"(\.attn_q|\.q_proj)\.(weight|bias)$", name):
        return "q"
    if re.search(r"(\.attn_k|\.k_proj)\.(weight|bias)$", name):
        return "k"
    return None
