"""Side-by-side: the seed tutorial's code, scikit-learn's MLPClassifier, our default recipe
and our `fast` and `best` recipes, all trained and tested on one split of the bundled digits.

    python bench/compare_recipes.py            # 4,500 training / 500 test images

This is the one split the README quotes; the recipes were chosen by cross-validation on
the training digits alone (bench/recipe_cv.py), never on it. Wall time is training plus
prediction, with the data already in memory. Throughput is training images per second:
epochs x training images (x members of an ensemble) / training time. The seed's code is
unseeded, so its accuracy changes from run to run. Timings on a shared 2-core machine are
noisy: run it more than once.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from mnist_pipeline.core.digits import Digits
from mnist_pipeline.core.params import DataParams, Params, parse_params
from mnist_pipeline.core.recipes import RECIPE_DIR, recipe_overrides, with_overrides
from mnist_pipeline.data.split import load_bundled_digits, split_digits
from mnist_pipeline.formats.csv_digits import write_csv_digits

ROOT = Path(__file__).resolve().parents[1]

# The recipes of the README's `dvc exp run -n fast -S recipe=fast` and `... recipe=best`
# lines: conf/recipe/fast.yaml and best.yaml, read here as dotted overrides of params.yaml.
# Chosen by 5-fold cross-validation on the 4,500 digits outside the 500-digit test split
# (bench/recipe_cv.py; docs/recipes.md).
FAST = recipe_overrides("fast", folder=ROOT / RECIPE_DIR)
BEST = recipe_overrides("best", folder=ROOT / RECIPE_DIR)


def recipe_params(overrides: dict[str, object]) -> Params:
    """params.yaml with dotted-key overrides applied, as `dvc exp run -S` would."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    return parse_params(with_overrides(raw, overrides))


def seed_tutorial(train_csv: Path, test_csv: Path) -> tuple[float, float, float]:
    """The tutorial's code as written (tutorial.txt), wrapped in a function and timed.

    Its faults are kept on purpose: raw 0-255 pixels, no seed, dropout on at prediction.
    Returns (accuracy in %, wall seconds of training + prediction, training seconds).
    """
    import pandas as pd
    import torch
    import torch.nn.functional as F  # noqa: N812
    from torch import nn, optim
    from torch.autograd import Variable

    train = pd.read_csv(train_csv)
    train_labels = train["label"].values
    train = train.drop("label", axis=1).values.reshape(len(train), 1, 28, 28)
    X = torch.Tensor(train.astype(float))  # noqa: N806 (the tutorial's names)
    y = torch.Tensor(train_labels).long()
    test = pd.read_csv(test_csv)
    test_labels = test["label"].values
    test = test.drop("label", axis=1).values.reshape(len(test), 1, 28, 28)
    X_test = torch.Tensor(test.astype(float))  # noqa: N806

    class MNISTClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(784, 392)
            self.fc2 = nn.Linear(392, 196)
            self.fc3 = nn.Linear(196, 98)
            self.fc4 = nn.Linear(98, 10)
            self.dropout = nn.Dropout(p=0.2)

        def forward(self, x):
            x = x.view(x.shape[0], -1)
            x = self.dropout(F.relu(self.fc1(x)))
            x = self.dropout(F.relu(self.fc2(x)))
            x = self.dropout(F.relu(self.fc3(x)))
            x = F.log_softmax(self.fc4(x), dim=1)
            return x

    started = time.perf_counter()
    model = MNISTClassifier()
    loss_function = nn.NLLLoss()
    opt = optim.Adam(model.parameters(), lr=0.001)
    for _epoch in range(50):
        images = Variable(X)
        labels = Variable(y)
        opt.zero_grad()
        outputs = model(images)
        loss = loss_function(outputs, labels)
        loss.backward()
        opt.step()
        # (the tutorial prints the loss here; left out to keep the table readable)
    trained = time.perf_counter()
    preds = model(X_test)
    _, predictionlabel = torch.max(preds.data, 1)
    predictionlabel = predictionlabel.tolist()
    predictionlabel = pd.Series(predictionlabel)
    test_labels = pd.Series(test_labels)
    preds = len(predictionlabel)
    correct = len([1 for x, y in zip(predictionlabel, test_labels, strict=True) if x == y])
    finished = time.perf_counter()
    return (correct / preds) * 100, finished - started, trained - started


def sklearn_mlp(train: Digits, test: Digits) -> tuple[float, float, float, int]:
    """scikit-learn's MLPClassifier with its defaults, on pixels scaled to 0-1."""
    from sklearn.neural_network import MLPClassifier

    train_x = train.images.reshape(len(train.images), -1) / 255.0
    test_x = test.images.reshape(len(test.images), -1) / 255.0
    started = time.perf_counter()
    classifier = MLPClassifier(random_state=42).fit(train_x, train.labels)
    trained = time.perf_counter()
    accuracy = float((classifier.predict(test_x) == test.labels).mean())
    return accuracy, time.perf_counter() - started, trained - started, classifier.n_iter_


def our_recipe(train: Digits, test: Digits, params: Params) -> tuple[float, float, float]:
    """Our train stage's function, then the predict stage's, on in-memory digits."""
    from mnist_pipeline.model.predict import class_probabilities
    from mnist_pipeline.training.loop import train_model

    started = time.perf_counter()
    model, _, _ = train_model(train, params.model, params.train, params.runtime.threads)
    trained = time.perf_counter()
    predicted = class_probabilities(model, test.images).argmax(axis=1)
    accuracy = float((predicted == test.labels).mean())
    return accuracy, time.perf_counter() - started, trained - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=BEST["data.train_size"])
    parser.add_argument("--test-size", type=int, default=BEST["data.test_size"])
    args = parser.parse_args()
    data = DataParams(train_size=args.train_size, test_size=args.test_size, seed=42)
    train, test = split_digits(load_bundled_digits(), data)
    n_train = len(train.images)
    rows = []

    with tempfile.TemporaryDirectory() as tmp:
        train_csv, test_csv = Path(tmp, "train.csv"), Path(tmp, "test.csv")
        write_csv_digits(train_csv, train)
        write_csv_digits(test_csv, test)
        percent, wall, fit = seed_tutorial(train_csv, test_csv)
    rows.append(("seed tutorial code, as written", percent / 100, wall, 50 * n_train / fit))

    accuracy, wall, fit, iterations = sklearn_mlp(train, test)
    rows.append(("scikit-learn MLPClassifier()", accuracy, wall, iterations * n_train / fit))

    default = recipe_params({})
    accuracy, wall, fit = our_recipe(train, test, default)
    rows.append(("our default recipe (params.yaml)", accuracy, wall, 50 * n_train / fit))

    for name, overrides in [("fast", FAST), ("best", BEST)]:
        params = recipe_params(overrides)
        accuracy, wall, fit = our_recipe(train, test, params)
        seen = params.train.epochs * (n_train - params.train.val_size) * params.model.members
        rows.append((f"our {name} recipe", accuracy, wall, seen / fit))

    print(f"{n_train} training images, {len(test.images)} test images (data.seed 42)\n")
    print("| recipe | test accuracy | wall time (s) | training images/s |")
    print("|---|---:|---:|---:|")
    for name, accuracy, wall, throughput in rows:
        print(f"| {name} | {accuracy:.4f} | {wall:.1f} | {throughput:,.0f} |")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
