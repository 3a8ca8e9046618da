"""Comparing two runs: ratios, and regressions flagged only beyond the measured noise."""

from __future__ import annotations

import json

import pytest

from hearth.benchmarks import compare, schema
from hearth.benchmarks.cli import main


def _case(median: float, spread_frac: float = 0.01, repeats: int = 20, **over) -> schema.Result:
    times = [median * (1 + spread_frac * x) for x in (-1, -0.5, 0, 0.5, 1)] * (repeats // 5)
    args = dict(suite="kernels", backend="cpu", device="d", shape={"M": 1}, dtype="bf16", batch=1, times=times)
    return schema.make(over.pop("name", "linear"), **(args | over))


def _verdicts(old, new, **kw):
    return {r.label.split("[")[0]: r.verdict for r in compare.compare(old, new, **kw)}


def test_identical_runs_are_the_same_and_a_2x_slowdown_is_a_regression():
    old = [_case(1e-3), _case(2e-3, name="attention")]
    rows = compare.compare(old, [_case(1e-3), _case(4e-3, name="attention")])
    assert [r.verdict for r in rows] == ["same", "slower"]
    assert rows[1].speedup == pytest.approx(0.5)
    assert _verdicts(old, [_case(0.5e-3), _case(2e-3, name="attention")]) == {"linear": "faster", "attention": "same"}


def test_changes_inside_the_noise_or_under_the_floor_are_not_flagged():
    # 3% slower with tight repeats: under the 5% floor
    assert _verdicts([_case(1e-3)], [_case(1.03e-3)]) == {"linear": "same"}
    # 20% slower, but the repeats spread +-60%: the noise threshold exceeds the change
    assert _verdicts([_case(1e-3, 0.6, repeats=5)], [_case(1.2e-3, 0.6, repeats=5)]) == {"linear": "same"}
    # the same 20% with tight repeats is a regression
    assert _verdicts([_case(1e-3)], [_case(1.2e-3)]) == {"linear": "slower"}
    # and a lower floor flags a 3% change whose noise is far smaller
    assert _verdicts([_case(1e-3, 0.001)], [_case(1.03e-3, 0.001)], floor=0.01) == {"linear": "slower"}


def test_repeated_runs_of_a_case_in_one_file_widen_its_noise():
    # three runs whose medians differ by +-15% although each run's repeats are tight
    drifting = [_case(1e-3 * f) for f in (0.85, 1.0, 1.15)]
    assert compare.summarize(drifting)[drifting[0].key()].noise == pytest.approx(0.15, rel=0.01)
    assert _verdicts(drifting, [_case(1.2e-3)]) == {"linear": "same"}
    assert _verdicts(drifting, [_case(2e-3)]) == {"linear": "slower"}


def test_cases_on_one_side_only_are_listed():
    rows = compare.compare([_case(1e-3)], [_case(1e-3, name="rope")])
    assert {(r.label.split("[")[0], r.verdict) for r in rows} == {("linear", "gone"), ("rope", "new")}
    assert "1 only on one side" not in compare.table(rows) and "2 only on one side" in compare.table(rows)


def test_cli_compare_prints_the_table_and_fails_on_regression_when_asked(tmp_path, capsys):
    a = schema.write([_case(1e-3)], tmp_path / "a.jsonl")
    b = schema.write([_case(3e-3)], tmp_path / "b.jsonl")
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "**SLOWER**" in out and "0.333x" in out
    assert main(["compare", str(a), str(b), "--fail-on-regression"]) == 1
    assert main(["compare", str(a), str(a), "--fail-on-regression"]) == 0
    assert main(["compare", str(a), str(tmp_path / "missing.jsonl")]) == 2
    assert "no such result file" in capsys.readouterr().err


def test_a_saved_pytest_benchmark_run_is_read_with_its_ceilings(tmp_path):
    data = {"machine_info": {"hearth": {"ceilings": {"read_Bps": 20e9, "gemm_fp32": 100e9}, "device": "cpu x",
                                        "commit": "abc1234", "quick": True}},
            "datetime": "2026-11-21T10:00:00", "benchmarks": [{
                "name": "bench_linear[1-64-32-bf16]",
                "stats": {"median": 4e-6, "iqr": 1e-6, "rounds": 12, "min": 3e-6, "iterations": 2},
                "extra_info": {"case": "linear", "backend": "cpu", "shape": {"M": 1, "K": 64, "N": 32},
                               "dtype": "bf16", "batch": 1, "bytes": 4480, "flops": 4096, "memory": "read_Bps",
                               "compute": "gemm_fp32", "calls": 2,
                               "ceilings": {"read_Bps": 40e9, "copy_Bps": 30e9}}}]}
    path = tmp_path / "0001_run.json"
    path.write_text(json.dumps(data))
    (r,) = compare.load(path)
    assert (r.name, r.device, r.commit, r.date, r.repeats) == ("linear", "cpu x", "abc1234", "2026-11-21", 12)
    assert r.median_s == pytest.approx(2e-6) and r.spread_s == pytest.approx(0.5e-6)  # per call: 2 calls a round
    # the bandwidth probed beside the case (40 GB/s) beat the run's (20 GB/s): the case is judged on it
    assert r.ceiling == "read_Bps" and r.fraction == pytest.approx(4480 / 2e-6 / 40e9)
    assert r.ceilings["read_GB/s"] == 40 and r.ceilings["gemm_fp32_TFLOP/s"] == 0.1
    del data["machine_info"]["hearth"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="not a run of hearth's kernel suite"):
        compare.load(path)
