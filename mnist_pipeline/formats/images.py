"""Digit images (PNG, JPEG, BMP) of any size and colour, turned into MNIST-style 28x28 digits.

MNIST's own recipe: grayscale, light digit on black, cropped to the digit's bounding box,
the longer side scaled to 20 px keeping the aspect ratio, then pasted into 28x28 so that
the centre of mass sits in the middle. A folder holds one digit per file; subfolders
named 0..9 give the labels (needed for training, optional for predict).

Decoding is bounded (docs/safety.md): only Pillow's PNG, JPEG and BMP decoders run, the
header's width x height and a JPEG's scans are checked before any pixel is decoded
(image_bounds.py), JPEGs are decoded at a reduced scale (draft) and other images reduced
right after, so a 12-megapixel photo costs tens of MB, not gigabytes.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from mnist_pipeline.core.digits import IMAGE_SIDE, Digits
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.limits import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, MAX_IMAGES, WORK_SIDE
from mnist_pipeline.formats.image_bounds import CheckedBytes, ImageLimitError, check_image_bounds

if TYPE_CHECKING:
    from PIL.Image import Image as PilImage  # Pillow is imported only when decoding

PILLOW_FORMATS = ("PNG", "JPEG", "BMP")  # no other decoder runs (no Ghostscript for .eps)
EXTENSIONS = (".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp")  # compared in lower case
EXPECTED = "a PNG, JPEG or BMP image of one digit"
# Files that operating systems leave in folders; skipped like hidden files.
_OS_LITTER = ("thumbs.db", "desktop.ini")
# EXIF orientation -> the transpose that shows the photo upright (as ImageOps.exif_transpose).
_UPRIGHT = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
            6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}  # fmt: skip

DIGIT_BOX = 20  # MNIST scaled each digit to fit a 20x20 box...
CENTRE = 14.0  # ...and moved its centre of mass here (row and column index in 28x28)
# After stretching the ink to 0-1, fainter pixels are background (paper texture, JPEG noise).
_INK_THRESHOLD = 0.2


def preprocess_digit(gray: np.ndarray) -> np.ndarray | None:
    """A grayscale image (H, W) in 0-255 -> uint8 (28, 28) light-on-dark; None if blank."""
    pixels = gray.astype(np.float64)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = float(np.median(border))
    if background > 127:  # dark digit on light paper: MNIST digits are light on black
        pixels, background = 255.0 - pixels, 255.0 - background
    peak = float(pixels.max())
    if peak - background < 32:  # no stroke stands out from the background
        return None
    ink = np.clip((pixels - background) / (peak - background), 0.0, 1.0)  # (H, W) in 0-1
    ink[ink < _INK_THRESHOLD] = 0.0
    rows, cols = np.nonzero(ink)
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]  # bounding box
    return _centre_by_mass(_fit_box(ink))


def _fit_box(ink: np.ndarray) -> np.ndarray:
    """Scale so the longer side is DIGIT_BOX px, keeping the aspect ratio (antialiased)."""
    from PIL import Image

    height, width = ink.shape
    scale = DIGIT_BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = Image.fromarray((ink * 255).astype(np.float32))  # mode "F"
    return np.clip(np.asarray(image.resize(size, Image.Resampling.LANCZOS)), 0, 255)


def _centre_by_mass(digit: np.ndarray) -> np.ndarray:
    """Paste a (h, w) digit, h, w <= 20, into 28x28 with its centre of mass at CENTRE."""
    height, width = digit.shape
    mass = digit.sum()
    com_row = (digit.sum(axis=1) @ np.arange(height)) / mass
    com_col = (digit.sum(axis=0) @ np.arange(width)) / mass
    # Integer shifts, as MNIST used, kept inside the frame.
    top = int(np.clip(round(CENTRE - com_row), 0, IMAGE_SIDE - height))
    left = int(np.clip(round(CENTRE - com_col), 0, IMAGE_SIDE - width))
    frame = np.zeros((IMAGE_SIDE, IMAGE_SIDE))
    frame[top : top + height, left : left + width] = digit
    return np.round(frame).astype(np.uint8)


def read_image_bytes(
    data: bytes, name: str, *, check: Callable[[], None] | None = None
) -> np.ndarray:
    """An image file's bytes (e.g. an upload) -> uint8 (28, 28), MNIST-style; `name` for errors.

    `check` is called whenever the decoder reads more input; whatever it raises (time up,
    client gone) ends the decode and reaches the caller unchanged.
    """
    _check_byte_count(data, name)
    file = io.BytesIO(data) if check is None else CheckedBytes(data, check)
    return _digit_of(_decode_gray(file, name), name)


def image_pixels(data: bytes, name: str) -> int:
    """width x height from the header, after the checks decoding makes; decodes nothing."""
    _check_byte_count(data, name)
    file = io.BytesIO(data)
    with _opened(file, name) as image:
        return image.width * image.height


def _check_byte_count(data: bytes, name: str) -> None:
    if len(data) > MAX_IMAGE_BYTES:
        raise PipelineError(f"{name}: {len(data)} bytes; expected {EXPECTED} of at most "
                            f"{MAX_IMAGE_BYTES} bytes")  # fmt: skip


def read_image(path: Path) -> np.ndarray:
    """One image file -> uint8 (28, 28), MNIST-style."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: not a regular file; expected {EXPECTED}")
    size = path.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise PipelineError(f"{path}: {size} bytes; expected {EXPECTED} of at most "
                            f"{MAX_IMAGE_BYTES} bytes")  # fmt: skip
    with path.open("rb") as file:
        return _digit_of(_decode_gray(file, str(path)), str(path))


def load_gray(path: Path) -> np.ndarray:
    """Decode an image file to grayscale (H, W) uint8, upright, reduced to <= WORK_SIDE px."""
    with Path(path).open("rb") as file:
        return _decode_gray(file, str(path))


def _digit_of(gray: np.ndarray, name: str) -> np.ndarray:
    digit = preprocess_digit(gray)
    if digit is None:
        raise PipelineError(f"{name}: no digit found (the image is blank); expected one digit")
    return digit


def _decode_gray(file: IO[bytes], name: str) -> np.ndarray:
    """Decode to grayscale (H, W) uint8; transparency counts as white paper."""
    with _opened(file, name) as image:
        return _upright_gray(image)


@contextlib.contextmanager
def _opened(file: IO[bytes], name: str) -> Iterator[PilImage]:
    """The image, opened and checked against the bounds; its errors as one line.

    Any failure inside Pillow's decoders on a hostile file (they raise OSError, ValueError,
    SyntaxError, struct.error, EOFError, ...) is an unreadable image, not a bug of ours.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we check size
            with Image.open(file, formats=PILLOW_FORMATS) as image:
                jpeg = file if image.format == "JPEG" else None
                check_image_bounds(name, width=image.width, height=image.height, file=jpeg)
                yield image
    except PipelineError:
        raise
    except Image.DecompressionBombError:
        raise ImageLimitError(f"{name}: more pixels than Pillow allows; expected at most "
                              f"{MAX_IMAGE_PIXELS} pixels") from None  # fmt: skip
    except Exception as err:  # any decoder failure, see the docstring
        stopped = getattr(file, "stopped", None)
        if stopped is not None:  # the caller's check ended the decode: its own exception
            raise stopped from None
        if isinstance(err, UnidentifiedImageError):
            raise PipelineError(
                f"{name}: not a PNG, JPEG or BMP image; expected {EXPECTED}"
            ) from None
        if isinstance(err, MemoryError):
            raise PipelineError(
                f"{name}: not enough memory to decode; expected {EXPECTED}"
            ) from None
        reason = str(err).strip().splitlines()[0][:80] if str(err).strip() else type(err).__name__
        raise PipelineError(f"{name}: unreadable ({reason}); expected {EXPECTED}") from None


def _upright_gray(image: PilImage) -> np.ndarray:
    """Draft (JPEG), load, reduce to <= WORK_SIDE, flatten on white paper, gray, upright."""
    from PIL import Image

    factor = math.ceil(max(image.size) / WORK_SIDE)
    if image.format == "JPEG" and factor > 1:
        # The decoder itself scales by 1/2, 1/4 or 1/8: a 12 MP photo never exists in full.
        mode = "L" if image.mode in ("L", "RGB", "YCbCr") else None
        image.draft(mode, (max(1, image.width // factor), max(1, image.height // factor)))
    image.load()
    orientation = _orientation(image)
    if image.mode.startswith("I"):  # 16-bit (I;16...) or 32-bit integer gray
        image = _eight_bit(image)
    elif image.mode not in ("L", "LA", "RGB", "RGBA"):
        # Palette, 1-bit, CMYK, YCbCr...: to RGB(A), keeping a palette's transparency.
        transparent = "A" in image.mode or "transparency" in image.info
        image = image.convert("RGBA" if transparent else "RGB")
    elif "transparency" in image.info:  # an L or RGB image with one transparent colour
        image = image.convert("RGBA")
    factor = math.ceil(max(image.size) / WORK_SIDE)
    if factor > 1:
        image = image.reduce(factor)  # box filter: averages, so thin strokes survive
    if image.mode in ("LA", "RGBA"):
        paper = Image.new("RGBA", image.size, "white")
        image = Image.alpha_composite(paper, image.convert("RGBA"))
    image = image.convert("L")
    if orientation in _UPRIGHT:
        image = image.transpose(getattr(Image.Transpose, _UPRIGHT[orientation]))
    return np.asarray(image)


def _orientation(image: PilImage) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block: show the pixels as stored
        return 1


def _eight_bit(image: PilImage) -> PilImage:
    """16-bit gray (0-65535) -> 8-bit L, scaled rather than clipped (clipping is all white)."""
    from PIL import Image

    factor = math.ceil(max(image.size) / WORK_SIDE)
    wide = image.convert("I") if image.mode != "I" else image
    if factor > 1:
        wide = wide.reduce(factor)
    values = np.asarray(wide, dtype=np.int64)
    if image.mode != "I" or values.max(initial=0) > 255:  # I;16 always holds 16-bit values
        values = values * 255 // 65535
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8))


def read_image_files(paths: list[Path], labels: list[int] | None, names: list[str]) -> Digits:
    images = np.stack([read_image(path) for path in paths])[:, None]  # (N, 1, 28, 28)
    label_array = None if labels is None else np.asarray(labels, dtype=np.int64)
    return Digits(images, label_array, names)


def read_image_folder(folder: Path, require_labels: bool = False) -> Digits:
    """Every image in `folder`, in sorted order; labels from subfolders named 0..9 if used."""
    folder = Path(folder)
    loose = _files(folder)
    labelled = [(path, int(sub.name)) for sub in _digit_subfolders(folder) for path in _files(sub)]
    if not loose and not labelled:
        raise PipelineError(
            f"{folder}: no images in the folder; expected PNG, JPEG or BMP files, directly "
            "in it or in subfolders named 0..9 after their digit"
        )
    if labelled and loose:
        raise PipelineError(
            f"{loose[0]}: not in a subfolder named after its digit, while other images are; "
            "expected every image in a subfolder 0..9, or none"
        )
    if require_labels and not labelled:
        raise PipelineError(
            f"{folder}: images without labels; for training put each image in a subfolder "
            "named after its digit (0..9)"
        )
    paths = [path for path, _ in labelled] or loose
    if len(paths) > MAX_IMAGES:
        raise PipelineError(f"{folder}: {len(paths)} images; expected at most {MAX_IMAGES}")
    labels = [label for _, label in labelled] or None
    names = [path.relative_to(folder).as_posix() for path in paths]
    return read_image_files(paths, labels, names)


def _digit_subfolders(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_dir() and len(p.name) == 1 and p.name.isdigit()
    )


def _files(folder: Path) -> list[Path]:
    """The image files directly in `folder`, sorted; hidden files and OS litter skipped.

    Any other file is refused by name, before anything is decoded: a stray .eps or .pdf
    is more likely a mistake than something to skip silently.
    """
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.lower() not in _OS_LITTER
    )
    for path in files:
        if path.suffix.lower() not in EXTENSIONS:
            raise PipelineError(
                f"{path}: not an image file by its name; expected only {', '.join(EXTENSIONS)} "
                "files (any case) in an image folder (hidden files are skipped)"
            )
    return files
