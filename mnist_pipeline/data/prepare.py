"""Stage `prepare`: the user's digits in any format -> uint8 tensors in safetensors files.

The inputs are the params `inputs.train` and `inputs.test` (by default the CSVs that `split`
writes): CSV, IDX, an image folder or prepared tensors, see mnist_pipeline/formats.py.
"""

from __future__ import annotations

from pathlib import Path

from mnist_pipeline.core.artifacts import save_prepared
from mnist_pipeline.core.digits import Digits
from mnist_pipeline.formats import read_digits


def labels_file(data_path: Path, labels_path: Path) -> Path | None:
    """The params give the data path itself when the labels are inside the data (not IDX)."""
    return None if Path(labels_path) == Path(data_path) else Path(labels_path)


def run(
    train_data: Path,
    test_data: Path,
    train_out: Path,
    test_out: Path,
    train_labels: Path | None = None,
    test_labels: Path | None = None,
) -> tuple[Digits, Digits]:
    """Read and validate both labelled inputs, then write their tensors."""
    # Read both inputs before writing anything, so a bad test file cannot leave
    # a new train file next to an old test file. No guessing of IDX label files here:
    # every file the pipeline reads must be named in params.yaml, so DVC tracks it.
    train = read_digits(train_data, train_labels, require_labels=True, find_sibling_labels=False)
    test = read_digits(test_data, test_labels, require_labels=True, find_sibling_labels=False)
    save_prepared(train_out, train)
    save_prepared(test_out, test)
    return train, test
