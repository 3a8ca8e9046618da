"""copy_blocks (Numba CUDA): exact copies of whole KV blocks, every other block untouched.

Runs in the CUDA simulator on numpy arrays (tiny shapes); `pytest -m gpu` runs it on CuPy arrays."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from hearth.kernels.numba.block_copy import copy_blocks
from hearth.kernels.numba.launch import is_simulating


def _dev(a):
    if is_simulating():
        return a.copy(
            order="K"
        )  # keeps a non-contiguous layout for the rejection tests
    import cupy

    return cupy.asarray(a)


def _host(a):
    return a.copy() if isinstance(a, np.ndarray) else a.get()


def _bits(a):
    return a.view(f"uint{8 * a.dtype.itemsize}")


def _caches(rng, shape, dtype):
    k = rng.standard_normal(shape).astype(np.float32).astype(dtype)
    v = rng.standard_normal(shape).astype(np.float32).astype(dtype)
    return k, v


def _oracle(cache, src, dst):
    out = cache.copy()
    out[dst] = cache[src]
    return out


def _run(rng, shape, dtype, num_pairs, id_dtype, threads):
    k, v = _caches(rng, shape, dtype)
    perm = rng.permutation(shape[0])
    src, dst = (
        perm[:num_pairs].astype(id_dtype),
        perm[num_pairs : 2 * num_pairs].astype(id_dtype),
    )
    kd, vd = _dev(k), _dev(v)
    copy_blocks(kd, vd, src, dst, threads=threads)
    np.testing.assert_array_equal(_bits(_host(kd)), _bits(_oracle(k, src, dst)))
    np.testing.assert_array_equal(_bits(_host(vd)), _bits(_oracle(v, src, dst)))


@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16])
@pytest.mark.parametrize("id_dtype", [np.int32, np.int64])
def test_copy_blocks_exact(rng, dtype, id_dtype):
    _run(rng, (7, 4, 2, 3), dtype, 3, id_dtype, threads=4)


def test_copy_blocks_odd_bytes(rng):
    # 1 x 1 x 3 fp16 = 6 bytes per block: copied as 2-byte words
    _run(rng, (5, 1, 1, 3), np.float16, 2, np.int32, threads=2)


def test_copy_blocks_empty_is_noop(rng):
    k, v = _caches(rng, (3, 2, 1, 4), np.float32)
    kd, vd = _dev(k), _dev(v)
    copy_blocks(kd, vd, np.zeros(0, np.int32), np.zeros(0, np.int32))
    np.testing.assert_array_equal(_host(kd), k)
    np.testing.assert_array_equal(_host(vd), v)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda a: a.update(k=a["k"][..., 0]), "k_cache"),
        (lambda a: a.update(v=a["v"][:2]), "v_cache"),
        (lambda a: a.update(v=a["v"].astype(np.float16)), "v_cache"),
        (
            lambda a: a.update(k=a["k"].astype(np.int32), v=a["v"].astype(np.int32)),
            "k_cache",
        ),
        (lambda a: a.update(src=a["src"].astype(np.float32)), "src_block_ids"),
        (lambda a: a.update(src=np.array([0, 9], np.int32)), "src_block_ids"),
        (lambda a: a.update(dst=np.array([-1, 2], np.int32)), "dst_block_ids"),
        (lambda a: a.update(dst=np.array([2], np.int32)), "dst_block_ids"),
        (lambda a: a.update(dst=np.array([2, 2], np.int32)), "dst_block_ids"),
        (lambda a: a.update(dst=np.array([1, 2], np.int32)), "dst_block_ids"),
        (
            lambda a: a.update(
                k=np.asfortranarray(a["k"]), v=np.asfortranarray(a["v"])
            ),
            "k_cache",
        ),
    ],
)
def test_copy_blocks_rejects(rng, change, field):
    k, v = _caches(rng, (4, 2, 1, 4), np.float32)
    args = {
        "k": k,
        "v": v,
        "src": np.array([0, 1], np.int32),
        "dst": np.array([2, 3], np.int32),
    }
    change(args)
    with pytest.raises(ValueError, match=field):
        copy_blocks(_dev(args["k"]), _dev(args["v"]), args["src"], args["dst"])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16])
def test_copy_blocks_full_size(rng, dtype):
    _run(rng, (512, 16, 8, 128), dtype, 64, np.int32, threads=256)
