"""RRDBNet (Wang et al. 2018): the ESRGAN and Real-ESRGAN generator, with BasicSR's module names.

Residual-in-residual dense blocks (RRDB): each RRDB chains three 5-conv dense blocks whose conv k sees
the block input concatenated with the k-1 earlier outputs (`growth` channels each); both levels add
their result to their input scaled by 0.2. Upsampling: two nearest x2 stages with a 3x3 conv and
LeakyReLU(0.2) each. Scales 2 and 1 first fold the input with pixel-unshuffle (Real-ESRGAN x2plus),
so the network always upsamples by 4 internally.

Defaults (ESRGAN x4: 64 features, 23 RRDBs, growth 32) give 16,697,987 parameters; Real-ESRGAN's
anime model is `n_blocks=6` (4,467,779). Images in [0, 1]; the output is not clamped in training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imgsteal.models.registry import register_model


class DenseBlock(nn.Module):
    """Five 3x3 convs with dense connections; returns x + 0.2 * conv5(cat(x, x1..x4))."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        for k in range(1, 5):
            setattr(self, f"conv{k}", nn.Conv2d(channels + (k - 1) * growth, growth, 3, padding=1))
        self.conv5 = nn.Conv2d(channels + 4 * growth, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for k in range(1, 5):
            conv = getattr(self, f"conv{k}")
            features.append(F.leaky_relu(conv(torch.cat(features, 1)), 0.2))
        return x + 0.2 * self.conv5(torch.cat(features, 1))


class RRDB(nn.Module):
    """Three dense blocks in sequence, added back to the input scaled by 0.2."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        self.rdb1 = DenseBlock(channels, growth)
        self.rdb2 = DenseBlock(channels, growth)
        self.rdb3 = DenseBlock(channels, growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.rdb3(self.rdb2(self.rdb1(x)))


@register_model("rrdbnet")
class RRDBNet(nn.Module):
    """N x 3 x h x w in [0, 1] -> N x 3 x (scale h) x (scale w) (in [0, 1] up to overshoot).

    scale: 4 (ESRGAN), 2 or 1 (input folded by pixel-unshuffle, so h, w must be multiples of 4 / scale);
    channels: feature channels (64); n_blocks: RRDBs (23, Real-ESRGAN anime: 6); growth: dense growth (32).
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, scale: int = 4, channels: int = 64,
                 n_blocks: int = 23, growth: int = 32) -> None:
        super().__init__()
        if scale not in (1, 2, 4):
            raise ValueError(f"RRDBNet scale must be 1, 2 or 4, got {scale}")
        self.scale = scale
        self.fold = 4 // scale  # pixel-unshuffle factor in front of the x4 body
        self.conv_first = nn.Conv2d(in_channels * self.fold**2, channels, 3, padding=1)
        self.body = nn.Sequential(*[RRDB(channels, growth) for _ in range(n_blocks)])
        self.conv_body = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_up1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_up2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_hr = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_last = nn.Conv2d(channels, out_channels, 3, padding=1)

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this (1 at scale 4)."""
        return self.fold

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fold > 1:
            x = F.pixel_unshuffle(x, self.fold)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for conv in (self.conv_up1, self.conv_up2):
            feat = F.leaky_relu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))
