"""Tiny random Hugging Face checkpoints of each architecture GGUF files carry, shaped like the real
families (tokenizer details included), and their conversions with hearth's writer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import transformers

from tests.model_factory import VOCAB, random_model
from tests.tokenizer_factory import build_tokenizer

# The split regex of Qwen2's tokenizer.json (digits one at a time); the factory's byte-level
# tokenizer uses Llama 3's.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# name -> (config class, config overrides, tokenizer kind, tokenizer adds BOS)
MODELS = {
    # Llama 3 shape: byte-level BPE with ignore_merges, BOS added
    "llama": ("LlamaConfig", dict(tie_word_embeddings=False, rope_theta=10000.0), "byte_level", True),
    # Llama 2 shape: SentencePiece-style BPE with byte fallback, GQA with one KV head
    "llama_spm": ("LlamaConfig", dict(tie_word_embeddings=False, num_key_value_heads=1), "byte_fallback", True),
    # Llama 3.1 rope scaling, tied embeddings, head_dim given explicitly
    "llama3_scaled": ("LlamaConfig", dict(
        tie_word_embeddings=True, head_dim=32, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 64}), "byte_level", True),
    # Qwen2: q/k/v biases, tied embeddings, no BOS, Qwen2's split regex
    "qwen2": ("Qwen2Config", dict(tie_word_embeddings=True, num_attention_heads=8, num_key_value_heads=2,
                                  rope_theta=1000000.0), "byte_level", False),
    # Qwen3: q/k norms; head_dim 128 as in every Qwen3 (transformers' GGUF loader assumes it)
    "qwen3": ("Qwen3Config", dict(tie_word_embeddings=False, head_dim=128, num_attention_heads=4,
                                  num_key_value_heads=2, rope_theta=1000000.0), "byte_level", False),
}


def make_model(name: str, seed: int = 0) -> transformers.PreTrainedModel:
    cls_name, extra, _, _ = MODELS[name]
    return random_model(cls_name, extra, seed)


def _shape_tokenizer(out_dir: Path, name: str) -> None:
    path = out_dir / "tokenizer.json"
    spec = json.loads(path.read_text(encoding="utf-8"))
    if name.startswith("llama") and spec["model"].get("byte_fallback") is False:
        spec["model"]["ignore_merges"] = True  # as Llama 3's tokenizer.json has it
    if name.startswith("qwen"):
        spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = QWEN2_SPLIT
    if name == "llama_spm":
        # Llama 2's own tokenizer.json: the "▁" prefix comes from a normalizer, so it is added even
        # before a leading space and after special tokens -- what sentencepiece and llama.cpp do
        spec["normalizer"] = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
        spec["pre_tokenizer"] = None
    path.write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")


def save(model: transformers.PreTrainedModel, name: str, out_dir: Path) -> Path:
    _, _, kind, add_bos = MODELS[name]
    model.save_pretrained(out_dir, safe_serialization=True)
    build_tokenizer(out_dir, kind, VOCAB, add_bos=add_bos)
    _shape_tokenizer(out_dir, name)
    gen = out_dir / "generation_config.json"
    cfg = json.loads(gen.read_text()) if gen.exists() else {}
    cfg.update(temperature=0.7, top_p=0.9, top_k=20)
    cfg.pop("do_sample", None)
    gen.write_text(json.dumps(cfg))
    return out_dir


def reader_metadata(path) -> dict:
    """The file's metadata as the gguf package's own reader sees it (an oracle for hearth's parser)."""
    from gguf import GGUFReader

    return {name: field.contents() for name, field in GGUFReader(path).fields.items()
            if not name.startswith("GGUF.")}


class Zoo:
    """Session-wide cache of HF checkpoints and their GGUF conversions."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.models: dict[str, transformers.PreTrainedModel] = {}

    def hf(self, name: str) -> tuple[transformers.PreTrainedModel, Path]:
        d = self.root / name / "hf"
        if name not in self.models:
            self.models[name] = make_model(name, seed=sorted(MODELS).index(name) + 3)
            d.mkdir(parents=True)
            save(self.models[name], name, d)
        return self.models[name], d

    def gguf(self, name: str, out_type: str) -> Path:
        """The checkpoint converted by hearth's writer, alone in its own directory (so that
        transformers, given that directory, sees nothing but the GGUF file)."""
        out = self.root / name / out_type / f"{name}-{out_type}.gguf"
        if not out.exists():
            from hearth.engine.gguf import convert_to_gguf

            _, d = self.hf(name)
            out.parent.mkdir(parents=True)
            convert_to_gguf(d, out, out_type, progress=False)
        return out


@pytest.fixture(scope="session")
def zoo(tmp_path_factory) -> Zoo:
    root = tmp_path_factory.mktemp("gguf_zoo")
    yield Zoo(root)
    shutil.rmtree(root, ignore_errors=True)
