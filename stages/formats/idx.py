"""The official MNIST IDX files (`train-images-idx3-ubyte[.gz]` and friends), parsed with numpy.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the values in C order. MNIST uses
type 0x08 (uint8): images are 0x00000803 with dims (N, 28, 28), labels 0x00000801 with (N,).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from stages.core.artifacts import atomic_output
from stages.core.digits import IMAGE_SIDE, N_CLASSES, Digits
from stages.core.errors import PipelineError

GZIP_MAGIC = b"\x1f\x8b"
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def is_idx(head: bytes) -> bool:
    """Whether a file's first bytes (decompressed) start an IDX file of unsigned bytes."""
    return len(head) >= 4 and head[:3] == b"\x00\x00\x08"


def read_file_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic (whatever its name)."""
    raw = Path(path).read_bytes()
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as err:
        raise PipelineError(f"{path}: broken or truncated gzip file ({err})") from None


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array in an IDX file whose magic number must be `magic`."""
    data = read_file_bytes(path)
    n_dims = magic & 0xFF
    header_size = 4 + 4 * n_dims
    if len(data) < 4:
        raise PipelineError(
            f"{path}: truncated at byte offset {len(data)}; "
            "expected an IDX file, which starts with a 4-byte magic number"
        )
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise PipelineError(
            f"{path}: bad magic number 0x{found:08x} at byte offset 0; expected 0x{magic:08x} "
            f"(IDX {_what(magic)})"
        )
    if len(data) < header_size:
        raise PipelineError(
            f"{path}: truncated at byte offset {len(data)}; the IDX header of {_what(magic)} "
            f"has {header_size} bytes"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=n_dims, offset=4))
    size = int(np.prod(dims))
    if len(data) != header_size + size:
        problem = "truncated" if len(data) < header_size + size else "has extra bytes"
        raise PipelineError(
            f"{path}: {problem}: it ends at byte offset {len(data)}, but its header "
            f"(dimensions {' x '.join(map(str, dims))}) says {header_size + size}"
        )
    return np.frombuffer(data, np.uint8, offset=header_size).reshape(dims)


def _what(magic: int) -> str:
    return "images" if magic == IMAGES_MAGIC else "labels"


def read_idx_digits(images_path: Path, labels_path: Path | None) -> Digits:
    """IDX images, and labels from `labels_path` when given; images become (N, 1, 28, 28)."""
    images = read_idx(images_path, IMAGES_MAGIC)  # (N, rows, cols)
    if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise PipelineError(
            f"{images_path}: images are {images.shape[1]} x {images.shape[2]} pixels "
            f"(IDX header, byte offset 8); expected {IMAGE_SIDE} x {IMAGE_SIDE}"
        )
    if len(images) == 0:
        raise PipelineError(f"{images_path}: holds no images (count 0 at byte offset 4)")
    labels = None
    if labels_path is not None:
        labels = read_idx(labels_path, LABELS_MAGIC).astype(np.int64)  # (N,)
        if len(labels) != len(images):
            raise PipelineError(
                f"{labels_path}: holds {len(labels)} labels, but {images_path} holds "
                f"{len(images)} images; expected one label per image"
            )
        bad = np.flatnonzero(labels >= N_CLASSES)
        if bad.size:
            offset = 8 + int(bad[0])
            raise PipelineError(
                f"{labels_path}: byte offset {offset}: label {labels[bad[0]]}; expected 0-9"
            )
    return Digits(images.reshape(-1, 1, IMAGE_SIDE, IMAGE_SIDE).copy(), labels)


def sibling_labels(images_path: Path) -> Path | None:
    """`train-images-idx3-ubyte[.gz]` -> an existing `train-labels-idx1-ubyte[.gz]`, if any."""
    name = images_path.name
    if "images" not in name:
        return None
    base = name.replace("images", "labels").replace("idx3", "idx1").removesuffix(".gz")
    for candidate in (base, base + ".gz"):
        if (images_path.parent / candidate).is_file():
            return images_path.parent / candidate
    return None


def write_idx(path: Path, values: np.ndarray, compress: bool = False) -> None:
    """Write a uint8 array as an IDX file (gzipped if asked), atomically."""
    values = np.ascontiguousarray(values, dtype=np.uint8)
    header = bytes([0, 0, 0x08, values.ndim]) + np.asarray(values.shape, ">u4").tobytes()
    data = header + values.tobytes()
    with atomic_output(path) as tmp:
        # mtime=0: the same array always gives the same bytes.
        tmp.write_bytes(gzip.compress(data, mtime=0) if compress else data)


def write_idx_digits(images_path: Path, labels_path: Path | None, digits: Digits) -> None:
    """Images (N, 1, 28, 28) as idx3 and labels as idx1; gzipped when the name ends in .gz."""
    write_idx(images_path, digits.images.reshape(-1, IMAGE_SIDE, IMAGE_SIDE), _gz(images_path))
    if labels_path is not None and digits.labels is not None:
        write_idx(labels_path, digits.labels.astype(np.uint8), _gz(labels_path))


def _gz(path: Path) -> bool:
    return Path(path).name.endswith(".gz")
