"""Stage `prepare`: CSV files in the tutorial's format -> uint8 tensors in safetensors files."""

from __future__ import annotations

from pathlib import Path

from stages.data_io import Digits, read_digits_csv, save_prepared


def run(train_csv: Path, test_csv: Path, train_out: Path, test_out: Path) -> tuple[Digits, Digits]:
    """Validate both labelled CSVs, then write their tensors."""
    # Read both inputs before writing anything, so a bad test file cannot leave
    # a new train file next to an old test file.
    train = read_digits_csv(train_csv, require_labels=True)
    test = read_digits_csv(test_csv, require_labels=True)
    save_prepared(train_out, train)
    save_prepared(test_out, test)
    return train, test
