"""The hardware ceilings every figure is a fraction of, measured in the same run as the figures.

CPU: `read_Bps`, a threaded read of a buffer far larger than the caches (the access pattern of a
decode step's weight reads); `copy_Bps` and `update_Bps`, bytes read + written per second when
every thread streams one buffer into another, or rewrites a buffer in place (the patterns of the
pointwise ops: out-of-place norms and activations, in-place RoPE and residual adds; on this
machine an in-place update moves ~1.5x the bytes of a read-only stream, so one read ceiling
would flatter them); `gemm_fp32`, a large fp32 matrix product through numpy's BLAS (the
practical multiply-add rate the float kernels can hope for); `int8_dot`, the peak integer
dot-product rate of the instructions the quantized kernels use (VNNI / AVX2 on register
operands, every thread). GPU: `copy_Bps`, device-to-device copy bandwidth (read + write), and
`gemm_bf16`, a cuBLAS bf16 GEMM.

Bandwidths (names ending in `_Bps`) are bytes/s; rates are ops/s. On a shared machine a ceiling
moves between runs, so it is measured at the start and the end of a run and the higher of the two
medians is kept: a fraction is then never flattered by a slow moment of the probe.
"""

from __future__ import annotations

import functools
import math
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


@functools.lru_cache(maxsize=3)
def _probe_buffer(num_bytes: int, which: int) -> np.ndarray:
    """A probe's buffer, allocated and touched once per process: the kernel suite probes the
    bandwidth beside every case, and writing gigabytes of fresh pages each time would cost more
    than the probes. (`which` tells apart buffers of the same size.)"""
    return np.ones(num_bytes, np.uint8)


def read_bandwidth(num_bytes: int = 1 << 30, repeats: int = 7) -> float:
    """Bytes/s of every thread streaming through a `num_bytes` buffer."""
    import hearth.kernels.cpu as K

    buf = _probe_buffer(num_bytes, 0)
    return num_bytes / _median_time(lambda: K.memory_read_probe(buf), repeats)


def _threaded(fn, *buffers: np.ndarray) -> None:
    """fn(*chunks) on every thread, each thread on its own contiguous slice of the buffers
    (numpy's ufuncs release the GIL, so the threads stream memory at the same time)."""
    import threading

    import hearth.kernels.cpu as K

    parts = [np.array_split(b, K.num_threads()) for b in buffers]
    threads = [threading.Thread(target=fn, args=chunk) for chunk in zip(*parts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def copy_and_update_bandwidth(num_bytes: int = 512 << 20, repeats: int = 5) -> tuple[float, float]:
    """(copy, update) bandwidth in bytes read + written per second: `dst = src * 1` and
    `x *= 1` over float32 buffers of `num_bytes` on every thread."""
    src, dst = (_probe_buffer(num_bytes, i).view(np.float32) for i in (1, 2))
    copy = _median_time(lambda: _threaded(lambda a, b: np.multiply(a, 1.0, out=b), src, dst), repeats)
    update = _median_time(lambda: _threaded(lambda a: np.multiply(a, 1.0, out=a), dst), repeats)
    return 2 * num_bytes / copy, 2 * num_bytes / update


def gemm_fp32_rate(n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an n^3 fp32 matrix product (numpy's BLAS, all threads): the best of the
    repeats, a peak that other work on the machine can only lower."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
    out = np.empty((n, n), np.float32)
    np.matmul(a, b, out=out)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def int8_dot_rate(iters: int = 10_000_000, repeats: int = 7) -> float:
    """Ops/s (2 per u8 x s8 multiply-add) of hearth.kernels.cpu.int8_dot_probe on every thread: the
    best of the repeats, since a register-only loop can only be slowed down by other work."""
    import hearth.kernels.cpu as K

    K.int8_dot_probe(iters // 10)  # wake the cores (clock ramp, thread pool)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        checksum, macs, _ = K.int8_dot_probe(iters)
        rates.append(2 * macs / (time.perf_counter() - t0))
        if checksum != macs:
            raise RuntimeError("int8_dot_probe returned a wrong checksum")
    return max(rates)


def cpu_memory(repeats: int = 2) -> dict[str, float]:
    """The three CPU bandwidth ceilings alone, quickly: measured beside each kernel case, since
    this machine's bandwidth moves by tens of percent within a run (other guests on the host)."""
    copy, update = copy_and_update_bandwidth(repeats=repeats)
    return {"read_Bps": read_bandwidth(repeats=repeats), "copy_Bps": copy, "update_Bps": update}


def cpu(quick: bool = False) -> dict[str, float]:
    """The CPU ceilings, fewer repeats and a smaller GEMM when `quick`. The read probe keeps its
    1 GiB: on this kind of virtual machine a 256 MiB buffer read up to 1.5x faster than any
    weight stream the engine sees (the host's caches are larger than the guest is told)."""
    found = cpu_memory(repeats=3 if quick else 7)
    if quick:
        return found | {"gemm_fp32": gemm_fp32_rate(1536, repeats=3), "int8_dot": int8_dot_rate(5_000_000, repeats=5)}
    return found | {"gemm_fp32": gemm_fp32_rate(), "int8_dot": int8_dot_rate()}


def best_of(*measured: dict[str, float]) -> dict[str, float]:
    """Each ceiling's highest value over several measurements (start and end of a run)."""
    names = dict.fromkeys(k for m in measured for k in m)  # first-seen order, for stable tables
    return {k: max(m[k] for m in measured if k in m) for k in names}


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

    import hearth.kernels.cpu as K

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {K.num_threads()} threads, {K.simd_level()}"
