"""A bad VGG19 weights file (--vgg-weights, or the torch hub cache) stops with imgsteal's own message:
what is wrong with which file and how to go on, never torch's text or its advice to load with
weights_only=False (which would run code from the file)."""

from __future__ import annotations

import collections
import pickle

import pytest
import torch
from typer.testing import CliRunner

from imgsteal.errors import WeightsUnavailableError
from imgsteal.models.vgg import VGGFeatures, _hub_file

TORCH_TEXT = ("weights_only", "Weights only load failed", "Error(s) in loading state_dict", "Traceback", "UnpicklingError", "GLOBAL")


class NotATensor:
    """A class a pickle-only file refers to: loading it would need arbitrary unpickling."""


def own_message(path, *expected: str) -> str:
    with pytest.raises(WeightsUnavailableError) as caught:
        VGGFeatures(path)
    text = str(caught.value)
    assert str(path) in text, text
    for part in expected:
        assert part in text, text
    for part in TORCH_TEXT:
        assert part not in text, text
    assert "--content-loss pixel" in text, text  # how to go on without the weights
    return text


def test_a_missing_path_is_named(tmp_path):
    own_message(tmp_path / "nosuch" / "vgg19.pth", "not found")


def test_a_folder_is_not_a_weights_file(tmp_path):
    own_message(tmp_path, "folder")


def test_a_corrupt_file(tmp_path):
    path = tmp_path / "vgg19.pth"
    path.write_bytes(b"PK\x03\x04 this was cut short")
    own_message(path, "not a PyTorch weights file")


def test_a_truncated_torch_file(tmp_path):
    path = tmp_path / "vgg19.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, path)
    path.write_bytes(path.read_bytes()[:200])
    own_message(path, "not a PyTorch weights file")


def test_a_pickle_only_file_is_never_unpickled(tmp_path):
    path = tmp_path / "vgg19.pth"
    torch.save({"features.0.weight": NotATensor()}, path)  # a torch zip holding an arbitrary object
    own_message(path, "Python objects besides tensors", "never unpickles")
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(collections.Counter(a=1)))  # a plain (non-torch) pickle
    own_message(plain, "not a PyTorch weights file")


def test_a_state_dict_with_wrong_keys_or_shapes(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.bias": torch.zeros(1000)}, path)
    own_message(path, "not a torchvision VGG19 state dict", "missing: ", "unexpected: conv1.weight")

    shapes = tmp_path / "shapes.pth"
    from torchvision.models.vgg import cfgs, make_layers

    state = {f"features.{k}": v for k, v in make_layers(cfgs["E"]).state_dict().items()}
    state["features.0.weight"] = torch.zeros(64, 1, 3, 3)  # a grey-scale first layer
    torch.save(state, shapes)
    own_message(shapes, "wrong shape: features.0.weight")


def test_a_file_that_is_not_a_dict(tmp_path):
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    own_message(path, "holds a Tensor")


def test_a_corrupt_hub_cache_file_is_named_with_how_to_fetch_it_again(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = _hub_file()
    assert cached.is_relative_to(tmp_path)
    cached.parent.mkdir(parents=True)
    torch.save({"features.0.weight": NotATensor()}, cached)
    with pytest.raises(WeightsUnavailableError) as caught:
        VGGFeatures()
    text = str(caught.value)
    assert str(cached) in text and f"delete {cached}" in text and "--vgg-weights" in text, text
    assert not any(part in text for part in TORCH_TEXT), text


def test_the_cli_shows_the_message_without_a_traceback(tmp_path):
    from imgsteal.cli import app

    path = tmp_path / "vgg19.pth"
    path.write_bytes(b"not torch")
    data = tmp_path / "hr"
    from imgsteal_testkit import write_images

    write_images(data, 2, size=(32, 32))
    result = CliRunner().invoke(app, ["victim", "train", "--kind", "sr", "--arch", "srgan", "--hr", str(data),
                                      "--out", str(tmp_path / "run"), "--vgg-weights", str(path),
                                      "--pretrain-steps", "1", "--gan-steps", "1", "--patch", "4",
                                      "--batch-size", "1", "--device", "cpu"])
    assert result.exit_code != 0
    assert "not a PyTorch weights file" in result.output and "Traceback" not in result.output, result.output
    assert not any(part in result.output for part in TORCH_TEXT), result.output
