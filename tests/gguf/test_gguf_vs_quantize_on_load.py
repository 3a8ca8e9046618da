"""A GGUF file runs in hearth and gives the same log-probs as hearth's own quantize-on-load of
the model it was written from."""

from __future__ import annotations

import gguf
import numpy as np
import torch

from hearth import LLM, SamplingParams
from hearth.engine.gguf.writer import convert_to_gguf
from hearth.engine.model.quant import QuantizedMatrix
from tests.model_factory import VOCAB, make_hf_model, save_model


def _prompt_logprobs(llm: LLM, prompts: list[list[int]]) -> list[dict]:
    outs = llm.generate(prompts, SamplingParams(max_tokens=1, prompt_logprobs=4, temperature=0))
    return [{(j, t): lp.logprob for j, pos in enumerate(o.prompt_logprobs[1:]) for t, lp in pos.items()}
            for o in outs]


def test_q8_0_gguf_equals_quantize_on_load(tmp_path):
    model = make_hf_model("llama", seed=5)
    # The GGUF stores the embedding in q8_0 too, while quantize-on-load keeps it as stored: give
    # the model an embedding that q8_0 represents exactly, so both runs see the same numbers.
    q8 = gguf.GGMLQuantizationType.Q8_0
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb.copy_(torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(emb.numpy(), q8), q8)))
    model_dir = save_model(model, "llama", tmp_path / "hf")
    path = convert_to_gguf(model_dir, tmp_path / "model-q8_0.gguf", "q8_0", progress=False)

    from_gguf = LLM(str(path), max_model_len=128, num_kv_blocks=32)
    on_load = LLM(str(model_dir), quantization="q8_0", max_model_len=128, num_kv_blocks=32)
    net = from_gguf.engine.runner.model
    assert isinstance(net.layers[0].q, QuantizedMatrix) and net.layers[0].q.fmt == "q8_0"
    assert from_gguf.config.quantization == "q8_0"

    rng = np.random.default_rng()
    prompts = [rng.integers(3, VOCAB, size=int(rng.integers(6, 30))).tolist() for _ in range(3)]
    a, b = _prompt_logprobs(from_gguf, prompts), _prompt_logprobs(on_load, prompts)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        assert max(abs(x[k] - y[k]) for k in x) < 1e-5
    text = "def add(a, b):"
    sp = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    assert from_gguf.generate(text, sp)[0].outputs[0].token_ids == on_load.generate(text, sp)[0].outputs[0].token_ids


def test_quantized_gguf_refuses_a_second_quantization(tmp_path, tiny_model_dir):
    import pytest

    path = convert_to_gguf(tiny_model_dir, tmp_path / "m.gguf", "q4_0", progress=False)
    with pytest.raises(ValueError, match="already quantized"):
        LLM(str(path), quantization="q8_0", max_model_len=64, num_kv_blocks=16)
