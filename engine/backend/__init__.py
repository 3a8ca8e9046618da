"""Backends: where arrays live and which kernels run the ops."""

from __future__ import annotations

from typing import Any

from hearth.engine.backend.base import Backend


def get_backend(device: str, dtype: str | None = None, cuda_device: Any = None) -> Backend:
    """The backend for a device name. On "cuda", `dtype` is the compute dtype (default bf16) and
    `cuda_device` the memory/stream owner (default: the current GPU through CuPy; tests pass an
    interpreter stand-in). ValueError, saying what is missing, when CUDA cannot be used."""
    if device == "cpu":
        from hearth.engine.backend.cpu import CPUBackend

        return CPUBackend()
    if device == "cuda":
        from hearth.engine.backend.cuda.device import open_device

        # open the device before importing the kernels: without CuPy there is nothing to run
        cuda_device = cuda_device if cuda_device is not None else open_device()
        from hearth.engine.backend.cuda.backend import CUDABackend

        return CUDABackend(cuda_device, dtype or "bfloat16")
    raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
