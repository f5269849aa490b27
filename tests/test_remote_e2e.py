"""Shared artifacts: push to a DVC remote from one clone, pull into another, repro nothing."""

from __future__ import annotations

import pytest

from tests.dvc_repo import commit_all, fresh_repo, run

pytestmark = pytest.mark.slow


def test_push_pull_then_nothing_to_reproduce(tmp_path, tiny_params):
    # No commit yet: `git init` then `dvc repro` must work, as after unpacking an archive.
    first = fresh_repo(tmp_path / "first", tiny_params, commit=False)
    remote = tmp_path / "shared-remote"  # a shared folder; S3 or SSH work the same way
    run(first, "dvc", "repro")
    run(first, "dvc", "remote", "add", "--default", "shared", str(remote))
    commit_all(first, "run pipeline, add remote")
    assert "pushed" in run(first, "dvc", "push")

    second = tmp_path / "second"
    run(tmp_path, "git", "clone", "-q", str(first), str(second))
    assert not (second / "data/model.safetensors").exists()
    run(second, "dvc", "pull")
    assert (second / "data/model.safetensors").read_bytes() == (
        first / "data/model.safetensors"
    ).read_bytes()
    output = run(second, "dvc", "repro")
    assert "Running stage" not in output
    assert "accuracy" in run(second, "dvc", "metrics", "show")
