"""params.yaml is validated once, at the edge, with errors that name the key."""

from __future__ import annotations

import copy

import pytest

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.params import load_params, parse_params
from tests.conftest import REPO_ROOT


def test_repo_params_are_the_tutorial_recipe():
    params = load_params(REPO_ROOT / "params.yaml")
    assert params.data.train_size == 1000
    assert params.model.arch == "mlp"
    assert params.model.hidden == [392, 196, 98]
    assert params.model.dropout == 0.2
    assert params.train.epochs == 50
    assert params.train.lr == 0.001
    assert params.train.batch_size is None


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("train", "lr", 0, "'train.lr' should be greater than 0"),
        ("train", "lr", -0.1, "'train.lr' should be greater than 0"),
        ("train", "epochs", 0, "'train.epochs' should be greater than or equal to 1"),
        ("train", "epochs", "50", "'train.epochs' should be a valid integer"),
        ("train", "epochs", 2.5, "'train.epochs' should be a valid integer"),
        ("model", "arch", "resnet", "'model.arch'"),
        ("model", "dropout", 1.0, "'model.dropout' should be less than 1"),
        ("data", "train_size", -5, "'data.train_size' should be greater than or equal to 1"),
    ],
)
def test_bad_values_name_the_key(repo_params, section, key, value, message):
    params = copy.deepcopy(repo_params)
    params[section][key] = value
    with pytest.raises(PipelineError, match=message):
        parse_params(params)


def test_a_cnn_needs_conv_blocks_an_mlp_none(repo_params):
    params = copy.deepcopy(repo_params)
    params["model"].update(arch="cnn", channels=[])
    with pytest.raises(
        PipelineError, match=r"'model.channels' should have 1 to 4 items for arch 'cnn'"
    ):
        parse_params(params)
    params["model"]["arch"] = "mlp"  # as an mlp's model file stores it
    assert parse_params(params).model.channels == []


def test_typo_suggests_the_real_key(repo_params):
    params = copy.deepcopy(repo_params)
    params["train"]["epoch"] = params["train"].pop("epochs")
    with pytest.raises(PipelineError) as caught:
        parse_params(params)
    assert "unknown key 'train.epoch' (did you mean 'train.epochs'?)" in str(caught.value)


def test_missing_key_is_named(repo_params):
    params = copy.deepcopy(repo_params)
    del params["data"]["seed"]
    with pytest.raises(PipelineError, match="missing key 'data.seed'"):
        parse_params(params)


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  epochs: [1, 2\n  lr: 0.1\n")
    with pytest.raises(PipelineError, match=r"params.yaml: malformed YAML at line \d+"):
        load_params(path)


def test_missing_params_file(tmp_path):
    with pytest.raises(PipelineError, match="cannot read params file"):
        load_params(tmp_path / "nope.yaml")


def test_params_must_be_a_mapping(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(PipelineError, match="expected a mapping"):
        load_params(path)
