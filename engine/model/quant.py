"""Weight-only block quantization formats, bit-compatible with GGUF.

A quantized matrix W[N, K] is stored exactly as GGUF stores it: each row is K / 32 blocks laid
end to end, so a GGUF tensor's memory map is used as is (no copy) and a quantize-on-load result
can be written to a GGUF file unchanged.

- Q8_0: 34 bytes per block: an fp16 scale d, then 32 int8 values q; w = d * q.
- Q4_0: 18 bytes per block: an fp16 scale d, then 16 bytes; byte j holds element j in its low
  nibble and element j + 16 in its high nibble; w = d * (q - 8).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK = 32
BLOCK_BYTES = {"q8_0": 34, "q4_0": 18}
FORMATS = tuple(BLOCK_BYTES)


def check_format(fmt: str) -> str:
    """`fmt` lower-cased if it is a native block format, else ValueError."""
    name = str(fmt).lower()
    if name not in BLOCK_BYTES:
        raise ValueError(f"quantization {fmt!r} is not supported; choose one of {', '.join(FORMATS)}")
    return name


def row_bytes(fmt: str, k: int) -> int:
    """Bytes of one quantized row of `k` elements (k must be a multiple of 32)."""
    if k % BLOCK:
        raise ValueError(f"a {fmt} row needs a multiple of {BLOCK} elements, got {k}")
    return k // BLOCK * BLOCK_BYTES[check_format(fmt)]


@dataclass(frozen=True)
class QuantizedMatrix:
    """W[N, K] in a block format: `data` is uint8 [N, row_bytes(fmt, K)], C-contiguous (it may
    view a read-only memory map)."""

    fmt: str
    data: np.ndarray
    shape: tuple[int, int]

    def __post_init__(self) -> None:
        check_format(self.fmt)
        n, k = self.shape
        if self.data.dtype != np.uint8 or self.data.shape != (n, row_bytes(self.fmt, k)):
            raise ValueError(f"{self.fmt} data for a {n}x{k} matrix must be uint8 "
                             f"[{n}, {row_bytes(self.fmt, k)}], got {self.data.dtype} {self.data.shape}")

    @property
    def nbytes(self) -> int:
        return self.data.nbytes
