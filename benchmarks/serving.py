"""Serving benchmark: a load generator for any OpenAI-compatible HTTP server (hearth, vLLM,
llama.cpp's server). Every request streams, so it measures time to first token (TTFT), time per
output token (TPOT), inter-token latency (ITL) and end-to-end latency (E2EL), plus request and
output-token throughput over the whole run. The result is JSON, printed and optionally saved.

    # 200 requests, 8 in flight, ~256-word random prompts, 128 output tokens of fixed length
    python -m hearth.benchmarks.serving --url http://127.0.0.1:8000 --num-requests 200 \\
        --concurrency 8 --prompt-len 256 --output-len 128 --ignore-eos --out result.json

    # Poisson arrivals at 4 req/s through the chat endpoint, prompts from a file
    python -m hearth.benchmarks.serving --url http://127.0.0.1:8000 --endpoint chat \\
        --request-rate 4 --prompts-file prompts.json

    # the same load through hearth's AsyncLLM in this process too: the HTTP layer's cost
    python -m hearth.benchmarks.serving --url http://127.0.0.1:8000 --concurrency 4 --compare-in-process

The HTTP and in-process paths share one scheduler (`run_load`, which takes an async "send one
request" callable) and one metric computation (`summarize`), so their numbers are comparable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np

WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly read old books "
         "about rivers mountains cities engines stars music gardens history science language "
         "winter summer ocean forest bridge window market letter journey silver copper paper "
         "light shadow number story question answer morning evening simple careful bright").split()


@dataclass
class RequestRecord:
    """What one request measured; times are seconds from perf_counter."""
    ok: bool = False
    error: str = ""
    ttft: float = 0.0
    e2el: float = 0.0
    itl: list[float] = field(default_factory=list)
    output_tokens: int = 0
    prompt_tokens: int = 0
    chunks: int = 0      # content-carrying chunks (deltas) seen
    last: float = 0.0    # perf_counter of the latest one

    def content_arrived(self, start: float) -> None:
        """Timestamp a chunk that carries output: the first sets TTFT, later ones add an ITL."""
        now = time.perf_counter()
        if self.chunks:
            self.itl.append(now - self.last)
        else:
            self.ttft = now - start
        self.last, self.chunks = now, self.chunks + 1


SendFn = Callable[[str, int], Awaitable[RequestRecord]]


def random_prompts(n: int, prompt_len: int, seed: int = 0) -> list[str]:
    """n prompts of `prompt_len` words drawn from WORDS; seeded, so runs are repeatable."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=prompt_len)) for _ in range(n)]


def load_prompts(path: str, n: int) -> list[str]:
    """n prompts from a JSON list of strings or a one-prompt-per-line text file, cycled if short."""
    text = Path(path).read_text()
    try:
        prompts = json.loads(text)
        if not (isinstance(prompts, list) and all(isinstance(p, str) for p in prompts)):
            raise ValueError(f"{path}: JSON must be a list of strings")
    except json.JSONDecodeError:
        prompts = [line for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"{path} holds no prompts")
    return [prompts[i % len(prompts)] for i in range(n)]


def _stats(values_s: list[float]) -> dict:
    if not values_s:
        return {"mean": None, "median": None, "p90": None, "p99": None}
    a = np.asarray(values_s) * 1000.0
    return {"mean": float(a.mean()), "median": float(np.median(a)),
            "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99))}


def summarize(records: list[RequestRecord], duration: float) -> dict:
    """Throughput and latency statistics (ms: mean, median, p90, p99) over the successful
    records; failed ones are counted and a few of their distinct errors kept."""
    ok = [r for r in records if r.ok]
    errors = list(dict.fromkeys(r.error for r in records if not r.ok))
    out_tokens = sum(r.output_tokens for r in ok)
    # TPOT excludes the first token (that is TTFT), hence the -1; undefined for 1-token outputs.
    tpot = [(r.e2el - r.ttft) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
    return {
        "duration_s": duration, "completed": len(ok), "failed": len(records) - len(ok),
        "errors": errors[:5],
        "request_throughput": len(ok) / duration if duration > 0 else 0.0,
        "output_token_throughput": out_tokens / duration if duration > 0 else 0.0,
        "total_input_tokens": sum(r.prompt_tokens for r in ok), "total_output_tokens": out_tokens,
        "ttft_ms": _stats([r.ttft for r in ok]), "tpot_ms": _stats(tpot),
        "itl_ms": _stats([g for r in ok for g in r.itl]), "e2el_ms": _stats([r.e2el for r in ok]),
    }


async def run_load(send: SendFn, prompts: list[str], concurrency: int | None = None,
                   request_rate: float | None = None, arrival: str = "poisson",
                   seed: int = 0) -> tuple[list[RequestRecord], float]:
    """Send every prompt through `send(prompt, index)`, at most `concurrency` in flight and/or
    arriving at `request_rate` per second (Poisson or fixed spacing; None or inf: all at once).
    Returns the records in prompt order and the run's wall time in seconds."""
    rate = math.inf if request_rate is None else request_rate
    sem = asyncio.Semaphore(concurrency) if concurrency else None
    rng = np.random.default_rng(seed)
    records: list[RequestRecord] = [RequestRecord() for _ in prompts]

    async def one(i: int) -> None:
        try:
            async with sem or contextlib.nullcontext():  # wait here, before send starts its clock
                records[i] = await send(prompts[i], i)
        except Exception as e:  # one bad request must not end the run: it is a failure record
            records[i] = RequestRecord(error=f"{type(e).__name__}: {e}")

    start = time.perf_counter()
    tasks, due = [], 0.0
    for i in range(len(prompts)):
        tasks.append(asyncio.create_task(one(i)))
        if math.isfinite(rate) and i + 1 < len(prompts):
            due += rng.exponential(1.0 / rate) if arrival == "poisson" else 1.0 / rate
            # sleep to an absolute schedule so time spent creating tasks does not drift the rate
            await asyncio.sleep(max(0.0, start + due - time.perf_counter()))
    await asyncio.gather(*tasks)
    return records, time.perf_counter() - start


def http_sender(client: aiohttp.ClientSession, model: str, endpoint: str, output_len: int,
                ignore_eos: bool = False, temperature: float = 0.0) -> SendFn:
    """A `send` that streams one request to an OpenAI-compatible server and times its chunks."""
    path = "v1/completions" if endpoint == "completions" else "v1/chat/completions"

    async def send(prompt: str, index: int) -> RequestRecord:
        body: dict = {"model": model, "max_tokens": output_len, "temperature": temperature,
                      "stream": True, "stream_options": {"include_usage": True}}
        if endpoint == "completions":
            body["prompt"] = prompt
        else:
            body["messages"] = [{"role": "user", "content": prompt}]
        if ignore_eos:
            body["ignore_eos"] = True
        rec, done = RequestRecord(), False
        start = time.perf_counter()
        async with client.post(path, json=body) as resp:
            if resp.status != 200:
                rec.error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
                return rec
            async for raw in resp.content:  # one line at a time
                if not raw.startswith(b"data:"):
                    continue  # blank separators, comments, event: lines
                data = raw[5:].strip()
                if done:
                    rec.error = "data after [DONE]"
                    return rec
                if data == b"[DONE]":
                    # read on to the end of the body rather than break: a response left
                    # unread closes its connection, and every request would then pay a new one
                    done, rec.e2el = True, time.perf_counter() - start
                    continue
                chunk = json.loads(data)
                if "error" in chunk:
                    err = chunk["error"]
                    rec.error = str(err.get("message", err) if isinstance(err, dict) else err)[:200]
                    return rec
                if chunk.get("usage"):
                    rec.prompt_tokens = chunk["usage"].get("prompt_tokens") or 0
                    rec.output_tokens = chunk["usage"].get("completion_tokens") or 0
                choices = chunk.get("choices") or [{}]
                text = (choices[0].get("text") if endpoint == "completions"
                        else (choices[0].get("delta") or {}).get("content"))
                if text:
                    rec.content_arrived(start)
        if not done:
            rec.error = "stream ended without data: [DONE]"
        elif rec.chunks == 0:
            rec.error = "no output text"  # TTFT would be meaningless
        else:
            rec.output_tokens = rec.output_tokens or rec.chunks  # servers without usage: one per chunk
            rec.ok = True
        return rec

    return send


def _config(url, model, endpoint, prompts, output_len, concurrency, request_rate, **extra) -> dict:
    # inf is not valid JSON, so an all-at-once rate is echoed as the string "inf"
    rate = request_rate if request_rate is None or math.isfinite(request_rate) else "inf"
    return {"url": url, "model": model, "endpoint": endpoint, "num_requests": len(prompts),
            "concurrency": concurrency, "request_rate": rate,
            "prompt_words_mean": float(np.mean([len(p.split()) for p in prompts])) if prompts else 0,
            "output_len": output_len, **extra}


async def run_http(url: str, prompts: list[str], output_len: int, model: str | None = None,
                   endpoint: str = "completions", concurrency: int | None = None,
                   request_rate: float | None = None, arrival: str = "poisson",
                   ignore_eos: bool = False, temperature: float = 0.0, api_key: str | None = None,
                   seed: int = 0, timeout: float = 600.0, keep_records: bool = False) -> dict:
    """Run the load against an OpenAI-compatible server at `url`; returns config + summary (and,
    with `keep_records`, every request's RequestRecord under "records", in prompt order)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    # room for every in-flight request: a pool smaller than the load would queue requests in
    # the client and inflate TTFT with client-side waiting
    conns = concurrency or len(prompts) or 1
    # aiohttp rather than httpx: the client shares the machine with the server, and aiohttp
    # spends several times less CPU per streamed chunk
    async with aiohttp.ClientSession(base_url=url.rstrip("/") + "/", headers=headers,
                                     connector=aiohttp.TCPConnector(limit=conns),
                                     timeout=aiohttp.ClientTimeout(total=None, connect=timeout,
                                                                   sock_read=timeout)) as client:
        if model is None:
            async with client.get("v1/models") as resp:
                resp.raise_for_status()
                model = (await resp.json())["data"][0]["id"]
        send = http_sender(client, model, endpoint, output_len, ignore_eos, temperature)
        records, duration = await run_load(send, prompts, concurrency, request_rate, arrival, seed)
    cfg = _config(url, model, endpoint, prompts, output_len, concurrency, request_rate,
                  arrival=arrival, ignore_eos=ignore_eos, temperature=temperature)
    return {"config": cfg, **summarize(records, duration), **({"records": records} if keep_records else {})}


async def run_in_process(engine, prompts: list[str], output_len: int, concurrency: int | None = None,
                         request_rate: float | None = None, ignore_eos: bool = True,
                         temperature: float = 0.0, seed: int = 0, arrival: str = "poisson") -> dict:
    """The same load through an engine's `generate` (hearth's AsyncLLM) in this process, with no
    HTTP in between; returns the same shape as `run_http`. Tokens are counted from token_ids."""
    from hearth import SamplingParams  # lazily: the HTTP path must work without hearth installed

    params = SamplingParams(max_tokens=output_len, temperature=temperature, ignore_eos=ignore_eos)
    run_id = uuid.uuid4().hex[:8]  # ids must be unique among live requests, even across runs

    async def send(prompt: str, index: int) -> RequestRecord:
        rec = RequestRecord()
        start = time.perf_counter()
        async for out in engine.generate(prompt, params, request_id=f"bench-{run_id}-{index}"):
            rec.prompt_tokens = len(out.prompt_token_ids)
            ids = out.outputs[0].token_ids
            if ids:  # token ids, not text: a partial UTF-8 character still is a token
                rec.content_arrived(start)
                rec.output_tokens += len(ids)
        rec.e2el = time.perf_counter() - start
        rec.ok = rec.output_tokens > 0
        rec.error = "" if rec.ok else "no output tokens"
        return rec

    records, duration = await run_load(send, prompts, concurrency, request_rate, arrival, seed)
    cfg = _config("in-process", type(engine).__name__, "generate", prompts, output_len,
                  concurrency, request_rate, arrival=arrival, ignore_eos=ignore_eos,
                  temperature=temperature)
    return {"config": cfg, **summarize(records, duration)}


def parse_cpu_list(text: str) -> set[int]:
    """'0,2-3' -> {0, 2, 3} (the taskset -c syntax)."""
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; `--help` prints the module docstring's examples too."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--url", default="http://127.0.0.1:8000", help="server base URL (default: %(default)s)")
    add("--model", help="model name sent in requests (default: first id of GET {url}/v1/models)")
    add("--endpoint", choices=("completions", "chat"), default="completions",
        help="POST /v1/completions with a prompt, or /v1/chat/completions with one user message")
    add("--num-requests", type=int, default=100, help="requests to send (default: %(default)s)")
    load = p.add_mutually_exclusive_group()
    load.add_argument("--concurrency", type=int, help="keep this many requests in flight")
    load.add_argument("--request-rate", type=float,
                      help="arrivals per second; inf = all at once (the default when neither is given)")
    add("--arrival", choices=("poisson", "fixed"), default="poisson",
        help="inter-arrival times for --request-rate: exponential or evenly spaced (default: poisson)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--prompt-len", type=int, default=128,
                     help="words per random prompt (default: %(default)s)")
    src.add_argument("--prompts-file", help="JSON list of strings, or text with one prompt per line; "
                     "cycled to --num-requests")
    add("--output-len", type=int, default=128, help="max_tokens per request (default: %(default)s)")
    add("--ignore-eos", action="store_true", help='send "ignore_eos": true so outputs have a fixed length')
    add("--temperature", type=float, default=0.0, help="sampling temperature (default: %(default)s)")
    add("--api-key", help="sent as the header Authorization: Bearer KEY")
    add("--seed", type=int, default=0, help="seed of random prompts and Poisson arrivals (default: 0)")
    add("--timeout", type=float, default=600.0, help="HTTP timeout in seconds: connecting, and waiting for each chunk "
        "(default: 600)")
    add("--out", help="also write the JSON result to this file (it is always printed)")
    add("--compare-in-process", action="store_true", help="then run the same prompts through "
        "hearth's AsyncLLM in this process and report http_vs_in_process (throughput ratio)")
    add("--model-path", help="model for --compare-in-process (default: AsyncLLM's bundled model)")
    add("--repeats", type=int, default=1, help="with --compare-in-process: alternate the HTTP and "
        "in-process runs this many times and report the median of each (default: 1)")
    add("--warmup", type=int, default=1, help="with --compare-in-process: uncounted rounds of both "
        "before the measured ones (default: 1)")
    add("--in-process-cpus", help="CPU list (e.g. 0 or 0-3) that the in-process engine runs on; "
        "give the server's own CPUs (taskset -c) to compare like with like while this client runs "
        "on others")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark the command line describes; prints (and returns) the result."""
    args = parse_args(argv)
    prompts = (load_prompts(args.prompts_file, args.num_requests) if args.prompts_file
               else random_prompts(args.num_requests, args.prompt_len, args.seed))

    def http() -> dict:
        return asyncio.run(run_http(
            args.url, prompts, args.output_len, args.model, args.endpoint, args.concurrency,
            args.request_rate, args.arrival, args.ignore_eos, args.temperature, args.api_key,
            args.seed, args.timeout))

    if not args.compare_in_process:
        result = http()
    else:
        result = _compare(args, prompts, http)
    result["config"].update(prompt_len=None if args.prompts_file else args.prompt_len,
                            prompts_file=args.prompts_file)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return result


def _compare(args: argparse.Namespace, prompts: list[str], http: Callable[[], dict]) -> dict:
    """HTTP and in-process runs alternated `--repeats` times (after `--warmup` uncounted
    rounds); the median run of each is reported, and http_vs_in_process is the ratio of their
    median throughputs."""
    client_cpus = os.sched_getaffinity(0)
    engine_cpus = parse_cpu_list(args.in_process_cpus) if args.in_process_cpus else client_cpus
    # set before the engine loads: its threads inherit the mask, and OpenMP sizes its team by it
    os.sched_setaffinity(0, engine_cpus)
    from hearth import AsyncLLM

    engine = AsyncLLM(args.model_path)
    runs: dict[str, list[dict]] = {"http": [], "in_process": []}
    try:
        for i in range(args.warmup + args.repeats):
            os.sched_setaffinity(0, client_cpus)  # only this (the main) thread moves
            result = http()
            os.sched_setaffinity(0, engine_cpus)  # the in-process "client" shares the engine's CPUs
            ip = asyncio.run(run_in_process(
                engine, prompts, args.output_len, args.concurrency, args.request_rate,
                args.ignore_eos, args.temperature, args.seed, args.arrival))
            if i >= args.warmup:  # the first runs fill caches and allocators: not counted
                runs["http"].append(result)
                runs["in_process"].append(ip)
    finally:
        engine.shutdown()
        os.sched_setaffinity(0, client_cpus)

    def median_run(results: list[dict]) -> dict:
        return sorted(results, key=lambda r: r["output_token_throughput"])[len(results) // 2]

    result, ip = median_run(runs["http"]), median_run(runs["in_process"])
    result["in_process"] = ip
    result["repeats"] = {k: [r["output_token_throughput"] for r in v] for k, v in runs.items()}
    denom = ip["output_token_throughput"]
    result["http_vs_in_process"] = result["output_token_throughput"] / denom if denom else None
    result["config"].update(client_cpus=sorted(client_cpus), in_process_cpus=sorted(engine_cpus))
    return result


if __name__ == "__main__":
    main()
