"""The worker supervisor (server/endpoint/workers.py) with real `hearth serve` worker processes:
they load and report ready, answer behind the endpoint's private key, a kill -9 of one is
restarted while the other keeps answering, and removal drains and stops them."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx

from hearth.server.endpoint.spec import DeploymentSpec
from hearth.server.endpoint.workers import Supervisor, worker_command


def test_worker_command_carries_the_engine_options():
    spec = DeploymentSpec(model="/m/x.gguf", quantization="q8_0", max_num_seqs=8, enable_prefix_caching=False)
    cmd = worker_command(spec, "pystdlib", 9000, "k")
    assert cmd[cmd.index("serve") + 1] == "/m/x.gguf"
    for flag, value in (("--port", "9000"), ("--served-model-name", "pystdlib"), ("--api-key", "k"),
                        ("--quantization", "q8_0"), ("--max-num-seqs", "8"), ("--block-size", "16")):
        assert cmd[cmd.index(flag) + 1] == value, flag
    assert "--no-prefix-caching" in cmd and "--max-model-len" not in cmd


async def _until(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_workers_load_answer_restart_and_stop(tiny_model_dir, tmp_path):
    changes: list[tuple[str, str]] = []
    spec = DeploymentSpec(model=str(tiny_model_dir), max_model_len=256, kv_cache_memory=32 << 20)

    async def run():
        sup = Supervisor(tmp_path / "logs", on_change=lambda name, state: changes.append((name, state)))
        watcher = asyncio.create_task(sup.watch())
        try:
            blue, green = sup.add("blue", spec, "tiny"), sup.add("green", spec, "tiny")
            await _until(lambda: blue.state == green.state == "ready")
            async with httpx.AsyncClient(timeout=30) as client:
                body = {"model": "tiny", "prompt": "def f(x):", "max_tokens": 3}
                for w in (blue, green):
                    assert (await client.post(w.url + "/v1/completions", json=body, headers=sup.headers)).status_code == 200
                    assert (await client.post(w.url + "/v1/completions", json=body)).status_code == 401  # private
                green_pid, old_blue = green.pid, blue.pid
                os.kill(blue.pid, signal.SIGKILL)
                await _until(lambda: blue.state == "failed", 10)
                r = await client.post(green.url + "/v1/completions", json=body, headers=sup.headers)
                assert r.status_code == 200  # the other deployment never noticed
                await _until(lambda: blue.state == "ready")
                assert blue.restarts == 1 and blue.pid != old_blue and blue.last_exit == -signal.SIGKILL
                assert (await client.post(blue.url + "/v1/completions", json=body, headers=sup.headers)).status_code == 200
                assert green.pid == green_pid and green.restarts == 0
            statuses = [await sup.remove("blue"), await sup.remove("green")]
            assert statuses == [0, 0] and sup.workers == {}
        finally:
            watcher.cancel()
            await sup.close()

    asyncio.run(run())
    blue = [state for name, state in changes if name == "blue"]
    assert blue == ["loading", "ready", "failed", "loading", "ready", "draining", "stopped"], blue
    assert (tmp_path / "logs" / "blue.log").read_text().count("ready: serving 'tiny'") == 2
