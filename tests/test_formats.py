"""Every input format read by `read_digits`: round trips (hypothesis) and one test per bad input."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mnist_pipeline.core.artifacts import save_prepared
from mnist_pipeline.core.digits import PIXEL_COLUMNS, Digits
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.formats import read_digits
from mnist_pipeline.formats.csv_digits import write_csv_digits
from mnist_pipeline.formats.idx import write_idx, write_idx_digits
from tests.conftest import replace_cell


def make_digits(n_images: int = 12, seed: int = 0, labelled: bool = True) -> Digits:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n_images, 1, 28, 28), dtype=np.uint8)
    labels = (np.arange(n_images) % 10).astype(np.int64) if labelled else None
    return Digits(images, labels)


def assert_same(read: Digits, written: Digits) -> None:
    assert read.images.dtype == np.uint8
    assert read.images.shape == written.images.shape
    np.testing.assert_array_equal(read.images, written.images)
    if written.labels is None:
        assert read.labels is None
    else:
        assert read.labels.dtype == np.int64
        np.testing.assert_array_equal(read.labels, written.labels)


def fails(path: Path, *fragments: str, named: Path | None = None, **kwargs) -> str:
    """Read `path`, expect a one-line PipelineError naming the file (or `named`) and fragments."""
    with pytest.raises(PipelineError) as caught:
        read_digits(path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in (str(named or path), *fragments):
        assert fragment in message, message
    return message


# --- round trips ---------------------------------------------------------------------------

digit_sets = st.integers(1, 6).flatmap(
    lambda n: st.tuples(
        arrays(np.uint8, (n, 1, 28, 28)),
        st.none() | arrays(np.int64, (n,), elements=st.integers(0, 9)),
    )
)


@settings(max_examples=20, deadline=None)
@given(digit_sets, st.booleans())
def test_csv_round_trip_both_layouts(images_and_labels, header):
    digits = Digits(*images_and_labels)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "digits.csv"
        write_csv_digits(path, digits, header=header)
        assert_same(read_digits(path), digits)


@settings(max_examples=20, deadline=None)
@given(digit_sets, st.booleans())
def test_idx_round_trip_raw_and_gzipped(images_and_labels, compress):
    digits = Digits(*images_and_labels)
    suffix = ".gz" if compress else ""
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / f"t10k-images-idx3-ubyte{suffix}"
        labels = Path(tmp) / f"t10k-labels-idx1-ubyte{suffix}"
        write_idx_digits(images, labels, digits)
        assert_same(read_digits(images), digits)  # labels found beside the images


def test_idx_is_told_by_magic_number_not_name(tmp_path):
    digits = make_digits()
    images, labels = tmp_path / "pixels.bin", tmp_path / "answers.gz"
    write_idx(images, digits.images.reshape(-1, 28, 28))
    write_idx(labels, digits.labels.astype(np.uint8), compress=True)
    assert_same(read_digits(images, labels), digits)
    assert read_digits(images).labels is None  # no sibling by that name: unlabelled


def test_headerless_unlabelled_and_prepared_tensors(tmp_path):
    digits = make_digits(labelled=False)
    write_csv_digits(tmp_path / "pixels.csv", digits, header=False)
    assert_same(read_digits(tmp_path / "pixels.csv"), digits)
    labelled = make_digits()
    save_prepared(tmp_path / "t.safetensors", labelled)
    assert_same(read_digits(tmp_path / "t.safetensors"), labelled)


def test_reordered_columns_and_float_whole_numbers_are_read_precisely(tmp_path):
    digits = make_digits(3)
    path = tmp_path / "odd.csv"
    names = [*reversed(PIXEL_COLUMNS), "label"]
    rows = [[f"{v}.0" for v in image.reshape(-1)[::-1]] + [str(label)] for image, label in zip(
        digits.images, digits.labels, strict=True)]  # fmt: skip
    path.write_text("\n".join(",".join(row) for row in [names, *rows]) + "\n")
    assert_same(read_digits(path), digits)


# --- bad CSV -------------------------------------------------------------------------------


def _written_csv(tmp_path: Path, header: bool = True) -> tuple[Path, list[str]]:
    path = tmp_path / "train.csv"
    write_csv_digits(path, make_digits(), header=header)
    return path, path.read_text().splitlines()


@pytest.mark.parametrize(
    ("column", "value", "fragments"),
    [
        (7, "256", ["line 4", "'pixel6'", "0-255", "got 256"]),
        (7, "-3", ["line 4", "'pixel6'", "0-255", "got -3"]),
        (7, "dark", ["line 4", "'pixel6'", "got 'dark'"]),
        (7, "", ["line 4", "'pixel6'", "got an empty cell"]),
        (7, "2.5", ["line 4", "'pixel6'", "got 2.5"]),
        (0, "12", ["line 4", "'label'", "0-9", "got 12"]),
    ],
)
@pytest.mark.parametrize("header", [True, False])
def test_bad_cell_is_located(tmp_path, header, column, value, fragments):
    path, _ = _written_csv(tmp_path, header)
    replace_cell(path, line=4, column=column, value=value)
    fails(path, *fragments)  # lines of the file, counted from 1, header or not


def test_wrong_column_count_is_located(tmp_path):
    path, lines = _written_csv(tmp_path)
    lines[5] += ",0"
    path.write_text("\n".join(lines) + "\n")
    fails(path, "line 6 has 786 columns", "expected 785")
    path.write_text(",".join(["1"] * 100) + "\n")
    fails(path, "line 1 has 100 columns", "785")


def test_empty_header_only_and_missing_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    fails(empty, "file is empty")
    header_only = tmp_path / "header.csv"
    header_only.write_text(",".join(["label", *PIXEL_COLUMNS]) + "\n")
    fails(header_only, "has a header but no rows")
    fails(tmp_path / "missing.csv", "no such file")


def test_bad_header_and_missing_labels(tmp_path):
    path = tmp_path / "columns.csv"
    path.write_text("label,colour," + ",".join(PIXEL_COLUMNS) + "\n")
    fails(path, "unexpected column 'colour'")
    write_csv_digits(path, make_digits(labelled=False))
    fails(path, "missing column 'label'", require_labels=True)


def test_binary_garbage_is_not_a_csv(tmp_path):
    path = tmp_path / "noise.csv"
    path.write_bytes(bytes(range(200, 256)) * 10)
    fails(path, "is not text")


# --- bad IDX -------------------------------------------------------------------------------


def _idx_pair(tmp_path: Path, n_images: int = 5, n_labels: int = 5) -> tuple[Path, Path]:
    images = tmp_path / "train-images-idx3-ubyte"
    labels = tmp_path / "train-labels-idx1-ubyte"
    write_idx(images, make_digits(n_images).images.reshape(-1, 28, 28))
    write_idx(labels, np.arange(n_labels, dtype=np.uint8) % 10)
    return images, labels


def test_idx_bad_magic_number(tmp_path):
    images, labels = _idx_pair(tmp_path)
    labels.write_bytes(b"\x00\x00\x08\x02" + labels.read_bytes()[4:])  # a 2-D "labels" file
    fails(images, "bad magic number 0x00000802 at byte offset 0", "0x00000801", named=labels)
    write_idx(labels, np.arange(5, dtype=np.uint8))
    fails(labels, "IDX labels file", "expected the images file")


def test_idx_truncated_header_and_data(tmp_path):
    images, _ = _idx_pair(tmp_path)
    data = images.read_bytes()
    images.write_bytes(data[:10])
    fails(images, "truncated at byte offset 10", "16 bytes")
    images.write_bytes(data[:-7])
    fails(images, "truncated", f"ends at byte offset {len(data) - 7}", f"says {len(data)}")
    images.write_bytes(gzip.compress(data)[:-20])
    images.rename(tmp_path / "train-images-idx3-ubyte.gz")
    fails(tmp_path / "train-images-idx3-ubyte.gz", "broken or truncated gzip")


def test_idx_count_mismatch_and_bad_labels(tmp_path):
    images, labels = _idx_pair(tmp_path, n_images=5, n_labels=4)
    fails(images, "holds 4 labels", f"{images} holds 5 images", named=labels)
    write_idx(labels, np.array([1, 2, 11, 3, 4], dtype=np.uint8))
    fails(images, "byte offset 10: label 11; expected 0-9", named=labels)


def test_idx_without_labels_when_labels_are_required(tmp_path):
    images, labels = _idx_pair(tmp_path)
    fails(images, "carry no labels", require_labels=True, find_sibling_labels=False)
    with pytest.raises(PipelineError, match="only with IDX images"):
        read_digits(tmp_path, labels_path=labels)
