"""Bad GGUF files and bad conversions fail with a ValueError that says what is wrong."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from gguf import GGUFWriter
from safetensors.numpy import load_file, save_file

from hearth.engine.gguf import convert_to_gguf, load_gguf
from hearth.engine.gguf.metadata import Metadata, read_metadata
from hearth.engine.gguf.tokenizer import build_tokenizer


def _write(path, arch="llama", drop=(), extra=None, tokens=True, extra_tensors=None):
    """A small llama-shaped GGUF; `drop` leaves tensors out, `extra` sets metadata keys."""
    w = GGUFWriter(path, arch)
    for key, value in {"block_count": 1, "context_length": 64, "embedding_length": 32, "feed_forward_length": 64,
                       "attention.head_count": 2, "attention.head_count_kv": 2}.items():
        w.add_uint32(f"{arch}.{key}", value)
    w.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)
    if tokens:
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("default")
        w.add_token_list([chr(ord("a") + i) for i in range(16)])
    for key, value in (extra or {}).items():
        if isinstance(value, str):
            w.add_string(key, value)
        else:
            w.add_uint32(key, value)
    shapes = {"token_embd.weight": (16, 32), "output_norm.weight": (32,), "blk.0.attn_norm.weight": (32,),
              "blk.0.ffn_norm.weight": (32,), "blk.0.attn_q.weight": (32, 32), "blk.0.attn_k.weight": (32, 32),
              "blk.0.attn_v.weight": (32, 32), "blk.0.attn_output.weight": (32, 32),
              "blk.0.ffn_gate.weight": (64, 32), "blk.0.ffn_up.weight": (64, 32), "blk.0.ffn_down.weight": (32, 64)}
    for name, shape in shapes.items():
        if name not in drop:
            w.add_tensor(name, np.random.default_rng().standard_normal(shape).astype(np.float32))
    for name, data in (extra_tensors or {}).items():
        w.add_tensor(name, data)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_not_a_gguf_file(tmp_path):
    for content in (b"", b"hello world, not a model", b"GGU"):
        path = tmp_path / "x.gguf"
        path.write_bytes(content)
        with pytest.raises(ValueError, match="not a GGUF file"):
            load_gguf(path)
    with pytest.raises(ValueError, match="does not exist"):
        load_gguf(tmp_path / "missing.gguf")


def test_truncated_file(tmp_path):
    good = _write(tmp_path / "good.gguf").read_bytes()
    for cut in (24, len(good) // 3, len(good) - 100):
        path = tmp_path / "cut.gguf"
        path.write_bytes(good[:cut])
        with pytest.raises(ValueError, match="corrupt or truncated"):
            load_gguf(path)


def test_unsupported_architecture(tmp_path):
    with pytest.raises(ValueError, match=r"architecture 'falcon' is not supported; supported: llama, qwen2, qwen3"):
        load_gguf(_write(tmp_path / "f.gguf", arch="falcon"))


def test_missing_metadata(tmp_path):
    path = tmp_path / "m.gguf"
    w = GGUFWriter(path, "llama")
    w.add_block_count(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match="llama.embedding_length"):
        load_gguf(path)


def test_missing_and_misshapen_tensors_are_named(tmp_path):
    g = load_gguf(_write(tmp_path / "t.gguf", drop={"blk.0.ffn_down.weight"}))
    assert "model.layers.0.mlp.down_proj.weight" not in g.checkpoint
    with pytest.raises(ValueError, match=r"no tensor 'blk\.0\.ffn_down\.weight'.*mlp\.down_proj"):
        g.checkpoint.get("model.layers.0.mlp.down_proj.weight", (32, 64))
    with pytest.raises(ValueError, match=r"'blk\.0\.ffn_up\.weight'.*shape \(64, 32\), expected \(64, 48\)"):
        g.checkpoint.get("model.layers.0.mlp.up_proj.weight", (64, 48))


def test_unreadable_tensor_type_is_named_when_used(tmp_path):
    path = _write(tmp_path / "i.gguf", drop={"blk.0.ffn_up.weight"}, extra_tensors={
        "blk.0.ffn_up.weight": np.zeros((64, 32), dtype=np.int32)})
    g = load_gguf(path)  # unused tensors of odd types do not stop a load
    with pytest.raises(ValueError, match=r"'blk\.0\.ffn_up\.weight' has type I32, which hearth cannot read"):
        g.checkpoint.get("model.layers.0.mlp.up_proj.weight", (64, 32))


def test_tokenizer_problems(tmp_path):
    with pytest.raises(ValueError, match="no tokenizer"):
        load_gguf(_write(tmp_path / "a.gguf", tokens=False))
    path = _write(tmp_path / "b.gguf")
    values = read_metadata(path)
    for key, value, message in [("tokenizer.ggml.model", "bert", "model 'bert' is not supported"),
                                ("tokenizer.ggml.pre", "falcon", "pre 'falcon' is not supported"),
                                ("tokenizer.ggml.eos_token_id", 99, "outside the vocabulary"),
                                ("tokenizer.ggml.merges", ["a"], "malformed merge")]:
        with pytest.raises(ValueError, match=message):
            build_tokenizer(Metadata({**values, key: value}, "b.gguf"))


def test_converter_rejects_bad_input(zoo, tmp_path):
    _, hf_dir = zoo.hf("llama")
    with pytest.raises(ValueError, match="output type 'q5_k' is not supported"):
        convert_to_gguf(hf_dir, tmp_path / "x.gguf", "q5_k")
    with pytest.raises(ValueError, match="does not exist"):
        convert_to_gguf(tmp_path / "nowhere", tmp_path / "x.gguf")
    broken = tmp_path / "gpt2"
    shutil.copytree(hf_dir, broken)
    cfg = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**cfg, "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ValueError, match="unsupported architecture"):
        convert_to_gguf(broken, tmp_path / "x.gguf")
    (broken / "config.json").write_text(json.dumps(cfg))
    # a tensor missing from the weights is found only while writing
    weights = load_file(broken / "model.safetensors")
    del weights["model.layers.1.mlp.down_proj.weight"]
    save_file(weights, broken / "model.safetensors")
    with pytest.raises(ValueError, match="missing tensor 'model.layers.1.mlp.down_proj.weight'"):
        convert_to_gguf(broken, tmp_path / "x.gguf")
    (broken / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="no \\*.safetensors"):
        convert_to_gguf(broken, tmp_path / "x.gguf")
    assert not list(tmp_path.glob("*.gguf*")), "a failed conversion leaves no file behind"


def test_converter_rejects_tokenizers_llamacpp_cannot_reproduce(zoo, tmp_path):
    _, hf_dir = zoo.hf("llama")
    odd = tmp_path / "odd"
    shutil.copytree(hf_dir, odd)
    spec = json.loads((odd / "tokenizer.json").read_text(encoding="utf-8"))
    spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\w+|\s+"
    (odd / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(ValueError, match="split regex .* is not one llama.cpp knows"):
        convert_to_gguf(odd, tmp_path / "x.gguf")
    spec["model"] = {"type": "Unigram", "vocab": [["a", 0.0]], "unk_id": 0}
    (odd / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    with pytest.raises(ValueError, match="a Unigram tokenizer cannot be converted"):
        convert_to_gguf(odd, tmp_path / "x.gguf")
