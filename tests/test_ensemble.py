"""Ensembles (`model.members`): the mean of the members' probabilities, each member trained
exactly as it would be alone, one model file, and bf16 autocast on CPUs with native bf16."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mnist_pipeline.cli.app import app
from mnist_pipeline.core.artifacts import save_prepared
from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.params import ModelParams, parse_params
from mnist_pipeline.model.ensemble import Ensemble, mean_of_probabilities, summed_member_losses
from mnist_pipeline.model.model_file import load_model, save_model
from mnist_pipeline.model.networks import build_model
from mnist_pipeline.model.predict import class_probabilities
from mnist_pipeline.training import cpu_bf16, runtime
from mnist_pipeline.training.augment import augment_images, draw_augmentation
from mnist_pipeline.training.loop import train_model
from mnist_pipeline.training.optimization import classification_loss
from tests.conftest import synthetic_digits, write_params

TINY_CNN = {"arch": "cnn", "channels": [4, 8], "hidden": [16], "dropout": 0.0}
MINI_BATCHES = {"epochs": 2, "lr": 0.01, "batch_size": 16, "label_smoothing": 0.1}
AUGMENT = {"enabled": True, "rotation": 15.0, "translation": 0.1, "scale": [0.9, 1.1]}


def _params(repo_params: dict, model: dict | None = None, train: dict | None = None):
    raw = copy.deepcopy(repo_params)
    raw["model"].update(model or {})
    raw["train"].update(train or {})
    return parse_params(raw)


def _config(members: int) -> ModelParams:
    return ModelParams(arch="cnn", hidden=[16], dropout=0.1, channels=[4, 8], members=members)


def test_eval_forward_is_the_log_of_the_mean_probability():
    torch.manual_seed(0)
    ensemble = build_model(_config(3)).eval()
    images = torch.randn(5, 1, 28, 28)
    members = [member(images).exp() for member in ensemble.members]
    expected = torch.stack(members).mean(dim=0)  # (5, 10)
    torch.testing.assert_close(ensemble(images).exp(), expected)
    torch.testing.assert_close(ensemble(images).exp().sum(dim=1), torch.ones(5))
    assert ensemble.train()(images).shape == (3, 5, 10)  # train mode: every member's output


def test_members_start_from_their_own_weights_and_member_0_as_a_single_network():
    torch.manual_seed(7)
    ensemble = build_model(_config(2))
    torch.manual_seed(7)
    single = build_model(_config(1))
    assert isinstance(ensemble, Ensemble)
    assert not isinstance(single, Ensemble)
    first, second = (member.state_dict() for member in ensemble.members)
    for name, weight in single.state_dict().items():
        assert torch.equal(first[name], weight), name
    assert not torch.equal(first["features.0.weight"], second["features.0.weight"])
    assert "members.1.classifier.4.weight" in ensemble.state_dict()


def test_summed_loss_of_one_network_is_its_loss_and_of_members_their_sum():
    def loss(log_probs, labels):
        return classification_loss(log_probs, labels, 0.1)

    log_probs = torch.randn(3, 4, 10).log_softmax(dim=2)
    labels = torch.tensor([1, 2, 3, 4])
    single = summed_member_losses(log_probs[0], labels, loss)
    assert torch.equal(single, loss(log_probs[0], labels))
    expected = sum(loss(member, labels) for member in log_probs)
    torch.testing.assert_close(summed_member_losses(log_probs, labels, loss), expected)
    torch.testing.assert_close(mean_of_probabilities(log_probs).exp(), log_probs.exp().mean(0))


def test_each_member_trains_exactly_as_it_would_alone(repo_params):
    """Without augmentation and dropout, member 0 of an ensemble ends with the very weights
    of a single network of the same seed: the sum of losses gives each member its own
    gradient, and Adam's steps are per parameter."""
    digits = synthetic_digits(48)
    single = _params(repo_params, TINY_CNN, MINI_BATCHES)
    pair = _params(repo_params, TINY_CNN | {"members": 2}, MINI_BATCHES)
    alone, _, _ = train_model(digits, single.model, single.train, threads=1)
    ensemble, config, history = train_model(digits, pair.model, pair.train, threads=1)
    assert config.members == 2
    member_0 = ensemble.members[0].state_dict()
    for name, weight in alone.state_dict().items():
        torch.testing.assert_close(member_0[name], weight, rtol=0, atol=0, msg=name)
    assert history[-1].train_loss > 0
    assert 0 <= history[-1].train_accuracy <= 1


def _augmented(images, params, seed, copies=1):
    draws = draw_augmentation(
        len(images), params, torch.Generator().manual_seed(seed), copies=copies
    )
    return augment_images(images, params, draws, slice(0, len(images)))


def test_members_get_their_own_augmentation_draws():
    images = torch.from_numpy(synthetic_digits(6).images).float() / 255
    params = _params_augment()
    alone = _augmented(images, params, 0)
    copies = _augmented(images, params, 0, copies=3)
    assert alone.shape == (6, 1, 28, 28)
    assert copies.shape == (3, 6, 1, 28, 28)
    assert torch.equal(copies[0], alone)  # a single network's stream is unchanged
    assert not torch.equal(copies[1], copies[0])
    assert not torch.equal(copies[2], copies[1])


def _params_augment():
    from mnist_pipeline.core.params import AugmentParams

    return AugmentParams.model_validate(AUGMENT)


def test_ensemble_training_is_deterministic_and_seeded(tmp_path, repo_params):
    digits = synthetic_digits(48)
    train = MINI_BATCHES | {"augment": AUGMENT}
    params = _params(repo_params, TINY_CNN | {"members": 3}, train)

    def model_bytes(name, train_params):
        model, config, _ = train_model(digits, params.model, train_params, threads=1)
        save_model(model, config, tmp_path / name)
        return (tmp_path / name).read_bytes()

    first = model_bytes("a", params.train)
    assert first == model_bytes("b", params.train)
    assert first != model_bytes("c", params.train.model_copy(update={"seed": 1}))


def test_model_file_round_trip_and_predict(tmp_path):
    torch.manual_seed(0)
    config = _config(3)
    ensemble = build_model(config).eval()
    save_model(ensemble, config, tmp_path / "m.safetensors")
    loaded, loaded_config = load_model(tmp_path / "m.safetensors")
    assert loaded_config == config
    images = synthetic_digits(7).images
    probabilities = class_probabilities(loaded, images)
    np.testing.assert_allclose(probabilities, class_probabilities(ensemble, images))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)


def test_a_single_networks_file_does_not_mention_members(tmp_path):
    """So the tutorial recipe's model file has the same bytes as before ensembles."""
    from safetensors import safe_open

    for members in (1, 2):
        save_model(build_model(_config(members)), _config(members), tmp_path / "m.safetensors")
        with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as file:
            fields = json.loads(file.metadata()["mnist_pipeline.model_config"])
        assert ("members" in fields) == (members > 1)


def test_files_with_a_wrong_ensemble_are_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    save_model(build_model(_config(1)), _config(2), path)  # says 2 members, holds 1
    with pytest.raises(PipelineError, match="weights do not fit"):
        load_model(path)
    # Past the schema's bound (model_copy does not validate), as a hostile file could say.
    huge = _config(1).model_copy(update={"members": 10_000})
    save_model(build_model(_config(1)), huge, path)
    # Refused by the params schema's bound, before anything is built (docs/safety.md).
    with pytest.raises(PipelineError, match=r"m.safetensors: .*'members' .* 16 \(got 10000\)"):
        load_model(path)


def test_members_param_defaults_to_one_and_is_bounded(repo_params):
    without = copy.deepcopy(repo_params)
    without["model"].pop("members", None)
    assert parse_params(without).model.members == 1
    for bad in (0, 17, 2.0):
        with pytest.raises(PipelineError, match="'model.members'"):
            _params(repo_params, {"members": bad})


def test_predict_command_reads_an_ensemble_file(tmp_path, monkeypatch, tiny_params):
    monkeypatch.chdir(tmp_path)
    tiny_params["model"].update(TINY_CNN | {"members": 2})
    tiny_params["train"].update(MINI_BATCHES)
    write_params(tmp_path / "params.yaml", tiny_params)
    save_prepared(tmp_path / "train.safetensors", synthetic_digits(40))
    save_prepared(tmp_path / "test.safetensors", synthetic_digits(20, seed=1))
    runner = CliRunner()
    trained = runner.invoke(
        app, ["train", "--train-data", "train.safetensors", "--model", "m.safetensors"]
    )
    assert trained.exit_code == 0, trained.output
    predicted = runner.invoke(
        app,
        ["predict", "--model", "m.safetensors", "--input", "test.safetensors", "--output", "p.csv"],
    )
    assert predicted.exit_code == 0, predicted.output
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 1 + 20


# bf16 autocast on the CPU


def test_native_bf16_is_read_from_the_cpu_flags():
    assert cpu_bf16.lists_native_bf16("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 sse\n")
    assert not cpu_bf16.lists_native_bf16("processor\t: 0\nflags\t\t: fpu avx2 avx512_vnni\n")
    assert cpu_bf16.lists_native_bf16("flags\t\t: amx_tile amx_bf16\n")
    assert not cpu_bf16.lists_native_bf16("processor\t: 0\n")
    assert isinstance(cpu_bf16.native_bf16(), bool)


def test_bf16_on_a_cpu_with_native_bf16_and_without(monkeypatch, capsys):
    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "native_bf16", lambda: True)
    assert runtime.uses_bf16("bf16", "cpu", cpu) is True
    assert runtime.uses_bf16("bf16", "auto", cpu) is True
    assert runtime.uses_bf16("fp32", "cpu", cpu) is False
    monkeypatch.setattr(runtime, "native_bf16", lambda: False)
    with pytest.raises(PipelineError, match="this CPU has no native bf16") as refused:
        runtime.uses_bf16("bf16", "cpu", cpu)
    assert "\n" not in str(refused.value)
    assert runtime.uses_bf16("bf16", "auto", cpu) is False  # auto: trains, in fp32
    assert "training in fp32" in capsys.readouterr().err


@pytest.mark.skipif(not cpu_bf16.native_bf16(), reason="this CPU has no native bf16")
def test_bf16_training_on_this_cpu_learns_and_keeps_fp32_weights(repo_params, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    train = MINI_BATCHES | {"epochs": 4, "precision": "bf16", "device": "cpu"}
    params = _params(repo_params, TINY_CNN, train)
    model, _, history = train_model(synthetic_digits(60), params.model, params.train, threads=1)
    assert history[-1].train_loss < history[0].train_loss
    floats = [weight for weight in model.state_dict().values() if weight.is_floating_point()]
    assert all(weight.dtype == torch.float32 for weight in floats)


# Elastic distortion (train.augment.elastic_alpha)


def test_elastic_distortion_is_seeded_smooth_and_off_by_default():
    from mnist_pipeline.core.params import AugmentParams
    from mnist_pipeline.training.augment import elastic_displacement

    images = torch.from_numpy(synthetic_digits(8).images).float() / 255
    affine = AugmentParams.model_validate(AUGMENT)
    assert affine.elastic_alpha == 0  # the default leaves the affine augmentation as it was
    elastic = affine.model_copy(update={"elastic_alpha": 34.0})

    def draw(params, seed):
        return _augmented(images, params, seed)

    assert torch.equal(draw(elastic, 0), draw(elastic, 0))
    assert not torch.equal(draw(elastic, 0), draw(affine, 0))
    assert draw(elastic, 0).min() >= 0
    assert draw(elastic, 0).max() <= 1
    noise = torch.rand(4, 2, 28, 28, generator=torch.Generator().manual_seed(0))
    pixels = elastic_displacement(noise, elastic) * 28 / 2  # grid units -> pixels
    assert pixels.shape == (4, 28, 28, 2)
    assert 0.3 < pixels.std() < 3  # a pixel or two: a distortion, not a scramble
    # Smooth: neighbouring pixels move almost together.
    assert (pixels[:, 1:] - pixels[:, :-1]).abs().mean() < 0.2 * pixels.abs().mean()


def test_elastic_blur_is_the_zero_padded_separable_gaussian_convolution():
    """The banded-matrix blur gives the two depthwise convolutions' field (what it replaced
    because those ran ~7x slower), to float32 rounding."""
    import math

    import torch.nn.functional as F  # noqa: N812

    from mnist_pipeline.core.params import AugmentParams
    from mnist_pipeline.training.augment import elastic_displacement, gaussian_blur_matrix

    params = AugmentParams.model_validate(AUGMENT).model_copy(
        update={"elastic_alpha": 34.0, "elastic_sigma": 5.0}
    )
    noise = torch.rand(6, 2, 28, 28, generator=torch.Generator().manual_seed(1))
    radius = math.ceil(3 * params.elastic_sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / params.elastic_sigma) ** 2)
    kernel = (kernel / kernel.sum()).float()
    field = F.conv2d(
        2 * noise - 1, kernel.view(1, 1, 1, -1).expand(2, 1, 1, -1), padding=(0, radius), groups=2
    )
    field = F.conv2d(
        field, kernel.view(1, 1, -1, 1).expand(2, 1, -1, 1), padding=(radius, 0), groups=2
    )
    expected = (field * (params.elastic_alpha * 2 / 28)).permute(0, 2, 3, 1)
    torch.testing.assert_close(elastic_displacement(noise, params), expected, atol=1e-6, rtol=0)
    blur = gaussian_blur_matrix(28, 1.0, torch.float32, torch.device("cpu"))
    assert torch.equal(blur, blur.T)
    assert blur[0, 3] > 0  # cut at 3 sigma: 3 pixels away in, 4 out
    assert blur[0, 4] == 0
    torch.testing.assert_close(blur[14].sum(), torch.tensor(1.0))  # far from the edges


def test_onnx_export_of_an_ensemble_gives_its_probabilities(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from mnist_pipeline.serving.onnx_export import export_onnx

    torch.manual_seed(0)
    ensemble = build_model(_config(3)).eval()
    export_onnx(ensemble, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    images = synthetic_digits(5).images  # uint8 (5, 1, 28, 28)
    (exported,) = session.run(None, {session.get_inputs()[0].name: images})
    np.testing.assert_allclose(exported, class_probabilities(ensemble, images), atol=1e-5)


def test_tta_averages_the_image_and_its_four_one_pixel_shifts():
    from mnist_pipeline.core.params import ModelParams
    from mnist_pipeline.model.ensemble import shifted_views
    from mnist_pipeline.model.networks import MNIST_MEAN, MNIST_STD, build_model

    torch.manual_seed(0)
    config = ModelParams(arch="mlp", hidden=[16], dropout=0.0, channels=[], tta=True)
    model = build_model(config).eval()
    images = torch.randn(3, 1, 28, 28)
    background = -MNIST_MEAN / MNIST_STD
    views = shifted_views(images, background)
    assert len(views) == 5
    assert torch.equal(views[0], images)
    assert torch.equal(views[2][:, :, 1:, :], images[:, :, :-1, :])  # moved down one row
    assert torch.allclose(views[2][:, :, 0, :], torch.tensor(background))  # blank edge
    single = model.members[0]
    expected = torch.stack([single(view).exp() for view in views]).mean(dim=0).log()
    with torch.no_grad():
        assert torch.allclose(model(images), expected, atol=1e-6)
        # Training sees the plain image only: (members, B, 10).
        assert model.train()(images).shape == (1, 3, 10)


def test_tta_round_trips_through_the_model_file_and_leaves_plain_files_alone(tmp_path):
    from mnist_pipeline.core.params import ModelParams
    from mnist_pipeline.model.model_file import load_model, save_model, saved_fields
    from mnist_pipeline.model.networks import build_model

    plain = ModelParams(arch="mlp", hidden=[8], dropout=0.0, channels=[])
    assert "tta" not in saved_fields(plain)
    config = ModelParams(arch="mlp", hidden=[8], dropout=0.0, channels=[], tta=True)
    save_model(build_model(config), config, tmp_path / "model.safetensors")
    model, loaded = load_model(tmp_path / "model.safetensors")
    assert loaded.tta is True
    assert model.tta is True
