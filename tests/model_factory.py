"""Tiny random-weight checkpoints of every supported architecture, made with transformers'
own classes and `save_pretrained`, plus a tokenizer trained on the spot. Test-only."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers

from tests.tokenizer_factory import build_tokenizer

VOCAB = 400
_COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
               rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2)

# name -> (config class, extra config keys, tokenizer kind, tokenizer adds BOS)
VARIANTS = {
    "llama": ("LlamaConfig", dict(tie_word_embeddings=False, rope_theta=10000.0), "byte_level", True),
    "llama3_scaled_tied": ("LlamaConfig", dict(
        tie_word_embeddings=True, head_dim=32, num_attention_heads=4, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
        "byte_level", True),
    "mistral": ("MistralConfig", dict(tie_word_embeddings=False, sliding_window=None,
                                      num_key_value_heads=1), "byte_fallback", True),
    "qwen2": ("Qwen2Config", dict(tie_word_embeddings=True, num_attention_heads=8, num_key_value_heads=2,
                                  rope_theta=1000000.0), "byte_level", False),
    "qwen3": ("Qwen3Config", dict(tie_word_embeddings=False, head_dim=24, num_attention_heads=4,
                                  num_key_value_heads=2, rope_theta=1000000.0), "byte_level", False),
}


def make_hf_model(variant: str, seed: int = 0) -> transformers.PreTrainedModel:
    """A transformers model of `variant` with random weights large enough to give peaked logits."""
    cls_name, extra, _, _ = VARIANTS[variant]
    return random_model(cls_name, extra, seed)


def random_model(cls_name: str, overrides: dict, seed: int) -> transformers.PreTrainedModel:
    """A transformers `cls_name` config (the tiny common shape plus `overrides`) with random
    weights: norms near 1, everything else (biases too) N(0, 0.15)."""
    config = getattr(transformers, cls_name)(**{**_COMMON, **overrides})
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.15)  # biases too: zero biases would test nothing
    return model.eval()


def save_model(model: transformers.PreTrainedModel, variant: str, out_dir: Path,
               dtype: torch.dtype = torch.float32, max_shard_size: str | None = None) -> Path:
    """Save weights (in `dtype`), config and a freshly trained tokenizer to `out_dir`."""
    _, _, tok_kind, add_bos = VARIANTS[variant]
    out_dir.mkdir(parents=True, exist_ok=True)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.to(dtype).save_pretrained(out_dir, safe_serialization=True, **kwargs)
    model.to(torch.float32)
    build_tokenizer(out_dir, tok_kind, VOCAB, add_bos=add_bos)
    gen = out_dir / "generation_config.json"
    if gen.exists():  # random weights: keep the tests free of a sampling default
        cfg = json.loads(gen.read_text())
        cfg.pop("do_sample", None)
        gen.write_text(json.dumps(cfg))
    return out_dir
