"""`load_gguf`: a GGUF file as hearth's model config, weights, tokenizer and defaults."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hearth.engine.model.config import ModelConfig
from hearth.engine.gguf import hparams
from hearth.engine.gguf.container import GGUFFile
from hearth.engine.gguf.metadata import Metadata
from hearth.engine.gguf.names import ROPE_FREQS
from hearth.engine.gguf.quantize import dequantize
from hearth.engine.gguf.tensors import GGUFCheckpoint
from hearth.engine.gguf.tokenizer import build_tokenizer, stop_token_ids
from hearth.engine.tokenization.tokenizer import Tokenizer

log = logging.getLogger("hearth")


@dataclass
class GGUFModel:
    """Everything hearth needs from one GGUF file.

    `checkpoint` answers to HF tensor names like `hearth.engine.model.loader.Checkpoint` and returns
    views of the file's memory map; `quantization` is the block format of most matrices
    ("q8_0"/"q4_0"), None for a float file."""

    path: Path
    config: ModelConfig
    checkpoint: GGUFCheckpoint
    tokenizer: Tokenizer
    eos_token_ids: tuple[int, ...]
    generation_defaults: dict[str, Any] = field(default_factory=dict)
    quantization: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)


def load_gguf(path: str | Path) -> GGUFModel:
    """Read a GGUF file of the llama, qwen2 or qwen3 architecture.

    Tensors come back in Hugging Face layout and names (llama.cpp's Q/K row order is undone for
    llama); Q8_0/Q4_0/F16/BF16/F32 tensors are used in place, other types (Q4_K, Q5_K, Q6_K, ...)
    are converted to the nearest native format when read, with one log line saying which.

    Raises:
        ValueError: not a GGUF file, an unsupported architecture or tokenizer, missing metadata.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"GGUF file {str(path)!r} does not exist")
    file = GGUFFile(path)  # a read-only memory map: tensor data is never copied
    meta = Metadata(file.metadata, str(path))
    arch = hparams.check_architecture(meta)  # before anything else: the clearest error first
    rope_freqs = next((t for t in file.tensors if t.name == ROPE_FREQS), None)
    config = hparams.model_config(meta, {t.name for t in file.tensors}, None if rope_freqs is None else
                                  dequantize(rope_freqs.data, rope_freqs.tensor_type, rope_freqs.shape))
    # llama.cpp reorders attn_q/attn_k rows only for the llama architecture
    heads = (config.num_attention_heads, config.num_key_value_heads) if arch == "LlamaForCausalLM" else None
    checkpoint = GGUFCheckpoint(path, file.tensors, heads)
    tokenizer = build_tokenizer(meta)
    note = checkpoint.conversion_note()
    if note:
        log.info(note)
    return GGUFModel(
        path=path, config=config, checkpoint=checkpoint, tokenizer=tokenizer,
        eos_token_ids=stop_token_ids(meta, tokenizer), generation_defaults=hparams.generation_defaults(meta),
        quantization=checkpoint.quantization(), metadata=meta.values)
