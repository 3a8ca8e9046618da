"""Elementwise Triton kernels against kernels/reference.py (interpreter in CI, `-m gpu` on a device)."""

from __future__ import annotations

import numpy as np
import pytest
from device_arrays import poisoned, rounded, to_device, to_host
from tolerances import assert_close

from hearth.kernels import reference as ref
from hearth.kernels.triton.silu_and_mul import silu_and_mul

TOL_KEY = {"float32": "float32", "float16": "float16 output", "bfloat16": "bfloat16 output"}


def _check_silu(rng, m, cols, dtype, fused):
    gate = rng.standard_normal((m, cols)).astype(np.float32) * 3
    up = rng.standard_normal((m, cols)).astype(np.float32)
    want = ref.silu_and_mul(rounded(gate, dtype), rounded(up, dtype))
    out = poisoned((m, cols), dtype)
    if fused:
        got = silu_and_mul(to_device(np.concatenate([gate, up], axis=1), dtype), out=out)
    else:
        got = silu_and_mul(to_device(gate, dtype), to_device(up, dtype), out=out)
    assert got is out
    assert_close(to_host(got), want, TOL_KEY[dtype], msg=f"{m}x{cols} {dtype} fused={fused}")


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("fused", [False, True])
def test_silu_and_mul(rng, dtype, fused):
    for m, cols in [(1, 7), (3, 130), (2, 1500)]:
        _check_silu(rng, m, cols, dtype, fused)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_silu_and_mul_model_shapes(rng, dtype):
    for m in (1, 16, 64, 256):
        for cols in (5632, 8192, 14336):
            _check_silu(rng, m, cols, dtype, fused=True)


def test_silu_and_mul_errors(rng):
    g = to_device(rng.standard_normal((2, 6)).astype(np.float32))
    with pytest.raises(ValueError, match="up shape"):
        silu_and_mul(g, to_device(rng.standard_normal((2, 5)).astype(np.float32)))
    with pytest.raises(ValueError, match="even width"):
        silu_and_mul(to_device(rng.standard_normal((2, 5)).astype(np.float32)))
    with pytest.raises(ValueError, match="dtype"):
        silu_and_mul(to_device(rng.integers(0, 3, (2, 6)).astype(np.int32)))
    with pytest.raises(ValueError, match="CuPy array"):
        silu_and_mul(np.zeros((2, 6), np.float32))
    with pytest.raises(ValueError, match="out must have shape"):
        silu_and_mul(g, out=poisoned((2, 6), "float32"))
