"""From a model path and user options to a ready EngineCore and tokenizer."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hearth.engine.backend import get_backend
from hearth.engine.model.config import CacheConfig, EngineConfig, ModelConfig, SchedulerConfig, normalize_dtype
from hearth.engine.core.engine_core import EngineCore
from hearth.engine.model.llama import LlamaForCausalLM
from hearth.engine.model.loader import Checkpoint
from hearth.engine.backend.runner import ModelRunner
from hearth.engine.model.quant import check_format
from hearth.engine.tokenization.tokenizer import Tokenizer

log = logging.getLogger("hearth")

DEFAULT_KV_CACHE_BYTES = 2 << 30
# the small trained model shipped inside the package, hearth/engine/default_model
# (scripts/train_default_model.py makes it)
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "default_model"
# generation_config.json keys that become default SamplingParams values
_GENERATION_KEYS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
                    "min_p": "min_p", "repetition_penalty": "repetition_penalty",
                    "max_new_tokens": "max_tokens"}


def resolve_model_dir(model: str | Path | None) -> Path:
    """Check that `model` names a Hugging Face model directory or a .gguf file; None means the
    bundled default model."""
    if model is None:
        if not (DEFAULT_MODEL_DIR / "config.json").exists():
            raise ValueError(f"the bundled default model is missing from this installation ({DEFAULT_MODEL_DIR}); "
                             "pass a model directory")
        return DEFAULT_MODEL_DIR
    path = Path(model).expanduser()
    if not path.exists():
        raise ValueError(f"model path {str(model)!r} does not exist")
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return path
        raise ValueError(f"{path} is a file but not a .gguf; pass a Hugging Face model directory or a GGUF file")
    if not (path / "config.json").exists():
        raise ValueError(f"model directory {path} has no config.json")
    return path


def read_generation_config(model_dir: Path) -> tuple[dict[str, Any], tuple[int, ...]]:
    """Default sampling values and EOS ids from generation_config.json (both may be empty)."""
    path = model_dir / "generation_config.json"
    if not path.exists():
        return {}, ()
    try:
        gen = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    defaults = {ours: gen[theirs] for theirs, ours in _GENERATION_KEYS.items() if gen.get(theirs) is not None}
    if gen.get("do_sample") is False:
        defaults["temperature"] = 0.0  # the checkpoint asks for greedy decoding by default
    eos = gen.get("eos_token_id")
    eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
    return defaults, eos_ids


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def model_length_limit(mc: ModelConfig) -> int:
    """The longest sequence the model supports."""
    limit = mc.max_position_embeddings
    if mc.sliding_window is not None:
        # within the window, sliding-window attention equals full attention
        limit = min(limit, mc.sliding_window)
    return limit


def choose_limits(mc: ModelConfig, max_model_len: int | None, kv_cache_memory: int | None,
                  block_size: int, num_kv_blocks: int | None = None,
                  kv_bytes_per_token: int | None = None) -> tuple[int, int]:
    """(max_model_len, num_blocks) from an explicit block count or a KV memory budget
    (`kv_bytes_per_token`: default fp32 K and V, the CPU cache)."""
    limit = model_length_limit(mc)
    if max_model_len is not None:
        if not isinstance(max_model_len, int) or max_model_len <= 0:
            raise ValueError(f"max_model_len must be a positive integer, got {max_model_len!r}")
        if max_model_len > limit:
            raise ValueError(f"max_model_len ({max_model_len}) exceeds what the model supports ({limit})")
    if num_kv_blocks is not None:
        if kv_cache_memory is not None:
            raise ValueError("give kv_cache_memory or num_kv_blocks, not both")
        num_blocks, what = _positive_int("num_kv_blocks", num_kv_blocks), f"num_kv_blocks ({num_kv_blocks})"
    else:
        budget = DEFAULT_KV_CACHE_BYTES if kv_cache_memory is None else _positive_int("kv_cache_memory", kv_cache_memory)
        per_token = kv_bytes_per_token or mc.kv_bytes_per_token
        num_blocks, what = budget // (block_size * per_token), f"kv_cache_memory ({budget} bytes)"
    fits = num_blocks * block_size
    if num_blocks <= 0 or (max_model_len is not None and max_model_len > fits):
        raise ValueError(
            f"{what} holds {fits} tokens, fewer than max_model_len "
            f"({max_model_len or limit}); raise it or lower max_model_len")
    if max_model_len is None:
        max_model_len = min(limit, fits)
        if max_model_len < limit:
            log.warning("max_model_len capped at %d tokens by the KV cache budget", max_model_len)
    return max_model_len, num_blocks


@dataclass
class _Opened:
    """What a model path provides before the engine is sized."""

    path: Path
    config: ModelConfig
    tokenizer: Tokenizer
    checkpoint: Any  # Checkpoint, or the GGUF reader's equivalent
    generation_defaults: dict[str, Any]
    eos_token_ids: tuple[int, ...]
    stored_quantization: str | None = None


def _open_model(model: str | Path | None) -> _Opened:
    path = resolve_model_dir(model)
    if path.is_file():  # a GGUF file
        from hearth.engine.gguf import load_gguf

        g = load_gguf(path)
        return _Opened(path, g.config, g.tokenizer, g.checkpoint, dict(g.generation_defaults),
                       tuple(g.eos_token_ids), g.quantization)
    defaults, gen_eos = read_generation_config(path)
    return _Opened(path, ModelConfig.from_file(path / "config.json"), Tokenizer.from_pretrained(path),
                   Checkpoint(path), defaults, gen_eos)


def build_engine(model: str | Path | None, *, device: str = "cpu", dtype: str | None = None,
                 quantization: str | None = None, max_model_len: int | None = None, seed: int | None = None,
                 kv_cache_memory: int | None = None, num_kv_blocks: int | None = None, block_size: int = 16,
                 max_num_seqs: int = 64, max_num_batched_tokens: int = 2048,
                 enable_prefix_caching: bool = True, progress: Callable[[int, int], None] | None = None,
                 gpu_memory_fraction: float = 0.9, enforce_eager: bool = False, cuda_device: Any = None,
                 ) -> tuple[EngineCore, Tokenizer, EngineConfig]:
    """Load config, tokenizer and weights (quantized to `quantization`, "q8_0" or "q4_0", if
    given); size the KV cache; return the engine core. `progress(done, total)` is called as
    decoder layers load.

    device="cuda": weights, KV cache and activations on the GPU in `dtype` (default: the
    checkpoint's 16-bit dtype, else bf16). Without kv_cache_memory / num_kv_blocks the KV cache
    takes what is left of `gpu_memory_fraction` of the device after the weights and a warm-up
    step; decode steps run as CUDA graphs unless `enforce_eager`. `cuda_device` replaces the
    CuPy device (tests run the engine in the kernel interpreters with a stand-in)."""
    started = time.perf_counter()
    for name, value in (("block_size", block_size), ("max_num_seqs", max_num_seqs),
                        ("max_num_batched_tokens", max_num_batched_tokens)):
        _positive_int(name, value)
    quantization = None if quantization in (None, "none") else check_format(quantization)
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and cuda_device is None:
        from hearth.engine.backend.cuda.device import open_device

        cuda_device = open_device()  # fails clearly, before any loading, without a usable GPU
    opened = _open_model(model)
    if quantization is not None and opened.stored_quantization is not None:
        raise ValueError(f"{opened.path} is already quantized ({opened.stored_quantization}); "
                         f"load it without quantization={quantization!r}")
    mc, tokenizer, defaults, gen_eos = opened.config, opened.tokenizer, opened.generation_defaults, opened.eos_token_ids
    eos = tuple(dict.fromkeys(gen_eos + mc.eos_token_ids + (
        (tokenizer.eos_token_id,) if tokenizer.eos_token_id is not None else ())))
    weight_dtype = normalize_dtype(dtype)
    if device == "cuda":
        from hearth.engine.backend.cuda.backend import compute_dtype_for

        weight_dtype = compute_dtype_for(weight_dtype, mc.torch_dtype)
    backend = get_backend(device, weight_dtype, cuda_device)
    kv_per_token = (mc.num_hidden_layers * backend.kv_block_bytes(1, mc.num_key_value_heads, mc.head_dim)
                    if device == "cuda" else None)  # the GPU cache is in the compute dtype
    net = None
    if device == "cuda":
        net = _load_model(mc, backend, opened, weight_dtype, max_model_len or model_length_limit(mc),
                          progress, quantization)
        if kv_cache_memory is None and num_kv_blocks is None:
            num_kv_blocks = _gpu_kv_blocks(backend, net, mc, block_size, max_num_batched_tokens, max_num_seqs,
                                           gpu_memory_fraction)
    max_model_len, num_blocks = choose_limits(mc, max_model_len, kv_cache_memory, block_size, num_kv_blocks,
                                              kv_per_token)
    log.info("KV cache: %d blocks of %d tokens = %d tokens (%.1f MiB); max_model_len %d, prefix caching %s",
             num_blocks, block_size, num_blocks * block_size,
             num_blocks * block_size * (kv_per_token or mc.kv_bytes_per_token) / 2**20, max_model_len,
             "on" if enable_prefix_caching else "off")
    config = EngineConfig(
        model_dir=opened.path, model=mc,
        cache=CacheConfig(block_size=block_size, num_blocks=num_blocks, enable_prefix_caching=enable_prefix_caching),
        scheduler=SchedulerConfig(max_model_len=max_model_len, max_num_seqs=max_num_seqs,
                                  max_num_batched_tokens=max_num_batched_tokens),
        weight_dtype=weight_dtype, quantization=quantization or opened.stored_quantization,
        device=device, seed=seed,
        generation_defaults=defaults, eos_token_ids=eos)
    if net is None:
        net = _load_model(mc, backend, opened, config.weight_dtype, max_model_len, progress, quantization)
    if config.quantization is not None:
        log.info("weights: %s matrices (%s)", config.quantization,
                 "as stored" if quantization is None else f"quantized on load; output head {net.HEAD_FORMAT}, "
                 "embedding as stored")
    if device == "cuda":
        from hearth.engine.backend.cuda.runner import CUDAModelRunner

        runner: ModelRunner = CUDAModelRunner(config, backend, net, use_cuda_graphs=not enforce_eager)
    else:
        runner = ModelRunner(config, backend, net)
    log.info("engine ready on %s in %.1f s", device, time.perf_counter() - started)
    return EngineCore(config, runner), tokenizer, config


def _load_model(mc: ModelConfig, backend, opened: _Opened, weight_dtype: str | None, rope_len: int,
                progress, quantization: str | None) -> LlamaForCausalLM:
    return LlamaForCausalLM(mc, backend, opened.checkpoint, weight_dtype, rope_len, progress=progress,
                            quantization=quantization)


def _gpu_kv_blocks(backend, net: LlamaForCausalLM, mc: ModelConfig, block_size: int, max_num_batched_tokens: int,
                   max_num_seqs: int, fraction: float) -> int:
    """KV blocks that fit beside the weights and the peak of the largest step."""
    from hearth.engine.backend.cuda.runner import device_summary, kv_blocks_for_memory, profile_used_bytes

    used, total = profile_used_bytes(backend, net, max_num_batched_tokens, max_num_seqs, block_size)
    per_block = mc.num_hidden_layers * backend.kv_block_bytes(block_size, mc.num_key_value_heads, mc.head_dim)
    blocks = kv_blocks_for_memory(total, used, fraction, per_block)
    log.info("GPU %s: weights + peak activations use %.2f GiB; gpu_memory_fraction %.2f leaves %.2f GiB "
             "for the KV cache", device_summary(backend.device), used / 2**30, fraction,
             blocks * per_block / 2**30)
    return blocks
