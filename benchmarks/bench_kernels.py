"""CPU kernel figures as fractions of measured ceilings.

    python benchmarks/bench_kernels.py [--repeats 15] [--m 1 4 16 128] [--no-record]

- linear, bf16 weights, at Qwen2.5-0.5B shapes: at M = 1 (decode) the weight
  bytes read per second over `memory_read_probe`'s read bandwidth (the
  ceiling); at larger M the FLOP rate. Enough weight copies are cycled that
  no call finds its weights in cache.
- paged_attention decode: KV bytes read per second over the same ceiling.

On a shared machine the ceiling itself moves, so decode figures are also
measured *paired*: each round times the probe over 256 MiB and then as many
matvec calls as read the same bytes; `paired_pct` is the median over rounds
of their ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import ml_dtypes
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import median_time, read_bandwidth, record
from kernels import cpu

LINEAR_SHAPES = [
    (896, 4864),
    (4864, 896),
    (896, 151936),
]  # (K, N): mlp up, mlp down, lm_head


def bench_linear(
    k: int, n: int, m: int, repeats: int, ceiling: float, save: bool
) -> dict:
    rng = np.random.default_rng(1)
    copies = max(1, -(-(512 << 20) // (k * n * 2)))  # >= 512 MiB of weights in rotation
    ws = [
        rng.standard_normal((n, k), dtype=np.float32).astype(ml_dtypes.bfloat16)
        for _ in range(copies)
    ]
    x = rng.standard_normal((m, k), dtype=np.float32)
    out = np.empty((m, n), np.float32)
    state = [0]

    def run():
        cpu.linear(x, ws[state[0] % copies], out=out)
        state[0] += 1

    # Warm up over every copy once: first touches and frequency ramps out of the way.
    med, spread = median_time(run, repeats=repeats, warmup=min(copies, 64))
    gbps, tflops = k * n * 2 / med, 2 * m * k * n / med
    extra = {"spread_s": spread}
    if m == 1:
        extra["paired_pct"] = 100 * paired_ratio(
            run, k * n * 2, rounds=max(5, repeats // 2)
        )
    row = {
        "backend": "cpu",
        "shape": {"M": m, "K": k, "N": n},
        "dtype": "bf16",
        "median_s": med,
        "gbps": gbps / 1e9,
        "tflops": tflops / 1e12,
        "pct_of_ceiling": 100 * gbps / ceiling,
        "extra": extra,
    }
    return _emit("linear", row, save)


def _emit(name: str, row: dict, save: bool) -> dict:
    """Append the row to results/ (common.record) or just return it flattened."""
    if save:
        return record(name, **row)
    extra = row.pop("extra", {})
    return {"name": name, **row, **extra}


_PROBE_BUF: list[np.ndarray] = []


def paired_ratio(fn, bytes_per_call: int, rounds: int) -> float:
    """Median over rounds of (fn's read rate) / (probe's read rate), timed back to back."""
    if not _PROBE_BUF:
        _PROBE_BUF.append(np.ones(256 << 20, np.uint8))
    buf = _PROBE_BUF[0]
    calls = max(1, -(-buf.nbytes // bytes_per_call))
    ratios = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        cpu.memory_read_probe(buf)
        t1 = time.perf_counter()
        for _ in range(calls):
            fn()
        t2 = time.perf_counter()
        ratios.append((calls * bytes_per_call / (t2 - t1)) / (buf.nbytes / (t1 - t0)))
    return float(np.median(ratios))


def bench_attention_decode(
    batch: int, ctx: int, repeats: int, ceiling: float, save: bool
) -> dict:
    rng = np.random.default_rng(2)
    hk, group, d, bs = 2, 7, 64, 16  # Qwen2.5-0.5B attention
    nb = batch * -(-ctx // bs)
    bt = rng.permutation(nb).astype(np.int32).reshape(batch, -1)
    args = {
        "q": rng.standard_normal((batch, hk * group, d), dtype=np.float32),
        "k_cache": rng.standard_normal((nb, bs, hk, d), dtype=np.float32),
        "v_cache": rng.standard_normal((nb, bs, hk, d), dtype=np.float32),
        "block_tables": bt,
        "seq_lens": np.full(batch, ctx, np.int32),
        "query_start_loc": np.arange(batch + 1, dtype=np.int32),
        "scale": d**-0.5,
    }
    med, spread = median_time(
        lambda: cpu.paged_attention(**args), repeats=repeats, warmup=2
    )
    kv_bytes = 2 * batch * ctx * hk * d * 4
    row = {
        "backend": "cpu",
        "shape": {"batch": batch, "ctx": ctx, "Hq": hk * group, "Hk": hk, "D": d},
        "dtype": "f32",
        "median_s": med,
        "gbps": kv_bytes / med / 1e9,
        "pct_of_ceiling": 100 * kv_bytes / med / ceiling,
        "extra": {"spread_s": spread},
    }
    return _emit("paged_attention_decode", row, save)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument(
        "--m", type=int, nargs="*", default=[1, 4, 16, 128], help="rows of x (tokens)"
    )
    ap.add_argument(
        "--no-record", action="store_true", help="print only, do not append to results/"
    )
    args = ap.parse_args()
    save = not args.no_record
    ceiling = read_bandwidth(1 << 30, repeats=args.repeats)
    print(
        f"read ceiling: {ceiling / 1e9:.1f} GB/s  ({cpu.num_threads()} threads, {cpu.simd_level()})"
    )
    for m in args.m:
        for k, n in LINEAR_SHAPES:
            r = bench_linear(k, n, m, args.repeats, ceiling, save)
            print(
                f"linear bf16 M={m:<4} K={k:<5} N={n:<6} {r['median_s'] * 1e3:8.3f} ms "
                f"{r.get('GB/s', r.get('gbps')):6.1f} GB/s ({r['pct_of_ceiling']:5.1f}% of ceiling) "
                f"{r.get('TFLOP/s', r.get('tflops')) * 1e3:6.1f} GFLOP/s"
                + (f"  paired: {r['paired_pct']:5.1f}%" if "paired_pct" in r else "")
            )
    for batch, ctx in [(1, 2048), (8, 2048)]:
        r = bench_attention_decode(batch, ctx, args.repeats, ceiling, save)
        print(
            f"paged_attention decode batch={batch} ctx={ctx} {r['median_s'] * 1e3:7.3f} ms "
            f"{r.get('GB/s', r.get('gbps')):6.1f} GB/s ({r['pct_of_ceiling']:5.1f}% of ceiling)"
        )


if __name__ == "__main__":
    main()
