"""GGUF Q8_0 / Q4_0 blocks repacked, once at load, into the layout `quant_matmul` reads fast.

GGUF interleaves each 32-element block's fp16 scale with its quants (34 or 18 bytes a block), so
a kernel reading a row would issue unaligned, odd-sized loads and pick the scales out of the
stream. The packed form splits them into two plain arrays with the same numbers:

- `scales`: fp16 [N, K/32], the block scales d in row order.
- `qs`:     q8_0: int8 [N, K], the quants in element order: an ordinary matrix, so a [BLOCK_N,
            BLOCK_K] tile is BLOCK_N contiguous, 32-byte aligned runs of BLOCK_K bytes.
            q4_0: uint8 [N, K/2], byte j of a block holds element 2j in its low nibble and 2j+1
            in its high nibble (GGUF puts j and j+16 there). With the pairs adjacent, a kernel
            unpacks a tile with `tl.join(lo, hi).reshape(...)`, which stays inside each thread's
            registers; GGUF's order would need a cross-lane permute per tile. The 4-bit values
            are stored as they are (0..15); the kernel subtracts 8.

Values are w = d * q (q8_0) and w = d * (q - 8) (q4_0), exactly as `reference.dequantize`;
`unpack` computes them from the packed form so tests can compare bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

BLOCK = 32
BLOCK_BYTES = {"q8_0": 34, "q4_0": 18}


@dataclass(frozen=True)
class PackedWeight:
    """W[N, K] quantized, in the kernel layout (see the module docstring). `qs` and `scales` are
    numpy arrays after `repack`; `to_device` maps them onto the kernels' device."""

    fmt: str
    n: int
    k: int
    qs: Any
    scales: Any

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.k)

    def to_device(self, convert: Callable[[np.ndarray], Any]) -> PackedWeight:
        """The same weight with both arrays passed through `convert` (e.g. `cupy.asarray`, or
        `torch.from_numpy` under the interpreter)."""
        return replace(self, qs=convert(self.qs), scales=convert(self.scales))


def _check_fmt(fmt: str) -> str:
    name = str(fmt).lower()
    if name not in BLOCK_BYTES:
        raise ValueError(f"fmt must be one of {', '.join(BLOCK_BYTES)}, got {fmt!r}")
    return name


def repack(data: np.ndarray, fmt: str) -> PackedWeight:
    """GGUF blocks uint8 [N, K/32 * block bytes] (34 for q8_0, 18 for q4_0) -> PackedWeight with
    host (numpy) arrays. Runs once per weight at load; pure byte shuffling, no arithmetic."""
    fmt = _check_fmt(fmt)
    data = np.asarray(data)
    bb = BLOCK_BYTES[fmt]
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] % bb:
        raise ValueError(
            f"data must be uint8 [N, K/32*{bb}] for {fmt}, got {data.dtype} {data.shape}"
        )
    n, nb = data.shape[0], data.shape[1] // bb
    blocks = data.reshape(n, nb, bb)
    scales = np.ascontiguousarray(blocks[:, :, :2]).view(np.float16).reshape(n, nb)
    if fmt == "q8_0":
        qs = np.ascontiguousarray(blocks[:, :, 2:]).view(np.int8).reshape(n, nb * 32)
    else:
        raw = blocks[:, :, 2:]
        q = np.concatenate([raw & 15, raw >> 4], axis=2)  # [n, nb, 32] in element order
        qs = np.ascontiguousarray(q[:, :, 0::2] | (q[:, :, 1::2] << 4)).reshape(
            n, nb * 16
        )
    return PackedWeight(fmt, n, nb * 32, qs, np.ascontiguousarray(scales))


def _host(a: Any) -> np.ndarray:
    if type(a).__module__.startswith("torch"):
        return a.cpu().numpy()
    if type(a).__module__.startswith("cupy"):
        return a.get()
    return np.asarray(a)


def unpack(packed: PackedWeight) -> np.ndarray:
    """float32 [N, K] dequantized from the packed form (host or device arrays): must equal
    `reference.dequantize` of the GGUF bytes bit for bit (fp16 * small int is exact in fp32)."""
    qs, d = _host(packed.qs), _host(packed.scales).astype(np.float32)
    if packed.fmt == "q8_0":
        q = qs.astype(np.float32).reshape(packed.n, -1, 32)
    else:
        pairs = np.stack(
            [qs & 15, qs >> 4], axis=-1
        )  # low nibble first: element 2j, 2j+1
        q = pairs.reshape(packed.n, -1, 32).astype(np.float32) - 8
    with np.errstate(invalid="ignore"):
        return (d[:, :, None] * q).reshape(packed.n, packed.k)
