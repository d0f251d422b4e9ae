"""The SRGAN content loss reads VGG19 at relu5_4 (index 35), checked with a saved random VGG19."""

from __future__ import annotations

import torch
from torch import nn

from imgsteal.models.vgg import RELU5_4, VGGFeatures


def test_content_features_end_at_relu5_4_and_a_96px_patch_gives_6x6(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    reference = make_layers(cfgs["E"])  # vgg19().features with random weights: only layers and shapes are checked
    path = tmp_path / "vgg19-features.pth"
    torch.save({f"features.{k}": v for k, v in reference.state_dict().items()}, path)

    vgg = VGGFeatures(path)
    assert RELU5_4 == 35
    assert len(vgg.features) == 36
    assert isinstance(vgg.features[-1], nn.ReLU) and isinstance(vgg.features[-2], nn.Conv2d)
    assert not any(isinstance(m, nn.MaxPool2d) for m in list(vgg.features)[-8:])  # the 5th max-pool is gone
    # The saved weights were loaded, not fresh random ones.
    assert torch.equal(vgg.features[34].weight, reference[34].weight)
    with torch.no_grad():
        out = vgg(torch.rand(2, 3, 96, 96))
    assert out.shape == (2, 512, 6, 6)
    assert (out >= 0).all()  # a ReLU output
