"""The schema of params.yaml, validated once at the edge into typed, frozen objects."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from mnist_pipeline.core.errors import PipelineError, shown
from mnist_pipeline.core.limits import MAX_IMAGES, MAX_PARAMS_BYTES

# Upper bounds: far above any sensible MNIST run, low enough that a typo (an extra zero,
# `.inf`) is refused here instead of exhausting memory or running for days.
MAX_EPOCHS = 10_000
MAX_WIDTH = 8_192  # neurons in one hidden layer
MAX_HIDDEN_LAYERS = 8
MAX_CHANNELS = 1_024  # output channels of one conv block
MAX_CNN_BLOCKS = 4  # each block halves the side: 28 -> 14 -> 7 -> 3 -> 1
MAX_THREADS = 256
MAX_LR = 10.0
MAX_SEED = 2**32 - 1
MAX_PATH_CHARS = 4_096
Width = Annotated[int, Field(ge=1, le=MAX_WIDTH)]
Channels = Annotated[int, Field(ge=1, le=MAX_CHANNELS)]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
InputPath = Annotated[str, Field(min_length=1, max_length=MAX_PATH_CHARS)]

MAX_MEMBERS = 16  # networks in one ensemble (model.members)


class _Section(BaseModel):
    # strict: "50" is not an int and 1.5 is not an epoch count; forbid: catches typos;
    # no inf/nan: `.inf` is never a sensible learning rate or probability.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class DataParams(_Section):
    train_size: int = Field(ge=1, le=MAX_IMAGES, description="images in data/raw/train.csv")
    test_size: int = Field(
        ge=1, le=MAX_IMAGES, description="images in data/raw/test.csv, disjoint from train"
    )
    seed: Seed = Field(description="seed of the train/test split")


class InputParams(_Section):
    """What `prepare` reads: CSV, IDX (raw or .gz), an image folder or prepared tensors."""

    train: InputPath = Field(description="training digits (a file or folder)")
    test: InputPath = Field(description="test digits (a file or folder)")
    # For IDX images, the *-labels-idx1-ubyte[.gz] file; otherwise the data path itself,
    # since CSV, image folders and tensors carry their labels. Never null: DVC tracks it.
    train_labels: InputPath = Field(description="labels of inputs.train")
    test_labels: InputPath = Field(description="labels of inputs.test")


class ModelParams(_Section):
    """The network: the `model` section of params.yaml, and the config in the model file
    (mnist_pipeline/model/model_file.py saves it and validates it with this schema)."""

    arch: Literal["mlp", "cnn"] = Field(description="mlp = the tutorial's network, cnn = conv net")
    hidden: list[Width] = Field(
        min_length=1,
        max_length=MAX_HIDDEN_LAYERS,
        description="widths of the hidden Linear layers (for cnn: after the convs)",
    )
    dropout: float = Field(ge=0, lt=1, description="dropout probability after each hidden layer")
    # Used by cnn only (the mlp ignores it), so one flat, strict section serves both archs
    # and `dvc exp run -S model.arch=cnn` needs no new keys. Empty for an mlp's model file.
    channels: list[Channels] = Field(
        max_length=MAX_CNN_BLOCKS,
        description="cnn only: output channels of each conv block",
    )
    # A default, so params files written before ensembles existed still validate.
    members: int = Field(
        default=1,
        ge=1,
        le=MAX_MEMBERS,
        description="networks in an ensemble that averages their probabilities; 1 = one",
    )
    tta: bool = Field(
        default=False,
        description="predict with the mean over the image and its four one-pixel shifts",
    )

    @field_validator("channels")
    @classmethod
    def _cnn_needs_blocks(cls, channels: list[int], info: ValidationInfo) -> list[int]:
        if info.data.get("arch") == "cnn" and not channels:
            raise ValueError(f"should have 1 to {MAX_CNN_BLOCKS} items for arch 'cnn'")
        return channels


class AugmentParams(_Section):
    enabled: bool = Field(description="random affine transform of each training image")
    rotation: float = Field(ge=0, le=180, description="max rotation in degrees (uniform +-)")
    translation: float = Field(ge=0, le=0.5, description="max shift as a fraction of the side")
    scale: list[Annotated[float, Field(gt=0, le=10)]] = Field(
        min_length=2, max_length=2, description="[min, max] zoom factor"
    )

    # Defaults, so params files written before elastic distortion existed still validate.
    elastic_alpha: float = Field(
        default=0.0, ge=0, le=100, description="elastic distortion strength in pixels; 0 = off"
    )
    elastic_sigma: float = Field(
        default=5.0, ge=1, le=14, description="smoothness (Gaussian std, pixels) of the distortion"
    )

    @field_validator("scale")
    @classmethod
    def _ordered(cls, scale: list[float]) -> list[float]:
        if scale[0] > scale[1]:
            raise ValueError("should be [min, max] with min <= max")
        return scale


class TrainParams(_Section):
    epochs: int = Field(ge=1, le=MAX_EPOCHS)
    lr: float = Field(gt=0, le=MAX_LR, description="learning rate (the peak one under onecycle)")
    batch_size: int | None = Field(
        ge=1, le=MAX_IMAGES, description="images per step; null = full batch"
    )
    seed: Seed = Field(description="seed of weight init, dropout and batch order")
    optimizer: Literal["adam", "adamw", "sgd"]
    momentum: float = Field(ge=0, lt=1, description="sgd only: momentum")
    weight_decay: float = Field(ge=0, le=10)
    schedule: Literal["none", "onecycle", "cosine"] = Field(description="lr schedule, per step")
    label_smoothing: float = Field(ge=0, lt=1)
    val_size: int = Field(
        ge=0, le=MAX_IMAGES, description="training images held out for validation"
    )
    keep: Literal["final", "best"] = Field(description="model of the last or best-val epoch")
    augment: AugmentParams
    device: Literal["auto", "cpu", "cuda"] = Field(description="auto = CUDA when available")
    precision: Literal["fp32", "bf16"] = Field(
        description="bf16 = autocast, on CUDA or a CPU with native bf16"
    )

    @field_validator("keep")
    @classmethod
    def _best_needs_validation(cls, keep: str, info: ValidationInfo) -> str:
        if keep == "best" and info.data.get("val_size") == 0:
            raise ValueError("'best' needs train.val_size > 0 to choose the best epoch")
        return keep


class RuntimeParams(_Section):
    threads: int = Field(
        ge=1, le=MAX_THREADS, description="torch CPU threads (fixed for bit-identical results)"
    )


class Params(_Section):
    data: DataParams
    inputs: InputParams
    model: ModelParams
    train: TrainParams
    runtime: RuntimeParams


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice (it would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {shown(key)} given twice", key_node.start_mark
                )
            if isinstance(key, str):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_params(path: Path) -> Params:
    """Read and validate params.yaml; any problem becomes one PipelineError naming the key."""
    path = Path(path)
    if not path.is_file():  # also refuses a FIFO or device, which would block or never end
        what = "a folder" if path.is_dir() else "no such regular file"
        raise PipelineError(f"{path}: cannot read params file ({what})")
    try:
        with path.open("rb") as file:
            data = file.read(MAX_PARAMS_BYTES + 1)
    except OSError as err:
        raise PipelineError(f"{path}: cannot read params file ({err.strerror})") from None
    if len(data) > MAX_PARAMS_BYTES:
        raise PipelineError(f"{path}: larger than {MAX_PARAMS_BYTES} bytes; expected params YAML")
    try:
        raw = yaml.load(data.decode("utf-8"), Loader=_StrictLoader)  # a SafeLoader
    except UnicodeDecodeError as err:
        raise PipelineError(f"{path}: byte offset {err.start} is not UTF-8 text") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise PipelineError(f"{path}: malformed YAML{where}: {problem}") from None
    except (RecursionError, ValueError, OverflowError) as err:
        # Nesting too deep for the parser, an integer of thousands of digits, a bad date.
        reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)[:80]
        raise PipelineError(f"{path}: unusable YAML: {reason}") from None
    if not isinstance(raw, dict):
        raise PipelineError(f"{path}: expected a mapping of sections (data, model, train, ...)")
    return parse_params(raw, source=str(path))


def parse_params(raw: dict, source: str = "params.yaml") -> Params:
    """Validate an already-parsed params mapping."""
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        # A misspelt key shows up twice: as unknown and as missing. The unknown one
        # carries the better message ("did you mean ...?"), so report it first.
        errors = sorted(err.errors(), key=lambda error: error["type"] != "extra_forbidden")
        raise PipelineError(f"{source}: {describe_error(errors[0])}") from None


def describe_error(error: Mapping[str, Any]) -> str:
    """Turn pydantic's first error into a sentence that names the dotted key."""
    loc = [shown(str(part)).strip("'") for part in error["loc"]]  # a key may be huge
    key = ".".join(loc)
    if error["type"] == "extra_forbidden":
        hint = _suggest(loc)
        return f"unknown key '{key}'" + (f" (did you mean '{hint}'?)" if hint else "")
    if error["type"] == "missing":
        return f"missing key '{key}'"
    message = error["msg"].removeprefix("Input ").removeprefix("Value error, ")
    # Never repr() the input itself: a YAML alias bomb expands to millions of leaves.
    return f"'{key}' {message[0].lower()}{message[1:]} (got {shown(error.get('input'))})"


def _suggest(loc: list[str]) -> str | None:
    """The closest valid key to a misspelt one, e.g. train.epoch -> train.epochs."""
    model: type[BaseModel] = Params
    for part in loc[:-1]:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    matches = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1)
    return ".".join([*loc[:-1], matches[0]]) if matches else None
