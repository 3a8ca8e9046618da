"""benchmarks/serving.py: metrics on hand-made records, the HTTP load generator against a tiny
fake OpenAI-compatible streaming server, and the in-process path against a fake engine."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from hearth.benchmarks.serving import (
    RequestRecord,
    load_prompts,
    main,
    parse_args,
    parse_cpu_list,
    random_prompts,
    run_http,
    run_in_process,
    summarize,
)

CHUNKS = 4  # content chunks (= completion tokens) the fake server streams per request


def test_summarize_known_values():
    records = [
        RequestRecord(ok=True, ttft=0.1, e2el=1.0, itl=[0.01, 0.03], output_tokens=11, prompt_tokens=5),
        RequestRecord(ok=True, ttft=0.2, e2el=2.0, itl=[0.02], output_tokens=21, prompt_tokens=7),
        RequestRecord(ok=True, ttft=0.3, e2el=3.0, output_tokens=1, prompt_tokens=9),
        RequestRecord(error="boom"), RequestRecord(error="boom"), RequestRecord(error="bang"),
    ]
    s = summarize(records, duration=2.0)
    assert (s["completed"], s["failed"], s["errors"]) == (3, 3, ["boom", "bang"])
    assert s["request_throughput"] == pytest.approx(1.5)
    assert s["output_token_throughput"] == pytest.approx(33 / 2.0)
    assert (s["total_input_tokens"], s["total_output_tokens"]) == (21, 33)
    assert s["ttft_ms"]["mean"] == pytest.approx(200) and s["ttft_ms"]["median"] == pytest.approx(200)
    assert s["ttft_ms"]["p99"] == pytest.approx(np.percentile([100, 200, 300], 99))
    assert s["e2el_ms"]["median"] == pytest.approx(2000)
    # the 1-token request has no TPOT; the others are (e2el - ttft) / (n - 1) = 90 ms
    assert s["tpot_ms"]["mean"] == pytest.approx(90) and s["tpot_ms"]["p99"] == pytest.approx(90)
    assert s["itl_ms"]["mean"] == pytest.approx(20) and s["itl_ms"]["median"] == pytest.approx(20)


def test_summarize_all_failed():
    s = summarize([RequestRecord(error="x")], duration=1.0)
    assert s["completed"] == 0 and s["failed"] == 1 and s["ttft_ms"]["mean"] is None


def test_prompts(tmp_path):
    a, b = random_prompts(3, 10, seed=1), random_prompts(3, 10, seed=1)
    assert a == b and all(len(p.split()) == 10 for p in a) and len(set(a)) == 3
    (tmp_path / "p.json").write_text(json.dumps(["one", "two"]))
    (tmp_path / "p.txt").write_text("alpha beta\n\ngamma\n")
    assert load_prompts(str(tmp_path / "p.json"), 3) == ["one", "two", "one"]
    assert load_prompts(str(tmp_path / "p.txt"), 2) == ["alpha beta", "gamma"]
    with pytest.raises(SystemExit):
        parse_args(["--concurrency", "2", "--request-rate", "3"])  # one load shape only


def _fake_app(seen: list) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": "fake-model", "object": "model"}]}

    async def stream(body: dict, chat: bool):
        prompt = body["messages"][0]["content"] if chat else body["prompt"]
        for i in range(CHUNKS):
            await asyncio.sleep(0.005)
            if "FAIL" in prompt and i == 1:
                yield f"data: {json.dumps({'error': {'message': 'injected failure'}})}\n\n"
                return
            choice = {"index": 0, "delta": {"content": f"t{i} "}} if chat else {"index": 0, "text": f"t{i} "}
            yield f"data: {json.dumps({'choices': [choice]})}\n\n"
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": CHUNKS}
        yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"
        await asyncio.sleep(0.005)  # the body's end comes in a later write, as from a real server

    async def handle(request: Request, chat: bool):
        body = await request.json()
        seen.append((body, request.headers.get("authorization"), request.scope["client"][1]))
        return StreamingResponse(stream(body, chat), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await handle(request, False)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await handle(request, True)

    return app


@pytest.fixture(scope="module")
def fake_server():
    """(base url, list of (request body, authorization header)) of a fake server in a thread."""
    seen: list = []
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # a pre-bound socket: no race for a "free" port
    server = uvicorn.Server(uvicorn.Config(_fake_app(seen), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", seen
    server.should_exit = True
    thread.join(5)
    sock.close()


def _check_ok(r: dict, n: int, prompts: list[str]):
    assert (r["completed"], r["failed"]) == (n, 0), r["errors"]
    assert r["total_output_tokens"] == n * CHUNKS
    assert r["total_input_tokens"] == sum(len(p.split()) for p in prompts)
    assert r["output_token_throughput"] > 0 and r["request_throughput"] > 0
    for key in ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms"):
        assert 0 < r[key]["mean"] and r[key]["median"] <= r[key]["p90"] <= r[key]["p99"], key
    assert r["ttft_ms"]["mean"] <= r["e2el_ms"]["mean"] and r["ttft_ms"]["p99"] <= r["e2el_ms"]["p99"]


def test_http_concurrency_completions(fake_server):
    url, seen = fake_server
    seen.clear()
    prompts = random_prompts(8, 6, seed=0)
    r = asyncio.run(run_http(url, prompts, output_len=CHUNKS, concurrency=3, ignore_eos=True,
                             api_key="sekret"))
    _check_ok(r, 8, prompts)
    assert r["config"]["model"] == "fake-model" and r["config"]["concurrency"] == 3
    body, auth, _ = seen[0]
    assert auth == "Bearer sekret" and body["model"] == "fake-model" and body["ignore_eos"] is True
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == CHUNKS and body["temperature"] == 0


def test_http_request_rate_chat(fake_server):
    url, seen = fake_server
    seen.clear()
    prompts = random_prompts(6, 5, seed=2)
    r = asyncio.run(run_http(url, prompts, output_len=CHUNKS, endpoint="chat", request_rate=50,
                             arrival="fixed"))
    _check_ok(r, 6, prompts)
    assert r["duration_s"] >= 5 / 50  # six arrivals evenly spaced at 20 ms
    assert seen[0][0]["messages"] == [{"role": "user", "content": prompts[0]}]
    assert "ignore_eos" not in seen[0][0] and seen[0][1] is None


def test_http_error_chunk_counts_as_failed(fake_server):
    url, _ = fake_server
    prompts = ["fine prompt", "please FAIL now", "another fine one"]
    r = asyncio.run(run_http(url, prompts, output_len=CHUNKS, request_rate=float("inf")))
    assert (r["completed"], r["failed"]) == (2, 1)
    assert r["errors"] == ["injected failure"] and r["total_output_tokens"] == 2 * CHUNKS
    assert r["config"]["request_rate"] == "inf"


def test_cli_writes_json(fake_server, tmp_path, capsys):
    url, _ = fake_server
    out = tmp_path / "r.json"
    result = main(["--url", url, "--num-requests", "3", "--concurrency", "2", "--prompt-len", "4",
                   "--output-len", str(CHUNKS), "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(capsys.readouterr().out) == result
    assert result["completed"] == 3


class FakeEngine:
    """Shaped like AsyncLLM.generate: RequestOutput deltas, a token-less final one."""

    def __init__(self):
        self.params = []

    async def generate(self, prompt, params, request_id=None):
        self.params.append(params)
        ids = list(range(len(prompt.split())))
        for i in range(params.max_tokens):
            await asyncio.sleep(0.002)
            yield SimpleNamespace(prompt_token_ids=ids, finished=False,
                                  outputs=[SimpleNamespace(text=f"t{i}", token_ids=[i])])
        yield SimpleNamespace(prompt_token_ids=ids, finished=True,
                              outputs=[SimpleNamespace(text="", token_ids=[])])


@pytest.mark.parametrize("load", [{"concurrency": 2}, {"request_rate": 200}])
def test_run_in_process_fake_engine(load):
    engine = FakeEngine()
    prompts = random_prompts(5, 3, seed=4)
    r = asyncio.run(run_in_process(engine, prompts, output_len=CHUNKS, **load))
    _check_ok(r, 5, prompts)
    assert r["config"]["url"] == "in-process"
    assert engine.params[0].ignore_eos is True and engine.params[0].temperature == 0.0


def test_connections_are_reused(fake_server):
    """The client reads each stream to its end, so a keep-alive connection serves the next
    request; otherwise every request would also measure a new TCP connection."""
    url, seen = fake_server
    seen.clear()
    asyncio.run(run_http(url, random_prompts(12, 3), output_len=CHUNKS, concurrency=2))
    assert len(seen) == 12 and len({port for _, _, port in seen}) <= 3  # 2 in flight (+1 for /v1/models)


def test_cpu_list():
    assert parse_cpu_list("0") == {0} and parse_cpu_list("0,2-4") == {0, 2, 3, 4}


def test_compare_in_process_alternates_and_takes_medians(fake_server, tiny_model_dir, tmp_path):
    url, _ = fake_server
    cpus = sorted(os.sched_getaffinity(0))
    result = main(["--url", url, "--num-requests", "3", "--concurrency", "2", "--prompt-len", "4",
                   "--output-len", str(CHUNKS), "--compare-in-process", "--model-path", str(tiny_model_dir),
                   "--repeats", "3", "--warmup", "1", "--in-process-cpus", str(cpus[0])])
    assert os.sched_getaffinity(0) == set(cpus)  # the caller's CPUs are given back
    http, ip = result["repeats"]["http"], result["repeats"]["in_process"]
    assert len(http) == len(ip) == 3
    assert result["output_token_throughput"] == sorted(http)[1]
    assert result["in_process"]["output_token_throughput"] == sorted(ip)[1]
    assert result["http_vs_in_process"] == pytest.approx(sorted(http)[1] / sorted(ip)[1])
    assert result["config"]["in_process_cpus"] == [cpus[0]] and result["in_process"]["completed"] == 3
