"""The LLM facade: outputs, stops, streaming, n, seeds, chat, and errors that name the problem."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from hearth import LLM, SamplingParams


def _free_blocks_ok(llm: LLM) -> None:
    kv = llm.engine.kv_cache
    assert kv.num_free_blocks == kv.pool.num_blocks, "KV blocks leaked"
    assert not llm.engine.has_unfinished


def test_generate_shapes_and_finish(tiny_llm):
    outs = tiny_llm.generate(["hello world", "def f(x):"], SamplingParams(max_tokens=7, temperature=0, ignore_eos=True))
    assert [o.prompt for o in outs] == ["hello world", "def f(x):"]
    for o in outs:
        assert o.finished and len(o.outputs) == 1
        c = o.outputs[0]
        assert c.index == 0 and len(c.token_ids) == 7 and c.finish_reason == "length"
        assert c.text == tiny_llm.tokenizer.decode(c.token_ids)
        assert o.prompt_token_ids == tiny_llm.tokenizer.encode(o.prompt)
    _free_blocks_ok(tiny_llm)


def test_seeded_sampling_reproducible_and_n(tiny_llm):
    sp = SamplingParams(max_tokens=12, temperature=1.0, seed=77, n=3, ignore_eos=True)
    a = tiny_llm.generate("import os", sp)[0]
    b = tiny_llm.generate("import os", sp)[0]
    assert [c.token_ids for c in a.outputs] == [c.token_ids for c in b.outputs]
    assert [c.index for c in a.outputs] == [0, 1, 2]
    assert len({tuple(c.token_ids) for c in a.outputs}) > 1  # the n samples differ
    _free_blocks_ok(tiny_llm)


def test_llm_seed_makes_unseeded_requests_reproducible(tiny_model_dir):
    sp = SamplingParams(max_tokens=10, temperature=1.0, ignore_eos=True)
    a = LLM(str(tiny_model_dir), max_model_len=64, seed=5).generate("x = 1", sp)[0]
    b = LLM(str(tiny_model_dir), max_model_len=64, seed=5).generate("x = 1", sp)[0]
    assert a.outputs[0].token_ids == b.outputs[0].token_ids


def test_stop_token_ids_and_eos(tiny_llm):
    greedy = tiny_llm.generate("for i in", SamplingParams(max_tokens=20, temperature=0, ignore_eos=True))[0]
    ids = greedy.outputs[0].token_ids
    stop_at = ids[5]
    first = ids.index(stop_at)
    out = tiny_llm.generate("for i in", SamplingParams(max_tokens=20, temperature=0, ignore_eos=True,
                                                                stop_token_ids=[stop_at]))[0]
    assert out.outputs[0].token_ids == ids[:first + 1]
    assert out.outputs[0].finish_reason == "stop" and out.outputs[0].stop_reason == stop_at
    _free_blocks_ok(tiny_llm)


def test_stop_strings_cut_text(tiny_llm):
    sp = SamplingParams(max_tokens=30, temperature=0, ignore_eos=True)
    full = tiny_llm.generate("while True:", sp)[0].outputs[0].text
    assert len(full) > 6
    stop = full[3:6]
    out = tiny_llm.generate("while True:", sp.clone(stop=[stop]))[0].outputs[0]
    assert out.text == full[:full.index(stop)] and out.finish_reason == "stop" and out.stop_reason == stop
    inc = tiny_llm.generate("while True:", sp.clone(stop=[stop], include_stop_str_in_output=True))[0].outputs[0]
    assert inc.text == full[:full.index(stop) + len(stop)]
    streamed = "".join(d.outputs[0].text for d in tiny_llm.stream("while True:", sp.clone(stop=[stop])))
    assert streamed == out.text
    _free_blocks_ok(tiny_llm)


def test_stream_deltas_add_up(tiny_llm):
    sp = SamplingParams(max_tokens=25, temperature=0.8, seed=3, logprobs=2, ignore_eos=True)
    whole = tiny_llm.generate("class A:", sp)[0].outputs[0]
    deltas = list(tiny_llm.stream("class A:", sp))
    assert deltas[-1].finished and not any(d.finished for d in deltas[:-1])
    assert "".join(d.outputs[0].text for d in deltas) == whole.text
    assert sum((d.outputs[0].token_ids for d in deltas), []) == whole.token_ids
    assert len(sum((d.outputs[0].logprobs for d in deltas), [])) == len(whole.token_ids)


def test_stream_closed_early_frees_blocks(tiny_llm):
    it = tiny_llm.stream("abc", SamplingParams(max_tokens=50, ignore_eos=True))
    next(it)
    it.close()
    _free_blocks_ok(tiny_llm)


def test_logprobs_shape(tiny_llm):
    out = tiny_llm.generate("a b c", SamplingParams(max_tokens=5, temperature=0.7, seed=1, logprobs=3,
                                                     prompt_logprobs=2))[0]
    comp = out.outputs[0]
    assert len(comp.logprobs) == len(comp.token_ids)
    for tok, pos in zip(comp.token_ids, comp.logprobs):
        assert tok in pos and sorted(lp.rank for t, lp in pos.items() if t != tok or lp.rank <= 3)[:3] == [1, 2, 3]
        assert all(lp.logprob <= 0 and isinstance(lp.decoded_token, str) for lp in pos.values())
    assert out.prompt_logprobs[0] is None and len(out.prompt_logprobs) == len(out.prompt_token_ids)
    assert np.isclose(comp.cumulative_logprob, sum(p[t].logprob for t, p in zip(comp.token_ids, comp.logprobs)))


def test_chat_uses_template(tiny_llm):
    msgs = [{"role": "user", "content": "hi"}]
    out = tiny_llm.chat(msgs, SamplingParams(max_tokens=3, temperature=0))[0]
    text = tiny_llm.tokenizer.apply_chat_template(msgs, add_generation_prompt=True)
    assert out.prompt == text
    assert out.prompt_token_ids == tiny_llm.tokenizer.encode(text, add_special_tokens=False)


@pytest.mark.parametrize("prompt,match", [
    ([], "empty"), ([1, 2, 10**6], "out of range"), ([0] * 300, "max_model_len"),
])
def test_bad_prompts(tiny_llm, prompt, match):
    with pytest.raises(ValueError, match=match):
        tiny_llm.generate(prompt, SamplingParams(max_tokens=2))
    _free_blocks_ok(tiny_llm)


def test_bad_batch_adds_nothing(tiny_llm):
    with pytest.raises(ValueError):
        tiny_llm.generate(["fine", [10**7]], SamplingParams(max_tokens=2))
    _free_blocks_ok(tiny_llm)


def test_load_errors_name_the_problem(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        LLM(str(tmp_path / "nope"))
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())

    (bad / "config.json").write_text(json.dumps({**cfg, "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ValueError, match="supported: LlamaForCausalLM"):
        LLM(str(bad))
    (bad / "config.json").write_text(json.dumps({**cfg, "intermediate_size": cfg["intermediate_size"] + 2}))
    with pytest.raises(ValueError, match=r"mlp.gate_proj.weight.*shape"):
        LLM(str(bad))
    (bad / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": cfg["num_hidden_layers"] + 1}))
    with pytest.raises(ValueError, match="missing tensor 'model.layers.2"):
        LLM(str(bad))
    (bad / "config.json").write_text(json.dumps(cfg))
    (bad / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match="tokenizer.json"):
        LLM(str(bad))
    with pytest.raises(ValueError, match="quantization"):
        LLM(str(tiny_model_dir), quantization="q3_x")
    with pytest.raises(ValueError, match="max_model_len"):
        LLM(str(tiny_model_dir), max_model_len=10**6)


def test_preemption_when_kv_cache_runs_dry(tiny_model_dir):
    """12 blocks of 16 tokens for four requests that each grow to 80 tokens: the scheduler must
    preempt and recompute, and the results must equal running each request alone."""
    small = LLM(str(tiny_model_dir), max_model_len=128, kv_cache_memory=12 * 16 * 512)
    assert small.engine.kv_cache.pool.num_blocks == 12
    rng = np.random.default_rng()
    prompts = [rng.integers(3, 400, size=40).tolist() for _ in range(4)]
    sp = SamplingParams(max_tokens=40, temperature=0, ignore_eos=True, prompt_logprobs=0)
    together = small.generate(prompts, sp)
    alone = [small.generate(p, sp)[0] for p in prompts]
    for a, b in zip(together, alone):
        assert a.outputs[0].token_ids == b.outputs[0].token_ids
        assert len(a.prompt_logprobs) == len(b.prompt_logprobs) == 40
    _free_blocks_ok(small)
