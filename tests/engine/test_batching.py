"""Continuous batching never changes a request's result: batch invariance, preemption, prefix
caching, and requests that can never fit rejected up front."""

from __future__ import annotations

import numpy as np
import pytest

from hearth import LLM, SamplingParams


def _all_blocks_free(llm: LLM) -> None:
    kv = llm.engine.kv_cache
    assert kv.num_free_blocks == kv.pool.num_blocks, "KV blocks leaked"
    assert not llm.engine.has_unfinished


def _mixed_prompts(rng: np.random.Generator, count: int, vocab: int) -> list[list[int]]:
    """Prompts of 1 to 90 tokens; every third one extends an earlier prompt (a shared prefix)."""
    prompts: list[list[int]] = []
    for i in range(count):
        fresh = rng.integers(3, vocab, size=int(rng.integers(1, 60))).tolist()
        if i % 3 == 2:
            fresh = prompts[int(rng.integers(0, len(prompts)))] + fresh[:30]
        prompts.append(fresh)
    return prompts


def test_batch_invariance_32_mixed_prompts(tiny_model_dir):
    """Greedy fp32: 32 prompts together (chunked prefill under a small token budget, decodes
    interleaved, prefix hits) give token for token what each gives alone on a fresh engine."""
    together_llm = LLM(str(tiny_model_dir), max_model_len=256, max_num_batched_tokens=96, max_num_seqs=32)
    prompts = _mixed_prompts(np.random.default_rng(), 32, together_llm.config.model.vocab_size)
    sp = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True)
    together = together_llm.generate(prompts, sp)
    assert together_llm.get_stats().prefix_cache_hits > 0
    alone_llm = LLM(str(tiny_model_dir), max_model_len=256, enable_prefix_caching=False, max_num_seqs=1)
    for prompt, out in zip(prompts, together):
        assert out.outputs[0].token_ids == alone_llm.generate(prompt, sp)[0].outputs[0].token_ids
    _all_blocks_free(together_llm)


def test_preemption_with_a_small_cache_keeps_results(tiny_model_dir):
    """10 blocks of 16 tokens for six requests that each grow to 70 tokens."""
    small = LLM(str(tiny_model_dir), max_model_len=128, num_kv_blocks=10, enable_prefix_caching=False)
    rng = np.random.default_rng()
    prompts = [rng.integers(3, 400, size=40).tolist() for _ in range(6)]
    sp = SamplingParams(max_tokens=30, temperature=0, ignore_eos=True)
    together = small.generate(prompts, sp)
    assert small.get_stats().num_preemptions > 0
    alone = [small.generate(p, sp)[0] for p in prompts]
    assert [o.outputs[0].token_ids for o in together] == [o.outputs[0].token_ids for o in alone]
    _all_blocks_free(small)


def test_repeated_prompt_hits_the_prefix_cache(tiny_model_dir):
    llm = LLM(str(tiny_model_dir), max_model_len=256)
    prompt = np.random.default_rng().integers(3, 400, size=100).tolist()
    sp = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)
    first = llm.generate(prompt, sp)[0].outputs[0].token_ids
    before = llm.get_stats()
    second = llm.generate(prompt, sp)[0].outputs[0].token_ids
    after = llm.get_stats()
    assert first == second
    assert after.prefix_cache_queries - before.prefix_cache_queries == 100
    assert after.prefix_cache_hits - before.prefix_cache_hits == 96  # 6 full blocks; the last token recomputed
    # prompt log-probs need every position's logits, so such requests skip the cache
    with_lp = llm.generate(prompt, SamplingParams(max_tokens=1, prompt_logprobs=0))[0]
    assert len(with_lp.prompt_logprobs) == 100 and llm.get_stats().prefix_cache_hits == after.prefix_cache_hits
    _all_blocks_free(llm)


def test_requests_that_can_never_fit_are_rejected_up_front(tiny_model_dir):
    llm = LLM(str(tiny_model_dir), max_model_len=64, num_kv_blocks=4)
    with pytest.raises(ValueError, match=r"max_tokens \(60\) = 70 tokens, more than max_model_len \(64\)"):
        llm.generate(list(range(3, 13)), SamplingParams(max_tokens=60))
    with pytest.raises(ValueError, match="more than max_model_len"):
        llm.generate(list(range(3, 70)), SamplingParams(max_tokens=1))
    with pytest.raises(ValueError, match="num_kv_blocks"):
        LLM(str(tiny_model_dir), max_model_len=64, num_kv_blocks=3)  # 48 tokens < max_model_len
    with pytest.raises(ValueError, match="not both"):
        LLM(str(tiny_model_dir), num_kv_blocks=8, kv_cache_memory=1 << 20)
    with pytest.raises(ValueError, match="max_num_seqs"):
        LLM(str(tiny_model_dir), max_num_seqs=0)
    _all_blocks_free(llm)


def test_stats_count_tokens(tiny_model_dir):
    llm = LLM(str(tiny_model_dir), max_model_len=64, num_kv_blocks=8)
    llm.generate([[5, 6, 7], [8, 9]], SamplingParams(max_tokens=4, temperature=0, ignore_eos=True, n=2))
    s = llm.get_stats()
    assert (s.num_prompt_tokens, s.num_generation_tokens) == (10, 16)
    assert (s.num_running, s.num_waiting, s.kv_cache_usage, s.num_kv_blocks) == (0, 0, 0.0, 8)
