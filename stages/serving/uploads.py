"""Request bodies -> one MNIST-style digit, bounded in bytes and in pixels, never on disk.

`digit_from_upload` is the one adapter between an uploaded file and the image reader of
`predict` (stages/formats/images.py); when that module gains a bounded bytes reader, this
function is the only thing to swap.
"""

from __future__ import annotations

import io

import numpy as np

from stages.core.digits import IMAGE_SIDE
from stages.core.errors import PipelineError

MAX_UPLOAD_BYTES = 5 * 1024 * 1024  # a multipart body: a phone photo fits, a video does not
MAX_JSON_BYTES = 64 * 1024  # 784 pixel values take < 4 KB; room for whitespace
MAX_IMAGE_PIXELS = 4096 * 4096  # decoded size; a small PNG can inflate to gigabytes
IMAGE_FORMATS = ("PNG", "JPEG", "BMP")


class TooLargeError(PipelineError):
    """A body or an image over its limit (HTTP 413)."""


def digit_from_upload(data: bytes, name: str) -> np.ndarray:
    """An uploaded PNG, JPEG or BMP -> uint8 (28, 28), as `predict` reads image files.

    Same steps as stages.formats.images.load_gray + preprocess_digit (grayscale, paper
    behind transparency, EXIF rotation, then crop, 20 px box, centre of mass), on bytes.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    from stages.formats.images import preprocess_digit

    expected = "expected a PNG, JPEG or BMP of one digit"
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            width, height = image.size  # read from the header, before decoding
            if width * height > MAX_IMAGE_PIXELS:
                raise TooLargeError(
                    f"{name}: image of {width}x{height} pixels; expected at most "
                    f"{MAX_IMAGE_PIXELS:,} pixels"
                )
            image = ImageOps.exif_transpose(image)
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                paper = Image.new("RGBA", image.size, "white")
                image = Image.alpha_composite(paper, image.convert("RGBA"))
            gray = np.asarray(image.convert("L"))
    except UnidentifiedImageError:
        raise PipelineError(f"{name}: not an image; {expected}") from None
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise PipelineError(f"{name}: unreadable image ({reason}); {expected}") from None
    digit = preprocess_digit(gray)
    if digit is None:
        raise PipelineError(f"{name}: no digit found (the image is blank); {expected}")
    return digit


def digit_from_pixels(pixels: list[int]) -> np.ndarray:
    """784 validated values 0-255, row by row -> uint8 (28, 28), used as they are."""
    return np.asarray(pixels, dtype=np.uint8).reshape(IMAGE_SIDE, IMAGE_SIDE)
