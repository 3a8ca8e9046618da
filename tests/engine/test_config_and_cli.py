"""Config parsing across transformers versions, generation defaults, zero-copy loading, the CLI."""

from __future__ import annotations

import json
import shutil
import pytest

from hearth import LLM
from hearth.engine.model.config import ModelConfig
from hearth.cli import main

TF4_LLAMA32 = {
    "architectures": ["LlamaForCausalLM"], "hidden_size": 2048, "intermediate_size": 8192,
    "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
    "vocab_size": 128256, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0, "torch_dtype": "bfloat16", "tie_word_embeddings": True,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
}


def test_transformers4_and_5_config_keys_agree():
    tf5 = {k: v for k, v in TF4_LLAMA32.items() if k not in ("rope_theta", "torch_dtype", "rope_scaling")}
    tf5["dtype"] = "bfloat16"
    tf5["rope_parameters"] = {**TF4_LLAMA32["rope_scaling"], "rope_theta": 500000.0}
    a, b = ModelConfig.from_hf_dict(TF4_LLAMA32), ModelConfig.from_hf_dict(tf5)
    assert a == b
    assert a.rope.rope_type == "llama3" and a.rope.factor == 32.0 and a.rope.theta == 500000.0
    assert a.torch_dtype == "bfloat16" and a.tie_word_embeddings and a.head_dim == 64
    old_style = {**TF4_LLAMA32, "rope_scaling": {"type": "linear", "factor": 2.0}}
    assert ModelConfig.from_hf_dict(old_style).rope.rope_type == "linear"


@pytest.mark.parametrize("change,match", [
    ({"architectures": ["BertModel"]}, "supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope type 'yarn'"),
    ({"num_key_value_heads": 7}, "multiple of num_key_value_heads"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"torch_dtype": "int3"}, "dtype"),
])
def test_bad_configs_raise(change, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig.from_hf_dict({**TF4_LLAMA32, **change})


def test_missing_config_key_is_named():
    cfg = dict(TF4_LLAMA32)
    del cfg["intermediate_size"]
    with pytest.raises(ValueError, match="intermediate_size"):
        ModelConfig.from_hf_dict(cfg)


def test_weights_are_memory_mapped_not_copied(tiny_llm):
    model = tiny_llm.engine.runner.model
    for w in (model.embed, model.layers[0].q, model.layers[1].down, model.lm_head):
        assert not w.flags.owndata and not w.flags.writeable  # a view of the mapped file


def test_generation_config_supplies_defaults(tiny_model_dir, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    (d / "generation_config.json").write_text(json.dumps(
        {"temperature": 0.6, "top_p": 0.9, "top_k": 20, "eos_token_id": [2, 7], "max_new_tokens": 33}))
    llm = LLM(str(d), max_model_len=64)
    sp = llm.get_default_sampling_params()
    assert (sp.temperature, sp.top_p, sp.top_k, sp.max_tokens) == (0.6, 0.9, 20, 33)
    assert {2, 7} <= set(llm.config.eos_token_ids)


def test_cli_generate_streams_text(tiny_model_dir, tiny_llm, capsys):
    from hearth import SamplingParams

    assert main(["generate", str(tiny_model_dir), "def f(x):", "--max-tokens", "9", "--temperature", "0"]) == 0
    printed = capsys.readouterr().out
    expect = tiny_llm.generate("def f(x):", SamplingParams(max_tokens=9, temperature=0))[0].outputs[0].text
    assert printed == expect + "\n"


def test_cli_reports_bad_model_path(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "missing"), "hi"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_help_explains_flags(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = capsys.readouterr().out
    for flag in ("--max-tokens", "--temperature", "--top-p", "--seed", "--stop", "--chat"):
        assert flag in text


def test_cli_chat_applies_template(tiny_model_dir, tiny_llm, capsys):
    from hearth import SamplingParams

    assert main(["generate", str(tiny_model_dir), "hello", "--chat", "--max-tokens", "6", "--temperature", "0"]) == 0
    expect = tiny_llm.chat([{"role": "user", "content": "hello"}], SamplingParams(max_tokens=6, temperature=0))
    assert capsys.readouterr().out == expect[0].outputs[0].text + "\n"


def test_cli_engine_flags_size_the_cache_and_are_validated(tiny_model_dir, caplog, capsys):
    import logging

    caplog.set_level(logging.INFO, logger="hearth")
    argv = ["generate", str(tiny_model_dir), "abc", "--max-tokens", "3", "--temperature", "0", "--num-kv-blocks",
            "20", "--block-size", "8", "--max-num-seqs", "2", "--max-num-batched-tokens", "16", "--no-prefix-caching"]
    assert main(argv) == 0
    assert "KV cache: 20 blocks of 8 tokens = 160 tokens" in caplog.text and "prefix caching off" in caplog.text
    assert main(["generate", str(tiny_model_dir), "abc", "--max-num-seqs", "0"]) == 2
    assert "max_num_seqs must be a positive integer" in capsys.readouterr().err


def test_cli_device_cuda_without_a_gpu_is_a_clear_error(tiny_model_dir, capsys):
    from tests.engine.engine_checks import skip_if_cuda_is_usable

    skip_if_cuda_is_usable()
    assert main(["generate", str(tiny_model_dir), "hi", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "device='cuda'" in err and "Traceback" not in err
    for bad in ("0", "1.5"):
        with pytest.raises(ValueError, match="gpu_memory_fraction"):
            from hearth.engine.backend.cuda.runner import kv_blocks_for_memory

            kv_blocks_for_memory(1 << 30, 0, float(bad), 1024)
