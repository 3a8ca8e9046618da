"""Fixtures for kernel tests: every available SIMD level, and a logged seed."""

from __future__ import annotations

import os
import secrets

import numpy as np
import pytest

from hearth.kernels import cpu

LEVELS = ["scalar", "avx2", "avx512"]


@pytest.fixture(params=LEVELS)
def simd(request):
    """Run the test on one SIMD level; skip the levels this CPU lacks."""
    level = request.param
    if level not in cpu.available_simd_levels():
        pytest.skip(f"CPU lacks {level} (best: {cpu.detected_simd_level()})")
    previous = cpu.simd_level()
    cpu.set_simd_level(level)
    yield level
    cpu.set_simd_level(previous)


@pytest.fixture
def rng(request):
    """Fresh random inputs per test; reproduce with HEARTH_TEST_SEED=<seed>."""
    seed = int(os.environ.get("HEARTH_TEST_SEED", secrets.randbits(32)))
    print(f"{request.node.nodeid}: HEARTH_TEST_SEED={seed}")
    request.node.user_properties.append(("seed", seed))
    return np.random.default_rng(seed)


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need a real device and Triton compiling for it: skipped (with the
    reason) in the interpreter runs that CI makes."""
    from hearth.kernels.triton.launch import interpreting

    reason = None
    if interpreting():
        reason = "GPU kernels run in the interpreter in this session; `pytest -m gpu` runs these"
    else:
        try:
            import cupy

            if not cupy.cuda.is_available():
                reason = "no CUDA device"
        except ImportError:
            reason = "cupy is not installed"
    if reason:
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))
