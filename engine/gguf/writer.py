"""`convert_to_gguf`: a Hugging Face model directory (llama, mistral, qwen2, qwen3) as a GGUF file
llama.cpp can load, with the tensor names, metadata keys and layouts of its own converter
(convert_hf_to_gguf.py): 1-D tensors in F32, matrices (the embedding included) in the requested
type, llama's attn_q/attn_k rows reordered, Llama 3.1 rope scaling as a rope_freqs tensor.

Tensors are converted and written one at a time, so memory stays at one tensor beyond the
memory-mapped source.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFWriter, quants
from tqdm import tqdm

from hearth.engine.model.config import ModelConfig
from hearth.engine.gguf import keys, layout, names
from hearth.engine.gguf.quantize import GGML_TYPE, quantize
from hearth.engine.gguf.rope import llama3_rope_factors
from hearth.engine.gguf.vocab import read_hf_vocab
from hearth.engine.model.loader import Checkpoint
from hearth.engine.model.quant import BLOCK

log = logging.getLogger("hearth")

OUT_TYPES = ("q8_0", "q4_0", "f16", "bf16", "f32")
# general.file_type (llama.cpp's LlamaFileType) of each output type
_FILE_TYPE = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7, "bf16": 32}
_GGUF_ARCH = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2",
              "Qwen3ForCausalLM": "qwen3"}
T = GGMLQuantizationType


@dataclass
class _Tensor:
    """One tensor to write: its GGUF name, type, logical shape and a function making its data."""

    name: str
    qtype: GGMLQuantizationType
    shape: tuple[int, ...]
    make: Callable[[], np.ndarray]

    @property
    def nbytes(self) -> int:
        block, size = GGML_QUANT_SIZES[self.qtype]
        return int(np.prod(self.shape)) // block * size


def _encode(values: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    if qtype == T.F32:
        return np.ascontiguousarray(values, dtype=np.float32)
    if qtype == T.F16:
        return np.ascontiguousarray(values, dtype=np.float16)
    if qtype == T.BF16:
        return quants.quantize(np.ascontiguousarray(values, dtype=np.float32), T.BF16)
    return quantize(values, qtype.name.lower())


class _Planner:
    """Decides each tensor's type as llama.cpp does and wires up its source."""

    def __init__(self, ckpt: Checkpoint, mc: ModelConfig, out_type: str, reorder_qk: bool) -> None:
        self.ckpt, self.mc, self.out_type, self.reorder_qk = ckpt, mc, out_type, reorder_qk
        self.fallbacks: list[str] = []

    def _type_for(self, gguf_name: str, shape: tuple[int, ...]) -> GGMLQuantizationType:
        if len(shape) <= 1 or gguf_name.endswith("_norm.weight") or not gguf_name.endswith(".weight"):
            return T.F32  # norms and biases: llama.cpp keeps every 1-D tensor in F32
        qtype = GGML_TYPE[self.out_type]
        if qtype in (T.Q8_0, T.Q4_0) and shape[-1] % BLOCK:
            self.fallbacks.append(gguf_name)  # rows that do not fill whole blocks: F16, like llama.cpp
            return T.F16
        return qtype

    def tensor(self, hf_name: str, shape: tuple[int, ...]) -> _Tensor:
        gguf_name = names.hf_to_gguf(hf_name)
        assert gguf_name is not None, hf_name
        qtype = self._type_for(gguf_name, shape)
        role = names.qk_role(gguf_name) if self.reorder_qk else None
        heads = self.mc.num_attention_heads if role == "q" else self.mc.num_key_value_heads

        def make() -> np.ndarray:
            values = np.asarray(self.ckpt.get(hf_name, shape), dtype=np.float32)
            if role is not None:
                values = layout.to_gguf_rows(values, heads)
            return _encode(values, qtype)

        return _Tensor(gguf_name, qtype, tuple(shape), make)

    def all_tensors(self, rope_factors: np.ndarray | None) -> list[_Tensor]:
        c = self.mc
        q_out, kv_out, h, inter = (c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim,
                                   c.hidden_size, c.intermediate_size)
        out = []
        if rope_factors is not None:
            out.append(_Tensor(names.ROPE_FREQS, T.F32, rope_factors.shape, lambda: rope_factors))
        out.append(self.tensor("model.embed_tokens.weight", (c.vocab_size, h)))
        for i in range(c.num_hidden_layers):
            p = f"model.layers.{i}."
            wanted = [("input_layernorm.weight", (h,)), ("self_attn.q_proj.weight", (q_out, h)),
                      ("self_attn.k_proj.weight", (kv_out, h)), ("self_attn.v_proj.weight", (kv_out, h)),
                      ("self_attn.o_proj.weight", (h, q_out))]
            if c.qkv_bias:
                wanted += [("self_attn.q_proj.bias", (q_out,)), ("self_attn.k_proj.bias", (kv_out,)),
                           ("self_attn.v_proj.bias", (kv_out,))]
            if c.o_bias:
                wanted.append(("self_attn.o_proj.bias", (h,)))
            if c.qk_norm:
                wanted += [("self_attn.q_norm.weight", (c.head_dim,)), ("self_attn.k_norm.weight", (c.head_dim,))]
            wanted += [("post_attention_layernorm.weight", (h,)), ("mlp.gate_proj.weight", (inter, h)),
                       ("mlp.up_proj.weight", (inter, h)), ("mlp.down_proj.weight", (h, inter))]
            if c.mlp_bias:
                wanted += [("mlp.gate_proj.bias", (inter,)), ("mlp.up_proj.bias", (inter,)),
                           ("mlp.down_proj.bias", (h,))]
            out += [self.tensor(p + name, shape) for name, shape in wanted]
        out.append(self.tensor("model.norm.weight", (h,)))
        if not c.tie_word_embeddings:  # llama.cpp ties by leaving output.weight out
            out.append(self.tensor("lm_head.weight", (c.vocab_size, h)))
        return out


def _read_config(model_dir: Path) -> tuple[dict[str, Any], ModelConfig]:
    path = model_dir / "config.json"
    if not path.is_file():
        raise ValueError(f"{model_dir} is not a Hugging Face model directory (no config.json)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    return raw, ModelConfig.from_hf_dict(raw)


def convert_to_gguf(model_dir: str | Path, out_path: str | Path, out_type: str = "q8_0",
                    progress: bool = True) -> Path:
    """Write the model in `model_dir` to `out_path` as GGUF with matrices in `out_type`
    ("q8_0", "q4_0", "f16", "bf16" or "f32"); returns the path written.

    The file appears only once complete (it is written next to `out_path` and renamed).

    Raises:
        ValueError: an unsupported architecture or tokenizer, missing tensors, a bad `out_type`.
    """
    out_type = str(out_type).lower()
    if out_type not in OUT_TYPES:
        raise ValueError(f"output type {out_type!r} is not supported; choose one of {', '.join(OUT_TYPES)}")
    model_dir, out_path = Path(model_dir).expanduser(), Path(out_path).expanduser()
    if not model_dir.is_dir():
        raise ValueError(f"model directory {str(model_dir)!r} does not exist")
    raw, mc = _read_config(model_dir)
    arch = _GGUF_ARCH[mc.architecture]
    vocab = read_hf_vocab(model_dir, raw, mc.vocab_size)
    planner = _Planner(Checkpoint(model_dir), mc, out_type, reorder_qk=arch == "llama")
    rope = None
    if mc.rope.rope_type == "llama3":
        scaling = {"factor": mc.rope.factor, "low_freq_factor": mc.rope.low_freq_factor,
                   "high_freq_factor": mc.rope.high_freq_factor,
                   "original_max_position_embeddings": mc.rope.original_max_position_embeddings}
        rope = llama3_rope_factors(mc.rope.theta, mc.head_dim, scaling)
    tensors = planner.all_tensors(rope)
    for name in planner.fallbacks:
        log.info("%s: row length is not a multiple of %d, written as F16 instead of %s", name, BLOCK, out_type)

    num_params = sum(int(np.prod(t.shape)) for t in tensors)
    writer = GGUFWriter(None, arch)
    keys.write_general(writer, model_dir.name, _FILE_TYPE[out_type], num_params)
    keys.write_hparams(writer, arch, mc, raw)
    keys.write_tokenizer(writer, vocab)
    keys.write_sampling(writer, model_dir)
    for t in tensors:
        # the dtype argument only matters for uint8 (byte shapes); shapes here are logical
        writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), t.nbytes, raw_dtype=t.qtype)
    partial = out_path.with_name(out_path.name + ".part")
    try:
        _write(writer, partial, tensors, progress)
        writer.close()
        os.replace(partial, out_path)
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    log.info("wrote %s: %s, %d tensors, %.1f MiB", out_path, out_type, len(tensors), out_path.stat().st_size / 2**20)
    return out_path


def _write(writer: GGUFWriter, path: Path, tensors: list[_Tensor], progress: bool) -> None:
    writer.write_header_to_file(path)
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    total = sum(t.nbytes for t in tensors)
    with tqdm(total=total, unit="B", unit_scale=True, desc="converting", disable=not progress) as bar:
        for t in tensors:
            data = t.make()
            if data.nbytes != t.nbytes:
                raise ValueError(f"{t.name}: made {data.nbytes} bytes, expected {t.nbytes}")
            writer.write_tensor_data(data)
            bar.update(t.nbytes)
