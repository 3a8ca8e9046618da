"""CPU kernel cases: hearth.kernels.cpu at the shapes of real models, each with its counted work.

Shapes (benchmarks/model_shapes): Qwen2.5-0.5B (hidden 896, MLP 4864, 14/2 heads of 64),
Llama-3.2-1B (hidden 2048, MLP 8192, 32/8 heads of 64) and Llama-3.1-8B's 4096 x 4096
attention projection. Weights, and the pointwise ops' tensors, cycle through enough copies that
none is found in cache: every figure is against memory, as in a real step of a large model.
(Attention's KV cache is one copy: a decode step over a long context streams it anyway.)
The one exception, `linear_in_cache`, runs the quantized matvec on one copy that stays in L2/L3:
the rate the kernel could stream at if memory were free, i.e. whether a matvec that falls short
of the read ceiling is held back by memory or by its own instructions.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import hearth.kernels.cpu as K
from hearth.benchmarks import counts
from hearth.benchmarks.kernel_cases.measure import copies_for, rotating, run_case

FORMATS = ("bf16", "q8_0", "q4_0")
# (K, N): Qwen2.5-0.5B MLP up / down, Llama-3.2-1B MLP up / down, Llama-3.1-8B q_proj
LINEAR_SHAPES = ((896, 4864), (4864, 896), (2048, 8192), (8192, 2048), (4096, 4096))
LINEAR_M = (1, 16, 128)
ATTENTION = {"qwen2.5-0.5b": (14, 2, 64), "llama-3.2-1b": (32, 8, 64)}  # (Hq, Hk, D)

FULL = {
    "linear": [(m, k, n, f) for f in FORMATS for (k, n) in LINEAR_SHAPES for m in LINEAR_M],
    "linear_in_cache": [(1, k, n, f) for f in ("q8_0", "q4_0") for (k, n) in (*LINEAR_SHAPES[:2], (4096, 4096))],
    "decode_attention": [(model, b, ctx) for model in ATTENTION for b in (1, 16) for ctx in (512, 4096)],
    "prefill_attention": [(model, t) for model in ATTENTION for t in (512, 2048)],
    "pointwise": [(2048, 2048), (512, 4096)],  # (rows, hidden): norms; silu_and_mul uses 4 x hidden
    "quantize": [(4096, 4096, f) for f in ("q8_0", "q4_0")],
}
QUICK = {
    "linear": [(1, 896, 4864, f) for f in FORMATS] + [(16, 896, 4864, "bf16"), (16, 896, 4864, "q8_0")],
    "linear_in_cache": [(1, 896, 4864, "q4_0")],
    "decode_attention": [("qwen2.5-0.5b", 4, 1024)],
    "prefill_attention": [("qwen2.5-0.5b", 256)],
    "pointwise": [(1024, 2048)],
    "quantize": [(2048, 2048, "q8_0")],
}


def pytest_generate_tests(metafunc):
    table = QUICK if metafunc.config.getoption("--bench-quick") else FULL
    for fixture in table:  # FULL and QUICK name the same case kinds
        if fixture + "_case" in metafunc.fixturenames:
            cases = table[fixture]
            metafunc.parametrize(fixture + "_case", cases, ids=["-".join(map(str, c)) for c in cases])


def _random(rng, *shape) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32)


def _weights(rng, n: int, k: int, fmt: str, quick: bool) -> list[np.ndarray]:
    """Copies of one random n x k matrix in `fmt`, enough of them to defeat the caches."""
    w = _random(rng, n, k) * 0.02
    stored = w.astype(ml_dtypes.bfloat16) if fmt == "bf16" else K.quantize(w, fmt)
    return [stored.copy() for _ in range(copies_for(stored.nbytes, quick))]


def bench_linear(benchmark, linear_case, quick):
    m, k, n, fmt = linear_case
    rng = np.random.default_rng(0)
    ws, x = _weights(rng, n, k, fmt, quick), _random(rng, m, k)
    out = np.empty((m, n), np.float32)
    if fmt == "bf16":
        fn = rotating(lambda w: K.linear(x, w, out=out), ws)
    else:
        fn = rotating(lambda w: K.linear_quant(x, w, fmt, out=out), ws)
    run_case(benchmark, fn, counts.linear(m, k, n, fmt), name="linear", shape={"M": m, "K": k, "N": n},
             dtype=fmt, batch=m, compute="gemm_fp32" if fmt == "bf16" else "int8_dot")


def bench_linear_in_cache(benchmark, linear_in_cache_case):
    m, k, n, fmt = linear_in_cache_case
    rng = np.random.default_rng(0)
    w, x = K.quantize(_random(rng, n, k) * 0.02, fmt), _random(rng, m, k)
    out = np.empty((m, n), np.float32)
    run_case(benchmark, lambda: K.linear_quant(x, w, fmt, out=out), counts.linear(m, k, n, fmt),
             name="linear_in_cache", shape={"M": m, "K": k, "N": n}, dtype=fmt, batch=m, compute="int8_dot")


def _paged(rng, hk: int, d: int, lengths: list[int], block: int = 16):
    """A float32 paged cache holding sequences of `lengths` tokens in shuffled blocks."""
    per_seq = [-(-n // block) for n in lengths]
    total = sum(per_seq)
    perm = rng.permutation(total).astype(np.int32)
    tables = np.zeros((len(lengths), max(per_seq)), np.int32)
    start = 0
    for s, blocks in enumerate(per_seq):
        tables[s, :blocks] = perm[start:start + blocks]
        start += blocks
    k_cache, v_cache = _random(rng, total, block, hk, d), _random(rng, total, block, hk, d)
    return k_cache, v_cache, tables, np.asarray(lengths, np.int32)


def bench_decode_attention(benchmark, decode_attention_case):
    model, batch, ctx = decode_attention_case
    hq, hk, d = ATTENTION[model]
    rng = np.random.default_rng(1)
    k_cache, v_cache, tables, lens = _paged(rng, hk, d, [ctx] * batch)
    q, starts = _random(rng, batch, hq, d), np.arange(batch + 1, dtype=np.int32)
    out = np.empty_like(q)
    run_case(benchmark, lambda: K.paged_attention(q, k_cache, v_cache, tables, lens, starts, d**-0.5, out=out),
             counts.decode_attention(batch, ctx, hq, hk, d), name="decode_attention",
             shape={"model": model, "context": ctx, "Hq": hq, "Hk": hk, "D": d}, dtype="f32", batch=batch)


def bench_prefill_attention(benchmark, prefill_attention_case):
    model, tokens = prefill_attention_case
    hq, hk, d = ATTENTION[model]
    rng = np.random.default_rng(2)
    k_cache, v_cache, tables, lens = _paged(rng, hk, d, [tokens])
    q, starts = _random(rng, tokens, hq, d), np.asarray([0, tokens], np.int32)
    out = np.empty_like(q)
    run_case(benchmark, lambda: K.paged_attention(q, k_cache, v_cache, tables, lens, starts, d**-0.5, out=out),
             counts.prefill_attention(tokens, hq, hk, d), name="prefill_attention",
             shape={"model": model, "tokens": tokens, "Hq": hq, "Hk": hk, "D": d}, dtype="f32", batch=1)


def _copies(quick: bool, make, nbytes: int) -> list:
    """Enough operand sets (each `nbytes`) to stream from memory: copies of one `make()`."""
    first = make()
    return [first] + [tuple(a.copy() for a in first) if isinstance(first, tuple) else first.copy()
                      for _ in range(copies_for(nbytes, quick) - 1)]


@pytest.mark.parametrize("residual", [False, True], ids=["rms_norm", "add_rms_norm"])
def bench_rms_norm(benchmark, pointwise_case, residual, quick):
    rows, hidden = pointwise_case
    rng = np.random.default_rng(3)
    w = _random(rng, hidden)
    sets = _copies(quick, lambda: (_random(rng, rows, hidden), _random(rng, rows, hidden),
                                   np.empty((rows, hidden), np.float32)), 3 * rows * hidden * 4)
    if residual:
        fn = rotating(lambda s: K.add_rms_norm(s[0], s[1], w, 1e-6, out=s[2]), sets)
    else:
        fn = rotating(lambda s: K.rms_norm(s[0], w, 1e-6, out=s[2]), sets)
    run_case(benchmark, fn, counts.rms_norm(rows, hidden, residual=residual),
             name="add_rms_norm" if residual else "rms_norm", shape={"rows": rows, "hidden": hidden},
             dtype="f32", batch=rows, compute=None, memory="update_Bps" if residual else "copy_Bps")


def bench_silu_and_mul(benchmark, pointwise_case, quick):
    rows, hidden = pointwise_case
    inter = 4 * hidden
    rng = np.random.default_rng(4)
    sets = _copies(quick, lambda: (_random(rng, rows, inter), _random(rng, rows, inter),
                                   np.empty((rows, inter), np.float32)), 3 * rows * inter * 4)
    run_case(benchmark, rotating(lambda s: K.silu_and_mul(s[0], s[1], out=s[2]), sets),
             counts.silu_and_mul(rows, inter), name="silu_and_mul", shape={"rows": rows, "inter": inter},
             dtype="f32", batch=rows, compute=None, memory="copy_Bps")


def bench_rope(benchmark, pointwise_case, quick):
    rows, hidden = pointwise_case
    d = 64
    heads = hidden // d
    rng = np.random.default_rng(5)
    pos = rng.integers(0, 4096, rows).astype(np.int64)
    angles = np.outer(np.arange(4096), 10000.0 ** (-np.arange(d // 2) / (d // 2))).astype(np.float32)
    cos, sin = np.cos(angles), np.sin(angles)
    xs = _copies(quick, lambda: _random(rng, rows, heads, d), rows * hidden * 4)
    run_case(benchmark, rotating(lambda x: K.rope(x, pos, cos, sin), xs), counts.rope(rows, heads, d),
             name="rope", shape={"rows": rows, "heads": heads, "D": d}, dtype="f32", batch=rows, compute=None,
             memory="update_Bps")


def bench_quantize(benchmark, quantize_case, quick):
    """Quantizing an fp32 matrix on load: its bytes read and the blocks written."""
    n, k, fmt = quantize_case
    rng = np.random.default_rng(6)
    ws = _copies(quick, lambda: _random(rng, n, k), n * k * 4)
    out = np.empty((n, counts.matrix_bytes(1, k, fmt)), np.uint8)
    work = counts.Work(n * k * 4 + out.nbytes, 0)
    run_case(benchmark, rotating(lambda w: K.quantize(w, fmt, out), ws), work, name="quantize",
             shape={"N": n, "K": k}, dtype=f"f32->{fmt}", batch=None, compute=None)
