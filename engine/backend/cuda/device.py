"""GPU memory for the CUDA backend: CuPy arrays, the stream every launch goes to, memory figures,
and the private memory pool CUDA graphs are captured in.

The backend and the model runner reach CuPy only through a `CupyDevice`, so tests can hand them
a stand-in with the same methods (torch CPU tensors under the Triton interpreter, numpy for the
Numba simulator) and run the whole engine without a GPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import ml_dtypes
import numpy as np

_DTYPES = {"bfloat16": np.dtype(ml_dtypes.bfloat16), "float16": np.dtype(np.float16),
           "float32": np.dtype(np.float32)}


def open_device() -> CupyDevice:
    """The current CUDA device through CuPy, or a ValueError that says what is missing."""
    try:
        import cupy
    except ImportError:
        raise ValueError("device='cuda' needs CuPy, Triton and Numba: pip install 'hearth[gpu]' "
                         "(or use device='cpu')") from None
    try:
        import numba.cuda  # noqa: F401
        import triton  # noqa: F401
    except ImportError as e:
        raise ValueError(f"device='cuda' needs {e.name}: pip install 'hearth[gpu]'") from None
    try:
        available = cupy.cuda.is_available()
    except Exception:  # a broken driver install raises instead of answering False
        available = False
    if not available:
        raise ValueError("device='cuda' was asked for, but CuPy finds no CUDA GPU on this machine "
                         "(no device or no driver); use device='cpu'")
    return CupyDevice()


class CupyDevice:
    """Arrays and launches on the current CUDA device, all on one non-blocking stream."""

    is_real = True  # graphs can be captured (the interpreter stand-in says False)
    sampler_threads = 256  # threads per block of the sampling kernel

    def __init__(self) -> None:
        import cupy

        self.cupy = cupy
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self.stream.use()  # launches (CuPy, Triton through its hook, Numba) land on it
        self.graph_pool = cupy.cuda.MemoryPool()  # scratch of captured graphs, never shared
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        self.name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])

    def activate(self) -> None:
        """Make the engine's stream current in the calling thread (CuPy's current stream is
        per thread, and AsyncLLM steps the engine in a thread of its own)."""
        self.stream.use()

    # ------------------------------------------------------------ arrays
    def asarray(self, host: np.ndarray, dtype: str | None = None) -> Any:
        """A device copy of a host array, converted to `dtype` on the host first."""
        if dtype is not None and host.dtype != _DTYPES[dtype]:
            host = host.astype(_DTYPES[dtype])
        return self.cupy.asarray(np.ascontiguousarray(host))

    def empty(self, shape: tuple[int, ...], dtype: str) -> Any:
        return self.cupy.empty(shape, _DTYPES.get(dtype, dtype))

    def zeros(self, shape: tuple[int, ...], dtype: str) -> Any:
        return self.cupy.zeros(shape, _DTYPES.get(dtype, dtype))

    def to_host(self, a: Any) -> np.ndarray:
        """A host copy (waits for the stream's work that produces it)."""
        return a.get(stream=self.stream)

    def astype(self, a: Any, dtype: str) -> Any:
        return a.astype(_DTYPES.get(dtype, dtype))

    def copy_into(self, dst: Any, host: np.ndarray) -> None:
        """dst[...] = host, queued on the stream (asynchronous when host is pinned)."""
        dst.set(host, stream=self.stream)

    def pinned(self, shape: tuple[int, ...], dtype: str) -> np.ndarray:
        """A page-locked host array: copies from and to it run asynchronously."""
        import cupyx

        return cupyx.empty_pinned(shape, dtype=_DTYPES.get(dtype, dtype))

    def for_numba(self, a: Any) -> Any:
        """The array as the Numba kernels take it (CuPy arrays pass as they are)."""
        return a

    # ------------------------------------------------------------ memory figures
    def memory_info(self) -> tuple[int, int]:
        """(free, total) bytes of device memory, as the driver sees them. CuPy's pool keeps
        freed blocks cached, so after a warm-up pass `total - free` includes its peak."""
        self.synchronize()
        return self.cupy.cuda.runtime.memGetInfo()

    def synchronize(self) -> None:
        self.stream.synchronize()

    # ------------------------------------------------------------ graphs
    @contextlib.contextmanager
    def graph_allocations(self) -> Iterator[None]:
        """Allocate from the graph pool: what a captured graph writes must never be handed to
        anything else, or a replay would overwrite it (as torch's graph pools ensure)."""
        with self.cupy.cuda.using_allocator(self.graph_pool.malloc):
            yield

    def capture(self, fn) -> Any:
        """fn() recorded on the stream as a CUDA graph (launch with `replay`)."""
        self.stream.begin_capture()
        try:
            fn()
        finally:
            graph = self.stream.end_capture()
        return graph

    def replay(self, graph: Any) -> None:
        graph.launch(self.stream)
