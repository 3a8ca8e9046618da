"""Plumbing shared by every Numba CUDA launcher: arrays in, Numba device arrays out, on CuPy's
stream.

On a GPU the engine's arrays are CuPy arrays. `cuda.as_cuda_array` wraps one through its
`__cuda_array_interface__` without a copy; `sync=False` because the interface's stream field would
otherwise make Numba synchronize that stream on the host at every launch (our launches go to the
same stream, so ordering already holds). Launches go to CuPy's current stream through
`cuda.external_stream`, so a sequence of launches can be captured in a CUDA graph with CuPy's
kernels.

Under the simulator (NUMBA_ENABLE_CUDASIM=1, set before numba is imported) the arrays are numpy
arrays: kernels run on them in place, in Python, one thread at a time. `empty` allocates like
its template, so one launcher serves both.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


def is_simulating() -> bool:
    """Whether Numba CUDA kernels run in the CPU simulator (fixed when numba is first imported)."""
    from numba import config

    return bool(config.ENABLE_CUDASIM) or os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def is_cupy(a: Any) -> bool:
    return type(a).__module__.startswith("cupy")


def is_device_array(a: Any) -> bool:
    """A CuPy array, anything else exporting `__cuda_array_interface__`, or (simulator) numpy."""
    if is_cupy(a) or hasattr(a, "__cuda_array_interface__"):
        return True
    return is_simulating() and isinstance(a, np.ndarray)


def dtype_name(a: Any) -> str:
    return np.dtype(a.dtype).name


def check(
    a: Any,
    name: str,
    dtypes: tuple[str, ...],
    ndim: int,
    shape: tuple[int | None, ...] | None = None,
) -> None:
    """ValueError naming `name` unless a is a C-contiguous device array of one of `dtypes` with
    `ndim` axes (and, where `shape` gives a size, that size)."""
    if not is_device_array(a):
        raise ValueError(
            f"{name} must be a CuPy array (or a numpy array under the CUDA simulator), "
            f"got {type(a).__name__}"
        )
    if dtype_name(a) not in dtypes:
        raise ValueError(
            f"{name} must have dtype {' or '.join(dtypes)}, got {dtype_name(a)}"
        )
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(a.shape)}")
    if shape is not None:
        for axis, (got, want) in enumerate(zip(a.shape, shape)):
            if want is not None and got != want:
                raise ValueError(
                    f"{name} must have size {want} on axis {axis}, got shape {tuple(a.shape)}"
                )
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")


def empty(shape: tuple[int, ...], dtype: str, like: Any) -> Any:
    """An uninitialised array of `shape`/`dtype` on the same device and library as `like`."""
    if is_cupy(like):
        import cupy

        return cupy.empty(shape, dtype=dtype)
    return np.empty(shape, dtype=dtype)


def full(shape: tuple[int, ...], value: Any, dtype: str, like: Any) -> Any:
    """Like `empty`, filled with `value` (small constant arguments: dummies, defaults)."""
    if is_cupy(like):
        import cupy

        return cupy.full(shape, value, dtype=dtype)
    return np.full(shape, value, dtype=dtype)


def arg(a: Any) -> Any:
    """`a` as a kernel argument: a zero-copy Numba device array view of a CuPy array. Under the
    simulator a numpy array is wrapped, not copied: the simulator would copy a bare numpy
    argument in and out, which breaks two arguments that view the same memory."""
    if is_simulating():
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        return FakeCUDAArray(a)
    from numba import cuda

    return cuda.as_cuda_array(a, sync=False)


def stream() -> Any:
    """The stream to launch on: CuPy's current stream on a GPU, the default under the simulator."""
    from numba import cuda

    if is_simulating():
        return 0
    import cupy

    return cuda.external_stream(cupy.cuda.get_current_stream().ptr)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)
