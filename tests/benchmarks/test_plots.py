"""The charts' data steps give the rows' own figures, and every chart is a real PNG."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from hearth.benchmarks import plots, schema

pytest.importorskip("matplotlib")

CPU = {"read_Bps": 40e9, "gemm_fp32": 200e9, "int8_dot": 800e9}
GPU = {"copy_Bps": 4e12, "gemm_bf16": 700e12}


def kernel(name="linear", shape=None, dtype="bf16", t=250e-6, nbytes=10_000_000, flops=9_000_000,
           backend="cpu", device="EPYC", ceilings=CPU, memory="read_Bps", compute="gemm_fp32"):
    return schema.make(name, suite="kernels", backend=backend, device=device, shape=shape or {"M": 1, "K": 896, "N": 4864},
                       dtype=dtype, batch=None, times=[t, t * 1.1, t * 0.9], nbytes=nbytes, flops=flops,
                       ceilings=ceilings, memory=memory, compute=compute, commit="abc1234")


def decode(model, dtype, batch, tokens_per_s=None, t=0.05):
    extra = {} if tokens_per_s is None else {"tokens_per_s": tokens_per_s}
    return schema.make("decode", suite="engine", backend="cpu", device="EPYC", dtype=dtype, batch=batch,
                       shape={"model": model, "prompt": 32, "context": 96}, times=[t], extra=extra)


def pcts(p50):
    return {"mean": p50, "p50": p50, "p90": 2 * p50, "p99": 3 * p50}


def serve(concurrency, tok_s, ttft, tpot, model="tiny"):
    return schema.make("serve", suite="serve", backend="cpu", device="EPYC", dtype="bf16", batch=concurrency,
                       shape={"model": model, "prompt_words": 32, "output_len": 64, "requests": 8 * concurrency},
                       times=[0.5], extra={"output_tokens_per_s": tok_s, "requests_per_s": tok_s / 64,
                                           "ttft_s": pcts(ttft), "tpot_s": pcts(tpot), "e2e_s": pcts(0.5)})


def kernel_rows():
    return [kernel(), kernel(shape={"M": 128, "K": 896, "N": 4864}, t=6e-3, nbytes=12_000_000, flops=1_115_684_864),
            kernel("quant_linear", dtype="q8_0", t=150e-6, nbytes=5_000_000, flops=8_716_288, compute="int8_dot")]


def assert_png(path):
    import matplotlib.image

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 400
    rgb = image[..., :3]
    # a chart has ink on a white page: a blank or one-colour image would have (almost) no spread
    assert (rgb < 0.5).any(axis=-1).mean() > 0.005
    assert rgb.std() > 0.05


def test_roofline_points_are_the_counted_work_over_the_median():
    rows = kernel_rows() + [kernel("rms_norm", flops=None), decode("m", "bf16", 1)]
    points = plots.roofline_points(rows)
    assert len(points) == 3  # the row without FLOPs and the engine row have no place on a roofline
    for (label, intensity, rate, fraction), r in zip(points, rows):
        assert label.startswith(f"{r.name} {r.dtype}")
        assert intensity == pytest.approx(r.flops / r.bytes)
        assert rate == pytest.approx(r.flops / r.median_s)
        assert fraction == r.fraction
    assert points[0][1:3] == pytest.approx((0.9, 9_000_000 / 250e-6))
    assert points[0][0] == "linear bf16 M1 K896 N4864"
    # the bandwidth binds the matvec: 10 MB in 250 us is 40 GB/s, all of the 40 GB/s read ceiling
    assert points[0][3] == pytest.approx(1.0)


def test_roofline_ceilings_come_back_in_base_units():
    roof = plots.roofline_ceilings(kernel_rows() + [kernel(backend="cuda", ceilings=GPU, memory="copy_Bps",
                                                           compute="gemm_bf16")])
    assert roof.memory == pytest.approx({"read": 40e9, "copy": 4e12})
    assert roof.compute == pytest.approx({"gemm_fp32": 200e9, "int8_dot": 800e9, "gemm_bf16": 700e12})


def test_roofline_is_one_png_per_backend_and_device(tmp_path):
    single = plots.roofline(kernel_rows(), tmp_path / "one" / "roofline.png")
    assert single == [tmp_path / "one" / "roofline.png"]
    assert_png(single[0])
    gpu = kernel(backend="cuda", device="NVIDIA H200", ceilings=GPU, memory="copy_Bps", compute="gemm_bf16", t=5e-6)
    both = plots.roofline(kernel_rows() + [gpu], tmp_path / "two" / "roofline.png")
    assert sorted(p.name for p in both) == ["roofline-cpu-epyc.png", "roofline-cuda-nvidia-h200.png"]
    for path in both:
        assert_png(path)


def test_decode_series_is_tokens_per_s_by_batch_per_model_and_dtype(tmp_path):
    rows = [decode("qwen", "bf16", 4, 110.0), decode("qwen", "bf16", 1, 29.5), decode("qwen", "q8_0", 1, 49.0),
            decode("llama", "bf16", 16, t=0.2)]
    series = plots.decode_series(rows)
    assert series == {"qwen bf16": [(1, 29.5), (4, 110.0)], "qwen q8_0": [(1, 49.0)],
                      "llama bf16": [(16, pytest.approx(16 / 0.2))]}  # no figure in extra: batch over step time
    path = plots.decode_vs_batch(rows, tmp_path / "decode.png")
    assert path == tmp_path / "decode.png"
    assert_png(path)


def test_series_labels_name_what_differs_between_series():
    rows = [decode("qwen", "bf16", 1, 30.0), schema.make(
        "decode", suite="engine", backend="cuda", device="H200", dtype="bf16", batch=1,
        shape={"model": "qwen", "prompt": 32, "context": 96}, times=[0.01], extra={"tokens_per_s": 100.0})]
    assert set(plots.decode_series(rows)) == {"qwen bf16 backend=cpu device=EPYC", "qwen bf16 backend=cuda device=H200"}


def test_serve_series_follows_the_load(tmp_path):
    rows = [serve(4, 1500.0, 0.04, 0.007), serve(1, 600.0, 0.01, 0.004), serve(16, 4000.0, 0.16, 0.012)]
    (label, points), = plots.serve_series(rows).items()
    assert label == "tiny bf16"  # the request count grows with the load and does not split the series
    assert [p.concurrency for p in points] == [1, 4, 16]
    assert [p.output_tokens_per_s for p in points] == [600.0, 1500.0, 4000.0]
    assert points[1].ttft_s["p99"] == pytest.approx(0.12) and points[2].tpot_s["p90"] == pytest.approx(0.024)
    path = plots.latency_vs_load(rows, tmp_path / "serve.png")
    assert_png(path)
    rows[0].extra["tpot_s"] = None  # serve_suite writes None for a statistic without samples
    assert plots.serve_series(rows)["tiny bf16"][1].tpot_s == {}
    assert_png(plots.latency_vs_load(rows, tmp_path / "serve-no-tpot.png"))


def test_plot_all_draws_what_the_rows_allow(tmp_path):
    assert plots.plot_all([], tmp_path / "none") == []
    assert not (tmp_path / "none").exists()
    only_kernels = plots.plot_all(kernel_rows(), tmp_path / "k")
    assert [p.name for p in only_kernels] == ["roofline.png"]
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["roofline.png"]
    rows = kernel_rows() + [decode("qwen", "bf16", 1, 30.0), decode("qwen", "bf16", 8, 150.0), serve(1, 600.0, 0.01, 0.004)]
    everything = plots.plot_all(rows, tmp_path / "all")
    assert [p.name for p in everything] == ["roofline.png", "decode_vs_batch.png", "latency_vs_load.png"]
    only_engine = plots.plot_all(rows[3:5], tmp_path / "e")
    assert [p.name for p in only_engine] == ["decode_vs_batch.png"]


def test_missing_matplotlib_names_the_bench_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"`bench` extra"):
        plots.roofline(kernel_rows(), tmp_path / "roofline.png")


def test_importing_the_module_leaves_matplotlib_alone():
    code = "import sys, hearth.benchmarks.plots; assert 'matplotlib' not in sys.modules, 'imported matplotlib'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tempfile.gettempdir())
