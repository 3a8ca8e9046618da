"""The server through the official `openai` client, sync and async, against the in-process engine."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from hearth import SamplingParams
from tests.server.conftest import API_KEY


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0)


@pytest.fixture(scope="module")
def aclient(server):
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0)


def _greedy(llm, prompt, **kw):
    return llm.generate(prompt, SamplingParams(temperature=0, **kw))[0]


def test_completion_equals_the_engine_and_counts_usage(client, tiny_llm):
    res = client.completions.create(model="tiny", prompt="def f(x):", max_tokens=12, temperature=0)
    ref = _greedy(tiny_llm, "def f(x):", max_tokens=12)
    assert res.choices[0].text == ref.outputs[0].text
    assert res.choices[0].finish_reason == ref.outputs[0].finish_reason
    assert res.usage.prompt_tokens == len(ref.prompt_token_ids)
    assert res.usage.completion_tokens == len(ref.outputs[0].token_ids)
    assert res.usage.total_tokens == res.usage.prompt_tokens + res.usage.completion_tokens
    assert res.model == "tiny" and res.object == "text_completion" and res.id.startswith("cmpl-")


def test_completion_stream_adds_up_with_usage(client):
    whole = client.completions.create(model="tiny", prompt="import os", max_tokens=20, temperature=0,
                                      extra_body={"ignore_eos": True})
    chunks = list(client.completions.create(model="tiny", prompt="import os", max_tokens=20, temperature=0,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 20
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_chat_sync_and_async_stream(client, aclient, tiny_llm):
    messages = [{"role": "user", "content": "hello there"}]
    res = client.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0)
    ref = tiny_llm.chat(messages, SamplingParams(max_tokens=10, temperature=0))[0].outputs[0]
    assert res.choices[0].message.content == ref.text and res.choices[0].message.role == "assistant"
    assert res.object == "chat.completion" and res.usage.completion_tokens == len(ref.token_ids)

    async def stream():
        parts, roles = [], []
        async for chunk in await aclient.chat.completions.create(model="tiny", messages=messages, max_tokens=10,
                                                                temperature=0, stream=True):
            delta = chunk.choices[0].delta
            roles.append(delta.role)
            parts.append(delta.content or "")
        return "".join(parts), roles

    text, roles = asyncio.run(stream())
    assert text == ref.text and roles[0] == "assistant"


def test_n_samples_and_seed_reproducibility(client):
    kw = dict(model="tiny", prompt="class A:", max_tokens=12, temperature=1.0, n=3, seed=5)
    a = client.completions.create(**kw)
    b = client.completions.create(**kw)
    assert sorted(c.index for c in a.choices) == [0, 1, 2]
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert len({c.text for c in a.choices}) > 1
    assert 3 <= a.usage.completion_tokens <= 36 and a.usage.prompt_tokens == b.usage.prompt_tokens


def test_multiple_prompts_and_token_prompts(client, tiny_llm):
    res = client.completions.create(model="tiny", prompt=["a b", "c d"], max_tokens=5, temperature=0, n=2)
    assert [c.index for c in sorted(res.choices, key=lambda c: c.index)] == [0, 1, 2, 3]
    ids = tiny_llm.tokenizer.encode("def g():")
    by_ids = client.completions.create(model="tiny", prompt=ids, max_tokens=6, temperature=0)
    by_text = client.completions.create(model="tiny", prompt="def g():", max_tokens=6, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text
    echoed = client.completions.create(model="tiny", prompt="def g():", max_tokens=6, temperature=0, echo=True)
    assert echoed.choices[0].text == "def g():" + by_text.choices[0].text


def test_logprobs_in_both_shapes(client, tiny_llm):
    res = client.completions.create(model="tiny", prompt="x = 1", max_tokens=6, temperature=0, logprobs=2,
                                    extra_body={"ignore_eos": True})
    ref = _greedy(tiny_llm, "x = 1", max_tokens=6, logprobs=2, ignore_eos=True).outputs[0]
    lp = res.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
    for got, pos, tid in zip(lp.token_logprobs, ref.logprobs, ref.token_ids):
        assert got == pytest.approx(pos[tid].logprob, abs=1e-5)
    assert all(1 <= len(top) <= 2 for top in lp.top_logprobs)
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                                          temperature=0, logprobs=True, top_logprobs=3)
    content = chat.choices[0].logprobs.content
    assert len(content) == chat.usage.completion_tokens
    assert all(len(c.top_logprobs) == 3 and c.logprob <= 0 for c in content)


def test_stop_strings_end_the_text(client, tiny_llm):
    text = _greedy(tiny_llm, "def f(x):", max_tokens=40, ignore_eos=True).outputs[0].text
    stop = text[5:7]
    res = client.completions.create(model="tiny", prompt="def f(x):", max_tokens=40, temperature=0, stop=[stop],
                                    extra_body={"ignore_eos": True})
    assert res.choices[0].finish_reason == "stop"
    assert res.choices[0].text == text[:text.index(stop)]


def test_models_tokenize_detokenize_health_docs(server, tiny_llm, client):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    h = server.headers
    tok = httpx.post(server.url + "/tokenize", json={"prompt": "def f(x):"}, headers=h).json()
    assert tok["tokens"] == tiny_llm.tokenizer.encode("def f(x):") and tok["count"] == len(tok["tokens"])
    chat_tok = httpx.post(server.url + "/tokenize", json={"messages": [{"role": "user", "content": "hi"}]},
                          headers=h).json()
    assert chat_tok["count"] > 0
    detok = httpx.post(server.url + "/detokenize", json={"tokens": tok["tokens"]}, headers=h).json()
    assert detok["prompt"].endswith("def f(x):")
    assert httpx.get(server.url + "/health").status_code == 200  # open without a key
    assert httpx.get(server.url + "/docs").status_code == 200
    assert "/v1/completions" in httpx.get(server.url + "/openapi.json").json()["paths"]
    metrics = httpx.get(server.url + "/metrics").text
    for name in ("hearth_num_requests_running", "hearth_num_requests_waiting", "hearth_kv_cache_usage_perc",
                 "hearth_prefix_cache_queries_total", "hearth_prefix_cache_hits_total", "hearth_num_preemptions_total",
                 "hearth_prompt_tokens_total", "hearth_generation_tokens_total",
                 "hearth_time_to_first_token_seconds_count", "hearth_inter_token_latency_seconds_count",
                 "hearth_e2e_request_latency_seconds_count", "hearth_request_queue_time_seconds_count"):
        assert name in metrics, name
