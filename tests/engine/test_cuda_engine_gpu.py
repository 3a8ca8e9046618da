"""The whole engine on a real GPU (`pytest -m gpu`): the CUDA backend against the CPU backend on the
tiny random models, CUDA-graph replay against eager steps, batch invariance and preemption as on
the CPU. Skipped without a device (tests/engine/test_cuda_backend.py covers the same paths in
the interpreters in CI)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from hearth import LLM, SamplingParams
from tests.engine.engine_checks import assert_all_blocks_free, token_ids

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="needs a CUDA device (run pytest -m gpu)"),
]

VARIANTS = ("llama", "llama3_scaled_tied", "mistral", "qwen2", "qwen3")


@pytest.fixture(autouse=True)
def _release_gpu_memory():
    """Engines of earlier tests give their memory back to the driver (CuPy's pool would keep it
    cached, and the next engine's KV sizing would see it as used)."""
    yield
    import gc

    import cupy

    gc.collect()
    cupy.get_default_memory_pool().free_all_blocks()



@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    from tests.model_factory import make_hf_model, save_model

    return {v: save_model(make_hf_model(v, seed=3), v, tmp_path_factory.mktemp(v)) for v in VARIANTS}


def _prompts(vocab: int, count: int = 12) -> list[list[int]]:
    rng = np.random.default_rng(7)
    return [rng.integers(3, vocab, size=int(rng.integers(1, 90))).tolist() for _ in range(count)]


@pytest.mark.parametrize("variant", VARIANTS)
def test_greedy_fp32_equals_the_cpu_backend(model_dirs, variant):
    cpu = LLM(str(model_dirs[variant]), max_model_len=256)
    gpu = LLM(str(model_dirs[variant]), device="cuda", dtype="float32", max_model_len=256, max_num_seqs=16,
              num_kv_blocks=256)
    prompts = _prompts(cpu.config.model.vocab_size)
    sp = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)
    assert token_ids(gpu.generate(prompts, sp)) == token_ids(cpu.generate(prompts, sp))
    assert_all_blocks_free(gpu)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_16_bit_agrees_with_fp32_within_tolerance(model_dirs, dtype):
    """Prompt log-probs of 16-bit compute against the fp32 CPU backend: close, not equal."""
    path = str(model_dirs["llama"])
    cpu = LLM(path, max_model_len=256)
    gpu = LLM(path, device="cuda", dtype=dtype, max_model_len=256, num_kv_blocks=256)
    sp = SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=0)
    for prompt in _prompts(cpu.config.model.vocab_size, 4):
        a = gpu.generate(prompt, sp)[0].prompt_logprobs[1:]
        b = cpu.generate(prompt, sp)[0].prompt_logprobs[1:]
        got = np.array([next(iter(p.values())).logprob for p in a])
        want = np.array([next(iter(p.values())).logprob for p in b])
        np.testing.assert_allclose(got, want, atol=0.15 if dtype == "bfloat16" else 0.03)


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0"])
def test_quantized_agrees_with_the_cpu_quantized_model(model_dirs, fmt):
    """Same GGUF blocks on both backends; the CPU also quantizes activations to int8, the GPU does
    not, so log-probs agree within that error."""
    path = str(model_dirs["qwen2"])
    cpu = LLM(path, max_model_len=256, quantization=fmt)
    gpu = LLM(path, device="cuda", dtype="float32", max_model_len=256, quantization=fmt, num_kv_blocks=256)
    sp = SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=0)
    prompt = _prompts(cpu.config.model.vocab_size, 1)[0]
    got = [next(iter(p.values())).logprob for p in gpu.generate(prompt, sp)[0].prompt_logprobs[1:]]
    want = [next(iter(p.values())).logprob for p in cpu.generate(prompt, sp)[0].prompt_logprobs[1:]]
    np.testing.assert_allclose(got, want, atol=0.1)


def test_cuda_graph_replay_equals_eager(model_dirs):
    path = str(model_dirs["llama"])
    graphs = LLM(path, device="cuda", dtype="float32", max_model_len=256, max_num_seqs=16, num_kv_blocks=256)
    eager = LLM(path, device="cuda", dtype="float32", max_model_len=256, max_num_seqs=16, num_kv_blocks=256,
                enforce_eager=True)
    assert graphs.engine.runner.graphs.graphs and eager.engine.runner.graphs is None
    prompts = _prompts(graphs.config.model.vocab_size, 11)  # 11 rows: replays pad to the 16 graph
    sp = SamplingParams(max_tokens=20, temperature=0, ignore_eos=True, logprobs=2)
    a, b = graphs.generate(prompts, sp), eager.generate(prompts, sp)
    assert token_ids(a) == token_ids(b)
    for x, y in zip(a, b):
        for px, py in zip(x.outputs[0].logprobs, y.outputs[0].logprobs):
            np.testing.assert_allclose([v.logprob for v in px.values()], [v.logprob for v in py.values()],
                                       rtol=1e-5, atol=1e-5)


def test_batch_invariance_and_preemption(model_dirs):
    """Greedy fp32: many prompts together under a tight KV cache (preemptions) and a small token
    budget (chunked prefill) give what each gives alone."""
    path = str(model_dirs["llama"])
    small = LLM(path, device="cuda", dtype="float32", max_model_len=128, num_kv_blocks=12, max_num_seqs=16,
                max_num_batched_tokens=64, enable_prefix_caching=False)
    rng = np.random.default_rng(5)
    prompts = [rng.integers(3, 400, size=40).tolist() for _ in range(8)]
    sp = SamplingParams(max_tokens=30, temperature=0, ignore_eos=True)
    together = small.generate(prompts, sp)
    assert small.get_stats().num_preemptions > 0
    alone = [small.generate(p, sp)[0] for p in prompts]
    assert token_ids(together) == token_ids(alone)
    assert_all_blocks_free(small)


def test_kv_cache_fills_the_memory_fraction(model_dirs):
    """KV blocks = (fraction * total - used after the warm-up step) / block bytes."""
    import cupy

    llm = LLM(str(model_dirs["llama"]), device="cuda", dtype="bfloat16", gpu_memory_fraction=0.5)
    cache, mc = llm.config.cache, llm.config.model
    kv_bytes = cache.num_blocks * llm.engine.runner.backend.kv_block_bytes(
        cache.block_size, mc.num_key_value_heads, mc.head_dim) * mc.num_hidden_layers
    free, total = cupy.cuda.runtime.memGetInfo()
    assert 0.45 * total < total - free < 0.55 * total  # weights + activations + KV + graphs
    assert kv_bytes > 0.4 * total
