"""The predictions table that `predict` writes and `evaluate` reads, and its cell checks.

The tutorial's two columns, then the confidence and the ten class probabilities.
`True Value` is present only when the input was labelled; `File` only for image input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mnist_pipeline.core.artifacts import atomic_output
from mnist_pipeline.core.digits import N_CLASSES
from mnist_pipeline.core.errors import PipelineError, shown
from mnist_pipeline.core.limits import MAX_IMAGES
from mnist_pipeline.core.text_files import check_line_lengths

FILE_COLUMN = "File"  # only for image input: the file each row came from
PREDICTED_COLUMN = "Predicted Value"
TRUE_COLUMN = "True Value"
CONFIDENCE_COLUMN = "Confidence"
PROBABILITY_COLUMNS = [f"prob_{digit}" for digit in range(N_CLASSES)]


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise PipelineError(f"{path}: no such file")
    check_line_lengths(path, "a predictions table written by `mnist-pipeline predict`")
    try:
        # Cells stay as written ("NaN" is text until checked), so a bad one can be shown.
        return pd.read_csv(
            path, keep_default_na=False, dtype=str, nrows=MAX_IMAGES + 1, encoding="utf-8"
        )
    except pd.errors.EmptyDataError:
        raise PipelineError(f"{path}: file is empty; expected a CSV header line") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        reason = shown(str(err).strip().splitlines()[0] if str(err).strip() else "")
        raise PipelineError(f"{path}: not a readable CSV ({reason})") from None


def _checked_numbers(
    path: Path, table: pd.DataFrame, columns: list[str], bounds: tuple[int, int], what: str
) -> np.ndarray:
    """`columns` as float64 (N, C), or name the first cell that is not a number in bounds.

    `what` is e.g. "digits as whole numbers" (then the values must be whole) or
    "probabilities as numbers"; non-finite values (nan, inf) are always refused.
    """
    low, high = bounds
    block = table[columns]
    values = block.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values < low) | (values > high)
    if "whole" in what:
        bad |= values != np.round(values)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        # +2: one line of header, and people count lines from 1.
        raise PipelineError(
            f"{path}: line {row + 2}, column '{columns[col]}': expected {what} "
            f"{low}-{high}, got {shown(block.iat[row, col])}"
        )
    return values


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
    if len(table) > MAX_IMAGES:
        raise PipelineError(f"{path}: more than {MAX_IMAGES} rows; expected at most that")
    digits = [PREDICTED_COLUMN, TRUE_COLUMN]
    numbers = {
        tuple(digits): _checked_numbers(
            path, table, digits, (0, N_CLASSES - 1), "digits as whole numbers"
        ).astype(np.int64),
        tuple(PROBABILITY_COLUMNS): _checked_numbers(
            path, table, PROBABILITY_COLUMNS, (0, 1), "probabilities as finite numbers"
        ),
    }
    if CONFIDENCE_COLUMN in table.columns:
        numbers[(CONFIDENCE_COLUMN,)] = _checked_numbers(
            path, table, [CONFIDENCE_COLUMN], (0, 1), "probabilities as finite numbers"
        )
    for columns, values in numbers.items():
        table[list(columns)] = values  # checked text -> numbers for the scoring code
    return table
