"""From GGUF metadata (llama.cpp key names) to the Hugging Face config dict hearth's
`ModelConfig.from_hf_dict` reads, plus the generation defaults the file carries."""

from __future__ import annotations

from typing import Any

import numpy as np

from hearth.engine.model.config import ModelConfig
from hearth.engine.gguf.metadata import Metadata
from hearth.engine.gguf.rope import fit_llama3_scaling

# general.architecture -> the HF architecture with the same decoder
ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}

# general.sampling.* (what llama.cpp's converter copies from generation_config.json) -> SamplingParams
_SAMPLING_KEYS = {"temp": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p",
                  "penalty_repeat": "repetition_penalty"}


def check_architecture(meta: Metadata) -> str:
    """The HF architecture name for the file's ``general.architecture``, or ValueError."""
    if not meta.arch:
        raise ValueError(f"{meta.source}: GGUF metadata has no general.architecture")
    if meta.arch not in ARCHITECTURES:
        raise ValueError(f"{meta.source}: GGUF architecture {meta.arch!r} is not supported; "
                         f"supported: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[meta.arch]


def _head_dim(meta: Metadata, hidden: int, heads: int) -> int:
    head_dim = int(meta.arch_key("attention.key_length") or hidden // heads)
    value_dim = meta.arch_key("attention.value_length")
    if value_dim is not None and int(value_dim) != head_dim:
        raise ValueError(f"{meta.source}: key length {head_dim} != value length {value_dim}; not supported")
    rotary = meta.arch_key("rope.dimension_count")
    if rotary is not None and int(rotary) != head_dim:
        raise ValueError(f"{meta.source}: rope covers {rotary} of {head_dim} head dimensions; hearth only "
                         "supports rotating the whole head")
    return head_dim


def _required_uniform(meta: Metadata, key: str) -> Any:
    value = meta.uniform(key)
    if value is None:
        raise ValueError(f"{meta.source}: GGUF metadata is missing {meta.arch}.{key!s}")
    return value


def _rope_scaling(meta: Metadata, head_dim: int, rope_freqs: np.ndarray | None) -> dict[str, Any] | None:
    kind = meta.arch_key("rope.scaling.type")
    if kind not in (None, "none"):
        scaling: dict[str, Any] = {"rope_type": kind, "factor": float(meta.arch_key("rope.scaling.factor", 1.0))}
        orig = meta.arch_key("rope.scaling.original_context_length")
        if orig is not None:
            scaling["original_max_position_embeddings"] = int(orig)
        return scaling
    if rope_freqs is not None:  # llama.cpp's form of Llama 3.1 scaling
        return fit_llama3_scaling(rope_freqs, float(meta.arch_key("rope.freq_base", 10000.0)), head_dim)
    return None


def hf_config_dict(meta: Metadata, tensor_names: set[str], rope_freqs: np.ndarray | None = None) -> dict[str, Any]:
    """The config.json a Hugging Face checkpoint of this model would carry.

    `tensor_names` are the file's GGUF tensor names (they decide tying and biases); `rope_freqs`
    is the ``rope_freqs.weight`` tensor when the file has one."""
    arch = check_architecture(meta)
    hidden = int(meta.require("embedding_length"))
    heads = int(_required_uniform(meta, "attention.head_count"))
    head_dim = _head_dim(meta, hidden, heads)
    tokens = meta.get("tokenizer.ggml.tokens")
    vocab_size = len(tokens) if tokens else meta.arch_key("vocab_size")
    if not vocab_size:
        raise ValueError(f"{meta.source}: GGUF has no tokenizer.ggml.tokens, so its vocabulary size is unknown")
    cfg: dict[str, Any] = {
        "architectures": [arch],
        "model_type": meta.arch,
        "vocab_size": int(vocab_size),
        "hidden_size": hidden,
        "intermediate_size": int(_required_uniform(meta, "feed_forward_length")),
        "num_hidden_layers": int(meta.require("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(meta.uniform("attention.head_count_kv", heads)),
        "head_dim": head_dim,
        "rms_norm_eps": float(meta.arch_key("attention.layer_norm_rms_epsilon", 1e-6)),
        "max_position_embeddings": int(meta.arch_key("context_length", 2048)),
        "rope_theta": float(meta.arch_key("rope.freq_base", 10000.0)),
        "rope_scaling": _rope_scaling(meta, head_dim, rope_freqs),
        # llama.cpp writes no output.weight when the head reuses the embedding
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "hidden_act": "silu",
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
    }
    # biases the architecture does not imply show up only as tensors
    if arch == "LlamaForCausalLM" and "blk.0.attn_q.bias" in tensor_names:
        cfg["attention_bias"] = True
    if "blk.0.ffn_gate.bias" in tensor_names:
        cfg["mlp_bias"] = True
    return cfg


def model_config(meta: Metadata, tensor_names: set[str], rope_freqs: np.ndarray | None = None) -> ModelConfig:
    """Validated `ModelConfig` of the file (ValueError names the file on anything unsupported)."""
    cfg = hf_config_dict(meta, tensor_names, rope_freqs)
    try:
        return ModelConfig.from_hf_dict(cfg)
    except ValueError as e:
        raise ValueError(f"{meta.source}: {e}") from None


def generation_defaults(meta: Metadata) -> dict[str, Any]:
    """Default sampling values stored under ``general.sampling.*`` (often none)."""
    out = {}
    for key, ours in _SAMPLING_KEYS.items():
        value = meta.get(f"general.sampling.{key}")
        if value is not None:
            out[ours] = value
    return out
