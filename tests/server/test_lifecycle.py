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
    srv = start_server(tiny_model_dir, "--max-num-seqs", "1", "--max-queued-requests", "1")
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
    srv = start_server(tiny_model_dir, "--shutdown-timeout", "30")
    body = {"model": "tiny", "prompt": "x", "max_tokens": 240, "ignore_eos": True, "stream": True}
    signalled = []

    async def run():
        async with httpx.AsyncClient(timeout=60) as client:
            async def one():
                async with client.stream("POST", srv.url + "/v1/completions", json=body, headers=srv.headers) as r:
                    events = [line async for line in r.aiter_lines() if line.startswith("data: ")]
                    return events, time.monotonic()

            tasks = [asyncio.create_task(one()) for _ in range(6)]
            await asyncio.sleep(0.3)  # all of them are streaming
            srv.process.send_signal(signal.SIGTERM)
            signalled.append(time.monotonic())
            await asyncio.sleep(0.2)
            try:
                late = await client.post(srv.url + "/v1/completions", json={**body, "stream": False},
                                         headers=srv.headers)
                late_status = late.status_code
            except httpx.TransportError:
                late_status = "refused"
            return await asyncio.gather(*tasks), late_status

    streams, late_status = asyncio.run(run())
    assert max(done for _, done in streams) > signalled[0], "every stream ended before SIGTERM: nothing tested"
    for events, _ in streams:
        assert events[-1] == "data: [DONE]" and '"finish_reason":"length"' in events[-2]
    assert late_status in (503, "refused")
    assert srv.process.wait(30) == 0


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
