"""MSRResNet (BasicSR's "modified SRResNet"): SRResNet without batch norm, with BasicSR's module names.

3x3 conv + LeakyReLU(0.1), `n_blocks` residual blocks (conv, ReLU, conv; no BN), PixelShuffle
upsampling (x2 or x3: one stage; x4: two x2 stages) each followed by LeakyReLU(0.1), a 3x3 conv +
LeakyReLU(0.1), a last 3x3 conv, plus the bilinearly upsampled input as a global skip.
BasicSR's SRResNet and SRGAN x4 releases use it. Defaults (x4, 64 features, 16 blocks): 1,517,571
parameters. Images in [0, 1]; the output is not clamped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imgsteal.models.registry import register_model


class PlainResidualBlock(nn.Module):
    """x + conv2(relu(conv1(x))), no normalisation."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


@register_model("msrresnet")
class MSRResNet(nn.Module):
    """N x 3 x h x w in [0, 1] -> N x 3 x (scale h) x (scale w); scale 2, 3 or 4."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, channels: int = 64, n_blocks: int = 16,
                 scale: int = 4) -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"MSRResNet scale must be 2, 3 or 4, got {scale}")
        self.scale = scale
        self.conv_first = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.body = nn.Sequential(*[PlainResidualBlock(channels) for _ in range(n_blocks)])
        stage = 2 if scale == 4 else scale
        self.upconv1 = nn.Conv2d(channels, channels * stage**2, 3, padding=1)
        if scale == 4:
            self.upconv2 = nn.Conv2d(channels, channels * 4, 3, padding=1)
        self.stage = stage
        self.conv_hr = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_last = nn.Conv2d(channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.body(F.leaky_relu(self.conv_first(x), 0.1))
        convs = [self.upconv1, self.upconv2] if self.scale == 4 else [self.upconv1]
        for conv in convs:
            feat = F.leaky_relu(F.pixel_shuffle(conv(feat), self.stage), 0.1)
        out = self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.1))
        return out + F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
