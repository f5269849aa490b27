"""The header of a safetensors file, read and checked by hand before any tensor is loaded.

A safetensors file is an 8-byte little-endian header length, a JSON header of
`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`,
then the tensor bytes. Reading the header ourselves, bounded, lets the callers compare
names, dtypes and shapes with what they expect before anything is allocated or built.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.limits import MAX_SAFETENSORS_HEADER_BYTES

# Bytes per element of the safetensors dtypes this project writes or may meet.
ITEM_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


class TensorInfo(NamedTuple):
    dtype: str  # safetensors' name: "F32", "U8", "I64", ...
    shape: tuple[int, ...]


class SafetensorsHeader(NamedTuple):
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]


def read_safetensors_header(path: Path, what: str) -> SafetensorsHeader:
    """The checked header of a safetensors file; `what` ("a safetensors model file") names
    the expected content in errors."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: no such regular file; expected {what}")
    file_size = path.stat().st_size

    def refuse(problem: str) -> PipelineError:
        return PipelineError(f"{path}: not {what} ({problem})")

    with path.open("rb") as file:
        prefix = file.read(8)
        if len(prefix) < 8:
            raise refuse(f"only {len(prefix)} bytes")
        header_size = int.from_bytes(prefix, "little")
        if header_size > min(MAX_SAFETENSORS_HEADER_BYTES, file_size - 8):
            raise refuse(f"a header length of {header_size} bytes at byte offset 0")
        text = file.read(header_size)
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise refuse("the header at byte offset 8 is not JSON") from None
    if not isinstance(header, dict):
        raise refuse("the header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in metadata.items()
    ):
        raise refuse("its __metadata__ is not a map of strings")
    data_size = file_size - 8 - header_size
    tensors = {}
    for name, entry in header.items():
        info = _tensor_info(entry, data_size)
        if info is None:
            raise refuse(f"tensor '{name[:80]}' has a malformed header entry")
        tensors[name] = info
    return SafetensorsHeader(tensors, metadata)


def _tensor_info(entry: object, data_size: int) -> TensorInfo | None:
    """The entry's dtype and shape if it is well formed and its bytes lie in the file."""
    if not isinstance(entry, dict):
        return None
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in ITEM_SIZES or not isinstance(shape, list) or not isinstance(offsets, list):
        return None
    if len(shape) > 8 or not all(isinstance(d, int) and d >= 0 for d in shape):
        return None
    if len(offsets) != 2 or not all(isinstance(o, int) for o in offsets):
        return None
    begin, end = offsets
    if not 0 <= begin <= end <= data_size or end - begin != math.prod(shape) * ITEM_SIZES[dtype]:
        return None
    return TensorInfo(dtype, tuple(shape))
