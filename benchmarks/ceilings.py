"""The hardware ceilings every figure is a fraction of, measured in the same run as the figures.

CPU: `read_Bps`, a threaded read of a buffer far larger than the caches (the access pattern of a
decode step's weight reads); `gemm_fp32`, a large fp32 matrix product through numpy's BLAS (the
practical multiply-add rate the float kernels can hope for); `int8_dot`, the peak integer
dot-product rate of the instructions the quantized kernels use (VNNI / AVX2 on register
operands, every thread). GPU: `copy_Bps`, device-to-device copy bandwidth (read + write), and
`gemm_bf16`, a cuBLAS bf16 GEMM.

Bandwidths (names ending in `_Bps`) are bytes/s; rates are ops/s. On a shared machine a ceiling
moves between runs, so it is measured at the start and the end of a run and the higher of the two
medians is kept: a fraction is then never flattered by a slow moment of the probe.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

MEMORY = {"cpu": "read_Bps", "cuda": "copy_Bps"}


def _median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def read_bandwidth(num_bytes: int = 1 << 30, repeats: int = 7) -> float:
    """Bytes/s of every thread streaming through a `num_bytes` buffer."""
    import kernels.cpu as K

    buf = np.ones(num_bytes, np.uint8)
    return num_bytes / _median_time(lambda: K.memory_read_probe(buf), repeats)


def gemm_fp32_rate(n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an n^3 fp32 matrix product (numpy's BLAS, all threads)."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
    out = np.empty((n, n), np.float32)
    return 2 * n**3 / _median_time(lambda: np.matmul(a, b, out=out), repeats)


def int8_dot_rate(iters: int = 10_000_000, repeats: int = 7) -> float:
    """Ops/s (2 per u8 x s8 multiply-add) of kernels.cpu.int8_dot_probe on every thread: the
    best of the repeats, since a register-only loop can only be slowed down by other work."""
    import kernels.cpu as K

    K.int8_dot_probe(iters // 10)  # wake the cores (clock ramp, thread pool)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        checksum, macs, _ = K.int8_dot_probe(iters)
        rates.append(2 * macs / (time.perf_counter() - t0))
        if checksum != macs:
            raise RuntimeError("int8_dot_probe returned a wrong checksum")
    return max(rates)


def cpu(quick: bool = False) -> dict[str, float]:
    """The CPU ceilings, smaller probes when `quick` (still far larger than the caches)."""
    if quick:
        return {"read_Bps": read_bandwidth(256 << 20, repeats=5), "gemm_fp32": gemm_fp32_rate(1024, repeats=3),
                "int8_dot": int8_dot_rate(5_000_000, repeats=5)}
    return {"read_Bps": read_bandwidth(), "gemm_fp32": gemm_fp32_rate(), "int8_dot": int8_dot_rate()}


def best_of(*measured: dict[str, float]) -> dict[str, float]:
    """Each ceiling's highest value over several measurements (start and end of a run)."""
    return {k: max(m[k] for m in measured if k in m) for k in set().union(*measured)}


def cuda_available() -> bool:
    """Whether CuPy can run on a GPU here (it imports without one, but cannot compute)."""
    try:
        import cupy

        return bool(cupy.cuda.is_available())
    except Exception:  # no CuPy, or a CuPy whose CUDA libraries are missing
        return False


def cpu_name() -> str:
    """The CPU's model name, its thread count and the SIMD level the kernels run."""
    import platform
    from pathlib import Path

    import kernels.cpu as K

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {K.num_threads()} threads, {K.simd_level()}"
