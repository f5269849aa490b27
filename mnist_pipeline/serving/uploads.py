"""Request bodies -> one MNIST-style digit, bounded in bytes and in pixels, never on disk.

`digit_from_upload` hands an uploaded file to the bounded image reader of `predict`
(mnist_pipeline/formats/images.py), so the page, the API and `predict` see the same digit.
"""

from __future__ import annotations

import io

import numpy as np

from mnist_pipeline.core.digits import IMAGE_SIDE
from mnist_pipeline.core.errors import PipelineError

MAX_UPLOAD_BYTES = 5 * 1024 * 1024  # a multipart body: a phone photo fits, a video does not
MAX_JSON_BYTES = 64 * 1024  # 784 pixel values take < 4 KB; room for whitespace
MAX_IMAGE_PIXELS = 4096 * 4096  # decoded size; a small PNG can inflate to gigabytes
IMAGE_FORMATS = ("PNG", "JPEG", "BMP")


class TooLargeError(PipelineError):
    """A body or an image over its limit (HTTP 413)."""


def digit_from_upload(data: bytes, name: str) -> np.ndarray:
    """An uploaded PNG, JPEG or BMP -> uint8 (28, 28), exactly as `predict` reads image files.

    The decoding is `predict`'s bounded reader (mnist_pipeline/formats/images.py): the same formats,
    limits, EXIF rotation and MNIST-style preprocessing. Only the pixel count is looked at
    first, from the header, so that an image larger than a request may be is a 413.
    """
    from mnist_pipeline.formats.images import read_image_bytes

    _refuse_too_many_pixels(data, name)
    return read_image_bytes(data, name)


def _refuse_too_many_pixels(data: bytes, name: str) -> None:
    """TooLargeError if the header announces more than MAX_IMAGE_PIXELS; decodes nothing.

    Anything else wrong with the file is left to the reader, which says what it is.
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            width, height = image.size  # from the header
    except Exception:  # any problem is reported by the reader, with its reason
        return
    if width * height > MAX_IMAGE_PIXELS:
        raise TooLargeError(
            f"{name}: image of {width}x{height} pixels; expected at most "
            f"{MAX_IMAGE_PIXELS:,} pixels"
        )


def digit_from_pixels(pixels: list[int]) -> np.ndarray:
    """784 validated values 0-255, row by row -> uint8 (28, 28), used as they are."""
    return np.asarray(pixels, dtype=np.uint8).reshape(IMAGE_SIDE, IMAGE_SIDE)
