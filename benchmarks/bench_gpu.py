"""GPU kernel benchmarks: each kernel's rate as a fraction of ceilings measured in the same run.

    python -m hearth.benchmarks kernels          # the CPU suite, then these cases when a GPU is usable
    python -m hearth.benchmarks.bench_gpu [--model llama-3.2-1b] [--quick]   # these cases alone (< 10 min)

Ceilings, measured first: device-to-device copy bandwidth (bytes read + written per second of a
large `dst[...] = src`) and the cuBLAS bf16 GEMM rate (8192^3 through CuPy). Each case's counted
bytes and FLOPs (benchmarks/counts.py) give its GB/s and TFLOP/s; its fraction is the roofline's
(whichever of the two ceilings binds). Shapes: Llama-3.1-8B and Llama-3.2-1B
(benchmarks/model_shapes), batches 1, 16, 64, 256. Times are CUDA-event medians over rounds:
a host clock around asynchronous launches would time the launches.
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

from hearth.benchmarks import schema
from hearth.benchmarks.common import SHAPES, commit
from hearth.benchmarks.gpu_cases import Case

BATCHES = (1, 16, 64, 256)
MODELS = ("llama-3.1-8b", "llama-3.2-1b")


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

    def name(self) -> str:
        return self.cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()

    def time(self, fn: Callable[[], Any], rounds: int = 5, per_round: int = 20) -> list[float]:
        """Seconds per call in each round, from CUDA events around `per_round` calls."""
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
        return times


def ceilings(dev: Device) -> dict[str, float]:
    """Copy bandwidth (`copy_Bps`, read + write) and the GEMM rate (`gemm_bf16`, or `gemm_fp16`
    with a CuPy that has no bf16) measured now. The interpreter stand-in has no hardware: it
    gets an H200's nominal figures, so its rows exercise the arithmetic only."""
    if dev.smoke:
        return {"copy_Bps": 4.8e12, "gemm_bf16": 989e12}
    cp = dev.cupy
    n = 1 << 30
    src, dst = cp.ones(n, cp.uint8), cp.empty(n, cp.uint8)
    copy = 2 * n / statistics.median(dev.time(lambda: dst.__setitem__(Ellipsis, src), per_round=5))
    size = 8192
    try:
        a = dev.randn((size, size), "bfloat16")
        gemm_dtype = "bfloat16"
    except (TypeError, ValueError):  # a CuPy without ml_dtypes bfloat16: fp16 runs the same tensor cores
        a = dev.randn((size, size), "float16")
        gemm_dtype = "float16"
    c = cp.empty_like(a)
    t = statistics.median(dev.time(lambda: cp.matmul(a, a, out=c), per_round=5))
    return {"copy_Bps": copy, f"gemm_{'bf16' if gemm_dtype == 'bfloat16' else 'fp16'}": 2 * size**3 / t}


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
    from hearth.benchmarks.gpu_cases import (
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


def run(dev, quick: bool = False, progress: bool = False, models=None, batches=None) -> list[schema.Result]:
    """Measure the ceilings, then every case (quick: Llama-3.2-1B at batches 1 and 64)."""
    from tqdm import tqdm

    models = models or (("llama-3.2-1b",) if quick else MODELS)
    batches = batches or ((1, 64) if quick else BATCHES)
    ceil = ceilings(dev)
    gemm = next(k for k in ceil if k.startswith("gemm"))
    device = "interpreter stand-in" if dev.smoke else dev.name()
    rows = []
    for model, batch in tqdm([(m, b) for m in models for b in batches], desc="kernels (gpu)", disable=not progress,
                             leave=False):
        for case in cases_for(dev, model, batch):
            rows.append(schema.make(case.name, suite="kernels", backend="cuda", device=device,
                                    shape={"model": model, **case.shape}, dtype=case.dtype, batch=batch,
                                    times=dev.time(case.run), nbytes=case.nbytes, flops=case.flops or None,
                                    ceilings=ceil, memory="copy_Bps", compute=gemm, machine=device,
                                    commit=commit()))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-record", action="store_true", help="print only, write no results file")
    ap.add_argument("--quick", action="store_true", help="Llama-3.2-1B at batches 1 and 64 only")
    ap.add_argument("--model", nargs="+", default=None, choices=MODELS)
    args = ap.parse_args(argv)
    from hearth.benchmarks import report

    rows = run(Device(), args.quick, progress=True, models=tuple(args.model) if args.model else None)
    print(report.markdown(rows))
    if not args.no_record:
        print(schema.write(rows, schema.run_file(schema.default_results_dir(), "kernels", commit(), args.quick)))


if __name__ == "__main__":
    main()
