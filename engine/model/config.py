"""Frozen configuration: the model's shape (from a Hugging Face config.json), the KV cache and the
scheduler. Validated once at construction and never mutated afterwards."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# architecture name -> the variant flags the shared decoder needs
SUPPORTED_ARCHITECTURES: dict[str, dict[str, bool]] = {
    "LlamaForCausalLM": {"qkv_bias": False, "qk_norm": False},
    "MistralForCausalLM": {"qkv_bias": False, "qk_norm": False},
    "Qwen2ForCausalLM": {"qkv_bias": True, "qk_norm": False},
    "Qwen3ForCausalLM": {"qkv_bias": False, "qk_norm": True},
}
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")
_DTYPE_NAMES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16",
                "fp16": "float16", "half": "float16", "float32": "float32", "fp32": "float32",
                "float": "float32"}


def normalize_dtype(name: str | None, what: str = "dtype") -> str | None:
    """Map the spellings of a dtype used by HF configs and users onto bfloat16/float16/float32."""
    if name is None:
        return None
    key = str(name).removeprefix("torch.").lower()
    if key not in _DTYPE_NAMES:
        raise ValueError(f"{what}: unsupported dtype {name!r}; use bfloat16, float16 or float32")
    return _DTYPE_NAMES[key]


@dataclass(frozen=True)
class RopeConfig:
    """Rotary embedding parameters, whichever transformers version wrote the config."""

    theta: float = 10000.0
    rope_type: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> RopeConfig:
        # transformers 5 folds theta and scaling into `rope_parameters`; 4.x has `rope_theta`
        # at top level and an optional `rope_scaling` dict ("type" in old files, "rope_type" later).
        params = dict(cfg.get("rope_parameters") or {})
        scaling = dict(cfg.get("rope_scaling") or {})
        merged = {**scaling, **params}
        theta = merged.get("rope_theta", cfg.get("rope_theta", 10000.0))
        rope_type = merged.get("rope_type", merged.get("type", "default")) or "default"
        if rope_type not in SUPPORTED_ROPE_TYPES:
            raise ValueError(
                f"rope type {rope_type!r} is not supported; supported: {', '.join(SUPPORTED_ROPE_TYPES)}")
        kwargs: dict[str, Any] = {"theta": float(theta), "rope_type": rope_type}
        if rope_type in ("linear", "llama3"):
            kwargs["factor"] = float(merged.get("factor", 1.0))
        if rope_type == "llama3":
            kwargs["low_freq_factor"] = float(merged.get("low_freq_factor", 1.0))
            kwargs["high_freq_factor"] = float(merged.get("high_freq_factor", 4.0))
            kwargs["original_max_position_embeddings"] = int(
                merged.get("original_max_position_embeddings", 8192))
        return cls(**kwargs)


@dataclass(frozen=True)
class ModelConfig:
    """The decoder's shape and variant, read from config.json."""

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position_embeddings: int
    rope: RopeConfig
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    sliding_window: int | None = None
    torch_dtype: str | None = None
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "head_dim",
                     "max_position_embeddings"):
            if getattr(self, name) <= 0:
                raise ValueError(f"config.json: {name} must be positive, got {getattr(self, name)}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"config.json: num_attention_heads ({self.num_attention_heads}) must be a multiple "
                f"of num_key_value_heads ({self.num_key_value_heads})")
        if self.head_dim % 2:
            raise ValueError(f"config.json: head_dim must be even for rotary embedding, got {self.head_dim}")

    @classmethod
    def from_hf_dict(cls, cfg: dict[str, Any]) -> ModelConfig:
        """Build from the parsed config.json of a supported architecture."""
        archs = cfg.get("architectures") or []
        arch = next((a for a in archs if a in SUPPORTED_ARCHITECTURES), None)
        if arch is None:
            raise ValueError(
                f"unsupported architecture {archs or cfg.get('model_type')!r}; supported: "
                f"{', '.join(SUPPORTED_ARCHITECTURES)}")
        variant = SUPPORTED_ARCHITECTURES[arch]
        act = cfg.get("hidden_act", "silu")
        if act not in ("silu", "swish"):
            raise ValueError(f"config.json: hidden_act {act!r} is not supported (only silu)")
        try:
            hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
            head_dim = cfg.get("head_dim") or hidden // heads
            sliding = cfg.get("sliding_window")
            if arch == "Qwen2ForCausalLM" and not cfg.get("use_sliding_window", False):
                sliding = None
            eos = cfg.get("eos_token_id")
            eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
            attention_bias = bool(cfg.get("attention_bias", False))
            return cls(
                architecture=arch,
                vocab_size=int(cfg["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(cfg["intermediate_size"]),
                num_hidden_layers=int(cfg["num_hidden_layers"]),
                num_attention_heads=heads,
                num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
                head_dim=int(head_dim),
                rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
                max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
                rope=RopeConfig.from_hf(cfg),
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                qkv_bias=variant["qkv_bias"] or attention_bias,
                o_bias=attention_bias and arch != "Qwen2ForCausalLM",
                mlp_bias=bool(cfg.get("mlp_bias", False)),
                qk_norm=variant["qk_norm"],
                sliding_window=int(sliding) if sliding else None,
                torch_dtype=normalize_dtype(cfg.get("dtype") or cfg.get("torch_dtype"), "config.json dtype"),
                bos_token_id=cfg.get("bos_token_id"),
                eos_token_ids=eos_ids,
            )
        except KeyError as e:
            raise ValueError(f"config.json is missing required key {e.args[0]!r}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> ModelConfig:
        """Read and validate a config.json."""
        path = Path(path)
        try:
            cfg = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"model directory {path.parent} has no config.json") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
        return cls.from_hf_dict(cfg)

    @property
    def kv_bytes_per_token(self) -> int:
        """fp32 K and V for every layer."""
        return 2 * self.num_hidden_layers * self.num_key_value_heads * self.head_dim * 4


@dataclass(frozen=True)
class CacheConfig:
    """Paged KV cache geometry."""

    block_size: int = 16
    num_blocks: int = 0
    enable_prefix_caching: bool = True

    def __post_init__(self) -> None:
        if self.block_size <= 0 or self.num_blocks <= 0:
            raise ValueError(f"cache: block_size and num_blocks must be positive ({self})")


@dataclass(frozen=True)
class SchedulerConfig:
    """Per-step limits of the token-budget scheduler."""

    max_model_len: int
    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 64

    def __post_init__(self) -> None:
        if min(self.max_model_len, self.max_num_batched_tokens, self.max_num_seqs) <= 0:
            raise ValueError(f"scheduler limits must be positive ({self})")


@dataclass(frozen=True)
class EngineConfig:
    """Everything the engine core needs, fixed at start-up."""

    model_dir: Path
    model: ModelConfig
    cache: CacheConfig
    scheduler: SchedulerConfig
    weight_dtype: str | None = None
    quantization: str | None = None  # "q8_0" / "q4_0": the block format of the matrices
    device: str = "cpu"
    seed: int | None = None
    generation_defaults: dict[str, Any] = field(default_factory=dict)
    eos_token_ids: tuple[int, ...] = ()


def blocks_needed(num_tokens: int, block_size: int) -> int:
    """How many KV blocks hold `num_tokens` tokens."""
    return math.ceil(num_tokens / block_size)
