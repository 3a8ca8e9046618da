"""The metadata llama.cpp's converter writes for the llama, qwen2 and qwen3 architectures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gguf import GGUFWriter, RopeScalingType
from gguf.utility import size_label

from hearth.engine.model.config import ModelConfig
from hearth.engine.gguf.vocab import SPECIAL_KINDS, GGUFVocab

_QUANT_VERSION = 2  # ggml's block layout version (GGML_QNT_VERSION)


def write_general(w: GGUFWriter, name: str, file_type: int, num_params: int) -> None:
    """general.*: what the file is (llama.cpp fills more from model cards; these are what it reads)."""
    w.add_type("model")
    w.add_name(name)
    w.add_size_label(size_label(num_params, 0, 0, 0))
    w.add_file_type(file_type)
    w.add_quantization_version(_QUANT_VERSION)


def write_hparams(w: GGUFWriter, arch: str, mc: ModelConfig, raw: dict[str, Any]) -> None:
    """{arch}.*: the decoder's shape, rope and norm epsilon."""
    w.add_block_count(mc.num_hidden_layers)
    w.add_context_length(mc.max_position_embeddings)
    w.add_embedding_length(mc.hidden_size)
    w.add_feed_forward_length(mc.intermediate_size)
    w.add_head_count(mc.num_attention_heads)
    w.add_head_count_kv(mc.num_key_value_heads)
    w.add_rope_freq_base(mc.rope.theta)
    w.add_layer_norm_rms_eps(mc.rms_norm_eps)
    if raw.get("head_dim") is not None:  # llama.cpp states it only when config.json does
        w.add_key_length(mc.head_dim)
        w.add_value_length(mc.head_dim)
    if arch == "llama":
        w.add_vocab_size(mc.vocab_size)
        w.add_rope_dimension_count(mc.head_dim)
    if mc.rope.rope_type == "linear":
        w.add_rope_scaling_type(RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(mc.rope.factor)
    # llama3 scaling is not metadata: it is the rope_freqs tensor


def write_tokenizer(w: GGUFWriter, vocab: GGUFVocab) -> None:
    """tokenizer.*: the vocabulary, special ids, BOS/EOS behaviour and chat template."""
    w.add_tokenizer_model(vocab.model)
    if vocab.pre is not None:
        w.add_tokenizer_pre(vocab.pre)
    w.add_token_list(vocab.tokens)
    if vocab.scores is not None:
        w.add_token_scores(vocab.scores)
    w.add_token_types(vocab.types)
    if vocab.merges:
        w.add_token_merges(vocab.merges)
    for kind, token_id in vocab.special_ids.items():
        w.add_uint32(f"tokenizer.ggml.{SPECIAL_KINDS[kind]}", token_id)
    w.add_add_bos_token(vocab.add_bos)
    w.add_add_eos_token(vocab.add_eos)
    if vocab.model == "llama" and not vocab.add_space_prefix:
        w.add_add_space_prefix(False)
    if vocab.chat_template is not None:
        w.add_chat_template(vocab.chat_template)


def write_sampling(w: GGUFWriter, model_dir: Path) -> None:
    """general.sampling.*: the defaults llama.cpp's converter copies from generation_config.json."""
    path = model_dir / "generation_config.json"
    try:
        gen = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if gen.get("top_k") is not None:
        w.add_sampling_top_k(int(gen["top_k"]))
    if gen.get("top_p") is not None:
        w.add_sampling_top_p(float(gen["top_p"]))
    if gen.get("min_p") is not None:
        w.add_sampling_min_p(float(gen["min_p"]))
    if gen.get("temperature") is not None:
        w.add_sampling_temp(float(gen["temperature"]))
