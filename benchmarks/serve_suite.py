"""The serve suite: latency against load. A `hearth serve` process on this machine, and at each
concurrency level `--num-requests` streamed completions with `--concurrency` of them in flight
(fixed-length outputs: ignore_eos, greedy). One row per level: its median and interquartile range
are those of the requests' end-to-end latencies; TTFT, TPOT, ITL and throughputs go under `extra`.

Client and server share the machine: the client's CPU time is part of what is measured, as it
would be for any load generator run on the serving host.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from hearth.benchmarks import ceilings, common, schema, serving

REPO = Path(__file__).resolve().parent.parent
# (full run, --quick) values of the flags the user did not give
DEFAULTS = {"concurrency": ([1, 2, 4, 8, 16, 32], [1, 4, 16]), "num_requests": (64, 16), "prompt_len": (32, 32),
            "output_len": (64, 32)}
_DTYPES = {"bfloat16": "bf16", "float16": "f16", "float32": "f32"}
STARTUP_TIMEOUT_S = 120.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The suite's flags; each defaults to its full-run value, or its --quick value with --quick."""
    add = parser.add_argument
    add("--model", default=None, help="model directory or .gguf file to serve (default: the bundled model)")
    add("--concurrency", nargs="+", type=int, help="requests in flight, one load level each "
        "(default 1 2 4 8 16 32; quick: 1 4 16)")
    add("--num-requests", type=int, help="requests per load level (default 64; quick: 16)")
    add("--prompt-len", type=int, help="words per random prompt (default 32)")
    add("--output-len", type=int, help="tokens generated per request (default 64; quick: 32)")


def settings(args: argparse.Namespace, quick: bool) -> argparse.Namespace:
    """The flags with every value the user left out filled in (full-run or quick defaults)."""
    out = common.with_defaults(args, DEFAULTS, quick, model=getattr(args, "model", None))
    if min(out.concurrency) < 1 or min(out.num_requests, out.prompt_len, out.output_len) < 1:
        raise ValueError("--concurrency, --num-requests, --prompt-len and --output-len must be at least 1")
    return out


def run(args: argparse.Namespace, quick: bool, progress: bool) -> list[schema.Result]:
    """Serve the model and measure every load level; one Result per level."""
    from tqdm import tqdm

    s = settings(args, quick)
    name, dtype = model_name(s.model), model_dtype(s.model)
    machine, commit = ceilings.cpu_name(), common.commit()
    rows = []
    with hearth_server(s.model, name, max(s.concurrency), s.num_requests) as url:
        # warm-up: page in the weights, size the server's buffers; not measured
        _load(url, name, serving.random_prompts(2, s.prompt_len, seed=1), 4, 2)
        for level in tqdm(s.concurrency, desc="serve", unit="level", file=sys.stderr, disable=not progress):
            prompts = serving.random_prompts(s.num_requests, s.prompt_len, seed=level)
            records, duration = _load(url, name, prompts, s.output_len, level)
            rows.append(_result(records, duration, s, level, name, dtype, machine, commit))
    return rows


def _load(url: str, model: str, prompts: list[str], output_len: int,
          concurrency: int) -> tuple[list[serving.RequestRecord], float]:
    """One load level through serving.run_http: every request's record (a row's spread needs
    each latency) and the wall time."""
    out = asyncio.run(serving.run_http(url, prompts, output_len, model=model, concurrency=concurrency,
                                       ignore_eos=True, temperature=0.0, keep_records=True))
    return out["records"], out["duration_s"]


def _result(records: list[serving.RequestRecord], duration: float, s: argparse.Namespace, level: int,
            name: str, dtype: str, machine: str, commit: str) -> schema.Result:
    summary = serving.summarize(records, duration)
    if summary["failed"]:
        raise RuntimeError(f"{summary['failed']} of {len(records)} requests failed at concurrency {level}: "
                           f"{'; '.join(summary['errors'])}")
    short = [r.output_tokens for r in records if r.output_tokens != s.output_len]
    if short:  # ignore_eos: every output has the asked length, or the latencies compare unlike work
        raise RuntimeError(f"{len(short)} requests at concurrency {level} returned {short[:5]} tokens, "
                           f"not {s.output_len}")
    extra = {"output_tokens_per_s": summary["output_token_throughput"],
             "requests_per_s": summary["request_throughput"], "duration_s": duration}
    for key, out in (("ttft_ms", "ttft_s"), ("tpot_ms", "tpot_s"), ("itl_ms", "itl_s"), ("e2el_ms", "e2e_s")):
        extra[out] = _seconds(summary[key])
    return schema.make("serve", suite="serve", backend="cpu", device=machine, machine=machine, commit=commit,
                       shape={"model": name, "prompt_words": s.prompt_len, "output_len": s.output_len,
                              "requests": s.num_requests},
                       dtype=dtype, batch=level, times=[r.e2el for r in records], extra=extra)


def _seconds(stats_ms: dict) -> dict | None:
    """serving.summarize's statistics (ms; mean, median, p90, p99) in seconds, the median as p50."""
    if stats_ms["mean"] is None:
        return None  # e.g. TPOT of 1-token outputs
    return {"mean": stats_ms["mean"] / 1e3, "p50": stats_ms["median"] / 1e3, "p90": stats_ms["p90"] / 1e3,
            "p99": stats_ms["p99"] / 1e3}


def model_name(model: str | None) -> str:
    """The name the server is asked to serve the model under (and the rows' shape["model"])."""
    if model is None:
        from hearth.server.endpoint.spec import DEFAULT_MODEL_NAME

        return DEFAULT_MODEL_NAME
    return Path(model).name


def model_dtype(model: str | None) -> str:
    """The weights' dtype as stored, from config.json ("gguf" for a GGUF file, whose formats vary
    by tensor)."""
    if model is not None and str(model).endswith(".gguf"):
        return "gguf"
    if model is None:
        from hearth.engine.frontends.builder import DEFAULT_MODEL_DIR

        model = str(DEFAULT_MODEL_DIR)
    cfg = json.loads((Path(model) / "config.json").read_text())
    dtype = str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32").removeprefix("torch.")
    return _DTYPES.get(dtype, dtype)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def hearth_server(model: str | None, name: str, max_num_seqs: int, max_queued: int) -> Iterator[str]:
    """A `hearth serve` subprocess on a free local port, ready (GET /health is 200) on entry and
    terminated on exit, whatever happened in between; yields its base URL."""
    port = _free_port()
    cmd = [sys.executable, "-m", "hearth", "serve", *([model] if model else []), "--port", str(port),
           "--served-model-name", name, "--max-num-seqs", str(max(64, max_num_seqs)),
           "--max-queued-requests", str(max(256, max_queued)), "--shutdown-timeout", "5"]
    # the log goes to a file, not a pipe: a pipe nobody reads would stall a chatty server
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_ready(proc, url, log)
            yield url
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _wait_ready(proc: subprocess.Popen, url: str, log) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"hearth serve exited with status {proc.returncode}:\n{log.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass  # not listening yet, or loading (503)
        time.sleep(0.1)
    log.seek(0)
    raise RuntimeError(f"hearth serve was not ready after {STARTUP_TIMEOUT_S:.0f} s:\n{log.read()[-3000:]}")
