"""bench/recipe_cv.py: stratified folds of the digits outside the test split, and a run."""

from __future__ import annotations

import numpy as np
import pytest

from bench import recipe_cv
from mnist_pipeline.data.split import load_bundled_digits, split_digits


def test_folds_are_stratified_disjoint_and_seeded():
    labels = np.repeat(np.arange(10), 45)  # 450 digits, 45 of each class
    folds = recipe_cv.stratified_folds(labels, 5, seed=0)
    assert sorted(set(folds)) == [0, 1, 2, 3, 4]
    for fold in range(5):
        per_class = np.bincount(labels[folds == fold], minlength=10)
        assert per_class.tolist() == [9] * 10
    assert np.array_equal(folds, recipe_cv.stratified_folds(labels, 5, seed=0))
    assert not np.array_equal(folds, recipe_cv.stratified_folds(labels, 5, seed=1))


@pytest.mark.slow  # reads the bundled digits
def test_cross_validation_never_sees_the_test_split():
    development = recipe_cv.development_digits()
    _, test = split_digits(load_bundled_digits(), recipe_cv.HELD_OUT)
    assert len(development.labels) == 4500
    flat = development.images.reshape(4500, -1)
    seen = {row.tobytes() for row in flat}
    assert not any(image.tobytes() in seen for image in test.images.reshape(500, -1))


@pytest.mark.slow  # reads the bundled digits
def test_a_quick_run_prints_the_table(monkeypatch, capsys):
    recipes = {"tiny": {"train.epochs": 2}, "tiny-pair": {"train.epochs": 2, "model.members": 2}}
    monkeypatch.setattr(recipe_cv, "RECIPES", recipes)
    argv = ["--recipes", "tiny,tiny-pair", "--folds", "5", "--only", "0", "--threads", "1"]
    assert recipe_cv.main(argv) == 0
    table = capsys.readouterr().out
    assert "| recipe | accuracy, mean ± std over folds (%)" in table
    assert "| tiny | " in table
    assert "| tiny-pair | " in table
