"""Llama 3.1 rope scaling as llama.cpp stores it: not as parameters but as a ``rope_freqs.weight``
tensor of per-frequency divisors. These functions go from the parameters to that tensor (writing)
and back (reading)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _inverse_frequencies(theta: float, head_dim: int) -> np.ndarray:
    exponents = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    return (np.float32(1.0) / np.power(np.float32(theta), exponents)).astype(np.float32)


def llama3_rope_factors(theta: float, head_dim: int, scaling: dict[str, Any]) -> np.ndarray:
    """float32 [head_dim // 2]: how much slower each frequency turns under llama3 scaling (1 for
    short wavelengths, `factor` for long ones, a smooth blend between the two cut-offs)."""
    factor = float(scaling.get("factor", 8.0))
    low = float(scaling.get("low_freq_factor", 1.0))
    high = float(scaling.get("high_freq_factor", 4.0))
    old_len = float(scaling.get("original_max_position_embeddings", 8192))
    wavelen = 2 * math.pi / _inverse_frequencies(theta, head_dim).astype(np.float64)
    smooth = (old_len / wavelen - low) / (high - low)
    blended = 1.0 / ((1.0 - smooth) / factor + smooth)
    out = np.where(wavelen < old_len / high, 1.0, np.where(wavelen > old_len / low, factor, blended))
    return out.astype(np.float32)


def fit_llama3_scaling(factors: np.ndarray, theta: float, head_dim: int) -> dict[str, Any] | None:
    """The llama3 `rope_scaling` dict whose factors equal `factors` (None when all are 1).

    The tensor fixes the blend as a line in 1/wavelength but not the three parameters behind it,
    so low_freq_factor is taken as 1 (as in every Llama 3.x release) and the other two follow.

    Raises:
        ValueError: the factors do not have the llama3 shape.
    """
    r = np.asarray(factors, dtype=np.float64).reshape(-1)
    if r.shape[0] != head_dim // 2 or not np.all(np.isfinite(r)) or np.any(r <= 0):
        raise ValueError(f"rope_freqs.weight must hold {head_dim // 2} positive factors, got shape {factors.shape}")
    factor = float(r.max())
    if factor <= 1.0 + 1e-6:
        return None
    wavelen = 2 * math.pi / _inverse_frequencies(theta, head_dim).astype(np.float64)
    middle = (r > 1.0 + 1e-5) & (r < factor * (1 - 1e-5))
    low = 1.0
    if middle.sum() >= 2:
        # 1/r = (1 - s)/factor + s with s = A/wavelen - B: a straight line in 1/wavelen
        s = (1.0 / r[middle] - 1.0 / factor) / (1.0 - 1.0 / factor)
        a, b = np.polyfit(1.0 / wavelen[middle], s, 1)
        a, b = float(a), float(-b)
        if b <= 0 or a <= 0:
            raise ValueError("rope_freqs.weight does not follow Llama 3 rope scaling")
        # float32 factors leave noise in the last digits; real configs use round numbers
        high, old_len = round(low + 1.0 / b, 6), a / b
    else:
        high = 4.0
        if middle.any():  # one blended frequency pins the cut-off length
            s = (1.0 / r[middle][0] - 1.0 / factor) / (1.0 - 1.0 / factor)
            old_len = float(wavelen[middle][0] * (low + s * (high - low)))
        else:  # any length between the last unscaled and the first scaled wavelength fits
            lo = high * float(wavelen[r <= 1.0 + 1e-5].max(initial=0.0))
            hi = low * float(wavelen[r >= factor * (1 - 1e-5)].min(initial=np.inf))
            old_len = math.sqrt(lo * hi) if lo > 0 and math.isfinite(hi) else (lo or hi / 2)
    scaling = {"rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
               "original_max_position_embeddings": max(1, round(old_len))}
    if not np.allclose(llama3_rope_factors(theta, head_dim, scaling), r, rtol=1e-3, atol=1e-4):
        raise ValueError("rope_freqs.weight does not follow Llama 3 rope scaling; hearth cannot run this file")
    return scaling
