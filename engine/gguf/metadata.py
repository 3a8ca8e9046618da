"""GGUF key/value metadata as plain Python values, read through `gguf.GGUFReader`."""

from __future__ import annotations

from typing import Any

import numpy as np
from gguf import GGUFReader, GGUFValueType


def _decode(raw: Any) -> str:
    # llama.cpp writes token texts as UTF-8; a broken one must not stop the whole load
    return bytes(raw).decode("utf-8", errors="replace")


def _field_value(field: Any) -> Any:
    kind = field.types[0] if field.types else None
    if kind == GGUFValueType.STRING:
        return _decode(field.parts[field.data[0]])
    if kind == GGUFValueType.ARRAY:
        item = field.types[-1] if len(field.types) > 1 else None
        if item == GGUFValueType.STRING:
            return [_decode(field.parts[i]) for i in field.data]
        if item == GGUFValueType.ARRAY:
            return None  # nested arrays: no key hearth reads uses them
        return [_scalar(field.parts[i]) for i in field.data]
    return _scalar(field.parts[field.data[0]])


def _scalar(part: Any) -> Any:
    if part.dtype == np.float32:
        # the shortest decimal that is this float32 (1e-06, not 9.99999997e-07): the value the
        # converter started from, as the HF config had it
        return float(str(part[0]))
    return part[0].item()


def read_metadata(reader: GGUFReader) -> dict[str, Any]:
    """Every key of the file (the reader's own ``GGUF.*`` header entries left out): strings as
    str, numbers and bools as Python scalars, arrays as lists."""
    return {name: _field_value(field) for name, field in reader.fields.items() if not name.startswith("GGUF.")}


class Metadata:
    """Typed access to one file's metadata, with error messages that name the file and key."""

    def __init__(self, values: dict[str, Any], source: str) -> None:
        self.values = values
        self.source = source
        self.arch = str(values.get("general.architecture", ""))

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def arch_key(self, key: str, default: Any = None) -> Any:
        """``{arch}.{key}``, e.g. ``llama.block_count``."""
        return self.values.get(f"{self.arch}.{key}", default)

    def require(self, key: str) -> Any:
        """``{arch}.{key}``, which must be present."""
        full = f"{self.arch}.{key}"
        if full not in self.values:
            raise ValueError(f"{self.source}: GGUF metadata is missing {full!r}")
        return self.values[full]

    def uniform(self, key: str, default: Any = None) -> Any:
        """An architecture key that may be stored per layer (an array): all layers must agree."""
        value = self.arch_key(key, default)
        if isinstance(value, list):
            if not value or any(v != value[0] for v in value):
                raise ValueError(f"{self.source}: {self.arch}.{key} differs between layers ({value}); "
                                 "hearth needs one value for all layers")
            return value[0]
        return value
