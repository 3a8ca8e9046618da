"""The GGUF container: header, key/value metadata, tensor directory, and the tensors as read-only
numpy views of the memory-mapped file.

The format's constants (value types, tensor types, block sizes) come from the gguf package. The
parsing is done here rather than by `gguf.GGUFReader` for speed: the reader builds numpy objects
for every element of every array, which takes seconds to tens of seconds for the 150k tokens and
merges of a Qwen or Llama 3 vocabulary; this parser reads strings straight off the map.

Layout (little-endian): "GGUF", version u32 (2 or 3), tensor count u64, key count u64; the keys
(string key, u32 value type, value); the tensor directory (string name, u32 n_dims, u64 dims
innermost first, u32 type, u64 offset); padding to `general.alignment` (default 32); the data.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

MAGIC = b"GGUF"
_SCALARS = {GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b", GGUFValueType.UINT16: "H",
            GGUFValueType.INT16: "h", GGUFValueType.UINT32: "I", GGUFValueType.INT32: "i",
            GGUFValueType.FLOAT32: "f", GGUFValueType.BOOL: "?", GGUFValueType.UINT64: "Q",
            GGUFValueType.INT64: "q", GGUFValueType.FLOAT64: "d"}
# tensor types stored as plain numpy values; everything else is viewed as bytes
_TYPED = {GGMLQuantizationType.F32: np.float32, GGMLQuantizationType.F16: np.float16,
          GGMLQuantizationType.F64: np.float64, GGMLQuantizationType.I8: np.int8,
          GGMLQuantizationType.I16: np.int16, GGMLQuantizationType.I32: np.int32,
          GGMLQuantizationType.I64: np.int64}


@dataclass(frozen=True)
class TensorData:
    """One tensor: `shape` in numpy order (rows first), `data` a read-only view of the map (typed
    for F32/F16/..., uint8 [..., row_bytes] for BF16 and block-quantized types)."""

    name: str
    tensor_type: GGMLQuantizationType
    shape: tuple[int, ...]
    data: np.ndarray


class _Cursor:
    def __init__(self, buf: mmap.mmap) -> None:
        self.buf, self.pos = buf, 0

    def unpack(self, fmt: str) -> Any:
        (value,) = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.unpack("Q")
        if self.pos + n > len(self.buf):
            raise EOFError("string runs past the end of the file")
        raw = self.buf[self.pos:self.pos + n]
        self.pos += n
        # names and token texts are UTF-8; a broken one must not stop the whole load
        return raw.decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        kind = GGUFValueType(kind)
        if kind == GGUFValueType.STRING:
            return self.string()
        if kind == GGUFValueType.ARRAY:
            item, count = GGUFValueType(self.unpack("I")), self.unpack("Q")
            if item in _SCALARS and item != GGUFValueType.BOOL:
                arr = np.frombuffer(self.buf, dtype="<" + _SCALARS[item], count=count, offset=self.pos)
                self.pos += arr.nbytes
                return arr.tolist()
            if count > len(self.buf):
                raise EOFError(f"array of {count} items cannot fit in the file")
            return [self.value(item) for _ in range(count)]
        value = self.unpack(_SCALARS[kind])
        if kind == GGUFValueType.FLOAT32:
            # the shortest decimal that is this float32 (1e-06, not 9.99999997e-07): the number
            # the converter was given
            return float(str(np.float32(value)))
        return value


def _byte_shape(shape: tuple[int, ...], qtype: GGMLQuantizationType) -> tuple[int, ...]:
    block, size = GGML_QUANT_SIZES[qtype]
    if shape[-1] % block:
        raise ValueError(f"row of {shape[-1]} values is not whole {qtype.name} blocks of {block}")
    return (*shape[:-1], shape[-1] // block * size)


class GGUFFile:
    """A GGUF file opened read-only: `metadata` (key -> str / int / float / bool / list) and
    `tensors` in file order.

    Raises:
        ValueError: not a GGUF file, an unsupported version, or a truncated/corrupt file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as f:
            if f.read(4) != MAGIC:
                raise ValueError(f"{self.path} is not a GGUF file (it does not start with the GGUF magic bytes)")
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self._parse()
        except (struct.error, EOFError, ValueError, OverflowError, MemoryError) as e:
            raise ValueError(f"{self.path}: corrupt or truncated GGUF file ({e})") from None

    def _parse(self) -> None:
        cur = _Cursor(self._map)
        cur.pos = 4
        version = cur.unpack("I")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} is not supported (2 and 3 are; a huge number means "
                             "a big-endian file)")
        num_tensors, num_keys = cur.unpack("Q"), cur.unpack("Q")
        self.metadata: dict[str, Any] = {}
        for _ in range(num_keys):
            key = cur.string()
            self.metadata[key] = cur.value(cur.unpack("I"))
        directory = []
        for _ in range(num_tensors):
            name = cur.string()
            dims = [cur.unpack("Q") for _ in range(cur.unpack("I"))]
            directory.append((name, tuple(reversed(dims)), GGMLQuantizationType(cur.unpack("I")), cur.unpack("Q")))
        align = int(self.metadata.get("general.alignment", 32))
        if align <= 0 or align & (align - 1):
            raise ValueError(f"general.alignment {align} is not a power of two")
        start = (cur.pos + align - 1) // align * align
        self.tensors = [self._view(start, *entry) for entry in directory]

    def _view(self, start: int, name: str, shape: tuple[int, ...], qtype: GGMLQuantizationType,
              offset: int) -> TensorData:
        count = int(np.prod(shape, dtype=np.int64))
        block, size = GGML_QUANT_SIZES[qtype]
        nbytes = count // block * size
        begin = start + offset
        if begin + nbytes > len(self._map):
            raise EOFError(f"tensor {name!r} runs past the end of the file")
        if qtype in _TYPED:
            data = np.frombuffer(self._map, dtype=_TYPED[qtype], count=count, offset=begin).reshape(shape)
        else:
            data = np.frombuffer(self._map, dtype=np.uint8, count=nbytes, offset=begin).reshape(
                _byte_shape(shape, qtype))
        return TensorData(name, qtype, shape, data)
