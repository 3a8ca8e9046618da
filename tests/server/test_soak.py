"""A bounded soak against a real server: a few thousand requests of a hostile mix (normal and
streamed completions and chats, streams cancelled mid-way, malformed and oversized bodies, token
ids past the vocabulary, lone surrogates) from many concurrent clients. Nothing may answer 5xx,
nothing may hang, and afterwards no KV block is held and the engine still answers."""

from __future__ import annotations

import asyncio
import json
import random

import httpx
import pytest

from tests.server.conftest import start_server
from tests.server.test_lifecycle import _wait_idle

pytestmark = pytest.mark.slow

NUM_REQUESTS = 3000
CONCURRENCY = 48


def _hostile(rng: random.Random) -> tuple[str, bytes]:
    """(route, raw body) of one bad request."""
    choices = [
        ("/v1/completions", b'{"model": "tiny", "prompt": '),                                 # broken JSON
        ("/v1/completions", b'{"model":"tiny","prompt":"a","max_tokens":"many"}'),
        ("/v1/completions", b'{"model":"tiny","prompt":"a","stop_token_ids":[4096],"min_tokens":1}'),
        ("/v1/completions", b'{"model":"tiny","prompt":[1,2,99999999999999999999999]}'),
        ("/v1/completions", b'{"model":"tiny","prompt":"a\\ud800"}'),
        ("/v1/completions", json.dumps({"model": "x" * 5000, "prompt": "a"}).encode()),
        ("/v1/completions", json.dumps({"model": "tiny", "prompt": ["p"] * 200, "n": 16}).encode()),
        ("/v1/completions", json.dumps({"model": "tiny", "prompt": "a", "logit_bias": {"-5": 1}}).encode()),
        ("/v1/chat/completions", b'{"model":"tiny","messages":[]}'),
        ("/v1/chat/completions", b'{"model":"tiny","messages":[{"role":"wizard","content":"x"}]}'),
        ("/tokenize", b'{"prompt":"\\udc00"}'),
        ("/detokenize", b'{"tokens":[-1]}'),
        ("/v1/completions", b"[]"),
    ]
    return rng.choice(choices)


async def _one(client: httpx.AsyncClient, url: str, headers: dict, rng: random.Random) -> int:
    kind = rng.random()
    prompt = rng.choice(["def f(x):", "import os\n", "class A:", "for i in range(3):"])
    if kind < 0.2:  # a stream its client abandons after a couple of events
        body = {"model": "tiny", "prompt": prompt, "max_tokens": 64, "ignore_eos": True, "stream": True}
        async with client.stream("POST", url + "/v1/completions", json=body, headers=headers) as r:
            seen = 0
            async for line in r.aiter_lines():
                seen += line.startswith("data: ")
                if seen >= rng.randint(1, 3):
                    break
            return r.status_code
    if kind < 0.35:
        route, raw = _hostile(rng)
        r = await client.post(url + route, content=raw, headers={**headers, "content-type": "application/json"})
        return r.status_code
    if kind < 0.5:
        body = {"model": "tiny", "messages": [{"role": "user", "content": prompt}], "max_tokens": rng.randint(1, 8),
                "stream": rng.random() < 0.5}
        route = "/v1/chat/completions"
    else:
        body = {"model": "tiny", "prompt": prompt, "max_tokens": rng.randint(1, 12), "n": rng.choice([1, 1, 2]),
                "temperature": rng.choice([0, 0.7]), "stream": rng.random() < 0.5}
        route = "/v1/completions"
    if body["stream"]:
        async with client.stream("POST", url + route, json=body, headers=headers) as r:
            lines = [line async for line in r.aiter_lines() if line.startswith("data: ")]
            if r.status_code == 200:
                assert lines[-1] == "data: [DONE]" and '"error"' not in "".join(lines), lines[-3:]
            return r.status_code
    r = await client.post(url + route, json=body, headers=headers)
    return r.status_code


def test_soak_hostile_mix(tiny_model_dir):
    srv = start_server(tiny_model_dir, "--max-num-seqs", "16", "--max-queued-seqs", "256", "--no-access-log")
    rng = random.Random(7)
    try:
        async def run():
            limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
            async with httpx.AsyncClient(timeout=60, limits=limits) as client:
                gate = asyncio.Semaphore(CONCURRENCY)

                async def bounded(i):
                    async with gate:
                        return await _one(client, srv.url, srv.headers, random.Random(rng.random() + i))

                return await asyncio.wait_for(asyncio.gather(*(bounded(i) for i in range(NUM_REQUESTS))), 400)

        codes = asyncio.run(run())
        assert len(codes) == NUM_REQUESTS
        assert not [c for c in codes if c >= 500], sorted(set(codes))
        assert codes.count(200) > NUM_REQUESTS // 2 and codes.count(400) > NUM_REQUESTS // 20
        _wait_idle(srv, timeout=30)
        r = httpx.post(srv.url + "/v1/completions", json={"model": "tiny", "prompt": "a", "max_tokens": 3},
                       headers=srv.headers)
        assert r.status_code == 200 and httpx.get(srv.url + "/health").status_code == 200
    finally:
        assert srv.stop() == 0
