import urllib.error

import pytest
import torch

from imgsteal.errors import WeightsUnavailableError
from imgsteal.models.vgg import VGGFeatures


def test_missing_vgg_weights_stop_with_the_offline_alternative(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="--content-loss pixel"):
        VGGFeatures()


def test_named_vgg_weights_file_must_exist(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="not found"):
        VGGFeatures(tmp_path / "vgg19.pth")
