"""The tutorial's CSV format and the prepared tensors: round trips and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_pipeline.core.artifacts import atomic_output, load_prepared, save_prepared
from mnist_pipeline.core.digits import PIXEL_COLUMNS
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.formats.csv_digits import read_csv_digits, write_csv_digits
from tests.conftest import replace_cell


def test_csv_round_trip_keeps_every_pixel(tmp_path, digits):
    path = tmp_path / "train.csv"
    write_csv_digits(path, digits)
    header = path.read_text().splitlines()[0].split(",")
    assert header == ["label", *PIXEL_COLUMNS]
    back = read_csv_digits(path)
    assert back.images.dtype == np.uint8
    assert back.images.shape == (len(digits.images), 1, 28, 28)
    np.testing.assert_array_equal(back.images, digits.images)
    np.testing.assert_array_equal(back.labels, digits.labels)


def test_csv_without_label_column_is_unlabelled(tmp_path, digits):
    path = tmp_path / "unlabelled.csv"
    write_csv_digits(path, digits)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(line.split(",", 1)[1] for line in lines) + "\n")
    back = read_csv_digits(path)
    assert back.labels is None
    np.testing.assert_array_equal(back.images, digits.images)
    with pytest.raises(PipelineError, match="missing column 'label'"):
        read_csv_digits(path, require_labels=True)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        (
            5,
            "256",
            r"line 3, column 'pixel4': expected pixel values as whole numbers 0-255, got 256",
        ),
        (5, "-1", r"line 3, column 'pixel4': expected pixel values .* got -1"),
        (5, "abc", r"line 3, column 'pixel4': .* got 'abc'"),
        (5, "", r"line 3, column 'pixel4': .* got an empty cell"),
        (5, "0.5", r"line 3, column 'pixel4': .* got 0.5"),
        (0, "10", r"line 3, column 'label': expected labels as whole numbers 0-9, got 10"),
    ],
)
def test_bad_cells_are_located(tmp_path, digits, column, value, message):
    path = tmp_path / "train.csv"
    write_csv_digits(path, digits)
    replace_cell(path, line=3, column=column, value=value)
    with pytest.raises(PipelineError, match=message):
        read_csv_digits(path)


def test_empty_header_only_and_missing_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(PipelineError, match="empty.csv: file is empty"):
        read_csv_digits(empty)
    header_only = tmp_path / "header.csv"
    header_only.write_text(",".join(["label", *PIXEL_COLUMNS]) + "\n")
    with pytest.raises(PipelineError, match="header.csv: has a header but no rows"):
        read_csv_digits(header_only)
    with pytest.raises(PipelineError, match="missing.csv: no such file"):
        read_csv_digits(tmp_path / "missing.csv")


def test_wrong_columns_are_named(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("label," + ",".join(PIXEL_COLUMNS[:-1]) + "\n" + ",".join(["1"] * 784) + "\n")
    with pytest.raises(PipelineError, match="missing column 'pixel783'"):
        read_csv_digits(path)
    path.write_text("label,colour," + ",".join(PIXEL_COLUMNS) + "\n")
    with pytest.raises(PipelineError, match="unexpected column 'colour'"):
        read_csv_digits(path)


def test_prepared_tensors_round_trip(tmp_path, digits):
    path = tmp_path / "train.safetensors"
    save_prepared(path, digits)
    back = load_prepared(path)
    assert back.images.dtype == np.uint8
    assert back.labels.dtype == np.int64
    np.testing.assert_array_equal(back.images, digits.images)
    np.testing.assert_array_equal(back.labels, digits.labels)


def test_prepared_file_that_is_not_safetensors_is_refused(tmp_path):
    path = tmp_path / "train.safetensors"
    path.write_bytes(b"\x80\x04this is a pickle, not safetensors")
    with pytest.raises(PipelineError, match="not a safetensors file"):
        load_prepared(path)


def test_atomic_output_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "artifact.txt"
    path.write_text("previous")

    def crash_while_writing() -> None:
        with atomic_output(path) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError):
        crash_while_writing()
    assert path.read_text() == "previous"
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind
    with atomic_output(path) as tmp:
        tmp.write_text("new")
    assert path.read_text() == "new"


def test_atomic_output_makes_ordinary_files(tmp_path):
    path = tmp_path / "artifact.txt"
    with atomic_output(path) as tmp:
        tmp.write_text("new")
    reference = tmp_path / "reference.txt"
    reference.write_text("made with open()")
    assert path.stat().st_mode == reference.stat().st_mode
