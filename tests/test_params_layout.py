"""`dvc exp run -S key=value` changes exactly one line of params.yaml: the file is already
what DVC's Hydra composition writes (conf/config.yaml composed: block lists, `null`), so
nothing else moves."""

from __future__ import annotations

import difflib
import shutil

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.dvc_repo import commit_all, run


def _leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _other(value):
    """A different value of the same kind, in the override syntax DVC takes."""
    if isinstance(value, bool):
        return str(not value).lower()
    if isinstance(value, int | float):
        return str(value + 1)
    if value is None:
        return "64"
    if isinstance(value, list):
        return "[" + ",".join(str(item) for item in [*value, value[-1]]) + "]"
    return "other"


def _changed_lines(before: str, after: str) -> list[str]:
    diff = difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
    return [line for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---")]


def test_dvcs_writer_changes_only_the_line_of_each_key(tmp_path):
    """DVC's own code for -S under Hydra composition (dvc.utils.hydra.compose_and_dump, what
    `dvc exp run -S` calls when .dvc/config enables hydra), once for every key."""
    from dvc.utils.hydra import compose_and_dump

    before = (REPO_ROOT / "params.yaml").read_text()
    path = tmp_path / "params.yaml"
    conf = str(REPO_ROOT / "conf")
    for key, value in _leaves(yaml.safe_load(before)):
        compose_and_dump(path, conf, None, "config", "", [f"{key}={_other(value)}"])
        changed = _changed_lines(before, path.read_text())
        if isinstance(value, list):  # one more item: one new item line, nothing else
            assert changed == [f"+{' ' * (2 * key.count('.'))}- {value[-1]}"], (key, changed)
        else:
            assert len(changed) == 2, (key, changed)  # one line out, one line in
            leaf = key.rsplit(".", 1)[-1]
            assert changed[1].lstrip("+").lstrip().startswith(f"{leaf}:"), (key, changed)


@pytest.mark.slow
def test_dvc_exp_run_set_param_changes_one_line_of_params_yaml(tmp_path):
    """The real command, in a repo with this project's conf/ and .dvc/config, whose one
    stage reads train.epochs."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(REPO_ROOT / "params.yaml", repo / "params.yaml")
    shutil.copytree(REPO_ROOT / "conf", repo / "conf")
    (repo / "dvc.yaml").write_text(
        "stages:\n  echo:\n    cmd: python -c \"print('ok')\"\n    params:\n      - train.epochs\n"
    )
    run(repo, "git", "init", "-q")
    run(repo, "dvc", "init", "-q")
    shutil.copy(REPO_ROOT / ".dvc/config", repo / ".dvc/config")
    commit_all(repo, "start")
    run(repo, "dvc", "exp", "run", "-S", "train.epochs=3")
    diff = run(repo, "git", "diff", "--unified=0", "params.yaml")
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] != "+++"]
    changed = [line for line in changed if not line.startswith("---")]
    assert changed == ["-  epochs: 50", "+  epochs: 3"]
