"""hearth against Hugging Face transformers on the same random-weight checkpoints."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

from hearth import LLM, SamplingParams
from tests.model_factory import VARIANTS, make_hf_model, save_model

ATOL_FP32 = 1e-4
NUM_GREEDY = 64


@pytest.fixture(scope="module", params=list(VARIANTS))
def pair(request, tmp_path_factory):
    """(variant, HF model, hearth LLM) on one fp32 checkpoint."""
    variant = request.param
    hf = make_hf_model(variant, seed=zlib.crc32(variant.encode()) % 1000)  # str hash() varies per process
    path = save_model(hf, variant, tmp_path_factory.mktemp(variant))
    return variant, hf, LLM(str(path), max_model_len=256)


def _prompt(llm: LLM, rng: np.random.Generator, n: int) -> list[int]:
    ids = rng.integers(3, llm.config.model.vocab_size, size=n).tolist()
    return ids


def _hf_logprobs(hf, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        logits = hf(torch.tensor([ids])).logits[0].double()
    return torch.log_softmax(logits, dim=-1).numpy()


def test_prompt_logprobs_match_hf(pair):
    variant, hf, llm = pair
    rng = np.random.default_rng(1)
    ids = _prompt(llm, rng, 90)  # past the llama3 original context of 64
    out = llm.generate(ids, SamplingParams(max_tokens=1, prompt_logprobs=5, temperature=0))[0]
    ref = _hf_logprobs(hf, ids)
    assert out.prompt_logprobs[0] is None and len(out.prompt_logprobs) == len(ids)
    worst = 0.0
    for j in range(1, len(ids)):
        pos = out.prompt_logprobs[j]
        row = ref[j - 1]
        # ranks and top-5 sets agree up to near-ties, which fp32 vs fp64 may order either way
        target = row[ids[j]]
        assert 1 + (row > target + ATOL_FP32).sum() <= pos[ids[j]].rank <= 1 + (row > target - ATOL_FP32).sum()
        fifth = np.sort(row)[-5]
        ours = {tid for tid, lp in pos.items() if lp.rank <= 5}
        assert len(ours) == 5 and all(row[t] >= fifth - ATOL_FP32 for t in ours)
        for tid, lp in pos.items():
            worst = max(worst, abs(lp.logprob - row[tid]))
    assert worst < ATOL_FP32, f"{variant}: max |logprob diff| {worst}"


def test_greedy_matches_hf_generate(pair):
    variant, hf, llm = pair
    rng = np.random.default_rng(2)
    ids = _prompt(llm, rng, 12)
    hf.generation_config.eos_token_id = None  # generate all 64 tokens on both sides
    with torch.no_grad():
        ref = hf.generate(torch.tensor([ids]), max_new_tokens=NUM_GREEDY, do_sample=False,
                          pad_token_id=0)[0, len(ids):].tolist()
    out = llm.generate(ids, SamplingParams(max_tokens=NUM_GREEDY, temperature=0, ignore_eos=True))[0]
    assert out.outputs[0].token_ids == ref, variant
    assert out.outputs[0].finish_reason == "length"


def test_cached_decode_equals_recompute(pair):
    _, _, llm = pair
    rng = np.random.default_rng(3)
    ids = _prompt(llm, rng, 20)
    gen = llm.generate(ids, SamplingParams(max_tokens=40, temperature=0, ignore_eos=True, logprobs=0))[0]
    out_ids = gen.outputs[0].token_ids
    full = llm.generate(ids + out_ids, SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0))[0]
    for i, tok in enumerate(out_ids):
        cached = gen.outputs[0].logprobs[i][tok].logprob
        recomputed = full.prompt_logprobs[len(ids) + i][tok]
        assert abs(cached - recomputed.logprob) < ATOL_FP32
        assert recomputed.rank == 1  # greedy: the recompute agrees it was the argmax


def test_chunked_prefill_and_batching_match(pair, tmp_path):
    variant, hf, llm = pair
    rng = np.random.default_rng(4)
    prompts = [_prompt(llm, rng, n) for n in (5, 33, 70)]
    params = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True, prompt_logprobs=0)
    alone = [llm.generate(p, params)[0] for p in prompts]
    together = llm.generate(prompts, params)
    small = LLM(str(llm.config.model_dir), max_model_len=256, max_num_batched_tokens=7)
    chunked = small.generate(prompts, params)
    for a, b, c in zip(alone, together, chunked):
        assert a.outputs[0].token_ids == b.outputs[0].token_ids == c.outputs[0].token_ids
        for pa, pc in zip(a.prompt_logprobs[1:], c.prompt_logprobs[1:]):
            (tid,) = [t for t, lp in pa.items()]
            assert abs(pa[tid].logprob - pc[tid].logprob) < ATOL_FP32


@pytest.mark.parametrize("variant", ["llama", "qwen3"])
def test_bf16_and_fp16_checkpoints(variant, tmp_path):
    import ml_dtypes

    hf = make_hf_model(variant, seed=7)
    rng = np.random.default_rng(5)
    for dtype, name in ((torch.bfloat16, "bf16"), (torch.float16, "fp16")):
        path = save_model(hf, variant, tmp_path / name, dtype=dtype)
        llm = LLM(str(path), max_model_len=128)
        expect = ml_dtypes.bfloat16 if name == "bf16" else np.float32  # bf16 stays bf16 in memory
        assert llm.engine.runner.model.layers[0].q.dtype == expect
        ids = _prompt(llm, rng, 30)
        # HF on the same rounded weights, computing in fp32
        ref_model = type(hf).from_pretrained(path, torch_dtype=torch.float32).eval()
        ref = _hf_logprobs(ref_model, ids)
        out = llm.generate(ids, SamplingParams(max_tokens=1, prompt_logprobs=0))[0]
        diff = max(abs(out.prompt_logprobs[j][ids[j]].logprob - ref[j - 1, ids[j]]) for j in range(1, len(ids)))
        assert diff < ATOL_FP32, f"{name}: {diff}"


def test_sharded_checkpoint_loads(tmp_path):
    hf = make_hf_model("llama", seed=3)
    path = save_model(hf, "llama", tmp_path / "sharded", max_shard_size="100KB")
    assert (path / "model.safetensors.index.json").exists()
    llm = LLM(str(path), max_model_len=64)
    ids = [5, 17, 99, 3, 250]
    ref = _hf_logprobs(hf, ids)
    out = llm.generate(ids, SamplingParams(max_tokens=1, prompt_logprobs=0))[0]
    assert abs(out.prompt_logprobs[4][ids[4]].logprob - ref[3, ids[4]]) < ATOL_FP32
