"""How a kernel case is timed and labelled for the suite's results."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from hearth.benchmarks.counts import Work

# Far beyond the last-level cache, so operands come from memory. The guest is told of a 32 MiB
# L3, but a 256 MiB buffer still reads 1.5x faster than a 1 GiB one here: the host caches more.
ROTATION_BYTES = 1 << 30
QUICK_ROTATION_BYTES = 512 << 20


def run_case(benchmark, fn: Callable[[], Any], work: Work, *, name: str, shape: dict, dtype: str,
             batch: int | None, backend: str = "cpu", memory: str = "read_Bps", compute: str | None = "gemm_fp32",
             calls: int = 1) -> None:
    """Time `fn` with pytest-benchmark and attach what the suite needs to judge it: the counted
    bytes/FLOPs of one kernel call, the ceilings that apply, and the labels of the result row.

    `calls`: kernel calls per `fn` call, when `fn` loops over a kernel too short to time alone
    (the row's time is then per kernel call). pytest-benchmark calibrates the rounds against
    --benchmark-max-time."""
    benchmark.group = name
    benchmark.extra_info.update(case=name, backend=backend, shape=shape, dtype=dtype, batch=batch,
                                bytes=work.bytes, flops=work.flops, memory=memory, compute=compute, calls=calls)
    benchmark(fn)


def copies_for(nbytes: int, quick: bool) -> int:
    """How many copies of an operand of `nbytes` to cycle through so that none is in cache."""
    return max(1, -(-(QUICK_ROTATION_BYTES if quick else ROTATION_BYTES) // nbytes))


def rotating(call: Callable[[Any], Any], operands: Sequence[Any]) -> Callable[[], None]:
    """A no-argument function that calls `call(operand)` on the next operand of a cycle."""
    state = [0]
    n = len(operands)

    def run() -> None:
        call(operands[state[0] % n])
        state[0] += 1

    return run
