"""benchmarks/bench_engine_gpu.py without a GPU: every phase (ceiling, start-up, batch-1 decode,
throughput, memory, the markdown table) runs on a tiny shape with the CUDA backend in the kernel
interpreters (tests/engine/interpreter_device.py); every row is a valid hearth.benchmarks.schema Result
whose figures follow from its counted bytes and measured times, and the run's file reads back."""

from __future__ import annotations

import json

import pytest

from hearth.benchmarks import bench_engine_gpu as bench
from hearth.benchmarks import common, counts, schema
from tests.engine.interpreter_device import InterpreterDevice

TINY = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": False, "torch_dtype": "bfloat16"}
COPY_BPS = 2e9  # the stand-in ceiling


class InterpreterGpu:
    """bench_engine_gpu.CudaGpu's interface without CuPy: fixed ceilings, a small stand-in device
    (its reported 16 MiB keep the KV cache sized from "free memory" tiny), no pools to empty."""

    name = "interpreter stand-in"

    def ceilings(self) -> dict:
        return {"copy_Bps": COPY_BPS, "gemm_bf16": 1e12}  # bench_gpu.ceilings()'s keys

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


def test_every_phase_runs_on_a_tiny_shape_and_its_rows_follow_the_schema(tmp_path):
    shape = tmp_path / "tiny.json"
    shape.write_text(json.dumps(TINY))
    plan = bench.Plan(shapes=[str(shape)], formats=["bf16", "q4_0"], throughput=[2], prompt_len=8, decode_tokens=4,
                      repeats=2, tp_prompt_len=8, tp_output_len=4, max_num_seqs=2, max_num_batched_tokens=16,
                      results_dir=tmp_path / "results")
    rows = bench.run(plan, InterpreterGpu())

    assert all(isinstance(r, schema.Result) for r in rows)
    assert sorted((r.name, r.dtype, r.batch) for r in rows) == [
        ("decode", "bf16", 1), ("decode", "q4_0", 1), ("startup", "bf16", None), ("startup", "q4_0", None),
        ("throughput", "bf16", 2)]
    for r in rows:
        schema.validate(r)
        assert (r.suite, r.backend) == ("engine", "cuda") and r.date
        assert r.device == r.machine == InterpreterGpu.name and r.commit == common.commit()
        assert r.median_s > 0 and r.shape["model"] == "tiny" and r.extra["max_num_seqs"] == 2

    matmul_params = counts.Dims.from_config(TINY).matmul_params()
    for r in (r for r in rows if r.name == "decode"):
        t = r.median_s
        weights, kv = r.extra["weight_bytes_per_token"], r.extra["kv_bytes_per_token"]
        assert r.shape == {"model": "tiny", "prompt": 8, "context": 8 + 4 // 2} and r.repeats == 2
        assert weights == _expected_weight_bytes(r.dtype)
        # context (prompt + half the output) x layers x (K, V) x (kv heads x head_dim x bf16)
        assert kv == (8 + 4 // 2) * 2 * 2 * (2 * 16 * 2)
        assert r.bytes == weights + kv and r.flops == 2 * matmul_params
        assert r.ceiling == "copy_Bps" and r.ceilings == {"copy_GB/s": COPY_BPS / 1e9, "gemm_bf16_TFLOP/s": 1.0}
        assert r.fraction == pytest.approx(r.bytes / t / COPY_BPS)
        assert r.gbps == pytest.approx(r.bytes / t / 1e9)
        assert r.extra["roofline_s"] == pytest.approx(r.bytes / COPY_BPS)
        assert r.extra["fraction_of_weight_roofline"] == pytest.approx(weights / COPY_BPS / t)
        assert r.extra["tokens_per_s"] == pytest.approx(1 / t) and r.extra["tokens_per_s"] > 0
        assert len(r.extra["per_repeat_tokens_per_s"]) == 2
        assert r.extra["prefill_s"] > 0 and r.extra["step_p10_s"] <= r.extra["step_p90_s"]
        # targets name the real shapes
        assert r.extra["target_tokens_per_s"] is None and r.extra["meets_target"] is None

    (tp,) = [r for r in rows if r.name == "throughput"]
    assert tp.shape == {"model": "tiny", "prompt": 8, "output": 4} and tp.repeats == 1
    assert tp.bytes is None and tp.fraction is None and tp.ceiling is None
    assert tp.extra["output_tokens"] == 2 * 4 and tp.extra["prompt_tokens"] == 2 * 8
    assert tp.extra["output_tokens_per_s"] == pytest.approx(8 / tp.median_s)
    assert tp.extra["total_tokens_per_s"] == pytest.approx(24 / tp.median_s)
    assert tp.extra["preemptions"] == 0

    for r in (r for r in rows if r.name == "startup"):
        assert r.shape == {"model": "tiny"} and r.repeats == 1 and r.fraction is None
        assert r.extra["gpu_used_GiB"] == pytest.approx(4 / 1024) and r.extra["gpu_total_GiB"] == pytest.approx(16 / 1024)
        assert 0 < r.extra["weights_GiB"] and 0 < r.extra["kv_cache_GiB"] < 16 / 1024
        assert r.extra["weight_bytes_per_token"] == _expected_weight_bytes(r.dtype)

    # the run's one file, then a round trip of the rows through schema.write / schema.read
    (saved,) = (tmp_path / "results").glob("engine-*.jsonl")
    assert saved.name.endswith(f"-{common.commit()}.jsonl")
    assert [s.to_json() for s in schema.read(saved)] == [r.to_json() for r in rows]
    copy = schema.write(rows, tmp_path / "copy.jsonl")
    assert [s.to_json() for s in schema.read(copy)] == [r.to_json() for r in rows]

    table = bench.markdown_table(rows)
    assert "| tiny | bf16 |" in table and "| tiny | q4_0 |" in table and "| tiny bf16 | 2 | 8 / 4 |" in table
    assert "interpreter stand-in; copy bandwidth (ceiling) 2 GB/s" in table


def test_no_record_and_quick_runs_name_their_file(tmp_path):
    shape = tmp_path / "tiny.json"
    shape.write_text(json.dumps(TINY))
    plan = bench.Plan(shapes=[str(shape)], formats=["bf16"], throughput=[], prompt_len=8, decode_tokens=4,
                      repeats=1, tp_prompt_len=8, tp_output_len=4, max_num_seqs=2, max_num_batched_tokens=16,
                      results_dir=tmp_path / "off", save=False)
    assert [r.name for r in bench.run(plan, InterpreterGpu())] == ["decode", "startup"]
    assert not (tmp_path / "off").exists()
    quick = bench.quick(bench.Plan(results_dir=tmp_path))
    assert quick.quick and quick.repeats == 1
    assert bench.save([], quick).name.endswith("-quick.jsonl")


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
