"""Rotary-embedding tables (cos, sin per position and frequency), computed once on the host."""

from __future__ import annotations

import math

import numpy as np

from hearth.engine.model.config import RopeConfig


def inverse_frequencies(rope: RopeConfig, head_dim: int) -> np.ndarray:
    """The per-pair rotation frequencies, with linear or llama3 scaling applied.

    Computed in float32 the way transformers does it, so positions rotate by the same angles."""
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    inv_freq = (np.float32(1.0) / np.power(np.float32(rope.theta), exponents)).astype(np.float32)
    if rope.rope_type == "linear":
        return (inv_freq / np.float32(rope.factor)).astype(np.float32)
    if rope.rope_type == "llama3":
        return _llama3_scale(inv_freq, rope)
    return inv_freq


def _llama3_scale(inv_freq: np.ndarray, rope: RopeConfig) -> np.ndarray:
    # Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, and the band between
    # the two cut-off wavelengths is interpolated smoothly.
    old_len = rope.original_max_position_embeddings
    low_wavelen = old_len / rope.low_freq_factor
    high_wavelen = old_len / rope.high_freq_factor
    f = inv_freq.astype(np.float64)
    wavelen = 2 * math.pi / f
    scaled = np.where(wavelen > low_wavelen, f / rope.factor, f)
    smooth = (old_len / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor)
    smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled
    is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(is_medium, smoothed, scaled).astype(np.float32)


def rope_tables(rope: RopeConfig, head_dim: int, max_positions: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin, each float32 [max_positions, head_dim // 2]."""
    inv_freq = inverse_frequencies(rope, head_dim)
    angles = np.arange(max_positions, dtype=np.float32)[:, None] * inv_freq[None, :]  # fp32 like HF
    angles = angles.astype(np.float64)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
