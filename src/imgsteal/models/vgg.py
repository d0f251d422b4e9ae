"""VGG19 features for the SRGAN content loss, with ImageNet weights from torchvision's standard loader.

The weights come from the torch hub cache (downloaded there when online) or from a file the user
names. If neither works, `WeightsUnavailableError` says how to go on; random weights are never used.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from imgsteal.errors import WeightsUnavailableError

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
# Index of relu5_4 in torchvision's vgg19().features: the "VGG54" loss of the SRGAN paper (phi_5,4,
# the 4th convolution's activation before the 5th max-pool). conv5_4 is 34, relu5_4 35, the last
# max-pool 36; `features[: RELU5_4 + 1]` therefore ends at relu5_4 and keeps a 96 px patch at 6 x 6.
RELU5_4 = 35


def _load_vgg19(weights_path: str | Path | None) -> nn.Module:
    from torchvision.models import VGG19_Weights, vgg19

    if weights_path is not None:
        path = Path(weights_path)
        if not path.exists():
            raise WeightsUnavailableError(f"VGG19 weights file not found: {path}")
        model = vgg19(weights=None)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state and all(key.startswith("features.") for key in state):
            # The content loss needs only the convolutional part: a features-only file (80 MB instead
            # of 548 MB) is accepted too.
            model.features.load_state_dict({key.removeprefix("features."): v for key, v in state.items()})
        else:
            model.load_state_dict(state)
        return model
    try:
        return vgg19(weights=VGG19_Weights.IMAGENET1K_V1)
    except Exception as exc:  # network errors, corrupt cache: all mean "no weights"
        raise WeightsUnavailableError(
            "VGG19 ImageNet weights for the content loss could not be loaded "
            f"({type(exc).__name__}: {exc}). Put them in the torch hub cache "
            f"({torch.hub.get_dir()}/checkpoints/vgg19-dcbb9e9d.pth), pass --vgg-weights PATH, "
            "or train offline with --content-loss pixel (pixel + adversarial loss)."
        ) from exc


class VGGFeatures(nn.Module):
    """Frozen VGG19 feature map of [0, 1] images, ImageNet-normalised: N x 3 x H x W ->
    N x 512 x H/16 x W/16 at relu5_4 (the default `layer`, an index into torchvision's
    vgg19().features; 96 x 96 -> 6 x 6). The layers after `layer` are dropped."""

    def __init__(self, weights_path: str | Path | None = None, layer: int = RELU5_4) -> None:
        super().__init__()
        self.features = _load_vgg19(weights_path).features[: layer + 1].eval()
        for p in self.features.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> "VGGFeatures":
        super().train(mode)
        self.features.eval()  # always frozen
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features((x - self.mean) / self.std)
