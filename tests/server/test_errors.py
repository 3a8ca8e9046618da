"""Every bad input gets its status and an OpenAI-shaped message naming the problem; never a 5xx."""

from __future__ import annotations

import httpx
import pytest

from tests.server.conftest import API_KEY

OK_CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
OK_CMPL = {"model": "tiny", "prompt": "hi", "max_tokens": 2}

CASES = [
    # (route, body, status, text in message, param, code)
    ("/v1/completions", {**OK_CMPL, "foo": 1}, 400, "unknown or unsupported parameter 'foo'", "foo", None),
    ("/v1/completions", {**OK_CMPL, "suffix": "x"}, 400, "'suffix'", "suffix", None),
    ("/v1/completions", {**OK_CMPL, "temperature": "hot"}, 400, "temperature", "temperature", None),
    ("/v1/completions", {**OK_CMPL, "top_p": 2}, 400, "top_p", "top_p", None),
    ("/v1/completions", {**OK_CMPL, "max_tokens": 0}, 400, "max_tokens", "max_tokens", None),
    ("/v1/completions", {**OK_CMPL, "n": 0}, 400, "'n'", "n", None),
    ("/v1/completions", {**OK_CMPL, "logprobs": 30}, 400, "logprobs", "logprobs", None),
    ("/v1/completions", {**OK_CMPL, "stream": "yes"}, 400, "stream", "stream", None),
    ("/v1/completions", {"model": "tiny", "max_tokens": 2}, 400, "missing required parameter 'prompt'", "prompt", None),
    ("/v1/completions", {**OK_CMPL, "prompt": []}, 400, "at least 1", "prompt", None),
    ("/v1/completions", {**OK_CMPL, "prompt": [[]]}, 400, "at least 1", "prompt.0", None),
    ("/v1/completions", {**OK_CMPL, "prompt": ""}, 400, "at least 1", "prompt", None),
    ("/v1/completions", {**OK_CMPL, "prompt": [10**9]}, 400, "out of range", "prompt", None),
    ("/v1/completions", {**OK_CMPL, "max_tokens": 300}, 400, "max_model_len (256)", "max_tokens", "context_length_exceeded"),
    ("/v1/completions", {**OK_CMPL, "max_tokens": 255}, 400, "max_model_len (256)", "prompt", "context_length_exceeded"),
    ("/v1/completions", {**OK_CMPL, "prompt": "x " * 400}, 400, "max_model_len", "prompt", "context_length_exceeded"),
    ("/v1/completions", {**OK_CMPL, "model": "gpt-4"}, 404, "'gpt-4' does not exist", "model", "model_not_found"),
    ("/v1/completions", {**OK_CMPL, "logit_bias": {"abc": 1}}, 400, "logit_bias", "logit_bias.abc", None),
    ("/v1/completions", {**OK_CMPL, "logit_bias": {"5": 500}}, 400, "logit_bias", "logit_bias.5", None),
    ("/v1/completions", {**OK_CMPL, "logit_bias": {"99999999": 1}}, 400, "out of range", "logit_bias", None),
    ("/v1/completions", {**OK_CMPL, "stop": [""]}, 400, "stop", "stop.0", None),
    ("/v1/chat/completions", {**OK_CHAT, "messages": []}, 400, "messages", "messages", None),
    ("/v1/chat/completions", {**OK_CHAT, "messages": [{"role": "wizard", "content": "x"}]}, 400, "role", None, None),
    ("/v1/chat/completions", {**OK_CHAT, "tools": []}, 400, "'tools'", "tools", None),
    ("/v1/chat/completions", {**OK_CHAT, "max_completion_tokens": 10**6}, 400, "max_model_len",
     "max_completion_tokens", "context_length_exceeded"),
    ("/v1/chat/completions", {**OK_CHAT, "max_completion_tokens": 250}, 400, "max_model_len", "messages",
     "context_length_exceeded"),
    ("/detokenize", {"tokens": [-1]}, 400, "greater than or equal to 0", "tokens.0", None),
    ("/detokenize", {"tokens": [4096]}, 400, "out of range", "tokens", None),
    ("/tokenize", {"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, 400, "unsupported parameter",
     None, None),
    ("/tokenize", {"messages": []}, 400, "at least 1", "messages", None),
]


@pytest.mark.parametrize("route,body,status,text,param,code", CASES)
def test_bad_request_is_named(server, route, body, status, text, param, code):
    r = httpx.post(server.url + route, json=body, headers=server.headers, timeout=30)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert text in err["message"], err
    assert set(err) == {"message", "type", "param", "code"}
    if param is not None:
        assert err["param"] == param, err
    assert err["code"] == code


@pytest.mark.parametrize("route, base, extra", [
    ("/v1/completions", OK_CMPL, {"stream_options": {"include_usage": True}}),
    ("/v1/completions", OK_CMPL, {"min_tokens": 5}),
    ("/v1/chat/completions", OK_CHAT, {"top_logprobs": 2}),
])
def test_parameters_that_cannot_change_the_answer_are_accepted(server, route, base, extra):
    """Ignored (or capped) because ignoring them cannot change the output: the same answer."""
    plain = httpx.post(server.url + route, json={**base, "temperature": 0}, headers=server.headers).json()
    r = httpx.post(server.url + route, json={**base, **extra, "temperature": 0}, headers=server.headers)
    assert r.status_code == 200, r.text
    assert r.json()["choices"] == plain["choices"] and r.json()["usage"] == plain["usage"]


def test_malformed_json_and_wrong_body_type(server):
    r = httpx.post(server.url + "/v1/completions", content=b"{not json", headers={
        **server.headers, "content-type": "application/json"})
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]["message"]
    r = httpx.post(server.url + "/v1/completions", json=[1, 2], headers=server.headers)
    assert r.status_code == 400


def test_api_keys(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
        r = httpx.post(server.url + "/v1/completions", json=OK_CMPL, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(server.url + "/v1/models").status_code == 401
    assert httpx.get(server.url + "/health").status_code == 200


def test_body_over_the_limit_is_413(server):
    big = {**OK_CMPL, "prompt": "x" * (2 << 20)}
    r = httpx.post(server.url + "/v1/completions", json=big, headers=server.headers)
    assert r.status_code == 413 and r.json()["error"]["type"] == "invalid_request_error"

    def chunks():  # no Content-Length: counted as it streams in
        for _ in range(40):
            yield b" " * 65536
    r = httpx.post(server.url + "/v1/completions", content=chunks(), headers={
        **server.headers, "content-type": "application/json"})
    assert r.status_code == 413


def test_unknown_route_and_method(server):
    assert httpx.get(server.url + "/v1/nothing").status_code == 404
    r = httpx.get(server.url + "/v1/completions", headers=server.headers)
    assert r.status_code == 405 and "error" in r.json()


def test_error_during_a_stream_is_an_event_then_done():
    """A stream whose request fails after the 200 went out: an error event, then [DONE]."""
    import asyncio
    import json

    from hearth import CompletionOutput, RequestOutput
    from hearth.server.generation import _Latency, _sse
    from hearth.server.state import LiveRequest
    from hearth.server.metrics import ServerMetrics
    from hearth.server.responses import ChoiceState

    async def failing():
        yield RequestOutput("r", "p", [1], None, [CompletionOutput(0, "ab", [5])])
        raise RuntimeError("engine fault while streaming")

    async def run():
        choice = ChoiceState(0, {"prompt": "p", "prompt_token_ids": [1]}, "completion", None, False)
        timers = [_Latency(ServerMetrics(lambda: None))]
        return [e.decode() async for e in _sse("completion", {"id": "x"}, [failing()], timers, [choice], 1, True,
                                                     LiveRequest(["r"]))]

    events = asyncio.run(run())
    assert json.loads(events[0][6:])["choices"][0]["text"] == "ab"
    err = json.loads(events[1][6:])["error"]
    assert "engine fault while streaming" in err["message"] and err["type"] == "internal_server_error"
    assert events[-1] == "data: [DONE]\n\n" and len(events) == 3
