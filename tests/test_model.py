"""The tutorial's network, and model files that rebuild it without running code."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.params import ModelParams
from mnist_pipeline.model.model_file import load_model, save_model
from mnist_pipeline.model.networks import MLP, build_model, scale_pixels


def test_mlp_is_the_tutorials_network():
    model = MLP(hidden=(392, 196, 98), dropout=0.2)
    linears = [layer for layer in model.modules() if isinstance(layer, nn.Linear)]
    assert [(layer.in_features, layer.out_features) for layer in linears] == [
        (784, 392),
        (392, 196),
        (196, 98),
        (98, 10),
    ]
    dropouts = [layer for layer in model.modules() if isinstance(layer, nn.Dropout)]
    assert [layer.p for layer in dropouts] == [0.2, 0.2, 0.2]
    log_probs = model.eval()(torch.zeros(5, 1, 28, 28))
    assert log_probs.shape == (5, 10)
    torch.testing.assert_close(log_probs.exp().sum(dim=1), torch.ones(5))


def test_scale_pixels_standardises_uint8():
    images = torch.tensor([0, 255], dtype=torch.uint8).reshape(2, 1, 1, 1)
    scaled = scale_pixels(images)
    assert scaled.dtype == torch.float32
    assert scaled[0].item() < 0 < scaled[1].item()


def test_model_file_round_trip(tmp_path):
    config = ModelParams(arch="mlp", hidden=[16, 8], dropout=0.1, channels=[])
    torch.manual_seed(0)
    model = build_model(config).eval()
    path = tmp_path / "model.safetensors"
    save_model(model, config, path)
    loaded, loaded_config = load_model(path)
    assert loaded_config == config
    assert not loaded.training
    images = torch.rand(3, 1, 28, 28)
    torch.testing.assert_close(loaded(images), model(images))


def test_saving_twice_gives_identical_bytes(tmp_path):
    config = ModelParams(arch="mlp", hidden=[16], dropout=0.0, channels=[])
    model = build_model(config)
    save_model(model, config, tmp_path / "a.safetensors")
    save_model(model, config, tmp_path / "b.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


class _Exploit:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_model_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.safetensors"
    path.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(PipelineError, match="not a safetensors model file"):
        load_model(path)
    assert not marker.exists()


def test_weights_of_the_wrong_shape_are_refused(tmp_path):
    config = ModelParams(arch="mlp", hidden=[16], dropout=0.0, channels=[])
    path = tmp_path / "model.safetensors"
    save_model(
        build_model(ModelParams(arch="mlp", hidden=[32], dropout=0.0, channels=[])), config, path
    )
    with pytest.raises(PipelineError, match="weights do not fit the 'mlp' network"):
        load_model(path)


def test_safetensors_without_config_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({"weight": torch.zeros(2)}, str(path))
    with pytest.raises(PipelineError, match="no mnist-pipeline model config"):
        load_model(path)
