"""Backends: where arrays live and which kernels run the ops."""

from __future__ import annotations

from engine.backend.base import Backend


def get_backend(device: str) -> Backend:
    """The backend for a device name."""
    if device == "cpu":
        from engine.backend.cpu import CPUBackend

        return CPUBackend()
    if device == "cuda":
        raise ValueError("device 'cuda': the CUDA backend is not built yet; use device='cpu'")
    raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
