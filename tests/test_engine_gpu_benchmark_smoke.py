"""benchmarks/bench_engine_gpu.py without a GPU: every phase (ceiling, start-up, batch-1 decode,
throughput, memory, the markdown table) runs on a tiny shape with the CUDA backend in the kernel
interpreters (tests/engine/interpreter_device.py), and each row's figures follow from its counted
bytes and measured times."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_engine_gpu as bench
from benchmarks import common
from tests.engine.interpreter_device import InterpreterDevice

TINY = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
COPY_BPS = 2e9  # the stand-in ceiling


class InterpreterGpu:
    """bench_engine_gpu.CudaGpu's interface without CuPy: a fixed ceiling, a small stand-in device
    (its reported 16 MiB keep the KV cache sized from "free memory" tiny), no pools to empty."""

    name = "interpreter stand-in"

    def ceilings(self) -> dict:
        return {"copy_Bps": COPY_BPS, "gemm_flops": 1e12}

    def engine_device(self):
        return InterpreterDevice(total_bytes=16 << 20, used_bytes=4 << 20)

    def pool_bytes(self, device) -> dict:
        return {}

    def release(self) -> float:
        return 0.0


def _matrix_bytes(n: int, k: int, fmt: str) -> int:
    """Device bytes of an [n, k] matrix: bf16, or packed quants + fp16 scales per 32 values."""
    quants = {"bf16": 2 * n * k, "q8_0": n * k, "q4_0": n * k // 2}[fmt]
    return quants + (0 if fmt == "bf16" else 2 * n * k // 32)


def _expected_weight_bytes(fmt: str) -> int:
    h, inter, v, d = TINY["hidden_size"], TINY["intermediate_size"], TINY["vocab_size"], 16
    q, kv = TINY["num_attention_heads"] * d, TINY["num_key_value_heads"] * d
    shapes = [(q, h), (kv, h), (kv, h), (h, q), (inter, h), (inter, h), (h, inter)]
    per_layer = sum(_matrix_bytes(n, k, fmt) for n, k in shapes) + 2 * 4 * h  # + two fp32 norms
    head = _matrix_bytes(v, h, "bf16" if fmt == "bf16" else "q8_0")  # a quantized model's head is q8_0
    return TINY["num_hidden_layers"] * per_layer + head + 4 * h


def test_every_phase_runs_on_a_tiny_shape_and_its_figures_follow_from_bytes_and_times(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    shape = tmp_path / "tiny.json"
    shape.write_text(json.dumps(TINY))
    plan = bench.Plan(shapes=[str(shape)], formats=["bf16", "q4_0"], throughput=[2], prompt_len=8, decode_tokens=4,
                      repeats=1, tp_prompt_len=8, tp_output_len=4, max_num_seqs=2, max_num_batched_tokens=16)
    rows = bench.run(plan, InterpreterGpu())

    assert sorted((r["name"], r["dtype"]) for r in rows) == [
        ("engine_decode_batch1", "bf16"), ("engine_decode_batch1", "q4_0"), ("engine_startup", "bf16"),
        ("engine_startup", "q4_0"), ("engine_throughput", "bf16")]
    for r in rows:
        assert r["backend"] == "cuda" and r["gpu"] == InterpreterGpu.name and r["date"]
        assert r["copy_GB/s"] == pytest.approx(COPY_BPS / 1e9) and r["median_s"] > 0
        assert r["shape"]["model"] == "tiny"

    for r in (r for r in rows if r["name"] == "engine_decode_batch1"):
        t, nbytes = r["median_s"], r["weight_bytes_per_token"]
        assert nbytes == _expected_weight_bytes(r["dtype"])
        assert r["tokens_per_s"] == pytest.approx(1 / t) and r["tokens_per_s"] > 0
        assert r["GB/s"] == pytest.approx(nbytes / t / 1e9)
        assert r["roofline_s"] == pytest.approx(nbytes / COPY_BPS)
        assert r["fraction_of_roofline"] == pytest.approx(nbytes / COPY_BPS / t)
        assert r["pct_of_ceiling"] == pytest.approx(100 * r["fraction_of_roofline"])
        # context (prompt + half the output) x layers x (K, V) x (kv heads x head_dim x bf16)
        assert r["kv_bytes_per_token"] == (8 + 4 // 2) * 2 * 2 * (2 * 16 * 2)
        assert r["prefill_s"] > 0 and r["step_p10_s"] <= r["step_p90_s"]
        assert r["target_tokens_per_s"] is None and r["meets_target"] is None  # targets name the real shapes

    (tp,) = [r for r in rows if r["name"] == "engine_throughput"]
    assert tp["concurrency"] == 2 and tp["output_tokens"] == 2 * 4 and tp["prompt_tokens"] == 2 * 8
    assert tp["output_tokens_per_s"] == pytest.approx(8 / tp["median_s"])
    assert tp["total_tokens_per_s"] == pytest.approx(24 / tp["median_s"])

    for r in (r for r in rows if r["name"] == "engine_startup"):
        assert r["startup_s"] == r["median_s"] > 0
        assert r["gpu_used_GiB"] == pytest.approx(4 / 1024) and r["gpu_total_GiB"] == pytest.approx(16 / 1024)
        assert 0 < r["weights_GiB"] and 0 < r["kv_cache_GiB"] < 16 / 1024
        assert r["weight_bytes_per_token"] == _expected_weight_bytes(r["dtype"])

    saved = [json.loads(line) for line in (tmp_path / "results" / "engine_gpu.jsonl").read_text().splitlines()]
    assert [s["name"] for s in saved] == [r["name"] for r in rows]
    assert all({"machine", "commit", "date", "gpu", "copy_GB/s"} <= s.keys() for s in saved)

    table = bench.markdown_table(rows)
    assert "| tiny | bf16 |" in table and "| tiny | q4_0 |" in table and "| tiny bf16 | 2 | 8 / 4 |" in table


def test_plan_defaults_cover_issue_8_and_the_cli_parses(capsys):
    plan = bench.Plan()
    assert plan.tp_shape() == "llama-3.1-8b" and plan.max_model_len() >= 1024 + 256
    assert bench.quick(plan).decode_tokens < plan.decode_tokens
    assert bench.Plan(shapes=["llama-3.2-1b"]).tp_shape() == "llama-3.2-1b"
    assert bench.Plan(throughput=[]).tp_shape() is None
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(flag in out for flag in ("--shapes", "--formats", "--throughput", "--quick"))
    with pytest.raises(ValueError, match="unknown shape"):
        bench.main(["--shapes", "llama-9b"])
