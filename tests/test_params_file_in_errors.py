"""Errors about params values name the params file actually in use (`--params`)."""

from __future__ import annotations

import copy

from typer.testing import CliRunner

from mnist_pipeline.cli.app import app
from tests.conftest import write_params


def test_a_params_problem_found_late_names_the_file_given_with_params(
    tmp_path, monkeypatch, tiny_params
):
    monkeypatch.chdir(tmp_path)
    params = copy.deepcopy(tiny_params)
    params["data"].update(train_size=4000, test_size=2000)  # more than the 5,000 bundled
    write_params(tmp_path / "other.yaml", params)
    result = CliRunner().invoke(app, ["split", "--params", "other.yaml"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: other.yaml: data.train_size + data.test_size")
    assert "params.yaml" not in result.stderr
