"""The Triton launcher plumbing (kernels/triton/launch.py), without a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import triton.language as tl

from hearth.kernels.triton import launch


def test_triton_dtypes_by_name():
    assert launch.triton_dtype("bfloat16") is tl.bfloat16
    assert launch.triton_dtype("float16") is tl.float16
    assert launch.triton_dtype("uint8") is tl.uint8
    with pytest.raises(ValueError, match="complex64"):
        launch.triton_dtype("complex64")


def test_device_pointer_is_what_triton_reads():
    p = launch.DevicePointer(0x7F0000001000, tl.float32)
    assert p.data_ptr() == 0x7F0000001000 and p.dtype is tl.float32


def test_torch_tensors_pass_through_or_are_reinterpreted():
    t = torch.zeros(4, dtype=torch.int16)
    assert launch.ptr(t) is t
    as_bf16 = launch.ptr(t, "bfloat16")
    assert as_bf16.dtype == torch.bfloat16 and as_bf16.data_ptr() == t.data_ptr()
    with pytest.raises(ValueError, match="CuPy array"):
        launch.ptr(np.zeros(4))


def test_empty_allocates_like_its_template():
    t = torch.zeros(2, dtype=torch.float32)
    out = launch.empty((3, 5), "bfloat16", like=t)
    assert tuple(out.shape) == (3, 5) and out.dtype == torch.bfloat16 and out.device == t.device
    assert launch.dtype_name(out) == "bfloat16"


def test_check_names_the_argument():
    t = torch.zeros((2, 3), dtype=torch.float32)
    launch.check(t, "x", ("float32",), 2)
    with pytest.raises(ValueError, match="x must have dtype float16"):
        launch.check(t, "x", ("float16",), 2)
    with pytest.raises(ValueError, match="x must be 3-D"):
        launch.check(t, "x", ("float32",), 3)
    with pytest.raises(ValueError, match="x must be C-contiguous"):
        launch.check(t.T, "x", ("float32",), 2)
    with pytest.raises(ValueError, match="x must be a CuPy array"):
        launch.check([1, 2], "x", ("float32",), 1)


def test_interpreter_is_on_in_ci_runs():
    # the root conftest turns it on for every run but `pytest -m gpu`
    assert launch.interpreting()
    assert launch.cdiv(7, 2) == 4 and launch.cdiv(8, 2) == 4


def test_output_allocates_or_checks_the_callers_array():
    like = torch.zeros(1, dtype=torch.float16)
    new = launch.output(None, (2, 3), "float16", like)
    assert tuple(new.shape) == (2, 3) and new.dtype == torch.float16
    given = torch.empty((2, 3), dtype=torch.float16)
    assert launch.output(given, (2, 3), "float16", like) is given
    with pytest.raises(ValueError, match=r"out must have shape \(2, 4\)"):
        launch.output(given, (2, 4), "float16", like)
    with pytest.raises(ValueError, match="out must have dtype float32"):
        launch.output(given, (2, 3), "float32", like)
    launch.check_bias(None, 3, ("float32",))
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        launch.check_bias(torch.zeros(3), 4, ("float32",))


def test_launches_go_to_cupys_stream_through_tritons_driver(monkeypatch):
    """use_cupy_stream() against the installed Triton (CI installs the newest one, which has no
    torch to ask for a stream): the launcher in triton.runtime.jit asks its active driver for the
    current device and then that device's stream; after the hook both answers come from CuPy
    (stood in for here, as no GPU is present), which is what makes graph capture on a CuPy stream
    see the launches."""
    import inspect
    import sys
    import types

    import triton.runtime.jit as jit
    from triton.runtime import driver

    source = inspect.getsource(jit)
    assert "driver.active.get_current_device()" in source  # the protocol the hook relies on
    assert "driver.active.get_current_stream(device)" in source

    class Stream:
        ptr = 0xC0FFEE

    fake_cupy = types.ModuleType("cupy")
    fake_cupy.cuda = types.SimpleNamespace(get_current_stream=lambda: Stream(),
                                           Device=lambda: types.SimpleNamespace(id=3))
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)

    class TorchDriver:  # what a torch-present driver would answer
        def get_current_device(self):
            return 0

        def get_current_stream(self, device):
            return 0

    previous = driver._active
    driver.set_active(TorchDriver())
    monkeypatch.setattr(launch, "INTERPRET", False)
    monkeypatch.setattr(launch, "_stream_hooked", False)
    try:
        launch.use_cupy_stream()
        device = driver.active.get_current_device()
        assert (device, driver.active.get_current_stream(device)) == (3, 0xC0FFEE)
        launch.use_cupy_stream()  # idempotent
        assert launch._stream_hooked
    finally:
        driver._active = previous
