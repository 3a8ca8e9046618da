"""Regression tests for a hostile or careless client, each against a real `hearth serve` process:
token ids beyond the vocabulary, admission by work, empty keys, lone surrogates, slow and idle
connections, huge prompts and the event loop, clients that stop reading, HEAD, echoed inputs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from tests.server.conftest import API_KEY, free_port, start_server
from tests.server.test_lifecycle import _wait_idle

OK = {"model": "tiny", "prompt": "def f(x):", "max_tokens": 4, "temperature": 0}


@pytest.fixture(scope="module")
def strict_server(tiny_model_dir):
    """A server with short timeouts and small buffers, so the slow-client cases run in seconds."""
    srv = start_server(tiny_model_dir, "--max-num-seqs", "8", "--max-queued-seqs", "8",
                       "--max-prompts-per-request", "20", "--header-timeout", "1.5", "--body-timeout", "1.5",
                       "--keep-alive-timeout", "1.5", "--write-timeout", "1.5", "--stream-buffer-bytes", "8192",
                       "--max-request-bytes", str(12 << 20))
    yield srv
    srv.stop()


def _post(srv, route, body, **kw):
    return httpx.post(srv.url + route, json=body, headers=srv.headers, timeout=60, **kw)


def _assert_alive(srv):
    r = _post(srv, "/v1/completions", OK)
    assert r.status_code == 200, r.text
    assert httpx.get(srv.url + "/health").status_code == 200


@pytest.mark.parametrize("change, param", [
    ({"stop_token_ids": [4096], "min_tokens": 1}, "stop_token_ids"),
    ({"stop_token_ids": [2**70], "min_tokens": 1}, "stop_token_ids"),
    ({"stop_token_ids": [-1]}, "stop_token_ids"),
    ({"logit_bias": {"4096": 5}}, "logit_bias"),
    ({"logit_bias": {str(2**70): 5}}, "logit_bias"),
    ({"logit_bias": {"-3": 5}}, "logit_bias"),
    ({"prompt": [1, 2, 4096]}, "prompt"),
    ({"prompt": [[1], [2**70]]}, "prompt"),
])
def test_token_ids_beyond_the_vocabulary_are_a_400_and_the_engine_lives(strict_server, change, param):
    r = _post(strict_server, "/v1/completions", {**OK, **change})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"].split(".")[0] == param, r.json()
    _assert_alive(strict_server)


def test_chat_stop_token_ids_beyond_the_vocabulary(strict_server):
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
            "min_tokens": 1, "stop_token_ids": [4096]}
    r = _post(strict_server, "/v1/chat/completions", body)
    assert r.status_code == 400 and r.json()["error"]["param"] == "stop_token_ids", r.text
    _assert_alive(strict_server)


def test_admission_counts_sequences_not_requests(strict_server):
    # 8 running + 8 queued sequences at most: 20 prompts x n=4 can never fit
    huge = {**OK, "prompt": [f"p{i}" for i in range(20)], "n": 4}
    r = _post(strict_server, "/v1/completions", huge)
    assert r.status_code == 400 and r.json()["error"]["code"] == "request_too_large", r.text
    assert "sequences" in r.json()["error"]["message"]
    too_many = {**OK, "prompt": [f"p{i}" for i in range(21)]}
    r = _post(strict_server, "/v1/completions", too_many)
    assert r.status_code == 400 and "at most 20" in r.json()["error"]["message"], r.text

    async def crowd():
        async with httpx.AsyncClient(timeout=60) as client:
            long = {**OK, "max_tokens": 200, "ignore_eos": True, "n": 8, "stream": True}
            async with (client.stream("POST", strict_server.url + "/v1/completions", json=long,
                                      headers=strict_server.headers) as one,
                        client.stream("POST", strict_server.url + "/v1/completions", json=long,
                                      headers=strict_server.headers) as two):
                # both streams are open: 16 sequences in flight, the window is full until they end
                late = await client.post(strict_server.url + "/v1/completions", json=OK, headers=strict_server.headers)
                ends = [[line async for line in r.aiter_lines() if line][-1] for r in (one, two)]
            after = await client.post(strict_server.url + "/v1/completions", json=OK, headers=strict_server.headers)
            return ends, late, after

    ends, late, after = asyncio.run(crowd())
    assert ends == ["data: [DONE]"] * 2
    assert late.status_code == 429 and late.headers["retry-after"] == "1", late.text
    assert after.status_code == 200, after.text  # the window emptied when the streams ended
    _wait_idle(strict_server)
    _assert_alive(strict_server)


@pytest.mark.parametrize("argv, env", [(["--api-key", ""], {}), (["--api-key", "  "], {}),
                                       ([], {"HEARTH_API_KEY": ""}), ([], {"HEARTH_API_KEY": "a,,b"})])
def test_empty_api_keys_are_rejected_at_start_up(tiny_model_dir, argv, env):
    proc = subprocess.run([sys.executable, "-m", "hearth", "serve", str(tiny_model_dir), "--port", "1", *argv],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "empty" in proc.stderr


@pytest.mark.parametrize("route, raw, param", [
    ("/v1/completions", b'{"model":"tiny","prompt":"a\\ud800b","max_tokens":2}', "prompt"),
    ("/v1/chat/completions", b'{"model":"tiny","messages":[{"role":"user","content":"\\udfff"}]}',
     "messages[0].content"),
    ("/tokenize", b'{"prompt":"x\\ud83d"}', "prompt"),
    ("/v1/completions", b'{"model":"tiny","prompt":"a","stop":["\\ud800"]}', "stop[0]"),
])
def test_lone_surrogates_are_a_400_naming_where(strict_server, route, raw, param):
    r = httpx.post(strict_server.url + route, content=raw, headers={**strict_server.headers,
                                                                     "content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and "surrogate" in r.json()["error"]["message"]
    # a proper pair (an emoji) is fine
    ok = httpx.post(strict_server.url + "/tokenize", content=b'{"prompt":"\\ud83d\\ude00"}', headers=strict_server.headers)
    assert ok.status_code == 200, ok.text


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes (or resets) the connection within `seconds`."""
    sock.settimeout(seconds)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def _connect(srv) -> socket.socket:
    host, port = srv.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)))


def test_idle_and_slow_header_connections_are_closed(strict_server):
    idle = _connect(strict_server)
    slow = _connect(strict_server)
    slow.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
    try:
        assert _closed_within(idle, 6), "an idle connection stayed open"
        assert _closed_within(slow, 6), "a connection trickling its headers stayed open"
    finally:
        idle.close()
        slow.close()


def test_an_unfinished_body_gets_408(strict_server):
    sock = _connect(strict_server)
    try:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                     b"authorization: Bearer " + API_KEY.encode() + b"\r\ncontent-length: 100\r\n\r\n{\"prompt\"")
        sock.settimeout(8)
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        assert _closed_within(sock, 6)
    finally:
        sock.close()


def test_a_kept_alive_connection_closes_after_the_idle_timeout(strict_server):
    sock = _connect(strict_server)
    try:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        assert _closed_within(sock, 6)
    finally:
        sock.close()


def test_huge_prompts_are_tokenized_off_the_event_loop(strict_server):
    text = "def f(x):\n    return x + 1\n" * 40_000   # ~1 MB each, far past the context: a 400 once tokenized
    latencies: list[float] = []
    stop = threading.Event()

    def probe():
        while not stop.is_set():
            t0 = time.monotonic()
            httpx.get(strict_server.url + "/health", timeout=30)
            latencies.append(time.monotonic() - t0)
            time.sleep(0.02)

    async def flood():
        async with httpx.AsyncClient(timeout=120) as client:
            body = {"model": "tiny", "prompt": text, "max_tokens": 1}
            return await asyncio.gather(*(client.post(strict_server.url + "/v1/completions", json=body,
                                                      headers=strict_server.headers) for _ in range(10)))

    thread = threading.Thread(target=probe)
    thread.start()
    t0 = time.monotonic()
    try:
        codes = [r.status_code for r in asyncio.run(flood())]
    finally:
        busy = time.monotonic() - t0
        stop.set()
        thread.join()
    assert codes == [400] * 10
    # on the event loop the probe would wait for whole tokenizations back to back (seconds)
    assert len(latencies) > 3 and max(latencies) < max(1.0, busy / 4), (max(latencies), busy)


def test_a_client_that_stops_reading_is_cut_and_its_blocks_freed(strict_server):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host, port = strict_server.url.removeprefix("http://").split(":")
    sock.connect((host, int(port)))
    body = json.dumps({"model": "tiny", "prompt": "x", "max_tokens": 240, "ignore_eos": True, "stream": True,
                       "n": 8, "logprobs": 20}).encode()
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                 b"authorization: Bearer " + API_KEY.encode() + b"\r\ncontent-length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)
    try:
        time.sleep(5)  # never read: the server's buffer fills, then the write timeout fires
        _wait_idle(strict_server, timeout=20)
        received, sock_ok = b"", True
        sock.settimeout(5)
        try:
            while chunk := sock.recv(1 << 20):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            sock_ok = False
        assert b"data: [DONE]" not in received, "the whole stream was buffered for a client that never read"
        assert received.startswith(b"HTTP/1.1 200") or not sock_ok
    finally:
        sock.close()
    _assert_alive(strict_server)


def test_head_on_get_routes(strict_server):
    for path in ("/health", "/metrics", "/v1/models"):
        r = httpx.head(strict_server.url + path, headers=strict_server.headers)
        assert r.status_code == 200 and r.content == b"", (path, r.status_code)


@pytest.mark.parametrize("body", [
    {**OK, "model": "m" * 100_000},
    {**OK, "logit_bias": {str(i): 200.0 for i in range(5000)}},
    {**OK, "temperature": "x" * 100_000},
    {**OK, "x" * 50_000: 1},
])
def test_errors_quote_at_most_a_little_of_the_input(strict_server, body):
    r = _post(strict_server, "/v1/completions", body)
    assert 400 <= r.status_code < 500, r.text[:300]
    assert len(r.json()["error"]["message"]) < 1100 and len(r.content) < 2000, len(r.content)


def test_a_post_without_json_content_type_is_still_read_as_json(strict_server):
    r = httpx.post(strict_server.url + "/v1/completions", content=json.dumps(OK).encode(),
                   headers={**strict_server.headers, "content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text
    bad = httpx.post(strict_server.url + "/v1/completions", content=b"prompt=hi",
                     headers={**strict_server.headers, "content-type": "application/x-www-form-urlencoded"})
    assert bad.status_code == 400 and "application/json" in bad.json()["error"]["message"], bad.text


def test_access_log_has_one_line_per_request_without_the_key(tiny_model_dir):
    srv = start_server(tiny_model_dir)
    try:
        r = httpx.post(srv.url + "/v1/completions", json={**OK, "max_tokens": 3, "ignore_eos": True},
                       headers={**srv.headers, "x-request-id": "probe-123"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "probe-123"
        with httpx.stream("POST", srv.url + "/v1/completions", headers={**srv.headers, "x-request-id": "probe-456"},
                          json={**OK, "max_tokens": 5, "ignore_eos": True, "stream": True}) as s:
            list(s.iter_lines())
        httpx.get(srv.url + "/v1/models")  # a 401
    finally:
        srv.stop()
    out = srv.process.stdout.read().decode()
    assert API_KEY not in out
    line = next(x for x in out.splitlines() if "id=probe-123" in x)
    assert re.search(r"POST /v1/completions 200 \d+\.\d+s id=probe-123 key=[0-9a-f]{8} in=\d+ out=3$", line), line
    stream_line = next(x for x in out.splitlines() if "id=probe-456" in x)
    assert stream_line.endswith("out=5"), stream_line
    assert re.search(r"GET /v1/models 401 ", out)


def test_no_access_log_turns_it_off(tiny_model_dir):
    srv = start_server(tiny_model_dir, "--no-access-log")
    try:
        httpx.post(srv.url + "/v1/completions", json=OK, headers={**srv.headers, "x-request-id": "quiet-1"})
    finally:
        srv.stop()
    assert "quiet-1" not in srv.process.stdout.read().decode()



def _streams_and_wholes_when_the_engine_dies(srv, fault_file):
    """Start a stream and a whole request, kill the engine loop under them; what each got."""
    body = {"model": "tiny", "prompt": "x", "max_tokens": 240, "ignore_eos": True}

    async def run():
        async with httpx.AsyncClient(timeout=60) as client:
            async def stream():
                async with client.stream("POST", srv.url + "/v1/completions", json={**body, "stream": True},
                                         headers=srv.headers) as r:
                    lines = []
                    async for line in r.aiter_lines():
                        if line.startswith("data: "):
                            lines.append(line)
                            if len(lines) == 3:
                                fault_file.write_text("die")
                    return lines

            return await asyncio.gather(stream(), client.post(srv.url + "/v1/completions", json=body,
                                                              headers=srv.headers))

    return asyncio.run(run())


def test_a_dead_engine_fails_its_requests_then_the_process_exits_1(tiny_model_dir, tmp_path):
    fault = tmp_path / "fault"
    srv = start_server(tiny_model_dir, env={"HEARTH_TEST_ENGINE_FAULT_FILE": str(fault)})
    try:
        events, whole = _streams_and_wholes_when_the_engine_dies(srv, fault)
        assert events[-1] == "data: [DONE]" and '"code":"engine_dead"' in events[-2], events[-3:]
        assert whole.status_code == 503 and whole.json()["error"]["code"] == "engine_dead", whole.text
        assert srv.process.wait(20) == 1
    finally:
        if srv.process.poll() is None:
            srv.process.kill()
    assert "exiting with status 1" in srv.process.stdout.read().decode()


def test_restart_engine_rebuilds_it_in_place(tiny_model_dir, tmp_path):
    fault = tmp_path / "fault"
    srv = start_server(tiny_model_dir, "--restart-engine", env={"HEARTH_TEST_ENGINE_FAULT_FILE": str(fault)})
    try:
        events, whole = _streams_and_wholes_when_the_engine_dies(srv, fault)
        assert '"code":"engine_dead"' in events[-2] and whole.status_code == 503
        deadline = time.monotonic() + 30
        while httpx.get(srv.url + "/health").status_code != 200:
            assert srv.process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        _assert_alive(srv)
        _wait_idle(srv)
    finally:
        assert srv.stop() == 0
    assert "restarting the engine (restart 1)" in srv.process.stdout.read().decode()


def test_a_model_that_fails_to_load_exits_1(tiny_model_dir):
    proc = subprocess.run([sys.executable, "-m", "hearth", "serve", str(tiny_model_dir), "--port", str(free_port()),
                           "--max-model-len", "100000"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "failed to load" in proc.stderr


def test_connections_over_the_limit_get_a_503(tiny_model_dir):
    srv = start_server(tiny_model_dir, "--max-connections", "3", "--header-timeout", "30")
    held = [_connect(srv) for _ in range(3)]
    try:
        time.sleep(0.3)
        extra = _connect(srv)
        extra.settimeout(10)
        reply = b""
        while chunk := extra.recv(4096):
            reply += chunk
        extra.close()
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in head.lower(), reply
        assert json.loads(body)["error"]["code"] == "too_many_connections"
        held.pop().close()
        time.sleep(0.3)
        assert httpx.get(srv.url + "/health").status_code == 200  # room again
    finally:
        for s in held:
            s.close()
        srv.stop()


def test_a_stalled_stream_stops_costing_compute_until_its_client_reads(tiny_model_dir):
    """Before the write timeout cuts it, a stream nobody reads is paused in the engine: it
    generates no further than the backlog allows (instead of its whole output, into memory)."""
    from tests.server.test_lifecycle import _metric

    srv = start_server(tiny_model_dir, "--write-timeout", "60", "--stream-buffer-bytes", "8192",
                       "--stream-backlog-tokens", "16")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        host, port = srv.url.removeprefix("http://").split(":")
        sock.connect((host, int(port)))
        body = json.dumps({"model": "tiny", "prompt": "x", "max_tokens": 240, "ignore_eos": True, "stream": True,
                           "n": 4, "logprobs": 20}).encode()
        before = _metric(srv, "hearth_generation_tokens_total")
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                     b"authorization: Bearer " + API_KEY.encode() + b"\r\ncontent-length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        time.sleep(4)  # unpaused, the tiny model finishes all 4 x 240 tokens in well under a second
        made = _metric(srv, "hearth_generation_tokens_total") - before
        assert made < 4 * 240 / 2, made
        assert _metric(srv, "hearth_kv_cache_usage_perc") > 0  # held, not freed: it may resume
    finally:
        sock.close()
    try:
        _wait_idle(srv)  # the disconnect aborts it
    finally:
        srv.stop()
