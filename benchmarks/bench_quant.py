"""Quantized-matmul (GGUF Q8_0 / Q4_0) figures as fractions of measured ceilings.

    python benchmarks/bench_quant.py [--repeats 31] [--no-record]

- matvec (M = 1, decode): weight bytes read per second over `memory_read_probe`'s read
  bandwidth measured in the same run (target 0.85), for q8_0, q4_0 and bf16 (kernels.cpu.linear)
  weights of the same shape. Enough weight copies are cycled that no call finds its weights in
  cache; they lie in one big (huge-page) array, like the probe's buffer. On a shared machine the ceiling moves, so each figure is also measured paired: rounds
  of the probe over 256 MiB then as many matvec calls as read the same bytes, `paired_pct` the
  median of their ratios.
- prefill (M = 512): the rate in GOP/s, 2*M*N*K / time (multiply-adds count as 2 ops, as for
  the bf16 GEMM beside it), and for q8_0/q4_0 its fraction of the peak int8 dot-product rate
  (`int8_dot_probe`, the same instructions on register operands) measured in the same run.
- quantize: weights quantized per second, the load-time cost of quantization="q8_0".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import ml_dtypes
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_kernels import paired_ratio
from benchmarks.common import int8_dot_rate, median_time, read_bandwidth, record
from kernels import cpu

MATVEC_SHAPES = [
    (4096, 4096),
    (4864, 896),
]  # (N, K): a 7B-class projection; Qwen2.5-0.5B mlp up
PREFILL_SHAPES = [(4096, 4096), (4864, 896)]
DTYPES = ["q8_0", "q4_0", "bf16"]


def make_weights(rng, n: int, k: int, dtype: str) -> np.ndarray:
    w = rng.standard_normal((n, k), dtype=np.float32) * np.float32(0.02)
    return w.astype(ml_dtypes.bfloat16) if dtype == "bf16" else cpu.quantize(w, dtype)


def matmul_fn(dtype: str):
    if dtype == "bf16":
        return lambda x, w, out: cpu.linear(x, w, out=out)
    return lambda x, w, out: cpu.linear_quant(x, w, dtype, out=out)


def bench_matvec(n: int, k: int, dtype: str, repeats: int, ceiling: float) -> dict:
    rng = np.random.default_rng(1)
    nbytes = make_weights(rng, 1, k, dtype).nbytes * n
    copies = max(1, -(-(512 << 20) // nbytes))  # >= 512 MiB in rotation: never cached
    # The copies are views of one big array, as a model's weights in a GGUF memory map or an
    # arena would be, and as the probe's buffer is: numpy backs arrays over 4 MiB with huge
    # pages, and a separate small array on 4 KiB pages pays TLB misses the probe does not
    # (Q4_0 4864x896, 2.4 MB: ~0.75 of the probe on its own, ~0.9 inside a big array).
    first = make_weights(rng, n, k, dtype)
    arena = np.empty((copies, *first.shape), first.dtype)
    for i in range(copies):
        arena[i] = first if i == 0 else make_weights(rng, n, k, dtype)
    ws = list(arena)
    x = rng.standard_normal((1, k), dtype=np.float32)
    out = np.empty((1, n), np.float32)
    fn, state = matmul_fn(dtype), [0]

    def run():
        fn(x, ws[state[0] % copies], out)
        state[0] += 1

    med, spread = median_time(run, repeats=repeats, warmup=min(copies, 64))
    paired = paired_ratio(run, nbytes, rounds=max(5, repeats // 2))
    return {
        "backend": "cpu",
        "shape": {"M": 1, "N": n, "K": k},
        "dtype": dtype,
        "median_s": med,
        "gbps": nbytes / med / 1e9,
        "pct_of_ceiling": 100 * nbytes / med / ceiling,
        "extra": {
            "spread_s": spread,
            "paired_pct": 100 * paired,
            "weight_bytes": nbytes,
        },
    }


def bench_prefill(n: int, k: int, dtype: str, m: int, repeats: int, int8_peak: float) -> dict:
    rng = np.random.default_rng(2)
    w = make_weights(rng, n, k, dtype)
    x = rng.standard_normal((m, k), dtype=np.float32)
    out = np.empty((m, n), np.float32)
    fn = matmul_fn(dtype)
    med, spread = median_time(
        lambda: fn(x, w, out), repeats=max(3, repeats // 4), warmup=1
    )
    return {
        "backend": "cpu",
        "shape": {"M": m, "N": n, "K": k},
        "dtype": dtype,
        "median_s": med,
        "tflops": 2 * m * n * k / med / 1e12,
        # the quantized GEMM runs on int8 dot products: judged against their peak rate
        "pct_of_ceiling": None if dtype == "bf16" else 100 * 2 * m * n * k / med / int8_peak,
        "extra": {"spread_s": spread, "int8_peak_GOP/s": int8_peak / 1e9},
    }


def bench_quantize(fmt: str, repeats: int) -> dict:
    w = np.random.default_rng(3).standard_normal((4096, 4096), dtype=np.float32)
    med, spread = median_time(
        lambda: cpu.quantize(w, fmt), repeats=max(3, repeats // 4)
    )
    return {
        "backend": "cpu",
        "shape": {"N": 4096, "K": 4096},
        "dtype": f"f32->{fmt}",
        "median_s": med,
        "gbps": w.nbytes / med / 1e9,
        "extra": {"spread_s": spread, "Melem/s": w.size / med / 1e6},
    }


def emit(name: str, row: dict, save: bool) -> dict:
    """Append the row to results/ (common.record) and return it flattened for printing."""
    if save:
        record(name, **row)
    extra = row.pop("extra", {})
    return {"name": name, **row, **extra}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeats", type=int, default=31)
    ap.add_argument(
        "--prefill-m", type=int, default=512, help="rows of x for the GEMM figures"
    )
    ap.add_argument(
        "--no-record", action="store_true", help="print only, do not append to results/"
    )
    ap.add_argument(
        "--only",
        choices=["matvec", "prefill", "quantize"],
        nargs="*",
        default=["matvec", "prefill", "quantize"],
        help="which figures to measure",
    )
    args = ap.parse_args()
    save = not args.no_record
    ceiling = read_bandwidth(1 << 30, repeats=args.repeats)
    print(
        f"read ceiling: {ceiling / 1e9:.1f} GB/s  ({cpu.num_threads()} threads, {cpu.simd_level()})"
    )
    for n, k in MATVEC_SHAPES if "matvec" in args.only else []:
        for dtype in DTYPES:
            r = emit(
                "quant_matvec", bench_matvec(n, k, dtype, args.repeats, ceiling), save
            )
            print(
                f"matvec {dtype:5} N={n:<5} K={k:<5} {r['median_s'] * 1e3:7.3f} ms {r['gbps']:6.1f} GB/s "
                f"= {r['pct_of_ceiling'] / 100:.2f} of ceiling   paired: {r['paired_pct'] / 100:.2f}"
            )
    int8_peak = int8_dot_rate() if "prefill" in args.only else 0.0
    if int8_peak:
        print(f"int8 dot-product peak: {int8_peak / 1e9:.0f} GOP/s")
    for n, k in PREFILL_SHAPES if "prefill" in args.only else []:
        for dtype in DTYPES:
            r = emit(
                "quant_prefill",
                bench_prefill(n, k, dtype, args.prefill_m, args.repeats, int8_peak),
                save,
            )
            print(
                f"prefill {dtype:5} M={args.prefill_m} N={n:<5} K={k:<5} {r['median_s'] * 1e3:8.2f} ms "
                f"{r['tflops'] * 1e3:6.1f} GOP/s"
                + ("" if dtype == "bf16" else f" = {r['pct_of_ceiling'] / 100:.2f} of the int8 peak")
            )
    for fmt in ("q8_0", "q4_0") if "quantize" in args.only else []:
        r = emit("quantize", bench_quantize(fmt, args.repeats), save)
        print(
            f"quantize f32->{fmt} 4096x4096 {r['median_s'] * 1e3:7.2f} ms {r['Melem/s']:7.0f} Melem/s"
        )


if __name__ == "__main__":
    main()
