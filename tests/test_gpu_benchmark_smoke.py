"""benchmarks/bench_gpu.py without a GPU: every kernel case builds and runs in the interpreters on
toy shapes (a stand-in for its CuPy Device), and each row's rates follow from its counted
bytes/FLOPs."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from benchmarks import bench_gpu


class InterpreterDevice:
    """bench_gpu.Device's interface over torch CPU tensors (Triton's interpreter) and numpy
    arrays (Numba's simulator), timed with the wall clock."""

    smoke = True

    def randn(self, shape, dtype: str, scale: float = 1.0):
        host = np.random.default_rng(0).standard_normal(shape, dtype=np.float32) * scale
        return torch.from_numpy(host).to(getattr(torch, dtype))

    def asarray(self, host: np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(host))

    def time(self, fn, rounds: int = 1, per_round: int = 1):
        fn()
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0, 0.0


def test_every_kernel_case_runs_and_is_judged_against_its_ceiling():
    rows = bench_gpu.run(InterpreterDevice(), save=False, models=("llama-3.2-1b",), batches=(1,))
    names = {(r["name"], r["dtype"]) for r in rows}
    assert names == {("linear_gate_up", "bfloat16"), ("linear_down", "bfloat16"),
                     *{(f"quant_linear_{p}", f) for p in ("gate_up", "down") for f in ("q8_0", "q4_0")},
                     ("decode_attention", "bfloat16"), ("prefill_attention", "bfloat16"),
                     ("add_rms_norm", "bfloat16"), ("silu_and_mul", "bfloat16"), ("rope_and_cache", "bfloat16"),
                     ("embedding", "bfloat16"), ("sample", "float32")}
    for r in rows:
        e = r["extra"]
        assert e["bytes"] > 0 and r["median_s"] > 0
        assert r["gbps"] == pytest.approx(e["bytes"] / r["median_s"] / 1e9)
        ceiling = e["flops"] / r["median_s"] / (e["gemm_TFLOP/s"] * 1e12) if e["ceiling"] == "gemm" \
            else r["gbps"] / e["copy_GB/s"]
        assert r["pct_of_ceiling"] == pytest.approx(100 * ceiling)
    by_name = {r["name"]: r for r in rows}
    assert by_name["prefill_attention"]["extra"]["ceiling"] == "gemm"  # causal attention: compute-bound
    assert by_name["decode_attention"]["extra"]["ceiling"] == "copy"
