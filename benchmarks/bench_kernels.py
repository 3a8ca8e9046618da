"""Decode-matvec bandwidth vs the machine's read ceiling (and a prefill GEMM rate).

Usage: python benchmarks/bench_kernels.py [--probe-gib 1] [--repeats 20]

The ceiling is `kernels.cpu.memory_read_probe` on a buffer much larger than
the caches; the matvec figure is bf16 weight bytes read per second at
Qwen2.5-0.5B shapes. Several weight matrices are cycled so that no
iteration finds its weights in cache. Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import ml_dtypes
import numpy as np

from kernels import cpu

SHAPES = [(896, 4864), (4864, 896), (896, 151936)]  # (K, N), Qwen2.5-0.5B


def _median_time(fn, repeats: int, warmup: int = 2) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2], ts[-1] - ts[0]


def probe_bandwidth(gib: float, repeats: int) -> float:
    buf = np.random.default_rng(0).integers(0, 255, int(gib * 2**30), dtype=np.uint8)
    med, _ = _median_time(lambda: cpu.memory_read_probe(buf), repeats)
    return buf.nbytes / med


def matvec(k: int, n: int, m: int, repeats: int, min_bytes: int = 512 * 2**20):
    rng = np.random.default_rng(1)
    copies = max(1, -(-min_bytes // (k * n * 2)))
    ws = [rng.standard_normal((n, k), dtype=np.float32).astype(ml_dtypes.bfloat16)
          for _ in range(copies)]
    x = rng.standard_normal((m, k), dtype=np.float32)
    out = np.empty((m, n), np.float32)
    state = {"i": 0}

    def run():
        cpu.linear(x, ws[state["i"] % copies], out=out)
        state["i"] += 1

    return _median_time(run, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--probe-gib", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--m", type=int, nargs="*", default=[1])
    args = ap.parse_args()
    machine = f"{platform.processor() or platform.machine()} x{cpu.num_threads()} {cpu.simd_level()}"
    ceiling = probe_bandwidth(args.probe_gib, args.repeats)
    print(json.dumps({"name": "memory_read_probe", "backend": "cpu", "GB/s": ceiling / 1e9,
                      "machine": machine}))
    for m in args.m:
        for k, n in SHAPES:
            med, spread = matvec(k, n, m, args.repeats)
            bw = k * n * 2 / med
            flops = 2 * m * k * n / med
            print(json.dumps({"name": "linear_bf16", "backend": "cpu", "shape": [m, k, n],
                              "dtype": "bf16", "median_s": med, "spread_s": spread,
                              "GB/s": bw / 1e9, "TFLOP/s": flops / 1e12,
                              "pct_of_ceiling": 100 * bw / ceiling, "machine": machine}))


if __name__ == "__main__":
    main()
