"""Paired augmentations for surrogate training (paper, section 6.2).

Geometric augmentations (flip, rotation, cutout) are applied identically to the query X_A and the
victim's answer F_V(X_A), so each pair stays aligned pixel for pixel (for super-resolution the
answer is `scale` times larger and is transformed at its own resolution).

Contrast (+20%) is applied to both sides with the same factor. Changing only the input would
train the surrogate to map a brighter-contrast photo to an answer the victim gave for the original
photo, a pair the victim never produced; changing both keeps the pair consistent under the
assumption that the style is roughly contrast-equivariant. The paper reports that this augmentation
does not help, which is what this assumption breaking for strongly stylised outputs predicts.
"""

from __future__ import annotations

from enum import Enum

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import InterpolationMode, rotate


class Augmentation(str, Enum):
    none = "none"
    flip = "flip"
    rotation = "rotation"
    cutout = "cutout"
    contrast = "contrast"


ROTATION_DEGREES = 5.0
CONTRAST_FACTOR = 1.2
CUTOUT_MIN_FRACTION = 0.6  # the crop keeps at least 60% of each side before being resized back


def _contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    mean = x.mean(dim=(-3, -2, -1), keepdim=True)
    return ((x - mean) * factor + mean).clamp(0, 1)


def apply_paired(
    augmentation: Augmentation | str,
    x: torch.Tensor,
    y: torch.Tensor,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment one pair (x: C x h x w query, y: C x sh x sw answer), both in [0, 1].

    Random choices come from `generator`, so a resumed run sees the same augmented batches.
    Each augmentation fires with probability 0.5 (contrast too), as usual for training augmentation.
    """
    aug = Augmentation(augmentation)
    if aug is Augmentation.none or torch.rand((), generator=generator).item() < 0.5:
        return x, y
    if aug is Augmentation.flip:
        return x.flip(-1), y.flip(-1)
    if aug is Augmentation.rotation:
        angle = (torch.rand((), generator=generator).item() * 2 - 1) * ROTATION_DEGREES
        return (
            rotate(x, angle, interpolation=InterpolationMode.BILINEAR),
            rotate(y, angle, interpolation=InterpolationMode.BILINEAR),
        )
    if aug is Augmentation.contrast:
        return _contrast(x, CONTRAST_FACTOR), _contrast(y, CONTRAST_FACTOR)
    # cutout: crop in on a random part of the image, then resize back to the original size
    h, w = x.shape[-2:]
    scale = y.shape[-1] // w
    frac = CUTOUT_MIN_FRACTION + (1 - CUTOUT_MIN_FRACTION) * torch.rand((), generator=generator).item()
    ch, cw = max(1, int(h * frac)), max(1, int(w * frac))
    top = int(torch.randint(0, h - ch + 1, (), generator=generator))
    left = int(torch.randint(0, w - cw + 1, (), generator=generator))
    xc = x[:, top : top + ch, left : left + cw]
    yc = y[:, top * scale : (top + ch) * scale, left * scale : (left + cw) * scale]
    resize = lambda t, size: F.interpolate(t[None], size=size, mode="bilinear", align_corners=False)[0]  # noqa: E731
    return resize(xc, (h, w)).clamp(0, 1), resize(yc, tuple(y.shape[-2:])).clamp(0, 1)
