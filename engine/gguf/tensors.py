"""The tensors of a GGUF file behind the `hearth.engine.model.loader.Checkpoint` interface: asked for by
their Hugging Face names, returned in the HF layout.

Float tensors (F32, F16, BF16) come back as read-only numpy views of the memory map and Q8_0/Q4_0
matrices as `QuantizedMatrix` views of it: nothing is copied. Two cases do produce new arrays:
the llama architecture's attn_q/attn_k, whose rows llama.cpp reordered (see `layout`), and types
hearth does not run (K-quants and others), which are dequantized and re-quantized to the nearest
native format at load, one tensor at a time.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hearth.engine.gguf import layout, names
from hearth.engine.gguf.container import TensorData
from hearth.engine.gguf.quantize import (
    FLOAT_DTYPES,
    NATIVE,
    can_dequantize,
    dequantize,
    quantize,
    requantize_target,
)
from hearth.engine.model.quant import BLOCK, QuantizedMatrix


@dataclass(frozen=True)
class _Plan:
    """What one stored tensor becomes: `result` is a dtype ('float16', ...) or block format."""

    tensor: TensorData
    shape: tuple[int, ...]
    result: str | None  # None: a type hearth cannot read (an error only if the tensor is asked for)

    @property
    def converted(self) -> bool:
        if self.result is None:
            return False
        return self.tensor.tensor_type not in NATIVE or (self.result == "float32" and
                                                         self.tensor.tensor_type not in FLOAT_DTYPES)


def _plan(t: TensorData) -> _Plan:
    shape = t.shape
    qtype = t.tensor_type
    is_matrix = len(shape) == 2 and shape[1] % BLOCK == 0
    if qtype in FLOAT_DTYPES:
        return _Plan(t, shape, NATIVE[qtype])
    if qtype in NATIVE and is_matrix:
        return _Plan(t, shape, NATIVE[qtype])
    if not can_dequantize(qtype):
        return _Plan(t, shape, None)
    return _Plan(t, shape, requantize_target(qtype) if is_matrix else "float32")


class GGUFCheckpoint:
    """Tensors by HF name: ``__contains__``, ``get(name, shape)``, ``dtypes()``.

    `qk_heads` = (num_attention_heads, num_key_value_heads) when attn_q/attn_k rows are in
    llama.cpp's order (the llama architecture) and must be put back, None otherwise."""

    def __init__(self, path: Path, tensors: list[TensorData], qk_heads: tuple[int, int] | None) -> None:
        self.path = path
        self._qk_heads = qk_heads
        self._plans = {t.name: _plan(t) for t in tensors}
        self._by_hf = {hf: g for g in self._plans if (hf := names.gguf_to_hf(g)) is not None}

    # ---- the Checkpoint interface -------------------------------------------------------------

    def __contains__(self, name: str) -> bool:
        return name in self._by_hf

    def get(self, name: str, shape: tuple[int, ...]) -> np.ndarray | QuantizedMatrix:
        """Tensor `name` (HF spelling), which must exist with exactly `shape` (HF layout).

        Raises:
            ValueError: missing tensor or wrong shape, naming both spellings of the tensor.
        """
        gguf_name = self._by_hf.get(name)
        if gguf_name is None:
            raise ValueError(f"{self.path}: GGUF file has no tensor {names.hf_to_gguf(name) or name!r} "
                             f"(hearth's {name!r}, expected shape {tuple(shape)})")
        plan = self._plans[gguf_name]
        if plan.shape != tuple(shape):
            raise ValueError(f"{self.path}: tensor {gguf_name!r} ({name!r}) has shape {plan.shape}, "
                             f"expected {tuple(shape)}")
        if plan.result is None:
            raise ValueError(f"{self.path}: tensor {gguf_name!r} has type {plan.tensor.tensor_type.name}, "
                             "which hearth cannot read")
        value = self._load(plan)
        role = names.qk_role(gguf_name)
        if self._qk_heads is not None and role is not None:
            value = self._reorder(value, self._qk_heads[0 if role == "q" else 1])
        return value

    def dtypes(self) -> set[str]:
        """What the weights come back as: dtypes ('float16', ...) and block formats ('q8_0', ...)."""
        return {r for g in self._by_hf.values() if (r := self._plans[g].result) is not None}

    # ---- extras for the GGUF loader -----------------------------------------------------------

    def quantization(self) -> str | None:
        """The block format holding most matrix weights (by element count), None when floats do."""
        counts: Counter[str] = Counter()
        for plan in self._plans.values():
            if len(plan.shape) == 2:
                counts[plan.result if plan.result in ("q8_0", "q4_0") else "float"] += int(np.prod(plan.shape))
        best = counts.most_common(1)
        return best[0][0] if best and best[0][0] != "float" else None

    def conversion_note(self) -> str | None:
        """One line naming the tensors converted at load (K-quants etc.), or None."""
        groups: dict[str, list[str]] = defaultdict(list)
        for gguf_name, plan in self._plans.items():
            if plan.converted:
                groups[f"{plan.tensor.tensor_type.name} -> {plan.result}"].append(gguf_name)
        if not groups:
            return None
        parts = []
        for change, tensor_names in groups.items():
            more = f", ... ({len(tensor_names)} tensors)" if len(tensor_names) > 3 else ""
            parts.append(f"{change}: {', '.join(tensor_names[:3])}{more}")
        # re-quantizing adds a little rounding error on top of the file's own; the log says so
        return (f"{self.path.name}: converting tensor types hearth does not run natively, at load "
                f"(slower load; re-quantized values): {'; '.join(parts)}")

    # ---- internals ----------------------------------------------------------------------------

    def _load(self, plan: _Plan) -> np.ndarray | QuantizedMatrix:
        t, qtype = plan.tensor, plan.tensor.tensor_type
        data = t.data  # a read-only view of the memory map
        if qtype in FLOAT_DTYPES:
            # F32/F16 arrive typed; BF16 arrives as bytes [.., 2K]: view them as bfloat16
            return data.view(FLOAT_DTYPES[qtype]).reshape(plan.shape)
        if not plan.converted:
            return QuantizedMatrix(plan.result, data, plan.shape)  # type: ignore[arg-type]
        values = dequantize(data, qtype, plan.shape)
        if plan.result == "float32":
            return values
        return QuantizedMatrix(plan.result, quantize(values, plan.result), plan.shape)  # type: ignore[arg-type]

    @staticmethod
    def _reorder(value: np.ndarray | QuantizedMatrix, num_heads: int) -> np.ndarray | QuantizedMatrix:
        if isinstance(value, QuantizedMatrix):
            return QuantizedMatrix(value.fmt, layout.to_hf_rows(value.data, num_heads), value.shape)
        return layout.to_hf_rows(value, num_heads)

