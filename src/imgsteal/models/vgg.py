"""VGG19 features for the SRGAN content loss, with ImageNet weights from torchvision's standard loader.

The weights come from the torch hub cache (downloaded there when online) or from a file the user
names. Files are read as tensors only and their keys and shapes checked before use. If neither works,
`WeightsUnavailableError` says which file is wrong and how to go on (never torch's own text);
random weights are never used.
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


_CONTINUE = ("pass --vgg-weights PATH (a torchvision vgg19 state dict, whole or features.* only), "
             "or train offline with --content-loss pixel (pixel + adversarial loss)")


def _hub_file() -> Path:
    """Where torchvision keeps the ImageNet VGG19 weights in the torch hub cache."""
    from torchvision.models import VGG19_Weights

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(VGG19_Weights.IMAGENET1K_V1.url).name


def _shape_problems(state: dict, expected: dict[str, torch.Size]) -> str:
    """'' when `state` has exactly the keys and shapes of `expected`, else what differs (3 of each kind)."""
    given = {k for k in state if isinstance(k, str)}
    missing, unexpected = sorted(expected.keys() - given), sorted(given - expected.keys())
    wrong = sorted(k for k in expected.keys() & given
                   if not isinstance(state[k], torch.Tensor) or tuple(state[k].shape) != tuple(expected[k]))
    if len(given) != len(state):
        unexpected.append("(keys that are not strings)")
    return "; ".join(f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                     for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                     if keys)


def _from_file(path: Path, what: str, remedy: str) -> nn.Module:
    """torchvision's vgg19 with the state dict in `path` (tensors only, keys and shapes checked first).

    Raises WeightsUnavailableError with imgsteal's own message: torch's text (and its advice to load
    with weights_only=False, which would run code from the file) is never passed on.
    """
    from torchvision.models import vgg19

    from imgsteal.metrics.inception import read_weights_file

    if not path.exists():
        raise WeightsUnavailableError(f"{what} not found: {path}; {remedy}")
    if not path.is_file():
        raise WeightsUnavailableError(f"{what} {path} is a folder, not a file; {remedy}")
    try:
        state = read_weights_file(path)
    except ValueError as exc:
        raise WeightsUnavailableError(f"{what}: {exc}; {remedy}") from None
    if not isinstance(state, dict) or not state:
        raise WeightsUnavailableError(f"{what} {path} holds {'an empty dict' if isinstance(state, dict) else 'a ' + type(state).__name__}, "
                                      f"not a VGG19 state dict; {remedy}")
    with torch.device("meta"):  # shapes only: no 548 MB random initialisation
        reference = vgg19(weights=None)
    features_only = all(isinstance(k, str) and k.startswith("features.") for k in state)
    expected = {k: v.shape for k, v in reference.state_dict().items() if k.startswith("features.") or not features_only}
    problems = _shape_problems(state, expected)
    if problems:
        raise WeightsUnavailableError(f"{what} {path} is not a torchvision VGG19 state dict ({problems}); {remedy}")
    # Float32 tensors assigned into a model built on the meta device: no 548 MB random initialisation.
    # A features-only file (80 MB instead of 548 MB; the content loss needs only the convolutional
    # part) leaves the classifier on the meta device, where it is never used.
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    if features_only:
        reference.features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()}, assign=True)
    else:
        reference.load_state_dict(state, assign=True)
    return reference


def _load_vgg19(weights_path: str | Path | None) -> nn.Module:
    from torchvision.models import VGG19_Weights, vgg19

    if weights_path is not None:
        return _from_file(Path(weights_path), "VGG19 weights file (--vgg-weights)",
                          "give a torchvision vgg19 state dict (whole or features.* only), "
                          "or train offline with --content-loss pixel")
    cached = _hub_file()
    if cached.is_file():
        return _from_file(cached, "VGG19 weights in the torch hub cache",
                          f"delete {cached} to download it again, or {_CONTINUE}")
    try:
        return vgg19(weights=VGG19_Weights.IMAGENET1K_V1)  # downloads into the hub cache
    except Exception as exc:  # network errors, a failed hash check: all mean "no weights"
        reason = f"{type(exc).__name__}: {exc}" if isinstance(exc, OSError) else type(exc).__name__
        raise WeightsUnavailableError(
            f"VGG19 ImageNet weights for the content loss could not be downloaded ({reason}). "
            f"Put them in the torch hub cache ({cached}), or {_CONTINUE}."
        ) from None


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
