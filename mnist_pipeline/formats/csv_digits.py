"""Digits as CSV: the seed's `label,pixel0..pixel783` with a header, and headerless variants.

The headerless variant is the widely shared `mnist_train.csv`/`mnist_test.csv` layout: 785
columns, label first. 784 columns without a header are unlabelled pixels.

Reading has two paths. The fast one hands the file to numpy's C parser straight into uint8
(a 60,000-row file in about a second, see bench/prepare_csv.py). If it objects to anything,
the precise one walks the file row by row and names the first bad line and column; it
also accepts what the fast one does not (reordered columns, `3.0`, quoted numbers), so
the precise path alone defines what a valid file is.
"""

from __future__ import annotations

import csv
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mnist_pipeline.core.artifacts import atomic_output
from mnist_pipeline.core.digits import IMAGE_SIDE, LABEL_COLUMN, PIXEL_COLUMNS, PIXELS, Digits
from mnist_pipeline.core.errors import PipelineError, is_number, shown
from mnist_pipeline.core.limits import MAX_CSV_LINE_CHARS, MAX_IMAGES
from mnist_pipeline.core.text_files import check_line_lengths
from mnist_pipeline.formats.streams import require_regular_file

EXPECTED_LAYOUT = (
    "a CSV of digits: a header `label,pixel0,...,pixel783`, or no header and 785 columns "
    "(label first) or 784 columns (pixels only)"
)


def read_csv_digits(path: Path, require_labels: bool = False) -> Digits:
    """Read any of the CSV layouts into uint8 images (N, 1, 28, 28) and int64 labels (N,)."""
    path = Path(path)
    require_regular_file(path, EXPECTED_LAYOUT)
    header = _first_row(path)
    columns = _column_order(path, header)  # None: no header; else file column -> position
    has_labels = _has_labels(path, header, columns)
    if require_labels and not has_labels:
        raise PipelineError(
            f"{path}: missing column '{LABEL_COLUMN}'; expected a labelled CSV (a `label` "
            "column, or 785 columns without a header, label first)"
        )
    check_line_lengths(path, EXPECTED_LAYOUT)  # numpy's parser would split any line
    digits = _read_fast(path, header_lines=0 if columns is None else 1, has_labels=has_labels)
    if digits is None:
        digits = _read_precisely(path, columns, has_labels)
    if len(digits.images) == 0:
        what = "a header but no rows" if columns is not None else "no rows"
        raise PipelineError(f"{path}: has {what}; expected at least one image")
    return digits


def write_csv_digits(path: Path, digits: Digits, header: bool = True) -> None:
    """Write digits as CSV, atomically: the seed's layout, or headerless with label first."""
    rows = digits.images.reshape(len(digits.images), PIXELS).astype(np.int64)  # (N, 784)
    names = list(PIXEL_COLUMNS)
    if digits.labels is not None:
        rows = np.column_stack([digits.labels.astype(np.int64), rows])  # (N, 785)
        names.insert(0, LABEL_COLUMN)
    with atomic_output(path) as tmp:
        np.savetxt(
            tmp, rows, fmt="%d", delimiter=",", header=",".join(names) if header else "",
            comments="",
        )  # fmt: skip


class _Lines:
    """The file's lines for a parser, refusing a line or a CSV row longer than the limit.

    Checked as the lines are read, before anything splits them: one 30 MB line would
    otherwise become millions of cells. A quoted cell may span lines, so `row_chars`
    counts the characters since the reader last started a row (the reader resets it).
    """

    def __init__(self, file: BinaryIO, path: Path) -> None:
        self._raw, self._path = _split_lines(file), path
        self.number = 0  # lines read, counted from 1
        self.row_chars = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        # Bytes, decoded line by line: a decoding error then names its own line (a text
        # file decodes ahead in 8 KB chunks), and the limit holds before any decoding.
        raw = next(self._raw, b"")
        if not raw:
            raise StopIteration
        self.number += 1
        self.row_chars += len(raw)
        if self.row_chars > MAX_CSV_LINE_CHARS:
            raise PipelineError(
                f"{self._path}: line {self.number} is longer than {MAX_CSV_LINE_CHARS} "
                f"bytes; expected {EXPECTED_LAYOUT}"
            )
        try:
            # UTF-8 whatever the locale; a byte-order mark (Excel writes one) is not data.
            return raw.decode("utf-8-sig" if self.number == 1 else "utf-8")
        except UnicodeDecodeError as err:
            raise PipelineError(
                f"{self._path}: line {self.number}, byte {err.start + 1} is not text "
                f"(invalid UTF-8); expected {EXPECTED_LAYOUT}"
            ) from None


def _split_lines(file: BinaryIO, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
    """The file's lines as bytes, ended by \\n, \\r\\n or a lone \\r (old Mac files).

    A line longer than the limit comes out as one piece of just over the limit, for the
    caller to refuse, so memory stays bounded whatever the file holds.
    """
    rest = b""
    while chunk := file.read(chunk_bytes):
        lines = (rest + chunk).splitlines(keepends=True)
        # The last piece may go on in the next chunk (a \\r may be half of \\r\\n).
        rest = lines.pop() if not lines[-1].endswith(b"\n") else b""
        yield from lines
        if len(rest) > MAX_CSV_LINE_CHARS:
            yield rest[: MAX_CSV_LINE_CHARS + 1]
            return
    if rest:
        yield rest


def _open_text(path: Path) -> BinaryIO:
    """The file for `_Lines`, which decodes it line by line."""
    return path.open("rb")


def _first_row(path: Path) -> list[str]:
    """The first non-blank row, split into cells."""
    with _open_text(path) as file:
        lines = _Lines(file, path)
        reader = csv.reader(lines)
        try:
            for row in reader:
                if row:
                    return [cell.strip() for cell in row]
                lines.row_chars = 0
        except csv.Error as err:
            raise PipelineError(
                f"{path}: not a readable CSV ({err}); expected {EXPECTED_LAYOUT}"
            ) from None
    raise PipelineError(f"{path}: file is empty; expected {EXPECTED_LAYOUT}")


def _column_order(path: Path, first_row: list[str]) -> list[int] | None:
    """For a header, where each column goes: 0 = label, 1 + i = pixel i. None: no header."""
    if any(is_number(cell) or not cell for cell in first_row):
        return None  # data, not names (bad cells in it are reported as data errors)
    positions = {name: i + 1 for i, name in enumerate(PIXEL_COLUMNS)} | {LABEL_COLUMN: 0}
    unexpected = [name for name in first_row if name not in positions]
    if unexpected:
        raise PipelineError(
            f"{path}: line 1: unexpected column '{unexpected[0]}' in the header; "
            f"expected {EXPECTED_LAYOUT}"
        )
    counts = Counter(first_row)  # linear: a header of 40,000 columns is refused at once
    duplicated = [name for name in first_row if counts[name] > 1]
    missing = [name for name in PIXEL_COLUMNS if name not in first_row]
    if duplicated or missing:
        problem = f"duplicated column '{duplicated[0]}'" if duplicated else "missing column"
        problem = problem if duplicated else f"{problem} '{missing[0]}'"
        raise PipelineError(f"{path}: line 1: {problem} in the header; expected {EXPECTED_LAYOUT}")
    return [positions[name] for name in first_row]


def _has_labels(path: Path, first_row: list[str], columns: list[int] | None) -> bool:
    if columns is not None:
        return 0 in columns
    if len(first_row) not in (PIXELS, PIXELS + 1):
        raise PipelineError(
            f"{path}: line 1 has {len(first_row)} columns; expected {EXPECTED_LAYOUT}"
        )
    return len(first_row) == PIXELS + 1


def _split(rows: np.ndarray, has_labels: bool) -> Digits:
    """(N, 785 or 784) whole numbers in file order (label first) -> Digits."""
    pixels = rows[:, 1:] if has_labels else rows
    images = np.ascontiguousarray(pixels, dtype=np.uint8).reshape(-1, 1, IMAGE_SIDE, IMAGE_SIDE)
    labels = rows[:, 0].astype(np.int64) if has_labels else None
    return Digits(images, labels)


def _read_fast(path: Path, header_lines: int, has_labels: bool) -> Digits | None:
    """numpy's C parser straight into uint8; None if anything is off (then read precisely)."""
    n_columns = PIXELS + int(has_labels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data": reported by the caller
            rows = np.loadtxt(
                path, delimiter=",", dtype=np.uint8, skiprows=header_lines, comments=None,
                ndmin=2, max_rows=MAX_IMAGES + 1, encoding="utf-8-sig",
            )  # fmt: skip
    except (ValueError, UnicodeDecodeError):
        return None
    if rows.shape[1] != n_columns and rows.size:
        return None
    if header_lines and rows.size and not _is_canonical_header(path):
        return None  # reordered columns: the precise path maps them by name
    if has_labels and rows.size and rows[:, 0].max() > 9:
        return None
    return _split(rows.reshape(-1, n_columns), has_labels)


def _is_canonical_header(path: Path) -> bool:
    names = _first_row(path)
    return names in ([LABEL_COLUMN, *PIXEL_COLUMNS], PIXEL_COLUMNS)


def _read_precisely(path: Path, columns: list[int] | None, has_labels: bool) -> Digits:
    """Row by row, naming the first bad line and column; slow, so only after the fast path."""
    n_columns = PIXELS + int(has_labels)
    # File column -> position in a row of (label, pixel0..783); identity without a header.
    order = np.asarray(columns if columns is not None else range(1 - int(has_labels), PIXELS + 1))
    names = [LABEL_COLUMN, *PIXEL_COLUMNS]
    low = np.zeros(PIXELS + 1)
    high = np.full(PIXELS + 1, 255.0)
    high[0] = 9
    rows: list[np.ndarray] = []  # (785,) uint8 each
    for line, cells in _data_rows(path, skip_header=columns is not None):
        if len(rows) == MAX_IMAGES:
            raise PipelineError(f"{path}: more than {MAX_IMAGES} rows; expected at most that")
        if len(cells) != n_columns:
            raise PipelineError(
                f"{path}: line {line} has {len(cells)} columns; expected {n_columns}, as in "
                f"the file's first line ({EXPECTED_LAYOUT})"
            )
        values = _to_floats(cells)  # NaN where a cell is not a number
        bounds = (low[order], high[order])
        bad = np.isnan(values) | (values < bounds[0]) | (values > bounds[1])
        bad |= values != np.round(values)
        if bad.any():
            column = int(np.argmax(bad))
            name = names[order[column]]
            what = "labels as whole numbers 0-9" if name == LABEL_COLUMN else "pixel values"
            what = what if name == LABEL_COLUMN else f"{what} as whole numbers 0-255"
            raise PipelineError(
                f"{path}: line {line}, column '{name}': expected {what}, got {shown(cells[column])}"
            )
        row = np.zeros(PIXELS + 1)
        row[order] = values
        rows.append(row.astype(np.uint8))
    table = np.stack(rows) if rows else np.zeros((0, PIXELS + 1), np.uint8)  # (N, 785)
    return _split(table if has_labels else table[:, 1:], has_labels)


def _data_rows(path: Path, skip_header: bool) -> Iterator[tuple[int, list[str]]]:
    """(line number counted from 1, cells) for each non-blank data row."""
    with _open_text(path) as file:
        lines = _Lines(file, path)
        reader = csv.reader(lines)
        seen_header = not skip_header
        try:
            for cells in reader:
                lines.row_chars = 0
                if not cells or cells == [""]:
                    continue
                if not seen_header:
                    seen_header = True
                    continue
                yield reader.line_num, cells
        except csv.Error as err:
            raise PipelineError(
                f"{path}: line {reader.line_num}: not readable as CSV ({err})"
            ) from None


def _to_floats(cells: list[str]) -> np.ndarray:
    try:
        return np.array(cells, dtype=np.float64)
    except ValueError:
        return np.array([float(cell) if is_number(cell) else np.nan for cell in cells])
