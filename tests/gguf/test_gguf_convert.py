"""`hearth convert`, the writer's choices of tensor type, and GGUF files run by hearth's LLM."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import transformers
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader

from hearth.engine.gguf import convert_to_gguf, load_gguf
from hearth.cli import main
from tests.gguf.conftest import reader_metadata, save
from tests.model_factory import _COMMON


def _types(path) -> dict[str, T]:
    return {t.name: t.tensor_type for t in GGUFReader(path).tensors}


def _keys(path) -> dict:
    return reader_metadata(path)


@pytest.mark.parametrize("out_type", ["q8_0", "q4_0", "f16"])
def test_cli_convert_writes_a_loadable_file(zoo, tmp_path, out_type, capsys):
    _, hf_dir = zoo.hf("qwen2")
    out = tmp_path / f"qwen2-{out_type}.gguf"
    assert main(["convert", str(hf_dir), str(out), "--type", out_type.upper(), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    types = _types(out)
    want = T[out_type.upper()]
    assert types["token_embd.weight"] == want and types["blk.0.ffn_down.weight"] == want
    assert types["blk.0.attn_norm.weight"] == T.F32 and types["blk.0.attn_q.bias"] == T.F32
    assert "output.weight" not in types  # tied: llama.cpp reuses token_embd
    assert load_gguf(out).quantization == (None if out_type == "f16" else out_type)


def test_cli_convert_errors(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "none"), str(tmp_path / "x.gguf")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["convert", str(tmp_path), str(tmp_path / "x.bin")]) == 2
    assert "must end in .gguf" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["convert", str(tmp_path), str(tmp_path / "x.gguf"), "--type", "q5_k"])


def test_cli_help_documents_convert_and_quantization(capsys):
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    text = capsys.readouterr().out
    assert "q8_0" in text and "q4_0" in text and "f16" in text and "llama.cpp" in text
    for command in ("generate", "serve"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "--quantization" in text and "q4_0" in text and ".gguf" in text


def test_metadata_keys_are_llama_cpps(zoo):
    keys = _keys(zoo.gguf("llama3_scaled", "q8_0"))
    assert keys["general.architecture"] == "llama" and keys["general.file_type"] == 7
    assert keys["general.quantization_version"] == 2
    for key in ("block_count", "context_length", "embedding_length", "feed_forward_length",
                "attention.head_count", "attention.head_count_kv", "rope.freq_base",
                "attention.layer_norm_rms_epsilon", "vocab_size", "rope.dimension_count",
                "attention.key_length", "attention.value_length"):
        assert f"llama.{key}" in keys, key
    assert keys["llama.rope.dimension_count"] == 32
    assert keys["tokenizer.ggml.model"] == "gpt2" and keys["tokenizer.ggml.pre"] == "llama-bpe"
    assert keys["tokenizer.ggml.add_bos_token"] is True and keys["tokenizer.ggml.bos_token_id"] == 1
    assert "rope_freqs.weight" in _types(zoo.gguf("llama3_scaled", "q8_0"))
    spm = _keys(zoo.gguf("llama_spm", "f16"))
    assert spm["tokenizer.ggml.model"] == "llama" and len(spm["tokenizer.ggml.scores"]) == 400
    assert spm["tokenizer.ggml.token_type"][3:259] == [6] * 256  # the <0xXX> byte pieces
    assert spm["tokenizer.ggml.unknown_token_id"] == 0
    qwen = _keys(zoo.gguf("qwen2", "f16"))
    assert qwen["general.architecture"] == "qwen2" and qwen["tokenizer.ggml.pre"] == "qwen2"
    assert qwen["tokenizer.ggml.add_bos_token"] is False and "qwen2.vocab_size" not in qwen


def test_rows_that_do_not_fill_blocks_fall_back_to_f16(tmp_path, caplog):
    # intermediate_size 80 is no multiple of 32: ffn_down's rows cannot be cut into blocks
    config = transformers.LlamaConfig(**{**_COMMON, "intermediate_size": 80})
    hf_dir = save(transformers.LlamaForCausalLM(config).eval(), "llama", tmp_path / "hf")
    with caplog.at_level(logging.INFO, logger="hearth"):
        out = convert_to_gguf(hf_dir, tmp_path / "m.gguf", "q4_0", progress=False)
    types = _types(out)
    assert types["blk.0.ffn_down.weight"] == T.F16 and types["blk.0.ffn_up.weight"] == T.Q4_0
    assert any("blk.0.ffn_down.weight" in r.getMessage() and "F16" in r.getMessage() for r in caplog.records)
    g = load_gguf(out)
    assert g.checkpoint.get("model.layers.0.mlp.down_proj.weight", (64, 80)).dtype == np.float16


def _llm_or_skip(path, **kwargs):
    from hearth import LLM

    return LLM(str(path), **kwargs)


@pytest.mark.parametrize("name", ["llama", "llama_spm", "llama3_scaled", "qwen2", "qwen3"])
def test_llm_runs_an_f32_file_exactly_like_the_checkpoint(zoo, name):
    from hearth import LLM, SamplingParams

    _, hf_dir = zoo.hf(name)
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True, logprobs=2)
    ours = _llm_or_skip(zoo.gguf(name, "f32"), max_model_len=128, num_kv_blocks=32)
    ref = LLM(str(hf_dir), max_model_len=128, num_kv_blocks=32)
    prompt = "def forward(self, x): Café 😀 123"
    a, b = ours.generate([prompt], params)[0], ref.generate([prompt], params)[0]
    assert a.prompt_token_ids == b.prompt_token_ids
    assert a.outputs[0].token_ids == b.outputs[0].token_ids
    for x, y in zip(a.outputs[0].logprobs, b.outputs[0].logprobs):
        assert x.keys() == y.keys()
        assert all(abs(x[t].logprob - y[t].logprob) < 1e-5 for t in x)
    chat = [{"role": "user", "content": "hello"}]
    assert ours.tokenizer.apply_chat_template(chat) == ref.tokenizer.apply_chat_template(chat)


def test_llm_runs_quantized_files_in_their_format(zoo):
    from hearth import SamplingParams

    for out_type in ("q8_0", "q4_0"):
        llm = _llm_or_skip(zoo.gguf("qwen3", out_type), max_model_len=64, num_kv_blocks=16)
        assert llm.config.quantization == out_type
        out = llm.generate(["Hello"], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))[0]
        assert len(out.outputs[0].token_ids) == 4
