"""The one result schema: rows round-trip, and anything off the schema is named."""

from __future__ import annotations

import json

import pytest

from hearth.benchmarks import schema

CEILINGS = {"read_Bps": 30e9, "gemm_fp32": 200e9, "int8_dot": 900e9}


def _row(**over) -> schema.Result:
    args = dict(suite="kernels", backend="cpu", device="test cpu", shape={"M": 1, "K": 64, "N": 32}, dtype="bf16",
                batch=1, times=[1e-3, 1.2e-3, 0.9e-3, 1.1e-3], nbytes=24_000_000, flops=4096, ceilings=CEILINGS,
                memory="read_Bps", compute="gemm_fp32", machine="m", commit="abc")
    return schema.make("linear", **(args | over))


def test_make_computes_median_spread_rates_and_the_binding_ceiling():
    r = _row()
    assert r.median_s == pytest.approx(1.05e-3) and r.repeats == 4
    assert r.spread_s == pytest.approx(1.125e-3 - 0.975e-3)  # inclusive quartiles of the 4 timings
    assert r.gbps == pytest.approx(24e6 / 1.05e-3 / 1e9) and r.tflops == pytest.approx(4096 / 1.05e-3 / 1e12)
    assert r.ceiling == "read_Bps" and r.fraction == pytest.approx(24e6 / 1.05e-3 / 30e9)
    assert r.ceilings == pytest.approx({"read_GB/s": 30.0, "gemm_fp32_TFLOP/s": 0.2, "int8_dot_TFLOP/s": 0.9})


def test_a_compute_bound_case_is_judged_against_the_compute_ceiling():
    # intensity 1e4 FLOP/B is far right of the ridge (200e9 / 30e9 = 6.7 FLOP/B)
    r = _row(nbytes=10_000, flops=100_000_000, times=[1e-3])
    assert r.ceiling == "gemm_fp32" and r.fraction == pytest.approx(1e8 / 1e-3 / 200e9)
    assert r.spread_s == 0 and r.repeats == 1


def test_rows_round_trip_through_jsonl(tmp_path):
    rows = [_row(), _row(dtype="q8_0", compute="int8_dot", extra={"note": [1, 2]}),
            _row(suite="serve", nbytes=None, flops=None, memory=None, compute=None, ceilings={})]
    path = schema.write(rows, tmp_path / "r.jsonl")
    assert schema.read(path) == rows
    line = json.loads(path.read_text().splitlines()[0])
    for key in ("name", "backend", "device", "shape", "dtype", "batch", "median_s", "spread_s", "GB/s", "TFLOP/s",
                "fraction", "ceiling", "machine", "commit", "date"):
        assert key in line


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("median_s"), "missing the field 'median_s'"),
    (lambda d: d.update(median_s=-1.0), "median_s must be a positive time"),
    (lambda d: d.update(batch="4"), "field 'batch'"),
    (lambda d: d.update(suite="nightly"), "suite 'nightly'"),
    (lambda d: d.update(ceiling=None), "a fraction needs the ceiling"),
    (lambda d: d.update(tokens_per_s=3.0), "unknown result fields ['tokens_per_s']"),
    (lambda d: d.update(repeats=True), "field 'repeats'"),
])
def test_off_schema_rows_are_named(tmp_path, change, message):
    good = _row().to_json()
    bad = dict(good)
    change(bad)
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match="r.jsonl:2: .*" + message.replace("[", r"\[").replace("]", r"\]")
                       .replace("(", r"\(")):
        schema.read(path)


def test_make_needs_exactly_one_source_of_timings():
    with pytest.raises(ValueError, match="either the timings"):
        _row(times=None)
    with pytest.raises(ValueError, match="either the timings"):
        _row(stats=(1e-3, 0.0, 3))


def test_latest_picks_the_newest_run_of_a_suite(tmp_path):
    for name in ("kernels-2026-11-20-100000-aaa.jsonl", "kernels-2026-11-21-090000-bbb.jsonl",
                 "kernels-2026-11-22-090000-ccc-quick.jsonl", "engine-2026-11-23-000000-ddd.jsonl"):
        (tmp_path / name).write_text("")
    assert schema.latest(tmp_path, "kernels").name == "kernels-2026-11-21-090000-bbb.jsonl"
    assert schema.latest(tmp_path, "kernels", quick=True).name.endswith("ccc-quick.jsonl")
    assert schema.latest(tmp_path, "serve") is None


def test_every_committed_result_file_follows_the_schema():
    files = sorted(schema.default_results_dir().glob("*.jsonl"))
    assert files, "benchmarks/results holds no result files"
    for path in files:
        assert schema.read(path), path
