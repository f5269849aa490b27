"""`mnist-pipeline restore`: after a failed `dvc exp run` or `dvc repro`, put params.yaml
and every pipeline output back as the last commit has them, in one command.

Why it is needed: DVC deletes a stage's outputs before running it, and `dvc exp run -S`
has already rewritten params.yaml, so a run that fails leaves the model deleted and
params.yaml changed. `dvc exp apply HEAD` would restore them too, but it also reverts
every other uncommitted edit (your code included); this touches only the pipeline's files.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from mnist_pipeline.core.errors import PipelineError

# What the error line of a stage that DVC ran says (mnist_pipeline/cli/common.py).
RESTORE_HINT = "mnist-pipeline restore"


def git_outputs(pipeline: Path) -> list[str]:
    """The outputs of `pipeline` (dvc.yaml) that git keeps (`cache: false`), in order."""
    try:
        stages = yaml.safe_load(pipeline.read_text())["stages"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise PipelineError(f"{pipeline}: cannot read its stages ({err})") from None
    found = []
    for stage in stages.values():
        for entry in stage.get("outs", []) + stage.get("metrics", []):
            if isinstance(entry, dict):
                (path, options), *_ = entry.items()
                if options.get("cache") is False:
                    found.append(path)
    return found


def _run(*command: str) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as err:
        raise PipelineError(f"cannot run {command[0]} ({err}); expected it on PATH") from None
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise PipelineError(f"`{' '.join(command)}` failed: {last}")
    return done.stdout


def run(*, pipeline: Path, params: Path, lock: Path) -> list[str]:
    """Restore from HEAD: params, lock and git-kept outputs with git (folders also lose
    files that HEAD lacks, e.g. a crashed run's checkpoint), cached outputs with
    `dvc checkout`. Returns the git-kept paths restored."""
    wanted = [str(params), str(lock), *git_outputs(pipeline)]
    tracked = set(_run("git", "ls-tree", "-r", "--name-only", "HEAD", "--", *wanted).split())
    restored = [
        path for path in wanted if path in tracked or any(t.startswith(f"{path}/") for t in tracked)
    ]
    if not restored:
        raise PipelineError(f"{params}: not in the last commit; expected a committed pipeline")
    _run("git", "checkout", "HEAD", "--", *restored)
    folders = [path for path in restored if Path(path).is_dir()]
    if folders:  # -x: ignored files too (a checkpoint, stale timings), not only untracked
        _run("git", "clean", "-fdxq", "--", *folders)
    _run("dvc", "checkout", "--force", "--quiet")
    return restored
