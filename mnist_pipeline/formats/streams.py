"""Opening input files as bounded byte streams: gzip told by magic number, never inflated whole.

The one place that sniffs gzip (issue 12). Readers take a stream and read only as many
bytes as the format's header says, plus one to notice extra data, so a small gzip file
that inflates to gigabytes costs no more than the header allows.
"""

from __future__ import annotations

import contextlib
import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from mnist_pipeline.core.errors import PipelineError

GZIP_MAGIC = b"\x1f\x8b"
# What a broken gzip stream raises while it is read (BadGzipFile is an OSError).
GZIP_ERRORS = (EOFError, OSError, zlib.error)


def require_regular_file(path: Path, expected: str) -> None:
    """Refuse what is not a regular file: a FIFO or a device would block or never end."""
    if not path.is_file():
        what = "a folder" if path.is_dir() else "not a regular file"
        what = what if path.exists() else "no such file"
        raise PipelineError(f"{path}: {what}; expected {expected}")


@contextlib.contextmanager
def open_input(path: Path) -> Iterator[BinaryIO]:
    """The file's bytes as a stream, decompressed on the fly when it starts with gzip's magic."""
    path = Path(path)
    with path.open("rb") as raw:
        if raw.read(len(GZIP_MAGIC)) != GZIP_MAGIC:
            raw.seek(0)
            yield raw
            return
        raw.seek(0)
        with gzip.GzipFile(fileobj=raw, mode="rb") as inflated:
            yield inflated  # type: ignore[misc]


def read_exactly(stream: BinaryIO, count: int, path: Path) -> bytes:
    """Up to `count` bytes (fewer only at the end), turning a broken gzip stream into an error."""
    try:
        return stream.read(count)
    except GZIP_ERRORS as err:
        raise PipelineError(f"{path}: broken or truncated gzip file ({err})") from None


def read_into(stream: BinaryIO, buffer: memoryview, path: Path) -> int:
    """Fill `buffer` from the stream as far as it goes; the number of bytes read."""
    filled = 0
    try:
        while filled < len(buffer):
            count = stream.readinto(buffer[filled:])  # type: ignore[attr-defined]
            if not count:
                break
            filled += count
    except GZIP_ERRORS as err:
        raise PipelineError(f"{path}: broken or truncated gzip file ({err})") from None
    return filled


def first_bytes(path: Path, count: int = 16) -> tuple[bytes, bool]:
    """The file's first bytes, decompressed if it is gzipped, and whether it was."""
    with open_input(path) as stream:
        return read_exactly(stream, count, path), isinstance(stream, gzip.GzipFile)
