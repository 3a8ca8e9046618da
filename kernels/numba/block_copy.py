"""Copy whole KV-cache blocks between slots: k_cache[dst[i]] = k_cache[src[i]], same for v_cache.

Used for prefix copy-on-write (a shared block is about to be written: copy it to a fresh one) and
for preemption (swapping blocks in and out). Pure data movement, so it copies bits: each cache is
viewed per block as the widest unsigned integer words that tile a block (8, 4, 2 or 1 bytes), which
covers every float dtype (fp32, fp16, bf16, fp8) and gives exact results by construction.

One CUDA block per (pair, cache): grid (P, 2); its threads stride over the block's words.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import cuda

from hearth.kernels.numba.launch import (
    arg,
    check,
    dtype_name,
    is_cupy,
    is_device_array,
    stream,
)

CACHE_DTYPES = (
    "float32",
    "float16",
    "bfloat16",
    "float8_e4m3fn",
    "float8_e5m2",
    "uint16",
    "uint8",
)
ID_DTYPES = ("int32", "int64")


@cuda.jit(cache=True)  # compiled once, kept on disk: a warm start does not recompile
def _copy_blocks_kernel(k_words, v_words, src_ids, dst_ids):
    pair = cuda.blockIdx.x
    cache = k_words if cuda.blockIdx.y == 0 else v_words
    src = src_ids[pair]
    dst = dst_ids[pair]
    # ids are checked on the host when they live there; device-resident ids are trusted, but an
    # out-of-range one must still not write outside the cache
    if src < 0 or src >= cache.shape[0] or dst < 0 or dst >= cache.shape[0]:
        return
    for i in range(cuda.threadIdx.x, cache.shape[1], cuda.blockDim.x):
        cache[dst, i] = cache[src, i]


def _words(cache: Any) -> Any:
    """The cache as [num_blocks, words_per_block] of the widest unsigned int that tiles a block."""
    block_bytes = cache.dtype.itemsize * int(np.prod(cache.shape[1:]))
    for width in (8, 4, 2, 1):
        if block_bytes % width == 0:
            return cache.reshape(cache.shape[0], -1).view(f"uint{8 * width}")
    raise AssertionError("unreachable")


def _host_ids(ids: Any, name: str, num_blocks: int) -> None:
    """Range check of ids that live on the host (free); device ids would need a sync."""
    a = np.asarray(ids)
    if a.size and (a.min() < 0 or a.max() >= num_blocks):
        raise ValueError(
            f"{name} must be in [0, {num_blocks}), got values in [{a.min()}, {a.max()}]"
        )


def copy_blocks(
    k_cache: Any,
    v_cache: Any,
    src_block_ids: Any,
    dst_block_ids: Any,
    threads: int = 256,
) -> None:
    """In place: k_cache[dst_block_ids[i]] = k_cache[src_block_ids[i]] and the same for v_cache.

    k_cache, v_cache: [num_blocks, block_size, num_kv_heads, head_dim] of one dtype (any float
    dtype), C-contiguous. src_block_ids, dst_block_ids: int32/int64 [P]; numpy ids are accepted with
    CuPy caches (they are range-checked, then uploaded). The destinations must be distinct and
    disjoint from the sources (a copy chain would depend on the order of the CUDA blocks); that is
    checked when the ids are on the host. `threads`: threads per CUDA block.
    """
    check(k_cache, "k_cache", CACHE_DTYPES, 4)
    check(v_cache, "v_cache", CACHE_DTYPES, 4, tuple(k_cache.shape))
    if dtype_name(v_cache) != dtype_name(k_cache):
        raise ValueError(
            f"v_cache must have k_cache's dtype {dtype_name(k_cache)}, got {dtype_name(v_cache)}"
        )
    num_blocks = k_cache.shape[0]
    ids = []
    for name, a in (("src_block_ids", src_block_ids), ("dst_block_ids", dst_block_ids)):
        if isinstance(a, np.ndarray):
            if dtype_name(a) not in ID_DTYPES or a.ndim != 1:
                raise ValueError(
                    f"{name} must be a 1-D int32 or int64 array, got {a.dtype} {a.shape}"
                )
            _host_ids(a, name, num_blocks)
            if is_cupy(k_cache):
                import cupy

                a = cupy.asarray(a)
        elif not is_device_array(a):
            raise ValueError(
                f"{name} must be a CuPy or numpy array, got {type(a).__name__}"
            )
        check(a, name, ID_DTYPES, 1)
        ids.append(a)
    src, dst = ids
    if dst.shape != src.shape:
        raise ValueError(
            f"dst_block_ids must have src_block_ids's shape {tuple(src.shape)}, got {tuple(dst.shape)}"
        )
    if isinstance(src_block_ids, np.ndarray) and isinstance(dst_block_ids, np.ndarray):
        if len(set(dst_block_ids.tolist())) != dst_block_ids.size:
            raise ValueError("dst_block_ids must be distinct")
        if set(dst_block_ids.tolist()) & set(src_block_ids.tolist()):
            raise ValueError("dst_block_ids must not appear in src_block_ids")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if src.shape[0] == 0:
        return
    kw, vw = _words(k_cache), _words(v_cache)
    _copy_blocks_kernel[(src.shape[0], 2), threads, stream()](
        arg(kw), arg(vw), arg(src), arg(dst)
    )
