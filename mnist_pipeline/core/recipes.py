"""Named recipes: conf/recipe/<name>.yaml as dotted overrides of params.yaml.

A recipe file is a Hydra config (`# @package _global_`) holding only the keys it changes,
nested as in params.yaml. DVC composes it with conf/config.yaml when an experiment names
it (`dvc exp run -S recipe=best`); the bench scripts and tests read the same file here,
so every copy of a recipe is that one file:

    recipe_overrides("best")                  # {"data.train_size": 4500, ...}
    with_overrides(raw_params, overrides)     # params.yaml's dict with them applied

The result equals what `dvc exp run -S recipe=<name>` composes
(tests/test_training_recipes.py checks it against DVC's own composition).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path

import yaml

from mnist_pipeline.core.errors import PipelineError

RECIPE_DIR = Path("conf/recipe")  # relative to the project root, as DVC's [hydra] reads it


def recipe_names(*, folder: Path = RECIPE_DIR) -> list[str]:
    """The recipes in `folder`, by name (file name without .yaml), sorted."""
    return sorted(path.stem for path in Path(folder).glob("*.yaml"))


def recipe_overrides(name: str, *, folder: Path = RECIPE_DIR) -> dict[str, object]:
    """The recipe `name` (conf/recipe/<name>.yaml) as dotted keys, in the file's order."""
    path = Path(folder) / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(recipe_names(folder=folder)) or "none"
        raise PipelineError(f"{path}: no such recipe; expected one of: {known}")
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise PipelineError(f"{path}: not valid YAML ({err}); expected nested keys") from None
    if tree is None:  # only comments: the default recipe, nothing changed
        return {}
    if not isinstance(tree, dict) or "defaults" in tree:
        raise PipelineError(
            f"{path}: expected a mapping of params.yaml's sections, without a defaults list"
        )
    return dotted(tree)


def dotted(tree: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    """{"train": {"lr": 0.1}} -> {"train.lr": 0.1}; lists stay whole values."""
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat |= dotted(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def with_overrides(raw: Mapping[str, object], overrides: Mapping[str, object]) -> dict:
    """A deep copy of params as loaded from YAML, with dotted-key overrides applied, as
    `dvc exp run -S key=value` would: only existing keys (a typo is an error, not a new key)."""
    params = copy.deepcopy(dict(raw))
    for key, value in overrides.items():
        *sections, leaf = key.split(".")
        node: object = params
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            raise PipelineError(f"override {key!r}: params.yaml has no such key")
        node[leaf] = copy.deepcopy(value)
    return params
