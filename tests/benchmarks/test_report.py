"""The markdown tables carry the rows' figures, and the README block is swapped in place."""

from __future__ import annotations

import dataclasses

import pytest

from hearth.benchmarks import report, schema

CPU = {"read_Bps": 50e9, "gemm_fp32": 200e9, "int8_dot": 900e9}


def dated(r, date="2026-11-21"):
    return dataclasses.replace(r, date=date)


def kernel(name="linear", shape=None, dtype="bf16", times=(250e-6,), nbytes=10_000_000, flops=8_716_288,
           compute="gemm_fp32"):
    return dated(schema.make(name, suite="kernels", backend="cpu", device="EPYC 9R14", dtype=dtype, batch=None,
                             shape=shape or {"M": 1, "K": 896, "N": 4864}, times=list(times), nbytes=nbytes,
                             flops=flops, ceilings=CPU, memory="read_Bps", compute=compute, machine="box",
                             commit="abc1234"))


def decode(model, dtype, batch, tokens_per_s, fraction_bytes):
    # step time batch / tokens_per_s; bytes chosen so that the read fraction is `fraction_bytes` of 50 GB/s
    t = batch / tokens_per_s
    return dated(schema.make("decode", suite="engine", backend="cpu", device="EPYC 9R14", dtype=dtype, batch=batch,
                             shape={"model": model, "prompt": 32, "context": 96}, times=[t],
                             nbytes=round(fraction_bytes * 50e9 * t), ceilings=CPU, memory="read_Bps",
                             machine="box", commit="abc1234", extra={"tokens_per_s": tokens_per_s}))


def serve(concurrency):
    def pcts(p50, p99):
        return {"mean": p50, "p50": p50, "p90": (p50 + p99) / 2, "p99": p99}

    return dated(schema.make("serve", suite="serve", backend="cpu", device="EPYC 9R14", dtype="bf16",
                             batch=concurrency, times=[0.61],
                             shape={"model": "tiny", "prompt_words": 32, "output_len": 64, "requests": 128},
                             machine="box", commit="abc1234",
                             extra={"output_tokens_per_s": 2295.4, "requests_per_s": 35.86,
                                    "ttft_s": pcts(0.029, 0.1234), "tpot_s": pcts(0.0065, 0.0123),
                                    "itl_s": pcts(0.0065, 0.02), "e2e_s": pcts(0.45, 0.9)}))


def table_row(text, first_cell):
    """The cells of the table row starting with `first_cell`."""
    (line,) = [line for line in text.splitlines() if line.startswith(f"| {first_cell} |")]
    return [cell.strip() for cell in line.strip("|").split("|")]


@pytest.mark.parametrize(("value", "text"), [(0.0123, "0.0123"), (0.5, "0.500"), (1.5, "1.50"), (29.24, "29.2"), (5279.4, "5279")])
def test_num_keeps_about_three_digits(value, text):
    assert report.num(value) == text


@pytest.mark.parametrize(("seconds", "text"), [(3e-6, "3.00 µs"), (267e-6, "267 µs"), (0.0316, "31.6 ms"),
                                               (1.234, "1.23 s")])
def test_duration_picks_the_unit(seconds, text):
    assert report.duration(seconds) == text


def test_kernels_table_gives_time_rates_and_the_binding_ceiling():
    rows = [kernel(times=(250e-6, 240e-6, 260e-6, 245e-6, 255e-6)),
            kernel("quant_linear", {"M": 512, "K": 896, "N": 4864}, "q8_0", (0.01,), 5_000_000, 4_462_739_456,
                   "int8_dot")]
    text = report.markdown(rows)
    assert text.startswith("**kernels** on EPYC 9R14 (cpu, machine `box`), commit `abc1234`, 2026-11-21.")
    assert "Ceilings measured in this run: read 50.0 GB/s, gemm_fp32 200 GFLOP/s, int8_dot 900 GFLOP/s." in text
    # 10 MB in 250 us: 40 GB/s, 0.80 of the 50 GB/s read ceiling; the IQR of the repeats is 10 us (4%)
    assert table_row(text, "linear") == ["linear", "M=1 K=896 N=4864", "bf16", "-", "250 µs ±4%", "40.0", "0.0349",
                                         "0.80 read"]
    # 4.46 G int ops in 10 ms: 0.446 TOP/s, about half the int8 peak, which binds over the bandwidth
    assert table_row(text, "quant_linear")[4:] == ["10.0 ms", "0.500", "0.446", "0.50 int8_dot"]


def test_engine_table_gives_tokens_per_s_and_fraction_of_roofline():
    rows = [decode("qwen", "q8_0", 4, 120.4, 0.62), decode("qwen", "bf16", 1, 29.24, 0.87)]
    text = report.markdown(rows)
    assert text.startswith("**engine** on EPYC 9R14")
    lines = [line for line in text.splitlines() if line.startswith("| decode |")]
    assert [line.split("|")[3].strip() for line in lines] == ["bf16", "q8_0"]  # sorted by model, dtype, batch
    assert [c.strip() for c in lines[0].strip("|").split("|")] == ["decode", "qwen", "bf16", "prompt=32 context=96",
                                                                   "1", "29.2", "34.2 ms", "0.87 read"]
    assert [c.strip() for c in lines[1].strip("|").split("|")][4:6] == ["4", "120"]
    assert lines[1].endswith("| 0.62 read |")


def test_serve_table_gives_throughput_and_latency_percentiles():
    text = report.markdown([serve(16), serve(1)])
    assert "**serve** on EPYC 9R14" in text and "Ceilings" not in text  # no ceiling measured, none claimed
    body = [line for line in text.splitlines() if line.startswith("| tiny |")]
    assert [line.split("|")[3].strip() for line in body] == ["1", "16"]
    assert [c.strip() for c in body[0].strip("|").split("|")] == [
        "tiny", "bf16", "1", "128", "2295", "35.9", "29.0 ms", "123 ms", "6.50 ms", "12.3 ms", "450 ms"]


def test_one_table_per_suite_and_run_in_suite_order():
    old_run = dataclasses.replace(kernel(), commit="0000000")
    text = report.markdown([serve(1), decode("qwen", "bf16", 1, 30.0, 0.9), kernel(), old_run])
    heads = [line.split(",")[0] for line in text.splitlines() if line.startswith("**")]
    assert heads == ["**kernels** on EPYC 9R14 (cpu", "**kernels** on EPYC 9R14 (cpu", "**engine** on EPYC 9R14 (cpu",
                     "**serve** on EPYC 9R14 (cpu"]
    assert text.count("| case |") == 2 and text.count("| run |") == 1 and text.count("| concurrency |") == 1
    assert report.markdown([]) == ""


README = """# hearth

## Benchmarks

Some prose.

<!-- benchmarks:begin -->
old table
<!-- benchmarks:end -->

## Next section
"""


def test_update_readme_replaces_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert report.update_readme(readme, "| a | b |\n|---|---|\n") is True
    text = readme.read_text()
    assert text == README.replace("old table", "| a | b |\n|---|---|")
    assert report.update_readme(readme, "| a | b |\n|---|---|") is False  # same block: file untouched
    assert readme.read_text() == text


@pytest.mark.parametrize(("text", "complaint"), [
    ("# hearth\n\nno markers\n", "benchmarks:begin"),
    ("<!-- benchmarks:begin -->\nno end\n", "benchmarks:end"),
    ("<!-- benchmarks:end -->\nx\n<!-- benchmarks:begin -->\n", "comes before"),
    ("<!-- benchmarks:begin -->\n<!-- benchmarks:begin -->\n<!-- benchmarks:end -->\n", "exactly once"),
])
def test_update_readme_refuses_a_readme_without_its_markers(tmp_path, text, complaint):
    readme = tmp_path / "README.md"
    readme.write_text(text)
    with pytest.raises(ValueError, match=complaint):
        report.update_readme(readme, "table")
    assert readme.read_text() == text


def test_missing_statistics_and_a_device_named_after_its_machine_read_cleanly():
    row = dataclasses.replace(serve(1), device="box")  # the CPU suites name the device after the machine
    row.extra["tpot_s"] = None  # serve_suite writes None for a statistic without samples
    text = report.markdown([row])
    assert text.startswith("**serve** on box (cpu), commit `abc1234`")
    assert table_row(text, "tiny")[8:10] == ["-", "-"]
