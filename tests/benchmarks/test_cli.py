"""The benchmark command end to end: `python -m hearth.benchmarks all --quick` (what a user runs first),
then compare, plot and report on its files; and `hearth bench` reaching the same parser."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from hearth.benchmarks import compare, schema
from hearth.cli import main as hearth



def _bench(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hearth.benchmarks", *args], cwd=tempfile.gettempdir(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    t0 = time.perf_counter()
    proc = _bench("all", "--quick", "--results-dir", str(out), "--no-progress")
    print(f"benchmarks all --quick: {time.perf_counter() - t0:.0f} s")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return out


def test_quick_run_writes_one_schema_file_per_suite(quick_run):
    for suite in ("kernels", "engine", "serve"):
        path = schema.latest(quick_run, suite, quick=True)
        assert path is not None, f"no {suite} results in {sorted(p.name for p in quick_run.iterdir())}"
        rows = schema.read(path)
        assert rows and all(r.suite == suite and r.date and r.machine and r.commit for r in rows)
    kernels = schema.read(schema.latest(quick_run, "kernels", quick=True))
    assert {r.dtype for r in kernels if r.name == "linear"} == {"bf16", "q8_0", "q4_0"}
    # the matvec on one cache-resident copy: its instruction-bound rate, beside the one from memory
    assert [(r.dtype, r.shape) for r in kernels if r.name == "linear_in_cache"] == [("q4_0", {"M": 1, "K": 896, "N": 4864})]
    for r in kernels:  # every kernel case is judged against a ceiling measured in this run
        assert r.bytes > 0 and r.fraction > 0 and r.ceiling is not None
        assert r.ceiling.removesuffix("_Bps") in {k.split("_GB/s")[0].split("_TFLOP/s")[0] for k in r.ceilings}


def test_the_saved_pytest_benchmark_run_reads_back_as_the_same_cases(quick_run):
    (saved,) = quick_run.glob("pytest-benchmark/*/*.json")
    from_json = compare.load(saved)
    from_jsonl = [r for r in schema.read(schema.latest(quick_run, "kernels", quick=True)) if r.backend == "cpu"]
    assert [r.key() for r in from_json] == [r.key() for r in from_jsonl]
    assert [r.median_s for r in from_json] == [r.median_s for r in from_jsonl]


def test_compare_plot_and_report_work_on_the_quick_run(quick_run):
    kernels = schema.latest(quick_run, "kernels", quick=True)
    proc = _bench("compare", str(kernels), str(kernels), "--fail-on-regression")
    assert proc.returncode == 0 and "0 slower beyond noise" in proc.stdout, proc.stdout + proc.stderr
    proc = _bench("plot", "--results-dir", str(quick_run))
    assert proc.returncode == 0, proc.stderr
    pngs = sorted(p.name for p in (quick_run / "plots").glob("*.png"))
    assert any("roofline" in p for p in pngs) and any("decode" in p for p in pngs) and any("load" in p for p in pngs)
    proc = _bench("report", "--results-dir", str(quick_run))
    assert proc.returncode == 0 and proc.stdout.count("| --- |") >= 3, proc.stdout + proc.stderr


def test_hearth_bench_is_the_same_command(capsys):
    with pytest.raises(SystemExit) as exc:
        hearth(["bench", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("kernels", "engine", "serve", "compare", "plot", "report"):
        assert command in out
    assert hearth(["bench", "report", "--results-dir", "/nonexistent-dir"]) == 2
    assert "no result files" in capsys.readouterr().err
