"""The one tolerance table for kernel tests: |out - ref| <= atol + rtol*|ref|.

Keys are the dtype of the data that limits precision. bf16 weights are
compared against the oracle run on the same bf16-rounded weights, so only
fp32 arithmetic error remains and the entry equals fp32's. Reductions over
K terms scale atol by sqrt(K) (see `assert_close(..., reduce_len=K)`).
"""

from __future__ import annotations

import numpy as np

TOLERANCES: dict[str, tuple[float, float]] = {
    # dtype: (atol, rtol)
    "float32": (1e-5, 1e-5),
    "bfloat16": (1e-5, 1e-5),
    # GPU kernels whose outputs are stored in 16 bits (inputs rounded the same way for the
    # oracle): one rounding of the result, 2**-11 (fp16) or 2**-8 (bf16) relative, and a little
    # fp32 error before it.
    "float16 output": (1e-3, 2e-3),
    "bfloat16 output": (1e-2, 1.6e-2),
}


def assert_close(
    out: np.ndarray,
    ref: np.ndarray,
    dtype: str = "float32",
    reduce_len: int = 1,
    msg: str = "",
) -> None:
    """Assert elementwise closeness, atol scaled by sqrt(reduce_len)."""
    atol, rtol = TOLERANCES[dtype]
    atol = atol * max(1.0, float(np.sqrt(reduce_len)))
    out = np.asarray(out, dtype=np.float64)
    assert out.shape == ref.shape, f"shape {out.shape} != {ref.shape} {msg}"
    assert np.all(np.isfinite(out)), f"non-finite output (poison left?) {msg}"
    err = np.abs(out - ref)
    bad = err > atol + rtol * np.abs(ref)
    if bad.any():
        i = np.unravel_index(np.argmax(err - rtol * np.abs(ref)), err.shape)
        raise AssertionError(
            f"{bad.sum()}/{bad.size} elements off (atol={atol:.3g}, rtol={rtol:.3g}); "
            f"worst at {i}: out={out[i]!r} ref={ref[i]!r} {msg}"
        )
