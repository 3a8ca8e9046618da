"""Plumbing shared by every Triton launcher: arrays in, Triton arguments out, on CuPy's stream.

On a GPU the engine's arrays are CuPy arrays. Triton turns any argument that has a `data_ptr()`
method and a `dtype` attribute into a pointer, so a CuPy array is handed over as a `DevicePointer`
(its address and a `triton.language` dtype), with no torch involved. Launches go to CuPy's current
stream: `use_cupy_stream()` makes Triton's driver report that stream (with torch installed the
driver would otherwise ask torch), which is what lets a sequence of launches be captured in a CUDA
graph on a CuPy stream.

Under the interpreter (TRITON_INTERPRET=1, how CI runs the kernels without a GPU) the arrays are
torch CPU tensors and pass through unchanged; `empty` allocates like its template, so one launcher
serves both.

Compiled kernels are kept in Triton's on-disk cache (TRITON_CACHE_DIR, default ~/.triton/cache),
keyed by source, signature and target, so a warm start loads them instead of recompiling; the
Numba kernels use `cuda.jit(cache=True)` for the same reason.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def interpreting() -> bool:
    """Whether Triton kernels run in the CPU interpreter (set before triton is imported)."""
    return INTERPRET


def _tl():
    import triton.language as tl

    return tl


def triton_dtype(name: str):
    """The triton.language dtype of a numpy/CuPy/torch dtype name ("float32", "bfloat16", ...)."""
    tl = _tl()
    table = {"float32": tl.float32, "float16": tl.float16, "bfloat16": tl.bfloat16, "int8": tl.int8,
             "uint8": tl.uint8, "int16": tl.int16, "uint16": tl.uint16, "int32": tl.int32,
             "uint32": tl.uint32, "int64": tl.int64, "float64": tl.float64, "bool": tl.int1}
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"dtype {name} cannot be passed to a Triton kernel") from None


class DevicePointer:
    """A device address with a dtype: all Triton reads from an array argument."""

    __slots__ = ("dtype", "ptr")

    def __init__(self, ptr: int, dtype: Any) -> None:
        self.ptr, self.dtype = ptr, dtype

    def data_ptr(self) -> int:
        return self.ptr


def is_torch(a: Any) -> bool:
    return type(a).__module__.startswith("torch")


def is_cupy(a: Any) -> bool:
    return type(a).__module__.startswith("cupy")


def dtype_name(a: Any) -> str:
    """"float32", "bfloat16", ... for a CuPy array, a torch tensor or a numpy array."""
    if is_torch(a):
        return str(a.dtype).removeprefix("torch.")
    return np.dtype(a.dtype).name


def ptr(a: Any, as_dtype: str | None = None) -> Any:
    """`a` as a Triton pointer argument. CuPy arrays become DevicePointers; torch tensors pass
    through (viewed as `as_dtype` when given, e.g. uint16 storage read as bfloat16)."""
    if is_cupy(a):
        return DevicePointer(a.data.ptr, triton_dtype(as_dtype or dtype_name(a)))
    if is_torch(a):
        if as_dtype and as_dtype != dtype_name(a):
            return a.view(getattr(_torch(), as_dtype))
        return a
    raise ValueError(f"expected a CuPy array or (interpreter) a torch tensor, got {type(a).__name__}")


def empty(shape: tuple[int, ...], dtype: str, like: Any) -> Any:
    """An uninitialised array of `shape`/`dtype` on the same device and library as `like`."""
    if is_torch(like):
        torch = _torch()
        return torch.empty(shape, dtype=getattr(torch, dtype), device=like.device)
    import cupy

    return cupy.empty(shape, dtype=_numpy_dtype(dtype))


def _torch():
    """The torch module, only ever reached with a torch tensor in hand (the interpreter tests):
    it is already loaded then, and hearth itself never imports torch."""
    return sys.modules["torch"]


def _numpy_dtype(name: str):
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(name)


def check(a: Any, name: str, dtypes: tuple[str, ...], ndim: int) -> None:
    """ValueError naming `name` unless a is a contiguous array of one of `dtypes` with `ndim` axes."""
    if not (is_cupy(a) or is_torch(a)):
        raise ValueError(f"{name} must be a CuPy array (or a torch tensor under the interpreter), "
                         f"got {type(a).__name__}")
    if dtype_name(a) not in dtypes:
        raise ValueError(f"{name} must have dtype {' or '.join(dtypes)}, got {dtype_name(a)}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(a.shape)}")
    contiguous = a.is_contiguous() if is_torch(a) else a.flags.c_contiguous
    if not contiguous:
        raise ValueError(f"{name} must be C-contiguous")


def output(out: Any, shape: tuple[int, ...], dtype: str, like: Any, name: str = "out") -> Any:
    """A launcher's output: a new array of `shape`/`dtype` beside `like` when `out` is None, else
    `out` itself once checked (contiguous, that dtype, that shape)."""
    if out is None:
        return empty(shape, dtype, like=like)
    check(out, name, (dtype,), len(shape))
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(out.shape)}")
    return out


def check_bias(bias: Any, n: int, dtypes: tuple[str, ...]) -> None:
    """A linear's optional bias: None, or a contiguous [n] vector of one of `dtypes`."""
    if bias is not None:
        check(bias, "bias", dtypes, 1)
        if tuple(bias.shape) != (n,):
            raise ValueError(f"bias must have shape {(n,)}, got {tuple(bias.shape)}")


_stream_hooked = False


def use_cupy_stream() -> None:
    """Make Triton launch on CuPy's current stream and device (idempotent; a no-op under the
    interpreter). Called by every launcher before its first launch."""
    global _stream_hooked
    if _stream_hooked or INTERPRET:
        return
    import cupy
    from triton.runtime import driver

    active = driver.active
    active.get_current_stream = lambda device=None: cupy.cuda.get_current_stream().ptr
    active.get_current_device = lambda: cupy.cuda.Device().id
    _stream_hooked = True


def cdiv(a: int, b: int) -> int:
    return -(-a // b)
