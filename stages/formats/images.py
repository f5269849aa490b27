"""Digit images (PNG, JPEG, BMP) of any size and colour, turned into MNIST-style 28x28 digits.

MNIST's own recipe: grayscale, light digit on black, cropped to the digit's bounding box,
the longer side scaled to 20 px keeping the aspect ratio, then pasted into 28x28 so that
the centre of mass sits in the middle. A folder holds one digit per file; subfolders
named 0..9 give the labels (needed for training, optional for predict).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stages.core.digits import IMAGE_SIDE, Digits
from stages.core.errors import PipelineError

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


def load_gray(path: Path) -> np.ndarray:
    """Decode an image file to grayscale (H, W) uint8; transparency counts as white paper."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)  # phone photos store their rotation in EXIF
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                paper = Image.new("RGBA", image.size, "white")
                image = Image.alpha_composite(paper, image.convert("RGBA"))
            return np.asarray(image.convert("L"))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        reason = (
            "not an image" if isinstance(err, UnidentifiedImageError) else f"unreadable ({err})"
        )
        raise PipelineError(f"{path}: {reason}; expected a PNG, JPEG or BMP of one digit") from None


def read_image(path: Path) -> np.ndarray:
    """One image file -> uint8 (28, 28), MNIST-style."""
    digit = preprocess_digit(load_gray(path))
    if digit is None:
        raise PipelineError(f"{path}: no digit found (the image is blank); expected one digit")
    return digit


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
    labels = [label for _, label in labelled] or None
    names = [path.relative_to(folder).as_posix() for path in paths]
    return read_image_files(paths, labels, names)


def _digit_subfolders(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_dir() and len(p.name) == 1 and p.name.isdigit()
    )


def _files(folder: Path) -> list[Path]:
    """Non-hidden files directly in `folder`, sorted. Each must be an image (checked on read)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
