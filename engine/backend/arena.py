"""One large allocation for the weights the engine creates itself (quantize-on-load).

Measured on this machine (issue 6, with the quantized matvec benchmark): a quantized matvec over separate numpy
arrays of a few MiB runs ~15% slower than over one large buffer. numpy asks the kernel for
transparent huge pages only for allocations of 4 MiB or more, so small arrays sit on 4 KiB
pages and every weight row streamed in costs a TLB miss. A model quantized on load has hundreds
of such matrices; carving them out of a few large slabs puts them all on 2 MiB pages.
"""

from __future__ import annotations

import numpy as np

ALIGN = 64  # one cache line: the kernels' rows start on it and vector loads never straddle two


class WeightArena:
    """Hands out C-contiguous uint8 arrays carved from slabs of `slab_bytes`; a request of half
    a slab or more gets an allocation of its own (large enough for huge pages by itself), so the
    current slab's free tail is not thrown away. Slices keep their slab alive; nothing is freed
    piecemeal, the arena lives as long as the model's weights."""

    def __init__(self, slab_bytes: int = 64 << 20) -> None:
        if slab_bytes < 4 << 20:
            raise ValueError(f"slab_bytes must be at least 4 MiB (the huge-page threshold), got {slab_bytes}")
        self.slab_bytes = slab_bytes
        self._slab: np.ndarray | None = None
        self._used = 0
        self.reserved = 0  # bytes of all slabs, for reporting

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        """A new uninitialised uint8 array of `shape`, aligned to ALIGN bytes."""
        nbytes = int(np.prod(shape, dtype=np.int64))
        if nbytes < 0 or any(d < 0 for d in shape):
            raise ValueError(f"bad shape {shape}")
        if nbytes >= self.slab_bytes // 2:
            return self._allocate(nbytes).reshape(shape)
        if self._slab is None or self._used + nbytes > self._slab.size:
            self._slab, self._used = self._allocate(self.slab_bytes), 0
        out = self._slab[self._used:self._used + nbytes].reshape(shape)
        self._used += -(-nbytes // ALIGN) * ALIGN
        return out

    def _allocate(self, nbytes: int) -> np.ndarray:
        raw = np.empty(nbytes + ALIGN, np.uint8)
        skip = -raw.ctypes.data % ALIGN
        self.reserved += raw.nbytes
        return raw[skip:skip + nbytes]
