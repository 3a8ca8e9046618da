"""Disconnects, overload, SIGTERM and a bounded load test, against real server processes."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time

import httpx
import pytest

from hearth import SamplingParams
from tests.server.conftest import start_server


def _metric(server, name: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    m = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert m, name
    return float(m.group(1))


def _wait_idle(server, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (_metric(server, "hearth_num_requests_running") == 0 and _metric(server, "hearth_num_requests_waiting") == 0
                and _metric(server, "hearth_kv_cache_usage_perc") == 0):
            return
        time.sleep(0.05)
    raise AssertionError("requests still running or KV blocks still held")


def test_disconnect_mid_stream_aborts_and_frees_blocks(server):
    body = {"model": "tiny", "prompt": "def f(x):", "max_tokens": 200, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, headers=server.headers) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]
        assert any(line.startswith("data: {") for line in got)
        assert _metric(server, "hearth_kv_cache_usage_perc") > 0
    _wait_idle(server)  # the abort happened long before 200 tokens could have been generated
    assert _metric(server, "hearth_generation_tokens_total") < 10_000


def test_overload_answers_429_and_never_hangs(tiny_model_dir):
    srv = start_server(tiny_model_dir, "--max-num-seqs", "1", "--max-queued-seqs", "1")
    try:
        async def burst():
            async with httpx.AsyncClient(timeout=60) as client:
                body = {"model": "tiny", "prompt": "a", "max_tokens": 60, "ignore_eos": True}
                return await asyncio.gather(*(client.post(srv.url + "/v1/completions", json=body,
                                                          headers=srv.headers) for _ in range(10)))

        t0 = time.monotonic()
        responses = asyncio.run(burst())
        codes = sorted(r.status_code for r in responses)
        assert time.monotonic() - t0 < 60
        assert codes.count(200) >= 2 and codes.count(429) >= 1 and set(codes) <= {200, 429}
        for r in responses:
            if r.status_code == 429:
                assert r.headers["retry-after"] == "1" and r.json()["error"]["code"] == "queue_full"
        _wait_idle(srv)
    finally:
        assert srv.stop() == 0


def test_sigterm_lets_requests_finish_and_exits_0(tiny_model_dir):
    # one sequence at a time: twelve 240-token streams keep the engine busy well past the signal
    srv = start_server(tiny_model_dir, "--shutdown-timeout", "30", "--max-num-seqs", "1")
    body = {"model": "tiny", "prompt": "x", "max_tokens": 240, "ignore_eos": True, "stream": True}
    signalled = []

    async def run():
        async with httpx.AsyncClient(timeout=60) as client:
            async def one():
                async with client.stream("POST", srv.url + "/v1/completions", json=body, headers=srv.headers) as r:
                    events = []
                    async for line in r.aiter_lines():
                        if line.startswith("data: "):
                            events.append(line)
                    return events, time.monotonic()

            tasks = [asyncio.create_task(one()) for _ in range(12)]
            await asyncio.sleep(0.3)  # all of them are streaming
            srv.process.send_signal(signal.SIGTERM)
            signalled.append(time.monotonic())
            await asyncio.sleep(0.2)
            # a new connection, as a new client would open: still answered while draining
            async with httpx.AsyncClient(timeout=60) as fresh:
                late = await fresh.post(srv.url + "/v1/completions", json={**body, "stream": False},
                                        headers=srv.headers)
            return await asyncio.gather(*tasks), late

    streams, late = asyncio.run(run())
    assert max(done for _, done in streams) > signalled[0], "every stream ended before SIGTERM: nothing tested"
    for events, _ in streams:
        assert events[-1] == "data: [DONE]" and '"finish_reason":"length"' in events[-2]
    assert late.status_code == 503 and late.headers["retry-after"], late.text
    assert late.json()["error"]["code"] == "shutting_down"
    assert srv.process.wait(30) == 0
    assert "every request in flight finished" in srv.process.stdout.read().decode()


def test_sigterm_past_the_timeout_cuts_requests_cleanly_and_exits_1(tiny_model_dir):
    srv = start_server(tiny_model_dir, "--shutdown-timeout", "1", "--max-num-seqs", "1")
    # far more work than 1 s allows on one running slot: some are cut mid-stream, some while queued
    body = {"model": "tiny", "prompt": "x", "max_tokens": 240, "ignore_eos": True}

    async def run():
        async with httpx.AsyncClient(timeout=60) as client:
            async def stream():
                async with client.stream("POST", srv.url + "/v1/completions", json={**body, "stream": True},
                                         headers=srv.headers) as r:
                    events = []
                    async for line in r.aiter_lines():
                        if line.startswith("data: "):
                            events.append(line)
                    return events

            streams = [asyncio.create_task(stream()) for _ in range(8)]
            whole = [asyncio.create_task(client.post(srv.url + "/v1/completions", json=body, headers=srv.headers))
                     for _ in range(8)]
            await asyncio.sleep(0.3)
            srv.process.send_signal(signal.SIGTERM)
            return await asyncio.gather(*streams), await asyncio.gather(*whole)

    t0 = time.monotonic()
    streams, whole = asyncio.run(run())
    assert srv.process.wait(30) == 1
    assert time.monotonic() - t0 < 20
    log = srv.process.stdout.read().decode()
    cut = 0
    for events in streams:
        assert events[-1] == "data: [DONE]"
        if '"code":"shutting_down"' in events[-2]:
            cut += 1
            assert json.loads(events[-2][6:])["error"]["type"] == "service_unavailable"
        else:
            assert '"finish_reason":"length"' in events[-2]
    for r in whole:
        if r.status_code == 503:
            cut += 1
            assert r.json()["error"]["code"] == "shutting_down" and r.headers["retry-after"]
        else:
            assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "length"
    assert cut >= 1, "nothing was cut: the test did not reach the deadline"
    m = re.search(r"cutting (\d+) request\(s\) still in flight", log)
    assert m and int(m.group(1)) == cut, log[-2000:]


def test_200_concurrent_streaming_clients(server, tiny_llm):
    prompts = [f"def f{i}(x):" for i in range(10)]
    expected = [o.outputs[0].text for o in tiny_llm.generate(prompts, SamplingParams(max_tokens=8, temperature=0))]

    async def run():
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            async def one(i):
                body = {"model": "tiny", "prompt": prompts[i % 10], "max_tokens": 8, "temperature": 0, "stream": True}
                text = ""
                async with client.stream("POST", server.url + "/v1/completions", json=body,
                                         headers=server.headers) as r:
                    assert r.status_code == 200
                    async for line in r.aiter_lines():
                        if line.startswith("data: {"):
                            import json
                            text += json.loads(line[6:])["choices"][0]["text"]
                return text

            return await asyncio.gather(*(one(i) for i in range(200)))

    texts = asyncio.run(run())
    assert texts == [expected[i % 10] for i in range(200)]
    _wait_idle(server)


@pytest.mark.parametrize("route", ["/v1/completions", "/v1/chat/completions"])
def test_loading_server_answers_503(route, tmp_path):
    """Before the model is loaded, generation routes and /health say 503."""
    from fastapi.testclient import TestClient

    from hearth.server.app import ServerConfig, create_app

    gate = __import__("threading").Event()

    def slow_load():
        gate.wait(10)
        raise RuntimeError("no model here")

    app = create_app(slow_load, ServerConfig(model_name="m"))
    with TestClient(app) as client:
        assert client.get("/health").status_code == 503
        r = client.post(route, json={"model": "m", "prompt": "x", "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code in (400, 503)
        gate.set()


def test_stream_interval_sends_fewer_events_with_the_same_text(tiny_model_dir, tiny_llm):
    srv = start_server(tiny_model_dir, "--stream-interval", "5")
    try:
        body = {"model": "tiny", "prompt": "def f(x):", "max_tokens": 21, "temperature": 0, "stream": True,
                "ignore_eos": True, "stream_options": {"include_usage": True}}
        with httpx.stream("POST", srv.url + "/v1/completions", json=body, headers=srv.headers) as r:
            events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    finally:
        srv.stop()
    content = [e for e in events if e["choices"]]
    assert events[-1]["usage"]["completion_tokens"] == 21
    assert len(content) <= 6  # the first token, then every 5: 1 + 5 * 4; unbatched it would be 21
    ref = tiny_llm.generate("def f(x):", SamplingParams(max_tokens=21, temperature=0, ignore_eos=True))[0]
    assert "".join(e["choices"][0]["text"] for e in content) == ref.outputs[0].text
