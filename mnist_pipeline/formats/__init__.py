"""One entry point for every input format, used by `prepare` and by `predict --input`.

The format is told by content, not by file name: a folder of images, IDX (raw or
gzipped, by magic number), prepared safetensors tensors, a single image file, or CSV.
"""

from __future__ import annotations

from pathlib import Path

from mnist_pipeline.core.artifacts import load_prepared
from mnist_pipeline.core.digits import Digits, check_digits
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.formats.csv_digits import read_csv_digits
from mnist_pipeline.formats.idx import LABELS_MAGIC, is_idx, read_idx_digits, sibling_labels
from mnist_pipeline.formats.images import read_image_files, read_image_folder
from mnist_pipeline.formats.streams import first_bytes, require_regular_file

# First bytes of the image formats that Pillow reads for us.
_IMAGE_MAGICS = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM")
FORMATS = (
    "a CSV of digits, IDX images (raw or .gz), prepared .safetensors, "
    "an image, or a folder of images"
)


def read_digits(
    path: Path,
    labels_path: Path | None = None,
    require_labels: bool = False,
    find_sibling_labels: bool = True,
) -> Digits:
    """Read digits in any supported format: uint8 images (N, 1, 28, 28), int64 labels or None.

    `labels_path` is for IDX images only; without it the sibling `*-labels-idx1-ubyte[.gz]`
    is used when present and `find_sibling_labels` allows it.

    Whatever the format, the result passes `check_digits`: 1 to MAX_IMAGES images, labels 0-9.
    """
    path = Path(path)
    digits = _read_any(path, labels_path, require_labels, find_sibling_labels)
    return check_digits(path, digits)


def _read_any(
    path: Path, labels_path: Path | None, require_labels: bool, find_sibling_labels: bool
) -> Digits:
    if not path.exists():
        raise PipelineError(f"{path}: no such file or folder; expected {FORMATS}")
    if labels_path is not None and not Path(labels_path).is_file():
        raise PipelineError(f"{labels_path}: no such labels file; expected IDX labels")
    if path.is_dir():
        _refuse_labels_file(path, labels_path)
        return read_image_folder(path, require_labels)
    require_regular_file(path, FORMATS)
    head, gzipped = first_bytes(path)
    if is_idx(head):
        return _read_idx(path, head, labels_path, require_labels, find_sibling_labels)
    if gzipped:
        raise PipelineError(f"{path}: a gzip file that does not hold IDX data; expected {FORMATS}")
    _refuse_labels_file(path, labels_path)
    # By name or by content: an 8-byte length, then the JSON header.
    if path.suffix.lower() == ".safetensors" or head[8:10] == b'{"':
        return load_prepared(path)
    if head.startswith(_IMAGE_MAGICS):
        if require_labels:
            raise PipelineError(
                f"{path}: a single image has no label; for training use a folder with "
                "subfolders named 0..9"
            )
        return read_image_files([path], None, [path.name])
    return read_csv_digits(path, require_labels)


def _read_idx(
    path: Path, head: bytes, labels_path: Path | None, require_labels: bool, find_sibling: bool
) -> Digits:
    if int.from_bytes(head[:4], "big") == LABELS_MAGIC:
        raise PipelineError(
            f"{path}: an IDX labels file (magic 0x00000801); expected the images file "
            "(…-images-idx3-ubyte), with labels beside it or named explicitly"
        )
    if labels_path is None and find_sibling:
        labels_path = sibling_labels(path)
    if labels_path is None and require_labels:
        read_idx_digits(path, None)  # a broken images file is the first thing to report
        raise PipelineError(
            f"{path}: IDX images carry no labels; expected a labels file "
            "(`inputs.train_labels`/`inputs.test_labels` in params.yaml, `--labels` for predict)"
        )
    return read_idx_digits(path, labels_path)


def _refuse_labels_file(path: Path, labels_path: Path | None) -> None:
    if labels_path is not None:
        raise PipelineError(
            f"{labels_path}: a separate labels file goes only with IDX images, and {path} "
            "is not IDX; its labels come from the data itself"
        )
