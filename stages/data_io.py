"""Shared data plumbing: the Digits type, atomic writes, prepared tensors, predictions table.

The input formats (CSV, IDX, image folders) live in stages/formats.py and the modules it uses.

Images travel through the pipeline as uint8 arrays of shape (N, 1, 28, 28) with values
0-255 and labels as int64 arrays of shape (N,). Scaling to floats happens in the model
code, so every file on disk stays exact and compact.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from stages.errors import PipelineError

IMAGE_SIDE = 28
PIXELS = IMAGE_SIDE * IMAGE_SIDE  # 784
LABEL_COLUMN = "label"
PIXEL_COLUMNS = [f"pixel{i}" for i in range(PIXELS)]
N_CLASSES = 10

# The predictions table: the tutorial's two columns, then the confidence and the ten
# class probabilities. `True Value` is present only when the input was labelled.
PREDICTED_COLUMN = "Predicted Value"
TRUE_COLUMN = "True Value"
CONFIDENCE_COLUMN = "Confidence"
PROBABILITY_COLUMNS = [f"prob_{digit}" for digit in range(N_CLASSES)]


class Digits(NamedTuple):
    images: np.ndarray  # (N, 1, 28, 28) uint8, 0-255
    labels: np.ndarray | None  # (N,) int64 in 0-9, or None for unlabelled input
    # (N,) file names, for digits read from image files; the predictions table shows them.
    sources: list[str] | None = None


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; move it over `path` only if the block succeeds.

    A stage that fails half-way therefore leaves the previous artifact untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(0o666 & ~_current_umask())  # mkstemp makes 0600; artifacts are ordinary files
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def save_prepared(path: Path, digits: Digits) -> None:
    """Write prepared tensors as safetensors (no pickle: safe to load from anywhere)."""
    from safetensors.numpy import save_file

    if digits.labels is None:
        raise ValueError("prepared data must be labelled")
    tensors = {"images": np.ascontiguousarray(digits.images), "labels": digits.labels}
    with atomic_output(path) as tmp:
        save_file(tensors, str(tmp))


def load_prepared(path: Path) -> Digits:
    """Read tensors written by `save_prepared`, checking their shapes and types."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: no such file; run `dvc repro prepare` first")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise PipelineError(f"{path}: not a safetensors file of prepared digits ({err})") from None
    images, labels = tensors.get("images"), tensors.get("labels")
    expected = "uint8 images (N, 1, 28, 28) and int64 labels (N,)"
    if (
        images is None
        or labels is None
        or images.dtype != np.uint8
        or images.shape[1:] != (1, IMAGE_SIDE, IMAGE_SIDE)
        or labels.dtype != np.int64
        or labels.shape != (images.shape[0],)
    ):
        raise PipelineError(f"{path}: expected {expected}")
    return Digits(images, labels)


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise PipelineError(f"{path}: no such file")
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise PipelineError(f"{path}: file is empty; expected a CSV header line") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise PipelineError(f"{path}: not a readable CSV ({str(err).strip()})") from None


def _whole_numbers(
    path: Path, table: pd.DataFrame, columns: list[str], low: int, high: int, what: str
) -> np.ndarray:
    """Return `columns` as an int64 array, or name the first cell that is not in low..high."""
    block = table[columns]
    numeric = block.apply(pd.to_numeric, errors="coerce")
    values = numeric.to_numpy(dtype=np.float64)
    bad = np.isnan(values) | (values < low) | (values > high) | (values != np.round(values))
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        cell = block.iat[row, col]
        # +2: one line of header, and people count lines from 1.
        raise PipelineError(
            f"{path}: line {row + 2}, column '{columns[col]}': expected {what} "
            f"as whole numbers {low}-{high}, got {_show_cell(cell)}"
        )
    return values.astype(np.int64)


def write_predictions(path: Path, table: pd.DataFrame) -> None:
    with atomic_output(path) as tmp:
        # Fixed precision keeps the file small, readable and byte-stable.
        table.to_csv(tmp, index=False, float_format="%.6f")


def read_predictions(path: Path) -> pd.DataFrame:
    """Read a labelled predictions table written by `predict`, checking its columns."""
    path = Path(path)
    table = _read_table(path)
    needed = [PREDICTED_COLUMN, TRUE_COLUMN, *PROBABILITY_COLUMNS]
    missing = [column for column in needed if column not in table.columns]
    if missing:
        raise PipelineError(
            f"{path}: missing column '{missing[0]}'; expected a labelled predictions table "
            "written by `mnist-pipeline predict`"
        )
    if table.empty:
        raise PipelineError(f"{path}: has a header but no rows; expected one row per image")
    _whole_numbers(path, table, [PREDICTED_COLUMN, TRUE_COLUMN], 0, N_CLASSES - 1, "digits")
    return table


def _show_cell(cell: object) -> str:
    if pd.isna(cell):
        return "an empty cell"
    if isinstance(cell, str):
        return repr(cell)
    return str(getattr(cell, "item", lambda: cell)())  # numpy scalar -> plain number
