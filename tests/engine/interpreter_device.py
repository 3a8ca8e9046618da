"""A stand-in for hearth.engine.backend.cuda.device.CupyDevice that runs the CUDA backend without a GPU:
arrays are torch CPU tensors, which the Triton kernels take under TRITON_INTERPRET=1, and the
Numba sampler (under NUMBA_ENABLE_CUDASIM=1) gets numpy views of them. Nothing is captured
(`is_real` False): the decode-graph path runs its padded forward eagerly. Test-only (torch)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

_TORCH = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32,
          "int64": torch.int64, "int32": torch.int32, "uint8": torch.uint8, "int8": torch.int8}


class InterpreterDevice:
    is_real = False
    sampler_threads = 8  # the simulator runs Python per thread
    name = "Triton interpreter (CPU)"

    def __init__(self, total_bytes: int = 64 << 20, used_bytes: int = 16 << 20) -> None:
        # a small pretend device: the KV cache sized from it stays a few tens of MiB of host memory
        self.total_bytes, self.used_bytes = total_bytes, used_bytes

    def activate(self) -> None:
        pass

    def asarray(self, host: np.ndarray, dtype: str | None = None):
        host = np.asarray(host)
        if dtype == "bfloat16" or host.dtype.name == "bfloat16":
            t = torch.from_numpy(np.array(host, dtype=np.float32))
            return t.to(torch.bfloat16) if dtype in (None, "bfloat16") else t.to(_TORCH[dtype])
        if dtype is not None:
            host = host.astype(dtype)
        return torch.from_numpy(np.array(host))  # a copy: memory maps are read-only

    def empty(self, shape, dtype):
        return torch.empty(shape, dtype=_TORCH[dtype])

    def zeros(self, shape, dtype):
        return torch.zeros(shape, dtype=_TORCH[dtype])

    def to_host(self, a) -> np.ndarray:
        if isinstance(a, np.ndarray):
            return a
        return (a.float() if a.dtype in (torch.bfloat16, torch.float16) else a).numpy().copy()

    def astype(self, a, dtype):
        return a.to(_TORCH[dtype])

    def copy_into(self, dst, host: np.ndarray) -> None:
        dst.copy_(torch.from_numpy(np.ascontiguousarray(host)))

    def pinned(self, shape, dtype) -> np.ndarray:
        return np.empty(shape, dtype)

    def for_numba(self, a):
        return a.numpy() if isinstance(a, torch.Tensor) else a

    def memory_info(self) -> tuple[int, int]:
        return self.total_bytes - self.used_bytes, self.total_bytes

    def synchronize(self) -> None:
        pass

    def graph_allocations(self):
        return contextlib.nullcontext()
