"""GPU kernel benchmarks: each kernel's rate as a fraction of ceilings measured in the same run.

    python benchmarks/bench_gpu.py [--model llama-3.2-1b]   # on a CUDA device, one run (< 10 min)

Ceilings, measured first: device-to-device copy bandwidth (bytes read + written per second of a
large `dst[...] = src`) and the cuBLAS bf16 GEMM rate (8192^3 through CuPy). Memory-bound kernels
(decode-size matvecs, decode attention, norms, sampling) report GB/s (every byte read or written
once) as a fraction of the copy bandwidth; compute-bound ones (prefill attention, batched
matmuls) report TFLOP/s as a fraction of the GEMM rate. Shapes: Llama-3.1-8B and Llama-3.2-1B
(benchmarks/model_shapes), batches 1, 16, 64, 256. Times are CUDA-event medians over rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import SHAPES, record

BATCHES = (1, 16, 64, 256)
MODELS = ("llama-3.1-8b", "llama-3.2-1b")


@dataclass
class Case:
    """One kernel at one shape: `run` launches it once; bytes/flops are what one launch moves/does."""

    name: str
    shape: dict
    dtype: str
    run: Callable[[], Any]
    nbytes: int
    flops: int = 0
    compute_bound: bool = False  # judged against the GEMM rate (else against the copy bandwidth)


class Device:
    """Arrays and timing on the GPU through CuPy. (tests/test_gpu_benchmark_smoke.py drives the
    same cases through a stand-in with torch CPU tensors in Triton's interpreter: `smoke` True.)"""

    smoke = False

    def __init__(self) -> None:
        import cupy

        self.cupy = cupy

    def randn(self, shape, dtype: str, scale: float = 1.0):
        host = np.random.default_rng(0).standard_normal(shape, dtype=np.float32) * scale
        import ml_dtypes

        return self.cupy.asarray(host.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype))

    def asarray(self, host: np.ndarray):
        return self.cupy.asarray(host)

    def time(self, fn: Callable[[], Any], rounds: int = 5, per_round: int = 20) -> tuple[float, float]:
        """(median, max - min) seconds per call, from CUDA events around `per_round` calls."""
        fn()  # compile, load, warm the caches
        times = []
        for _ in range(rounds):
            start, end = self.cupy.cuda.Event(), self.cupy.cuda.Event()
            start.record()
            for _ in range(per_round):
                fn()
            end.record()
            end.synchronize()
            times.append(self.cupy.cuda.get_elapsed_time(start, end) / 1e3 / per_round)
        return statistics.median(times), max(times) - min(times)


def ceilings(dev: Device) -> dict:
    """Copy bandwidth (B/s, read + write) and bf16 GEMM rate (FLOP/s) measured now."""
    if dev.smoke:
        return {"copy_Bps": 1e9, "gemm_flops": 1e9, "gemm_dtype": "none (interpreter)"}
    cp = dev.cupy
    n = 1 << 30
    src, dst = cp.ones(n, cp.uint8), cp.empty(n, cp.uint8)
    t, _ = dev.time(lambda: dst.__setitem__(Ellipsis, src), per_round=5)
    copy = 2 * n / t
    size = 8192
    try:
        a = dev.randn((size, size), "bfloat16")
        gemm_dtype = "bfloat16"
    except (TypeError, ValueError):  # a CuPy without ml_dtypes bfloat16: fp16 runs the same tensor cores
        a = dev.randn((size, size), "float16")
        gemm_dtype = "float16"
    c = cp.empty_like(a)
    t, _ = dev.time(lambda: cp.matmul(a, a, out=c), per_round=5)
    return {"copy_Bps": copy, "gemm_flops": 2 * size**3 / t, "gemm_dtype": gemm_dtype}


def model_dims(name: str, smoke: bool) -> dict:
    cfg = json.loads((SHAPES / f"{name}.json").read_text())
    heads, kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    d = {"hidden": cfg["hidden_size"], "inter": cfg["intermediate_size"], "heads": heads, "kv_heads": kv,
         "head_dim": cfg.get("head_dim") or cfg["hidden_size"] // heads, "vocab": cfg["vocab_size"]}
    if smoke:  # the interpreter runs Python per program: same code paths, toy sizes
        d = {"hidden": 64, "inter": 96, "heads": 4, "kv_heads": 2, "head_dim": 16, "vocab": 200}
    return d


def cases_for(dev: Device, model: str, batch: int) -> list[Case]:
    """Every kernel at this model's shapes and this batch size (decode-like: one token per sequence)."""
    from benchmarks.gpu_cases import (
        attention_cases,
        linear_cases,
        pointwise_cases,
        sampling_cases,
    )

    dims = model_dims(model, dev.smoke)
    context = 64 if dev.smoke else (8192 if batch == 1 else 1024)
    out = []
    for make in (linear_cases, attention_cases, pointwise_cases, sampling_cases):
        out += make(dev, dims, batch, context)
    for c in out:
        c.shape = {"model": model, "batch": batch, **c.shape}
    return out


def run(dev, save: bool, models=MODELS, batches=BATCHES) -> list[dict]:
    """Measure the ceilings, then every case; print a line and (save) append a row per case."""
    ceil = ceilings(dev)
    print(f"ceilings: copy {ceil['copy_Bps'] / 1e9:.0f} GB/s, {ceil['gemm_dtype']} GEMM "
          f"{ceil['gemm_flops'] / 1e12:.0f} TFLOP/s", flush=True)
    rows = []
    for model in models:
        for batch in batches:
            for case in cases_for(dev, model, batch):
                med, spread = dev.time(case.run)
                gbps, tflops = case.nbytes / med, case.flops / med
                frac = tflops / ceil["gemm_flops"] if case.compute_bound else gbps / ceil["copy_Bps"]
                row = {"name": case.name, "backend": "cuda", "shape": case.shape, "dtype": case.dtype,
                       "median_s": med, "gbps": gbps / 1e9, "tflops": tflops / 1e12 if case.flops else None,
                       "pct_of_ceiling": 100 * frac,
                       "extra": {"spread_s": spread, "ceiling": "gemm" if case.compute_bound else "copy",
                                 "copy_GB/s": ceil["copy_Bps"] / 1e9, "gemm_TFLOP/s": ceil["gemm_flops"] / 1e12,
                                 "bytes": case.nbytes, "flops": case.flops}}
                if save:
                    record(row["name"], **{k: v for k, v in row.items() if k != "name"}, file="gpu.jsonl")
                rows.append(row)
                print(f"{case.name:24s} {model:13s} B={batch:<4d} {case.dtype:9s} {med * 1e6:9.1f} us "
                      f"{gbps / 1e9:8.1f} GB/s {tflops / 1e12:7.1f} TFLOP/s  {frac:.2f} of "
                      f"{'GEMM' if case.compute_bound else 'copy'}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-record", action="store_true", help="print only, do not append to results/gpu.jsonl")
    ap.add_argument("--model", nargs="+", default=list(MODELS), choices=MODELS)
    args = ap.parse_args(argv)
    run(Device(), not args.no_record, tuple(args.model))


if __name__ == "__main__":
    main()
