"""EDSR (Lim et al. 2017, "Enhanced Deep Residual Networks for Single Image Super-Resolution").

A second super-resolution surrogate for the "adversary does not know the victim's architecture"
axis: unlike SRResNet it has no batch norm and no PReLU, 3x3 convolutions throughout, residual
scaling, a global skip over the body and the RGB mean subtracted at the input (added back at the
output), as in the reference. EDSR-baseline is 16 blocks x 64 channels, residual scale 1; the full
EDSR is 32 x 256 with residual scale 0.1.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from imgsteal.models.registry import register_model

# DIV2K mean RGB, the reference's MeanShift (inputs in [0, 1]).
RGB_MEAN = (0.4488, 0.4371, 0.4040)


class EDSRBlock(nn.Module):
    """x + res_scale * conv3x3(ReLU(conv3x3(x))): no normalisation."""

    def __init__(self, channels: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(True),
                                  nn.Conv2d(channels, channels, 3, padding=1))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


@register_model("edsr")
class EDSR(nn.Module):
    """N x 3 x h x w in [0, 1] -> N x 3 x (scale h) x (scale w); clamped to [0, 1] at eval time only
    (training sees the raw output, so the pixel loss keeps its gradient at the range limits).

    scale: 2, 4 or 8 (log2(scale) conv + PixelShuffle(2) stages). n_blocks >= 1, channels >= 1.
    """

    def __init__(self, scale: int = 4, n_blocks: int = 16, channels: int = 64, res_scale: float = 1.0) -> None:
        super().__init__()
        if scale < 2 or scale & (scale - 1):
            raise ValueError(f"scale must be a power of two >= 2, got {scale}")
        if n_blocks < 1 or channels < 1:
            raise ValueError(f"n_blocks and channels must be >= 1, got {n_blocks} and {channels}")
        self.scale = scale
        self.register_buffer("rgb_mean", torch.tensor(RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.body = nn.Sequential(*[EDSRBlock(channels, res_scale) for _ in range(n_blocks)],
                                  nn.Conv2d(channels, channels, 3, padding=1))
        up: list[nn.Module] = []
        for _ in range(int(math.log2(scale))):
            up += [nn.Conv2d(channels, channels * 4, 3, padding=1), nn.PixelShuffle(2)]
        self.upsample = nn.Sequential(*up)
        self.tail = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.head(x - self.rgb_mean)
        out = self.tail(self.upsample(head + self.body(head))) + self.rgb_mean
        return out if self.training else out.clamp(0, 1)
