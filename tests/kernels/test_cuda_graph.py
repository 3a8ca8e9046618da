"""A sequence of Triton launches captured in a CUDA graph on a CuPy stream and replayed gives the
same bits as running it eagerly (needs a device: `pytest -m gpu`). This is what the launcher's
stream hook (kernels/triton/launch.py `use_cupy_stream`) is for: without it, Triton would launch
on another stream and the capture would record nothing, or fail."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def test_graph_replay_equals_eager(rng):
    import cupy

    from hearth.kernels.triton.silu_and_mul import silu_and_mul

    gate_up = cupy.asarray(rng.standard_normal((16, 2 * 5632)).astype(np.float16))
    mid = cupy.empty((16, 5632), np.float16)
    out = cupy.empty((16, 5632), np.float16)

    def step():  # a fixed sequence of dependent launches on fixed buffers, as a decode step is
        silu_and_mul(gate_up, out=mid)
        silu_and_mul(mid, mid, out=out)

    step()  # compile and load outside the capture
    cupy.cuda.Device().synchronize()
    eager = out.copy()
    out.fill(np.nan)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        step()
        graph = stream.end_capture()
    assert bool(cupy.isnan(out).all()), "capture must record launches, not run them"
    graph.launch(stream)
    stream.synchronize()
    np.testing.assert_array_equal(out.get(), eager.get())
    gate_up *= 2  # replays read the buffers' current contents
    graph.launch(stream)
    stream.synchronize()
    replayed = out.copy()
    step()
    cupy.cuda.Device().synchronize()
    np.testing.assert_array_equal(replayed.get(), out.get())
    assert not np.array_equal(replayed.get(), eager.get())
