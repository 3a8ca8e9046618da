"""llama.cpp itself (through llama-cpp-python, when installed) loads hearth's GGUF files and runs
them like the original checkpoints: same token ids, same logits. Skipped without llama_cpp."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hearth.engine.tokenization.tokenizer import Tokenizer
from tests.gguf.conftest import MODELS
from tests.gguf.test_gguf_roundtrip import TEXTS

llama_cpp = pytest.importorskip("llama_cpp")


def _llama(path, **kwargs):
    return llama_cpp.Llama(model_path=str(path), n_ctx=128, verbose=False, n_threads=2, **kwargs)


@pytest.mark.parametrize("name", list(MODELS))
def test_llamacpp_tokenizes_like_the_checkpoint(zoo, name):
    _, hf_dir = zoo.hf(name)
    ref = Tokenizer.from_pretrained(hf_dir)
    llm = _llama(zoo.gguf(name, "q8_0"), vocab_only=True)
    for text in TEXTS:
        assert llm.tokenize(text.encode(), add_bos=True, special=True) == ref.encode(text), text


@pytest.mark.parametrize("out_type", ["f32", "f16"])
@pytest.mark.parametrize("name", list(MODELS))
def test_llamacpp_logits_match_transformers(zoo, name, out_type):
    model, _ = zoo.hf(name)
    ids = np.random.default_rng().integers(3, 400, size=24).tolist()
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].numpy()
    llm = _llama(zoo.gguf(name, out_type), logits_all=True)
    llm.eval(ids)
    got = np.asarray(llm.scores[: len(ids)])
    # llama.cpp rounds some intermediates to f16 even for f32 weights
    assert np.abs(got - want).max() < 0.03 * np.abs(want).max(), name
    assert (got.argmax(-1) == want.argmax(-1)).mean() > 0.75  # near-ties may flip


def test_llamacpp_runs_the_bundled_model(tmp_path):
    # a GPT-2-split vocabulary ("gpt-2") and a trained model, not random weights
    import transformers

    from hearth.engine.frontends.builder import DEFAULT_MODEL_DIR
    from hearth.engine.gguf import convert_to_gguf

    path = convert_to_gguf(DEFAULT_MODEL_DIR, tmp_path / "default.gguf", "f32", progress=False)
    ref = Tokenizer.from_pretrained(DEFAULT_MODEL_DIR)
    llm = _llama(path, logits_all=True)
    texts = [*TEXTS, "import os\n\tx = {'a': [1, 2]}  # 3.14", "a+b=c; x->y | z ~ w^2 $5"]
    for text in texts:
        assert llm.tokenize(text.encode(), add_bos=True, special=True) == ref.encode(text), text
    ids = ref.encode("def fibonacci(n):\n    if n < 2:\n        return n\n")
    model = transformers.AutoModelForCausalLM.from_pretrained(DEFAULT_MODEL_DIR, dtype=torch.float32)
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].numpy()
    llm.eval(ids)
    got = np.asarray(llm.scores[: len(ids)])
    assert np.abs(got - want).max() < 0.02 * np.abs(want).max()
    assert (got.argmax(-1) == want.argmax(-1)).all()
