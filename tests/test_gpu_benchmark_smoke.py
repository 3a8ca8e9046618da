"""benchmarks/bench_gpu.py without a GPU: every kernel case builds and runs in the interpreters on
toy shapes (a stand-in for its CuPy Device), and each row's rates follow from its counted
bytes/FLOPs."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from hearth.benchmarks import bench_gpu


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
        return [time.perf_counter() - t0]


def test_every_kernel_case_runs_and_is_judged_against_its_ceiling():
    rows = bench_gpu.run(InterpreterDevice(), models=("llama-3.2-1b",), batches=(1,))
    names = {(r.name, r.dtype) for r in rows}
    assert names == {("linear_gate_up", "bfloat16"), ("linear_down", "bfloat16"),
                     *{(f"quant_linear_{p}", f) for p in ("gate_up", "down") for f in ("q8_0", "q4_0")},
                     ("decode_attention", "bfloat16"), ("prefill_attention", "bfloat16"),
                     ("add_rms_norm", "bfloat16"), ("silu_and_mul", "bfloat16"), ("rope_and_cache", "bfloat16"),
                     ("embedding", "bfloat16"), ("sample", "float32")}
    ceil = bench_gpu.ceilings(InterpreterDevice())
    for r in rows:
        assert r.suite == "kernels" and r.backend == "cuda" and r.bytes > 0 and r.median_s > 0
        assert r.gbps == pytest.approx(r.bytes / r.median_s / 1e9)
        by_memory = r.bytes / r.median_s / ceil["copy_Bps"]
        by_compute = (r.flops or 0) / r.median_s / ceil["gemm_bf16"]
        assert r.fraction == pytest.approx(max(by_memory, by_compute))
        assert r.ceiling == ("copy_Bps" if by_memory >= by_compute else "gemm_bf16")
