"""SRResNet (Ledig et al. 2017): the generator of SRGAN and the paper's super-resolution surrogate."""

from __future__ import annotations

import math

import torch
from torch import nn

from imgsteal.models.registry import register_model


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.PReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@register_model("srresnet")
class SRResNet(nn.Module):
    """N x 3 x h x w in [0, 1] -> N x 3 x (scale h) x (scale w), in [0, 1] at eval time.

    Paper defaults: 16 residual blocks, 64 channels, upsampling by log2(scale) PixelShuffle x2 stages.
    Training sees the unclamped output so the pixel loss keeps its gradient at the range limits.
    """

    def __init__(self, scale: int = 4, n_blocks: int = 16, channels: int = 64) -> None:
        super().__init__()
        if scale < 2 or scale & (scale - 1):
            raise ValueError(f"scale must be a power of two >= 2, got {scale}")
        self.scale = scale
        self.head = nn.Sequential(nn.Conv2d(3, channels, 9, padding=4), nn.PReLU())
        self.blocks = nn.Sequential(*[ResidualBlock(channels) for _ in range(n_blocks)])
        self.body_tail = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels))
        up = []
        for _ in range(int(math.log2(scale))):
            up += [nn.Conv2d(channels, channels * 4, 3, padding=1), nn.PixelShuffle(2), nn.PReLU()]
        self.upsample = nn.Sequential(*up)
        self.tail = nn.Conv2d(channels, 3, 9, padding=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.head(x)
        features = head + self.body_tail(self.blocks(head))
        out = self.tail(self.upsample(features))
        return out if self.training else out.clamp(0, 1)
