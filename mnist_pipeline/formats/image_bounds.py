"""Bounds on decoding an image, checked before and while Pillow decodes it.

Before: the header's width x height, and for a JPEG its scans (counted in the bytes, since
each scan of a progressive JPEG walks the whole image). While: `CheckedBytes` calls a
caller's check each time the decoder asks for more input, so `serve` can stop a decode
whose time is up or whose client has gone (docs/safety.md).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import IO

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.limits import MAX_IMAGE_PIXELS, MAX_JPEG_SCAN_PIXELS, MAX_JPEG_SCANS

_SCAN_MARKER = b"\xff\xda"  # SOS: the start of a scan
_CHUNK = 1024 * 1024


class ImageLimitError(PipelineError):
    """An image beyond a decoding bound: pixels, JPEG scans, or time (HTTP 413 in `serve`)."""


def check_image_bounds(name: str, *, width: int, height: int, file: IO[bytes] | None) -> None:
    """ImageLimitError unless width x height and, for a JPEG (`file` given), its scans are
    within bounds; `file`'s position is kept."""
    if width * height > MAX_IMAGE_PIXELS or min(width, height) < 1:
        raise ImageLimitError(
            f"{name}: the image header says {width} x {height} pixels; expected at most "
            f"{MAX_IMAGE_PIXELS} pixels"
        )
    if file is None:
        return
    scans = jpeg_scans(file)
    if scans > MAX_JPEG_SCANS:
        raise ImageLimitError(
            f"{name}: a JPEG of {scans} scans; expected at most {MAX_JPEG_SCANS} "
            "(each scan of a progressive JPEG decodes the whole image again)"
        )
    if scans * width * height > MAX_JPEG_SCAN_PIXELS:
        raise ImageLimitError(
            f"{name}: a progressive JPEG of {width} x {height} pixels in {scans} scans; "
            f"expected scans x pixels at most {MAX_JPEG_SCAN_PIXELS:.0e} (each scan decodes "
            "the whole image again)"
        )


def jpeg_scans(file: IO[bytes]) -> int:
    """Scan markers in a JPEG stream, counted from its start; the position is kept.

    In entropy-coded data an FF byte is always followed by 00 or a restart marker, so
    every FF DA is a scan marker or lies inside metadata (an EXIF thumbnail's own scan):
    the count is an upper bound, never an underestimate.
    """
    position = file.tell()
    file.seek(0)
    count, last = 0, b""
    try:
        while chunk := file.read(_CHUNK):
            count += (last + chunk).count(_SCAN_MARKER)  # a marker split across chunks too
            last = chunk[-1:]
    finally:
        file.seek(position)
    return count


class CheckedBytes(io.BytesIO):
    """Bytes for Pillow that call `check()` before every read; what it raises is kept in
    `stopped` (Pillow may wrap it) and ends the decode. The decoder reads at most 64 KiB
    (Pillow's `decodermaxblock`) between two checks."""

    def __init__(self, data: bytes, check: Callable[[], None]) -> None:
        super().__init__(data)
        self._check = check
        self.stopped: BaseException | None = None

    def read(self, size: int | None = -1, /) -> bytes:
        try:
            self._check()
        except BaseException as err:
            self.stopped = err
            raise
        return super().read(size)
