"""Bad input through the CLI: one line on stderr, exit 1, no traceback, old artifacts untouched."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from mnist_pipeline.cli.app import app
from mnist_pipeline.formats.csv_digits import write_csv_digits
from mnist_pipeline.formats.idx import write_idx, write_idx_digits
from tests.conftest import REPO_ROOT, synthetic_digits


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A folder with tiny params, inputs and a trained model, as after `dvc repro`."""
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["model"]["hidden"] = [16]
    params["train"].update(epochs=2)
    params["runtime"]["threads"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    write_csv_digits(Path("data/raw/train.csv"), synthetic_digits(40))
    write_csv_digits(Path("data/raw/test.csv"), synthetic_digits(20, seed=1))
    for command in ("prepare", "train", "predict"):
        assert CliRunner().invoke(app, [command]).exit_code == 0
    return tmp_path


ARTIFACTS = [
    "data/prepared/train.safetensors",
    "data/prepared/test.safetensors",
    "data/model.safetensors",
    "data/predictions.csv",
]


def _snapshot() -> dict[str, bytes]:
    return {name: Path(name).read_bytes() for name in ARTIFACTS}


def assert_clean_failure(args: list[str], *fragments: str) -> None:
    before = _snapshot()
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert _snapshot() == before  # nothing overwritten, nothing half-written
    assert not list(Path("data").rglob("*.tmp"))


def _bad_csv(path: Path) -> None:
    write_csv_digits(path, synthetic_digits(5))
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace(",0,", ",x,", 1)
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    ("make_bad", "fragments"),
    [
        (_bad_csv, ["bad.csv", "line 4", "got 'x'"]),
        (lambda p: p.write_text("1,2,3\n"), ["bad.csv", "line 1 has 3 columns"]),
        (lambda p: p.write_text(""), ["bad.csv", "file is empty"]),
        (lambda p: None, ["bad.csv", "no such file"]),
        (lambda p: p.write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x09"), ["bad.csv", "offset 8"]),
        (lambda p: p.mkdir(), ["bad.csv", "no images in the folder"]),
    ],
)
def test_prepare_refuses_bad_training_data(workdir, make_bad, fragments):
    make_bad(workdir / "bad.csv")
    assert_clean_failure(["prepare", "--train-data", "bad.csv"], *fragments)


def test_prepare_refuses_idx_with_mismatched_labels_named_in_params(workdir):
    write_idx_digits(Path("imgs-idx3-ubyte"), Path("labs-idx1-ubyte.gz"), synthetic_digits(10))
    write_idx(Path("labs-idx1-ubyte.gz"), np.zeros(9, np.uint8), compress=True)
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["inputs"].update(train="imgs-idx3-ubyte", train_labels="labs-idx1-ubyte.gz")
    Path("params.yaml").write_text(yaml.safe_dump(params))
    assert_clean_failure(["prepare"], "labs-idx1-ubyte.gz: holds 9 labels", "10 images")


@pytest.mark.parametrize(
    ("section", "key", "value", "fragment"),
    [
        ("train", "lr", 0, "'train.lr'"),
        ("train", "epochs", 0, "'train.epochs'"),
        ("train", "epochs", "ten", "'train.epochs'"),
        ("model", "arch", "transformer", "'model.arch'"),
        ("inputs", "train", None, "'inputs.train'"),
        ("train", "batch_size", 1000, "train.batch_size is 1000, more than the 40 training"),
    ],
)
def test_broken_params_fail_in_one_line(workdir, section, key, value, fragment):
    params = yaml.safe_load(Path("params.yaml").read_text())
    params[section][key] = value
    Path("params.yaml").write_text(yaml.safe_dump(params))
    assert_clean_failure(["train"], fragment)


def test_malformed_yaml_and_unknown_key(workdir):
    Path("params.yaml").write_text("train: [epochs: 3\n")
    assert_clean_failure(["predict"], "params.yaml: malformed YAML at line")
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["inputs"]["tran"] = params["inputs"].pop("train")
    Path("params.yaml").write_text(yaml.safe_dump(params))
    assert_clean_failure(["prepare"], "unknown key 'inputs.tran'", "did you mean 'inputs.train'")


class _Payload:
    """Unpickling this calls Path.touch(marker): what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("name", ["evil.safetensors", "evil.pt"])
def test_pickled_model_is_refused_without_running_it(workdir, name):
    marker = workdir / "pwned"
    Path(name).write_bytes(pickle.dumps({"state_dict": _Payload(marker)}))
    assert_clean_failure(["predict", "--model", name], name, "pickled checkpoints are refused")
    assert not marker.exists()


def _tampered_model(path: Path, change: dict) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open("data/model.safetensors", framework="pt") as file:
        metadata = file.metadata()
        state = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
    key = next(iter(metadata))
    metadata[key] = json.dumps({**json.loads(metadata[key]), **change})
    save_file(state, str(path), metadata=metadata)


def test_model_of_wrong_shape_or_arch_is_refused(workdir):
    _tampered_model(Path("wide.safetensors"), {"hidden": [32]})
    assert_clean_failure(["predict", "--model", "wide.safetensors"], "do not fit", "mlp")
    _tampered_model(Path("cnn.safetensors"), {"arch": "cnn"})
    assert_clean_failure(["predict", "--model", "cnn.safetensors"], "cnn.safetensors", "'cnn'")


def test_predict_reads_every_format(workdir):
    digits = synthetic_digits(10, seed=2)
    write_csv_digits(Path("plain.csv"), digits, header=False)
    write_idx_digits(Path("t10k-images-idx3-ubyte.gz"), Path("t10k-labels-idx1-ubyte.gz"), digits)
    Path("photos").mkdir()
    for index, image in enumerate(digits.images[:3]):
        Image.fromarray(255 - image[0]).resize((90, 90)).save(f"photos/{index}.png")
    tables = {}
    for source in ("plain.csv", "t10k-images-idx3-ubyte.gz", "photos"):
        result = CliRunner().invoke(app, ["predict", "--input", source, "--output", "out.csv"])
        assert result.exit_code == 0, result.output
        tables[source] = pd.read_csv("out.csv")
    assert tables["plain.csv"]["True Value"].tolist() == digits.labels.tolist()
    assert tables["t10k-images-idx3-ubyte.gz"]["True Value"].tolist() == digits.labels.tolist()
    assert tables["photos"]["File"].tolist() == ["0.png", "1.png", "2.png"]
    assert "True Value" not in tables["photos"]
