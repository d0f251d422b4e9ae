"""Deterministic batches of aligned (input, target) patches, held in memory as uint8.

The whole dataset is decoded once, so a training step costs a few tensor slices, not file IO: the
data pipeline must never be the bottleneck. Batch `i` of epoch `e` depends only on (seed, e, i),
which is what lets a killed run resume mid-epoch and see exactly the batches it would have seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from imgsteal.data.augment import Augmentation, apply_paired


def to_uint8_tensor(image: torch.Tensor) -> torch.Tensor:
    return image.clamp(0, 1).mul(255).round().to(torch.uint8)


@dataclass
class PairedPatchSource:
    """Random aligned crops from pairs (inputs[k]: C x h x w, targets[k]: C x sh x sw), uint8.

    patch: crop size on the input side (the target crop is patch * scale). None = whole images,
    which must then all have the same size.
    """

    inputs: list[torch.Tensor]
    targets: list[torch.Tensor]
    scale: int
    patch: int | None
    batch_size: int
    seed: int
    augmentation: Augmentation = Augmentation.none
    repeat: int = 1  # passes over the data per epoch: small sets get epochs of useful length

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.targets) or not self.inputs:
            raise ValueError(f"need the same, non-zero number of inputs and targets ({len(self.inputs)} / {len(self.targets)})")
        for x, y in zip(self.inputs, self.targets):
            if y.shape[-2] != x.shape[-2] * self.scale or y.shape[-1] != x.shape[-1] * self.scale:
                raise ValueError(f"pair sizes {tuple(x.shape)} -> {tuple(y.shape)} do not match scale {self.scale}")
            if self.patch is not None and min(x.shape[-2:]) < self.patch:
                raise ValueError(f"an input of {tuple(x.shape[-2:])} px is smaller than the patch size {self.patch}")
        if self.patch is None and len({tuple(x.shape) for x in self.inputs}) > 1:
            raise ValueError("whole-image batches need equally sized images; set a patch size")
        if self.patch is None:  # a batch of whole images holds each image at most once
            self.batch_size = min(self.batch_size, len(self.inputs))
        # With patches every batch is full, however few the pairs (several crops of one image): a
        # compute-matched cell with 1 or 4 pairs trains on as many pixels per step as one with 59.

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(len(self.inputs) * self.repeat / self.batch_size)

    def batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch `index` of `epoch` -> (inputs N x C x p x p, targets N x C x sp x sp), float in [0, 1]."""
        order_gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.cat([torch.randperm(len(self.inputs), generator=order_gen) for _ in range(self.repeat)])
        # The last batch (and every batch of a set smaller than a batch) wraps around to the start of
        # the order, so every step sees a full batch.
        order = order.repeat(math.ceil((index + 1) * self.batch_size / len(order)))
        chosen = order[index * self.batch_size : (index + 1) * self.batch_size]
        gen = torch.Generator().manual_seed(((self.seed * 7919 + epoch) * 1_000_003 + index) % (2**63))
        xs, ys = [], []
        for k in chosen.tolist():
            x, y = self.inputs[k], self.targets[k]
            if self.patch is not None:
                h, w = x.shape[-2:]
                top = int(torch.randint(0, h - self.patch + 1, (), generator=gen))
                left = int(torch.randint(0, w - self.patch + 1, (), generator=gen))
                s, p = self.scale, self.patch
                x = x[:, top : top + p, left : left + p]
                y = y[:, top * s : (top + p) * s, left * s : (left + p) * s]
            x, y = x.float().div_(255), y.float().div_(255)
            x, y = apply_paired(self.augmentation, x, y, gen)
            xs.append(x)
            ys.append(y)
        return torch.stack(xs), torch.stack(ys)
