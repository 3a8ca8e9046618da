"""benchmarks/engine_suite.py on tiny shapes: the byte counts it reports are the bytes the engine
really holds, and its rows are valid, consistent and survive a JSONL round trip."""

from __future__ import annotations

import argparse
import json

import pytest

from hearth.benchmarks import common, counts, engine_suite, schema

_TINY = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
         "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "eos_token_id": 2}
# untied Llama; tied Qwen2 (q/k/v biases); untied Qwen3 (q/k norms, head_dim != hidden / heads)
VARIANTS = {
    "tiny-llama": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "tie_word_embeddings": False},
    "tiny-qwen2": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "tie_word_embeddings": True},
    "tiny-qwen3": {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "tie_word_embeddings": False,
                   "head_dim": 32},
}


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    """Config .json paths of the tiny variants (the suite accepts them for --shape)."""
    root = tmp_path_factory.mktemp("tiny_shapes")
    out = {}
    for name, extra in VARIANTS.items():
        out[name] = root / f"{name}.json"
        out[name].write_text(json.dumps({**_TINY, **extra}))
    return out


def _head(fmt: str) -> str:
    return "bf16" if fmt == "bf16" else "q8_0"


@pytest.mark.parametrize("fmt", engine_suite.FORMATS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_counts_are_the_bytes_the_engine_holds(configs, tmp_path, variant, fmt):
    from hearth import LLM

    path = common.tiled_random_checkpoint(configs[variant], tmp_path / variant)
    llm = LLM(str(path), quantization=None if fmt == "bf16" else fmt, max_model_len=64, block_size=16,
              num_kv_blocks=5)
    d = counts.Dims.from_config(json.loads(configs[variant].read_text()))
    assert counts.model_weight_bytes(d, fmt, _head(fmt), engine_suite.SMALL) == weight_bytes_per_step(llm)
    caches = [a for pair in llm.engine.runner.kv_caches for a in pair]
    assert counts.kv_bytes(d, 5 * 16, engine_suite.KV) == sum(a.nbytes for a in caches)


def weight_bytes_per_step(llm) -> int:
    """Bytes of the weights the loaded engine holds that a decode step reads: every layer array,
    the final norm and the output head (the embedding is gathered one row per token)."""
    model = llm.engine.runner.model
    total = model.lm_head.nbytes + model.norm.nbytes
    for layer in model.layers:
        total += sum(a.nbytes for a in vars(layer).values() if a is not None)
    return total


def _run(configs, *flags: str) -> list[schema.Result]:
    parser = argparse.ArgumentParser()
    engine_suite.add_arguments(parser)
    args = parser.parse_args(["--shape", str(configs["tiny-qwen2"]), str(configs["tiny-qwen3"]),
                              "--format", "bf16", "q4_0", "--batch", "1", "3", "--prompt-len", "8",
                              "--prefill-len", "24", "--steps", "3", "--repeats", "2", *flags])
    return engine_suite.run(args, quick=True, progress=False)


def _check_fraction(r: schema.Result) -> None:
    """The fraction is the binding one of bytes/s over the read bandwidth and FLOP/s over the
    peak the format's kernels run at."""
    compute = "gemm_fp32" if r.dtype == "bf16" else "int8_dot"
    memory = r.bytes / r.median_s / (r.ceilings["read_GB/s"] * 1e9)
    math = r.flops / r.median_s / (r.ceilings[f"{compute}_TFLOP/s"] * 1e12)
    assert r.fraction == pytest.approx(max(memory, math), rel=1e-9)
    assert r.ceiling == ("read_Bps" if memory > math else compute)
    assert r.gbps == pytest.approx(r.bytes / r.median_s / 1e9) and r.tflops == pytest.approx(r.flops / r.median_s / 1e12)


def test_engine_suite_rows(configs, tmp_path):
    rows = _run(configs)
    assert [(r.shape["model"], r.dtype, r.name, r.batch) for r in rows] == [
        (model, fmt, name, batch) for model in ("tiny-qwen2", "tiny-qwen3") for fmt in ("bf16", "q4_0")
        for name, batch in (("decode", 1), ("decode", 3), ("prefill", 1))]
    back = schema.read(schema.write(rows, tmp_path / "engine.jsonl"))
    assert [r.to_json() for r in back] == [r.to_json() for r in rows]
    for r in rows:
        assert (r.suite, r.backend, r.repeats) == ("engine", "cpu", 2)
        assert r.device == r.machine and r.machine and r.commit
        assert set(r.ceilings) == {"read_GB/s", "copy_GB/s", "update_GB/s", "gemm_fp32_TFLOP/s", "int8_dot_TFLOP/s"}
        d = counts.Dims.from_config(json.loads(configs[r.shape["model"]].read_text()))
        if r.name == "decode":
            # 8 prompt tokens, then 3 timed steps attending to 9, 10 and 11 tokens: 10 in the middle
            assert r.shape == {"model": r.shape["model"], "prompt": 8, "context": 10}
            work = counts.decode_step(d, r.dtype, _head(r.dtype), r.batch, 10, "f32", "f32")
            assert r.extra["tokens_per_s"] == pytest.approx(r.batch / r.median_s)
        else:
            assert r.shape == {"model": r.shape["model"], "prompt": 24}
            work = counts.prefill(d, r.dtype, _head(r.dtype), 24, "f32", "f32")
            assert r.extra["tokens_per_s"] == pytest.approx(24 / r.median_s)
        assert (r.bytes, r.flops) == (work.bytes, work.flops)
        _check_fraction(r)


def test_each_case_is_judged_on_the_memory_probes_beside_it(configs, monkeypatch):
    """The run's memory ceilings are a floor; a case that ran while the probes beside it read
    faster is judged on those (the kernel suite's rule), and never on another case's probes."""
    from hearth.benchmarks import ceilings

    beside = []

    def probe(repeats: int = 2) -> dict[str, float]:
        if repeats != 2:  # the run's start and end (ceilings.cpu): slow moments
            bw = 50e9
        else:  # beside a case: each probe faster than the last, so a case's "after" binds
            beside.append(1e9 * (100 + len(beside)))
            bw = beside[-1]
        return {"read_Bps": bw, "copy_Bps": bw, "update_Bps": bw}

    monkeypatch.setattr(ceilings, "cpu_memory", probe)
    rows = _run(configs, "--format", "q4_0", "--batch", "1")
    assert len(beside) == 2 * len(rows)  # one probe before and one after each case
    for i, r in enumerate(rows):
        assert r.ceilings["read_GB/s"] == pytest.approx(beside[2 * i + 1] / 1e9)
        _check_fraction(r)


def test_quick_fills_only_the_flags_left_out():
    parser = argparse.ArgumentParser()
    engine_suite.add_arguments(parser)
    quick = engine_suite.settings(parser.parse_args(["--steps", "7"]), quick=True)
    assert (quick.shape, quick.format, quick.batch, quick.steps, quick.repeats, quick.prefill_len) == (
        ["qwen2.5-0.5b"], ["bf16", "q8_0"], [1, 4, 16], 7, 3, 64)
    full = engine_suite.settings(parser.parse_args([]), quick=False)
    assert (full.shape, full.format, full.batch, full.steps, full.repeats, full.prefill_len) == (
        list(engine_suite.SHAPES), list(engine_suite.FORMATS), [1, 4, 16, 64], 16, 5, 512)
    with pytest.raises(ValueError, match="--steps"):
        engine_suite.settings(parser.parse_args(["--steps", "0"]), quick=False)


def test_unknown_shape_fails_before_any_work():
    parser = argparse.ArgumentParser()
    engine_suite.add_arguments(parser)
    with pytest.raises(ValueError, match="unknown shape 'no-such-model'"):
        engine_suite.run(parser.parse_args(["--shape", "no-such-model"]), quick=True, progress=False)
