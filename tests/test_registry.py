"""The model in DVC's model registry: dvc.yaml's `artifacts:` declares it, a git tag names
a version, `dvc.api.artifacts_show` finds it and `dvc artifacts get` fetches it."""

from __future__ import annotations

import pytest
import yaml

from mnist_pipeline.cli.common import MODEL
from mnist_pipeline.model.model_file import load_model
from tests.conftest import REPO_ROOT
from tests.dvc_repo import command_env, commit_all, fresh_repo, run

NAME = "mnist-classifier"


def test_dvc_yaml_declares_the_model_train_writes():
    pipeline = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    artifact = pipeline["artifacts"][NAME]
    assert artifact["type"] == "model"
    assert artifact["path"] == MODEL.as_posix()
    assert MODEL.as_posix() in pipeline["stages"]["train"]["outs"]
    assert artifact["desc"].strip()
    assert "mnist" in artifact["labels"]


@pytest.mark.slow  # a copy of the project as a git repo, read by DVC's API
def test_artifacts_show_finds_a_tagged_version(tmp_path, monkeypatch):
    import dvc.api

    for key, value in command_env().items():  # git identity, no analytics
        monkeypatch.setenv(key, value)
    repo = fresh_repo(tmp_path)
    run(repo, "git", "tag", "-a", f"{NAME}@v1.0.0", "-m", "first model")
    found = dvc.api.artifacts_show(NAME, repo=str(repo))
    head = run(repo, "git", "rev-parse", "HEAD").strip()
    assert found == {"rev": head, "path": MODEL.as_posix()}
    with pytest.raises(Exception, match="Unable to find artifact"):
        dvc.api.artifacts_show("no-such-model", repo=str(repo))


@pytest.mark.slow
def test_artifacts_get_fetches_the_model_from_a_git_url(tmp_path, tiny_params):
    """As another project would: by git URL (here a path), from the DVC remote."""
    repo = fresh_repo(tmp_path / "registry", tiny_params, commit=False)
    commit_all(repo, "fresh clone")
    run(repo, "dvc", "repro", "train")
    remote = tmp_path / "dvc-remote"  # a shared folder; S3, SSH... work the same way
    run(repo, "dvc", "remote", "add", "--default", "shared", str(remote))
    commit_all(repo, "train the model")
    run(repo, "git", "tag", "-a", f"{NAME}@v1.0.0", "-m", "first model")
    run(repo, "dvc", "push")

    consumer = tmp_path / "other-project"
    consumer.mkdir()
    run(consumer, "dvc", "artifacts", "get", str(repo), NAME, "-o", "models/mnist.safetensors")
    fetched = consumer / "models" / "mnist.safetensors"
    assert fetched.read_bytes() == (repo / MODEL).read_bytes()
    _, config = load_model(fetched)
    assert config.hidden == tiny_params["model"]["hidden"]
    run(consumer, "dvc", "artifacts", "get", str(repo), NAME, "--rev", "v1.0.0", "-o", "v1.st")
    assert (consumer / "v1.st").read_bytes() == fetched.read_bytes()
