"""The official MNIST IDX files (`train-images-idx3-ubyte[.gz]` and friends), parsed with numpy.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian uint32 per dimension, then the values in C order. MNIST uses
type 0x08 (uint8): images are 0x00000803 with dims (N, 28, 28), labels 0x00000801 with (N,).
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mnist_pipeline.core.artifacts import atomic_output
from mnist_pipeline.core.digits import IMAGE_SIDE, N_CLASSES, Digits
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.limits import MAX_IMAGES
from mnist_pipeline.formats.streams import open_input, read_exactly, read_into

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def is_idx(head: bytes) -> bool:
    """Whether a file's first bytes (decompressed) start an IDX file of unsigned bytes."""
    return len(head) >= 4 and head[:3] == b"\x00\x00\x08"


def read_idx(
    path: Path, magic: int, count: int | None = None, images_path: Path | None = None
) -> np.ndarray:
    """The uint8 array in an IDX file whose magic number must be `magic`.

    Streamed: the header is read and checked first (magic, 28x28 images, at most
    MAX_IMAGES, `count` items when given), then exactly the bytes it announces, into one
    buffer, so neither a lying header nor a gzip bomb can claim more memory than a valid
    file of MAX_IMAGES images.
    """
    path = Path(path)
    with open_input(path) as stream:
        dims, header_size = _read_header(stream, path, magic, (count, images_path))
        size = int(np.prod(dims, dtype=object))  # Python ints: no overflow
        if not isinstance(stream, gzip.GzipFile):  # raw: the file's size says it all
            file_size = path.stat().st_size
            if file_size != header_size + size:
                raise _size_error(path, dims, header_size + size, file_size)
        values = np.empty(size, np.uint8)  # untouched pages cost no memory until read
        filled = read_into(stream, memoryview(values.data), path)
        extra = read_exactly(stream, 1, path) if filled == size else b""
    if filled < size or extra:
        raise _size_error(path, dims, header_size + size, None if extra else header_size + filled)
    return values.reshape(dims)


def _size_error(path: Path, dims: tuple[int, ...], expected: int, end: int | None) -> PipelineError:
    """`end`: where the data ends (None: somewhere after `expected`, in a gzip stream)."""
    problem = "truncated" if end is not None and end < expected else "has extra bytes"
    where = f"it ends at byte offset {end}" if end is not None else "data goes on"
    return PipelineError(
        f"{path}: {problem}: {where}, but its header (dimensions "
        f"{' x '.join(map(str, dims))}) says {expected} bytes"
    )


def _read_header(
    stream: BinaryIO, path: Path, magic: int, expected: tuple[int | None, Path | None]
) -> tuple[tuple[int, ...], int]:
    """Check the magic number and dimensions; (dims, header size in bytes)."""
    n_dims = magic & 0xFF
    header_size = 4 + 4 * n_dims
    header = read_exactly(stream, header_size, path)
    if len(header) < 4:
        raise PipelineError(
            f"{path}: truncated at byte offset {len(header)}; "
            "expected an IDX file, which starts with a 4-byte magic number"
        )
    found = int.from_bytes(header[:4], "big")
    if found != magic:
        raise PipelineError(
            f"{path}: bad magic number 0x{found:08x} at byte offset 0; expected 0x{magic:08x} "
            f"(IDX {_what(magic)})"
        )
    if len(header) < header_size:
        raise PipelineError(
            f"{path}: truncated at byte offset {len(header)}; the IDX header of {_what(magic)} "
            f"has {header_size} bytes"
        )
    dims = tuple(int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(n_dims))
    if magic == IMAGES_MAGIC and dims[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise PipelineError(
            f"{path}: images are {dims[1]} x {dims[2]} pixels "
            f"(IDX header, byte offset 8); expected {IMAGE_SIDE} x {IMAGE_SIDE}"
        )
    if dims[0] > MAX_IMAGES:
        raise PipelineError(
            f"{path}: the IDX header (byte offset 4) says {dims[0]} {_what(magic)}; "
            f"expected at most {MAX_IMAGES}"
        )
    if magic == IMAGES_MAGIC and dims[0] == 0:
        raise PipelineError(f"{path}: holds no images (count 0 at byte offset 4)")
    count, images_path = expected
    if count is not None and dims[0] != count:
        raise PipelineError(
            f"{path}: holds {dims[0]} {_what(magic)} (IDX header, byte offset 4), but "
            f"{images_path} holds {count} images; expected one label per image"
        )
    return dims, header_size


def _what(magic: int) -> str:
    return "images" if magic == IMAGES_MAGIC else "labels"


def read_idx_digits(images_path: Path, labels_path: Path | None) -> Digits:
    """IDX images, and labels from `labels_path` when given; images become (N, 1, 28, 28)."""
    images = read_idx(images_path, IMAGES_MAGIC)  # (N, 28, 28)
    labels = None
    if labels_path is not None:
        raw_labels = read_idx(labels_path, LABELS_MAGIC, len(images), images_path)  # (N,) uint8
        bad = np.flatnonzero(raw_labels >= N_CLASSES)
        if bad.size:
            offset = 8 + int(bad[0])
            raise PipelineError(
                f"{labels_path}: byte offset {offset}: label {raw_labels[bad[0]]}; expected 0-9"
            )
        labels = raw_labels.astype(np.int64)
    # A view of the one buffer read: no copy of up to 784 MB.
    return Digits(images.reshape(-1, 1, IMAGE_SIDE, IMAGE_SIDE), labels)


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
