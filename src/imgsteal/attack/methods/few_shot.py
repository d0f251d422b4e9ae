"""The few-shot recipe's batches (after Spingarn-Eliezer and Michaeli 2024, "Stealing Image-to-Image
Translation Models With a Single Query"): many random crops of very few (query, answer) pairs, at
several scales, each under one of the 8 flips/90-degree rotations, trained with a pixel L2 loss.

Two meanings of "scale", because resampling an SR pair would change the function being copied
(F_V(downscale(x)) is not downscale(F_V(x))):
- super-resolution (resample=False): crops of several sizes at the pairs' native resolution; the
  number of crops per batch shrinks as their area grows, so every batch holds about the same number
  of pixels (batch_size crops of `crop` px).
- style (resample=True): square regions of several sizes resized to `crop` px on both sides, from
  the whole image (zoom 1 on a `crop`-px query) to closer views (larger images allow more zoom).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

DEFAULT_ZOOMS = (0.5, 1.0, 2.0)
MIN_CROP = 8  # px on the input side: smaller crops are mostly the networks' zero-padded borders


def dihedral(image: torch.Tensor, transform: int) -> torch.Tensor:
    """One of the 8 symmetries of the square (transform in 0..7): rotate by 90 x (transform % 4)
    degrees, then mirror left-right when transform >= 4."""
    out = torch.rot90(image, transform % 4, dims=(-2, -1))
    return out.flip(-1) if transform >= 4 else out


def _resize(image: torch.Tensor, size: int) -> torch.Tensor:
    if image.shape[-1] == size and image.shape[-2] == size:
        return image
    return F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0].clamp(0, 1)


@dataclass
class MultiScaleCropSource:
    """Deterministic batches of random multi-scale crops (a BatchSource for run_training).

    inputs[k]: C x h x w uint8 query, targets[k]: C x (scale h) x (scale w) uint8 answer.
    crop: input-side crop size at zoom 1 (super-resolution) or the output size of every crop (style).
    zooms: relative crop sizes; one is drawn per batch. symmetries: each crop under one of the 8
    flips/90-degree rotations (False: as cropped). steps_per_epoch: batches in one epoch (an
    epoch is only a bookkeeping unit here: checkpoints and logs). Batch (epoch, index) depends only
    on (seed, epoch, index), so a resumed run sees the same batches.
    """

    inputs: list[torch.Tensor]
    targets: list[torch.Tensor]
    scale: int
    crop: int
    batch_size: int
    seed: int
    zooms: tuple[float, ...] = DEFAULT_ZOOMS
    resample: bool = False
    steps_per_epoch: int = 100
    symmetries: bool = True  # False: crops as they are (for a victim that is not flip/rotation equivariant)

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.targets) or not self.inputs:
            raise ValueError(f"need the same, non-zero number of inputs and targets ({len(self.inputs)} / {len(self.targets)})")
        if not self.zooms or any(z <= 0 for z in self.zooms):
            raise ValueError(f"zooms must be positive numbers, got {self.zooms}")
        if self.batch_size < 1 or self.steps_per_epoch < 1 or self.crop < 1:
            raise ValueError("crop, batch_size and steps_per_epoch must be >= 1")
        for x, y in zip(self.inputs, self.targets):
            if y.shape[-2] != x.shape[-2] * self.scale or y.shape[-1] != x.shape[-1] * self.scale:
                raise ValueError(f"pair sizes {tuple(x.shape)} -> {tuple(y.shape)} do not match scale {self.scale}")
        self.smallest_side = min(min(x.shape[-2:]) for x in self.inputs)
        if self.smallest_side < min(self.crop, MIN_CROP) or (self.resample and self.smallest_side < self.crop):
            raise ValueError(f"an input of {self.smallest_side} px on its shorter side is smaller than the crop size {self.crop}")

    @property
    def batches_per_epoch(self) -> int:
        return self.steps_per_epoch

    def crop_plan(self, zoom: float) -> tuple[int, int]:
        """(input-side crop size in the source images, crops in the batch) for one zoom."""
        side = min(self.smallest_side, max(MIN_CROP, round(self.crop * zoom)))
        if self.resample:
            return max(side, min(self.crop, self.smallest_side)), self.batch_size
        count = max(1, round(self.batch_size * (self.crop / side) ** 2))
        return side, count

    def batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch `index` of `epoch` -> (inputs N x C x p x p, targets N x C x sp x sp), float in [0, 1]."""
        gen = torch.Generator().manual_seed(((self.seed * 7919 + epoch) * 1_000_003 + index) % (2**63) + 1)
        zoom = self.zooms[int(torch.randint(len(self.zooms), (), generator=gen))]
        side, count = self.crop_plan(zoom)
        s = self.scale
        xs, ys = [], []
        for _ in range(count):
            k = int(torch.randint(len(self.inputs), (), generator=gen))
            x, y = self.inputs[k], self.targets[k]
            h, w = x.shape[-2:]
            top = int(torch.randint(0, h - side + 1, (), generator=gen))
            left = int(torch.randint(0, w - side + 1, (), generator=gen))
            transform = int(torch.randint(8, (), generator=gen)) if self.symmetries else 0
            xc = x[:, top : top + side, left : left + side].float().div_(255)
            yc = y[:, top * s : (top + side) * s, left * s : (left + side) * s].float().div_(255)
            if self.resample:
                xc, yc = _resize(xc, self.crop), _resize(yc, self.crop * s)
            xs.append(dihedral(xc, transform))
            ys.append(dihedral(yc, transform))
        return torch.stack(xs), torch.stack(ys)
