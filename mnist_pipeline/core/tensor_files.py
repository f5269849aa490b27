"""The header of a safetensors file, read and checked before any tensor is loaded.

A safetensors file is an 8-byte little-endian header length, a JSON header of
`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`,
then the tensor bytes. The length is checked here against our bound (the library allows
100 MB; docs/safety.md says 4 MiB), then the library parses and validates the header
(every tensor's byte range consistent with its dtype, shape and the file's size) and
gives names, dtypes and shapes lazily, so the callers compare them with what they expect
before anything is allocated or built.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.limits import MAX_SAFETENSORS_HEADER_BYTES, MAX_TENSOR_RANK

# Bytes per element, only to name the entry that the library refused (it does not say).
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
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: no such regular file; expected {what}")

    def refuse(problem: str) -> PipelineError:
        return PipelineError(f"{path}: not {what} ({problem})")

    with path.open("rb") as file:
        prefix = file.read(8)
    if len(prefix) < 8:
        raise refuse(f"only {len(prefix)} bytes")
    header_size = int.from_bytes(prefix, "little")
    if header_size > min(MAX_SAFETENSORS_HEADER_BYTES, path.stat().st_size - 8):
        raise refuse(f"a header length of {header_size} bytes at byte offset 0")
    try:
        # framework numpy: nothing is converted, and torch need not be imported.
        with safe_open(str(path), framework="numpy") as file:
            metadata = file.metadata() or {}
            tensors = {}
            for name in file.keys():  # noqa: SIM118 (a safe_open handle, not a dict)
                tensor = file.get_slice(name)
                tensors[name] = TensorInfo(tensor.get_dtype(), tuple(tensor.get_shape()))
    except (SafetensorError, OSError, ValueError) as err:
        problem = str(err).strip().splitlines()[0][:200] if str(err).strip() else "unreadable"
        where = _refused_entry(path, header_size)
        raise refuse(f"{where or 'its header at byte offset 8'}: {problem}") from None
    for name, info in tensors.items():
        if len(info.shape) > MAX_TENSOR_RANK:
            raise refuse(f"tensor '{name[:80]}' has {len(info.shape)} dimensions")
    return SafetensorsHeader(tensors, metadata)


def _refused_entry(path: Path, header_size: int) -> str | None:
    """'tensor NAME has a malformed header entry' for the first entry whose dtype, shape
    or byte range is inconsistent; None if none is (or the header is no JSON object)."""
    with path.open("rb") as file:
        file.seek(8)
        text = file.read(header_size)  # at most MAX_SAFETENSORS_HEADER_BYTES
    try:
        header = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    for name, entry in header.items() if isinstance(header, dict) else []:
        if name == "__metadata__":
            continue
        try:
            begin, end = entry["data_offsets"]
            size = math.prod(entry["shape"]) * ITEM_SIZES[entry["dtype"]]
            consistent = isinstance(begin, int) and 0 <= begin <= end and end - begin == size
        except (TypeError, KeyError, ValueError):
            consistent = False
        if not consistent:
            return f"tensor '{name[:80]}' has a malformed header entry"
    return None
