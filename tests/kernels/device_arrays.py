"""Arrays for the GPU kernel tests: torch CPU tensors when the kernels run in Triton's
interpreter (CI, no GPU), CuPy arrays on a real device (`pytest -m gpu`). Tests build inputs
in numpy, move them with `to_device`, and read results back as float64 with `to_host`."""

from __future__ import annotations

import numpy as np

from hearth.kernels.triton.launch import interpreting

FLOATS = ("float32", "float16", "bfloat16")


def to_device(a: np.ndarray, dtype: str | None = None):
    """A copy of `a` on the kernels' device, converted to `dtype` (default: a's own)."""
    dtype = dtype or a.dtype.name
    if interpreting():
        import torch

        if dtype == "bfloat16":  # torch cannot take ml_dtypes arrays: round through float32
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(torch.bfloat16)
        return torch.from_numpy(np.ascontiguousarray(a).astype(dtype))
    import cupy
    import ml_dtypes

    return cupy.asarray(np.ascontiguousarray(a).astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype))


def to_host(a) -> np.ndarray:
    """A device array's values as a numpy array (floats as float64, integers as they are)."""
    if type(a).__module__.startswith("torch"):
        import torch

        if a.dtype in (torch.bfloat16, torch.float16):
            a = a.float()
        out = a.numpy()
    else:
        out = a.get()
    return out.astype(np.float64) if out.dtype.kind == "f" or out.dtype.name == "bfloat16" else out


def rounded(a: np.ndarray, dtype: str) -> np.ndarray:
    """a rounded to `dtype` and back to float64: the oracle's input, exactly what the kernel reads."""
    return to_host(to_device(a, dtype))


def poisoned(shape: tuple[int, ...], dtype: str):
    """An output array full of NaN (floats) or a sentinel (integers), so a kernel that skips an
    element is caught."""
    if dtype in FLOATS:
        return to_device(np.full(shape, np.nan, np.float32), dtype)
    return to_device(np.full(shape, -7, dtype), dtype)
