"""The predictions table that `predict` writes and `evaluate` reads, and its cell checks.

The tutorial's two columns, then the confidence and the ten class probabilities.
`True Value` is present only when the input was labelled; `File` only for image input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stages.core.artifacts import atomic_output
from stages.core.digits import N_CLASSES
from stages.core.errors import PipelineError

FILE_COLUMN = "File"  # only for image input: the file each row came from
PREDICTED_COLUMN = "Predicted Value"
TRUE_COLUMN = "True Value"
CONFIDENCE_COLUMN = "Confidence"
PROBABILITY_COLUMNS = [f"prob_{digit}" for digit in range(N_CLASSES)]


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
