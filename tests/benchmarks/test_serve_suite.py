"""benchmarks/serve_suite.py against a real `hearth serve` of the tiny random model: one valid
row per load level with consistent latency figures, and failed requests raise (and the server
is stopped all the same)."""

from __future__ import annotations

import argparse
import contextlib
import urllib.request

import pytest

from hearth.benchmarks import schema, serve_suite

# requests per level, tokens per request: enough tokens that a stream is unlikely to arrive as one merged
# delta on a fast machine (then it has no inter-token gaps to measure)
N, OUT = 6, 16


def _args(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve_suite.add_arguments(parser)
    return parser.parse_args(list(flags))


def _ordered(stats: dict) -> bool:
    return 0 < stats["p50"] <= stats["p90"] <= stats["p99"] and stats["mean"] > 0


def test_serve_suite_rows(tiny_model_dir, tmp_path):
    args = _args("--model", str(tiny_model_dir), "--concurrency", "1", "3", "--num-requests", str(N),
                 "--prompt-len", "5", "--output-len", str(OUT))
    rows = serve_suite.run(args, quick=False, progress=False)
    assert [r.batch for r in rows] == [1, 3]
    back = schema.read(schema.write(rows, tmp_path / "serve.jsonl"))
    assert [r.to_json() for r in back] == [r.to_json() for r in rows]
    for r in rows:
        assert (r.suite, r.name, r.backend, r.repeats) == ("serve", "serve", "cpu", N)  # one time per request
        assert r.shape == {"model": tiny_model_dir.name, "prompt_words": 5, "output_len": OUT, "requests": N}
        assert r.dtype == "f32"  # tests/model_factory.py saves fp32 weights
        assert r.device == r.machine and r.machine and r.commit
        assert r.bytes is r.flops is r.fraction is r.ceiling is None and r.ceilings == {}
        x = r.extra
        for key in ("ttft_s", "tpot_s", "itl_s", "e2e_s"):
            assert _ordered(x[key]), (key, x[key])
        assert x["ttft_s"]["p99"] <= x["e2e_s"]["p99"] and x["ttft_s"]["mean"] < x["e2e_s"]["mean"]
        assert r.median_s == pytest.approx(x["e2e_s"]["p50"])  # the row's time is the median request's
        assert x["requests_per_s"] == pytest.approx(N / x["duration_s"])
        assert x["output_tokens_per_s"] == pytest.approx(N * OUT / x["duration_s"])


def test_failed_requests_raise_and_the_server_stops(tiny_model_dir, monkeypatch):
    urls = []
    real = serve_suite.hearth_server

    @contextlib.contextmanager
    def spy(*args, **kwargs):
        with real(*args, **kwargs) as url:
            urls.append(url)
            yield url

    monkeypatch.setattr(serve_suite, "hearth_server", spy)
    # 600 words do not fit the tiny model's 512 positions: every request is refused
    args = _args("--model", str(tiny_model_dir), "--concurrency", "2", "--num-requests", "3",
                 "--prompt-len", "600", "--output-len", "2")
    with pytest.raises(RuntimeError, match="3 of 3 requests failed at concurrency 2: HTTP 400"):
        serve_suite.run(args, quick=False, progress=False)
    assert len(urls) == 1
    with pytest.raises(OSError):
        urllib.request.urlopen(urls[0] + "/health", timeout=2)


def test_quick_fills_only_the_flags_left_out():
    quick = serve_suite.settings(_args("--num-requests", "5"), quick=True)
    assert (quick.model, quick.concurrency, quick.num_requests, quick.prompt_len, quick.output_len) == (
        None, [1, 4, 16], 5, 32, 32)
    full = serve_suite.settings(_args("--model", "m"), quick=False)
    assert (full.model, full.concurrency, full.num_requests, full.prompt_len, full.output_len) == (
        "m", [1, 2, 4, 8, 16, 32], 64, 32, 64)
    with pytest.raises(ValueError, match="at least 1"):
        serve_suite.settings(_args("--concurrency", "0"), quick=False)
