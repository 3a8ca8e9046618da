"""Typed access to GGUF key/value metadata (llama.cpp's key names)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hearth.engine.gguf.container import GGUFFile


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Every key/value of the GGUF file at `path` (strings, numbers, bools, lists)."""
    return GGUFFile(path).metadata


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
