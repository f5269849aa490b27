"""Training recipes: the cnn, augmentation, validation split, optimizers and schedules,
keep=best, DVCLive logging, and same params -> same model bytes for every recipe."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
import yaml
from torch import nn
from typer.testing import CliRunner

from mnist_pipeline.cli.app import app
from mnist_pipeline.core.artifacts import save_prepared
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.params import AugmentParams, ModelParams, TrainParams, parse_params
from mnist_pipeline.core.recipes import (
    RECIPE_DIR,
    dotted,
    recipe_names,
    recipe_overrides,
    with_overrides,
)
from mnist_pipeline.model.model_file import load_model, save_model, saved_fields
from mnist_pipeline.model.networks import CNN, build_model, scale_pixels
from mnist_pipeline.training.augment import augment_images, draw_augmentation
from mnist_pipeline.training.batches import split_validation
from mnist_pipeline.training.loop import score, train_model
from mnist_pipeline.training.optimization import classification_loss, make_optimizer, make_schedule
from mnist_pipeline.training.progress import epoch_line
from mnist_pipeline.training.stats import EpochStats
from tests.conftest import (
    FANCY_TRAIN,
    REPO_ROOT,
    TINY_CNN,
    reproducible_hashes,
    synthetic_digits,
    write_params,
)


def _params(repo_params: dict, model: dict | None = None, train: dict | None = None):
    raw = copy.deepcopy(repo_params)
    raw["model"].update(model or {})
    raw["train"].update(train or {})
    return parse_params(raw)


def test_cnn_shapes_and_parameter_count():
    model = CNN(channels=(32, 64, 128), hidden=(128,), dropout=0.3).eval()
    log_probs = model(torch.zeros(5, 1, 28, 28))
    assert log_probs.shape == (5, 10)
    torch.testing.assert_close(log_probs.exp().sum(dim=1), torch.ones(5))
    convs = 1 * 32 * 9 + 32 * 64 * 9 + 64 * 128 * 9  # 3x3, no bias (batch norm follows)
    norms = 2 * (32 + 64 + 128)  # scale and shift
    linears = (128 * 3 * 3 * 128 + 128) + (128 * 10 + 10)  # side 28 -> 14 -> 7 -> 3
    assert sum(p.numel() for p in model.parameters()) == convs + norms + linears


@pytest.mark.parametrize("channels", [(4,), (4, 8, 8, 8)])
def test_cnn_takes_one_to_four_blocks(channels):
    model = build_model(ModelParams(arch="cnn", hidden=[8], dropout=0.0, channels=list(channels)))
    assert model.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_the_mlp_file_has_no_channels(repo_params):
    config = _params(repo_params).model
    assert config.arch == "mlp"
    assert config.channels  # params.yaml has them, for `-S model.arch=cnn`
    assert saved_fields(config)["channels"] == []


def test_cnn_model_file_round_trip(tmp_path):
    config = ModelParams(arch="cnn", hidden=[16], dropout=0.1, channels=[4, 8])
    torch.manual_seed(0)
    model = build_model(config).eval()
    save_model(model, config, tmp_path / "model.safetensors")
    loaded, loaded_config = load_model(tmp_path / "model.safetensors")
    assert loaded_config == config
    images = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(loaded(images), model(images))


def test_cnn_file_refuses_weights_of_other_widths(tmp_path):
    config = ModelParams(arch="cnn", hidden=[16], dropout=0.0, channels=[4, 8])
    other = ModelParams(arch="cnn", hidden=[16], dropout=0.0, channels=[4, 6])
    save_model(build_model(other), config, tmp_path / "model.safetensors")
    with pytest.raises(PipelineError, match="weights do not fit the 'cnn' network"):
        load_model(tmp_path / "model.safetensors")


def _augment(enabled=True, rotation=15.0, translation=0.1, scale=(0.9, 1.1)) -> AugmentParams:
    return AugmentParams(
        enabled=enabled, rotation=rotation, translation=translation, scale=list(scale)
    )


def _augmented(images: torch.Tensor, params: AugmentParams, seed: int) -> torch.Tensor:
    """What the training loop does to a batch: draw the epoch's numbers, transform."""
    draws = draw_augmentation(len(images), params, torch.Generator().manual_seed(seed))
    return augment_images(images, params, draws, slice(0, len(images)))


def test_augmentation_is_seeded_and_changes_the_images():
    images = torch.from_numpy(synthetic_digits(8).images).float() / 255  # (8, 1, 28, 28)
    first = _augmented(images, _augment(), seed=0)
    again = _augmented(images, _augment(), seed=0)
    other = _augmented(images, _augment(), seed=1)
    assert first.shape == images.shape
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.allclose(first, images, atol=0.05)
    assert first.min() >= 0
    assert first.max() <= 1


def test_augmentation_with_zero_ranges_is_the_identity():
    images = torch.rand(4, 1, 28, 28)
    same = _augmented(images, _augment(rotation=0, translation=0, scale=(1, 1)), seed=0)
    torch.testing.assert_close(same, images)


def test_validation_split_is_disjoint_stratified_and_seeded():
    labels = np.repeat(np.arange(10), [30, 30, 30, 30, 30, 20, 20, 20, 20, 20])  # 250
    train, val = split_validation(labels, 50, seed=3)
    assert len(val) == 50
    assert len(train) == 200
    assert not set(train) & set(val)
    assert sorted([*train, *val]) == list(range(250))
    per_class = np.bincount(labels[val], minlength=10)
    assert np.abs(per_class - np.bincount(labels) * 50 / 250).max() < 1  # 6 or 4 each
    assert np.array_equal(val, split_validation(labels, 50, seed=3)[1])
    assert not np.array_equal(val, split_validation(labels, 50, seed=4)[1])


def test_no_validation_split_and_too_large_one():
    labels = np.arange(20) % 10
    train, val = split_validation(labels, 0, seed=0)
    assert len(train) == 20
    assert len(val) == 0
    with pytest.raises(PipelineError, match="train.val_size = 20"):
        split_validation(labels, 20, seed=0)


@pytest.mark.parametrize(
    ("name", "kind"),
    [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)],
)
def test_optimizer_choice(repo_params, name, kind):
    settings = _params(repo_params, train={"optimizer": name, "weight_decay": 0.1}).train
    optimizer = make_optimizer(nn.Linear(2, 2).parameters(), settings)
    assert type(optimizer) is kind
    assert optimizer.param_groups[0]["weight_decay"] == 0.1


@pytest.mark.parametrize("schedule", ["none", "onecycle", "cosine"])
def test_schedule_choice(repo_params, schedule):
    settings = _params(repo_params, train={"schedule": schedule, "lr": 0.1}).train
    optimizer = make_optimizer(nn.Linear(2, 2).parameters(), settings)
    scheduler = make_schedule(optimizer, settings, total_steps=20)
    rates = []
    for _ in range(20):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    if schedule == "none":
        assert scheduler is None
        assert set(rates) == {0.1}
    elif schedule == "onecycle":  # warm up to lr, then anneal far below it
        assert rates[0] < 0.1 / 10
        assert max(rates) == pytest.approx(0.1)
        assert rates[-1] < 0.01
    else:  # cosine: from lr, decreasing towards 0
        assert rates[0] == 0.1
        assert rates == sorted(rates, reverse=True)
        assert rates[-1] < 0.01


def test_label_smoothing_matches_cross_entropy():
    logits, labels = torch.randn(6, 10), torch.arange(6)
    log_probs = F.log_softmax(logits, dim=1)
    assert torch.equal(classification_loss(log_probs, labels, 0.0), F.nll_loss(log_probs, labels))
    torch.testing.assert_close(
        classification_loss(log_probs, labels, 0.2),
        F.cross_entropy(logits, labels, label_smoothing=0.2),
    )
    # The hand-written formula it replaced: (1 - eps) NLL + eps x mean over classes of -log p.
    by_hand = 0.8 * F.nll_loss(log_probs, labels) + 0.2 * -log_probs.mean(dim=1).mean()
    torch.testing.assert_close(classification_loss(log_probs, labels, 0.2), by_hand)


def test_params_reject_best_without_validation_and_unordered_scale(repo_params):
    with pytest.raises(PipelineError, match="'train.keep' 'best' needs train.val_size > 0"):
        _params(repo_params, train={"keep": "best", "val_size": 0})
    bad_scale = copy.deepcopy(repo_params)
    bad_scale["train"]["augment"]["scale"] = [1.2, 0.8]
    with pytest.raises(PipelineError, match="'train.augment.scale' should be"):
        parse_params(bad_scale)
    too_deep = copy.deepcopy(repo_params)
    too_deep["model"]["channels"] = [4] * 5
    with pytest.raises(PipelineError, match="'model.channels'"):
        parse_params(too_deep)


def _model_bytes(tmp_path, name, digits, model: ModelParams, train: TrainParams) -> bytes:
    trained, config, _ = train_model(digits, model, train, threads=1)
    save_model(trained, config, tmp_path / name)
    return (tmp_path / name).read_bytes()


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_every_recipe_is_deterministic(tmp_path, repo_params, arch):
    model = TINY_CNN if arch == "cnn" else {"hidden": [32, 16]}
    params = _params(repo_params, model=model, train=FANCY_TRAIN)
    digits = synthetic_digits(60)
    first = _model_bytes(tmp_path, "a", digits, params.model, params.train)
    second = _model_bytes(tmp_path, "b", digits, params.model, params.train)
    assert first == second
    reseeded = params.train.model_copy(update={"seed": params.train.seed + 1})
    assert _model_bytes(tmp_path, "c", digits, params.model, reseeded) != first


def test_keep_best_keeps_the_best_validation_epoch(repo_params):
    # A high lr makes validation accuracy jump around, so the best epoch is rarely the last.
    train = FANCY_TRAIN | {"epochs": 6, "lr": 0.05, "schedule": "none"}
    params = _params(repo_params, model=TINY_CNN, train=train)
    digits = synthetic_digits(80)
    model, _, history = train_model(digits, params.model, params.train, threads=1)
    _, val_indices = split_validation(digits.labels, params.train.val_size, params.train.seed)
    val_images = scale_pixels(torch.from_numpy(digits.images[val_indices]))
    _, kept_accuracy = score(model, val_images, torch.from_numpy(digits.labels[val_indices]))
    val_accuracies = [stats.val_accuracy for stats in history]
    assert all(accuracy is not None for accuracy in val_accuracies)
    assert kept_accuracy == max(val_accuracies)


def test_epoch_line_is_the_tutorials_plus_validation():
    stats = EpochStats(3, 50, 0.12345, 0.9, None, None, 0.001, 0.1)
    assert epoch_line(stats) == "Epoch [3/50] Loss: 0.1235"
    with_val = EpochStats(3, 50, 0.12345, 0.9, 0.2, 0.875, 0.001, 0.1)
    assert epoch_line(with_val) == "Epoch [3/50] Loss: 0.1235 Val accuracy: 0.8750"


def test_train_command_with_every_option(tmp_path, monkeypatch, tiny_params):
    monkeypatch.chdir(tmp_path)
    tiny_params["model"].update(TINY_CNN)
    tiny_params["train"].update(FANCY_TRAIN)
    write_params(tmp_path / "params.yaml", tiny_params)
    save_prepared(tmp_path / "train.safetensors", synthetic_digits(60))
    result = CliRunner().invoke(
        app, ["train", "--train-data", "train.safetensors", "--model", "m.safetensors"]
    )
    assert result.exit_code == 0, result.output
    assert "Epoch [3/3] Loss:" in result.stderr
    assert "Val accuracy:" in result.stderr
    assert result.stdout == ""
    _, config = load_model(tmp_path / "m.safetensors")
    assert config.arch == "cnn"
    assert config.channels == [4, 8]
    # DVCLive's folder, at the default path that dvc.yaml declares.
    summary = json.loads((tmp_path / "dvclive/metrics.json").read_text())
    assert set(summary) == {"train", "val"}  # headline numbers only
    # ...copied where git keeps it (metrics/train.json, the DVC metric of dvc.yaml)
    assert json.loads((tmp_path / "metrics/train.json").read_text()) == summary
    assert set(summary["val"]) == {"loss", "accuracy"}
    run_facts = json.loads((tmp_path / "dvclive/run.json").read_text())
    assert run_facts["epochs"] == 3
    assert 1 <= run_facts["kept_epoch"] <= 3
    timing = json.loads((tmp_path / "dvclive/timing.json").read_text())
    assert timing["images_per_second"] > 0
    assert timing["train_seconds"] > 0
    curves = tmp_path / "dvclive/plots/metrics"
    for name in ["train/loss", "train/accuracy", "val/accuracy", "lr"]:
        assert len((curves / f"{name}.tsv").read_text().splitlines()) == 1 + 3, name
    assert len((tmp_path / "dvclive/epoch_seconds.tsv").read_text().splitlines()) == 1 + 3
    assert not (tmp_path / "dvc.yaml").exists()  # DVCLive must not write one


RECIPES = ("default", "fast", "best")


def test_the_readme_runs_each_recipe_file_by_name():
    """One short line per recipe, and the README names exactly the files in conf/recipe/."""
    assert recipe_names(folder=REPO_ROOT / RECIPE_DIR) == sorted(RECIPES)
    assert recipe_overrides("default", folder=REPO_ROOT / RECIPE_DIR) == {}
    readme = (REPO_ROOT / "README.md").read_text()
    for name in ("fast", "best"):
        line = f"dvc exp run -n {name} -S recipe={name}"
        assert re.search(rf"^{re.escape(line)}\s*(#.*)?$", readme, flags=re.MULTILINE), name
    commands = re.findall(r"^dvc exp run .*-S recipe=.*$", readme, flags=re.MULTILINE)
    assert commands
    assert all(len(command.split("#")[0].rstrip()) < 80 for command in commands), commands


@pytest.mark.parametrize("name", ["fast", "best"])
def test_a_recipe_file_composes_as_dvc_composes_it(name, tmp_path):
    """DVC's own composition (`dvc exp run -S recipe=<name>`) gives params.yaml with the
    recipe's dotted overrides applied: the dict the bench scripts and tests use."""
    from dvc.utils.hydra import compose_and_dump

    composed = tmp_path / "params.yaml"
    conf = str(REPO_ROOT / "conf")
    compose_and_dump(composed, conf, None, "config", "", [f"recipe={name}"])
    overrides = recipe_overrides(name, folder=REPO_ROOT / RECIPE_DIR)
    default = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    assert yaml.safe_load(composed.read_text()) == with_overrides(default, overrides)
    assert overrides["data.test_size"] >= 500  # a test split kept out of training
    assert overrides["data.train_size"] + overrides["data.test_size"] <= 5000  # bundled
    parse_params(with_overrides(default, overrides))  # valid params


def test_params_yaml_is_the_composed_default(tmp_path):
    """params.yaml is conf/config.yaml as DVC's Hydra composition writes it, byte for byte,
    so that `dvc exp run -S key=value` (which rewrites it) changes one line."""
    from dvc.utils.hydra import compose_and_dump

    composed = tmp_path / "params.yaml"
    for default in ([], ["recipe=default"]):
        compose_and_dump(composed, str(REPO_ROOT / "conf"), None, "config", "", default)
        assert composed.read_text() == (REPO_ROOT / "params.yaml").read_text()
    compose_and_dump(composed, str(REPO_ROOT / "conf"), None, "config", "", ["train.epochs=3"])
    before = (REPO_ROOT / "params.yaml").read_text().splitlines()
    after = composed.read_text().splitlines()
    assert len(after) == len(before)
    changed = [pair for pair in zip(before, after, strict=True) if pair[0] != pair[1]]
    assert changed == [("  epochs: 50", "  epochs: 3")]


def test_recipe_helpers_refuse_unknown_names_and_keys(tmp_path):
    with pytest.raises(PipelineError, match=r"no such recipe; expected one of: best, default"):
        recipe_overrides("fastest", folder=REPO_ROOT / RECIPE_DIR)
    with pytest.raises(PipelineError, match=r"'train\.epoch': params.yaml has no such key"):
        with_overrides({"train": {"epochs": 1}}, {"train.epoch": 2})
    (tmp_path / "nested.yaml").write_text("defaults:\n  - fast\n")
    with pytest.raises(PipelineError, match="without a defaults list"):
        recipe_overrides("nested", folder=tmp_path)
    raw = {"train": {"epochs": 1, "augment": {"scale": [0.9, 1.1]}}}
    changed = with_overrides(raw, {"train.augment.scale": [0.8, 1.2]})
    assert changed["train"]["augment"]["scale"] == [0.8, 1.2]
    assert raw["train"]["augment"]["scale"] == [0.9, 1.1]  # a copy: the input is untouched
    assert dotted({"a": {"b": 1, "c": [2]}}) == {"a.b": 1, "a.c": [2]}


@pytest.mark.slow
def test_dvc_exp_run_takes_a_recipe_by_name(tmp_path, tiny_params):
    """`dvc exp run -n <name> -S recipe=<name>` for real: a small recipe file in a fresh
    repo, whose experiment trains with the recipe's values."""
    from tests.dvc_repo import commit_all, fresh_repo, run, run_stdout

    repo = fresh_repo(tmp_path, tiny_params, commit=False)
    (repo / "conf/recipe/wider.yaml").write_text(
        "# @package _global_\nmodel:\n  hidden: [48]\ntrain:\n  epochs: 2\n"
    )
    commit_all(repo, "fresh clone")
    run(repo, "dvc", "exp", "run", "-n", "wider", "-S", "recipe=wider")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params == with_overrides(tiny_params, {"model.hidden": [48], "train.epochs": 2})
    _, config = load_model(repo / "data/model.safetensors")
    assert config.hidden == [48]
    shown = json.loads(run_stdout(repo, "dvc", "exp", "show", "--json"))
    names = [
        rev["name"]
        for baseline in shown
        for experiment in baseline.get("experiments") or []
        for rev in experiment["revs"]
    ]
    assert "wider" in names


@pytest.mark.slow
def test_dvc_draws_the_curves_and_a_cnn_recipe_reproduces(tmp_path, tiny_params):
    from tests.dvc_repo import fresh_repo, run, run_stdout

    tiny_params["model"].update(TINY_CNN)
    tiny_params["train"].update(FANCY_TRAIN)
    repo = fresh_repo(tmp_path, tiny_params)
    run(repo, "dvc", "repro")
    plots = json.loads(run_stdout(repo, "dvc", "plots", "show", "--json"))
    drawn = set(plots["data"])
    for name in ["train/loss", "train/accuracy", "val/accuracy", "lr"]:
        assert f"dvclive/plots/metrics/{name}.tsv" in drawn, name
    assert not any("seconds" in name for name in drawn)  # wall-clock: no plot
    shown = run(repo, "dvc", "metrics", "show")
    assert "val.accuracy" in shown
    assert "timing" not in shown  # wall-clock: no metric
    before = reproducible_hashes(repo)
    assert "data/model.safetensors" in before
    run(repo, "dvc", "repro", "-f")
    assert reproducible_hashes(repo) == before


def test_progress_bar_on_a_terminal_shows_validation_accuracy():
    import io

    from rich.console import Console

    from mnist_pipeline.training.progress import epoch_reporter

    output = io.StringIO()
    console = Console(file=output, force_terminal=True, width=120)
    with epoch_reporter(console) as report:
        report(EpochStats(1, 2, 0.5, 0.8, 0.4, 0.875, 0.001, 0.1))
        report(EpochStats(2, 2, 0.25, 0.9, 0.3, 0.9375, 0.001, 0.1))
    assert "2/2" in output.getvalue()
    assert "val acc 0.9375" in output.getvalue()
    assert "Epoch [" not in output.getvalue()  # the bar, not the lines
