"""Reading Hugging Face safetensors checkpoints without copying them.

The safetensors layout is an 8-byte little-endian header length, a JSON header (name -> dtype,
shape, byte offsets) and the raw data. Mapping the file and viewing each tensor with
`np.frombuffer` gives arrays backed by the page cache: the weights are never read into a second
buffer, and pages are loaded on first touch."""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path

import ml_dtypes
import numpy as np

_DTYPES = {"F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
           "BF16": np.dtype(ml_dtypes.bfloat16), "F64": np.dtype(np.float64),
           "I64": np.dtype(np.int64), "I32": np.dtype(np.int32), "I8": np.dtype(np.int8),
           "U8": np.dtype(np.uint8)}


class SafetensorsFile:
    """One memory-mapped .safetensors file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        if len(self._map) < 8:
            raise ValueError(f"{path}: not a safetensors file (too short)")
        (header_len,) = struct.unpack("<Q", self._map[:8])
        if header_len > len(self._map) - 8:
            raise ValueError(f"{path}: corrupt safetensors header length {header_len}")
        try:
            header = json.loads(self._map[8:8 + header_len])
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: corrupt safetensors header ({e})") from None
        header.pop("__metadata__", None)
        self._entries: dict[str, dict] = header
        self._data_start = 8 + header_len

    def names(self) -> list[str]:
        return list(self._entries)

    def get(self, name: str) -> np.ndarray:
        """A read-only array viewing the mapped bytes of tensor `name`."""
        info = self._entries[name]
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise ValueError(f"{self.path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        count = int(np.prod(shape, dtype=np.int64))
        if end - begin != count * dtype.itemsize:
            raise ValueError(f"{self.path}: tensor {name!r} byte size does not match its shape {shape}")
        arr = np.frombuffer(self._map, dtype=dtype, count=count, offset=self._data_start + begin)
        return arr.reshape(shape)


class Checkpoint:
    """All tensors of a model directory (single file or sharded with an index)."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        index = model_dir / "model.safetensors.index.json"
        if index.exists():
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(p.name for p in model_dir.glob("*.safetensors"))
        if not files:
            raise ValueError(f"model directory {model_dir} has no *.safetensors weights")
        self._where: dict[str, SafetensorsFile] = {}
        for fname in files:
            path = model_dir / fname
            if not path.exists():
                raise ValueError(f"{model_dir}: shard {fname} listed in the index is missing")
            shard = SafetensorsFile(path)
            for name in shard.names():
                self._where[name] = shard

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def get(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Tensor `name`, which must exist with exactly `shape`."""
        shard = self._where.get(name)
        if shard is None:
            raise ValueError(f"checkpoint {self.model_dir} is missing tensor {name!r} (expected shape {shape})")
        arr = shard.get(name)
        if arr.shape != tuple(shape):
            raise ValueError(
                f"checkpoint tensor {name!r} has shape {tuple(arr.shape)}, expected {tuple(shape)}")
        return arr

    def dtypes(self) -> set[str]:
        """The floating dtypes of the stored weights (e.g. {'bfloat16'})."""
        return {str(self._where[n].get(n).dtype) for n in self._where}
