"""The SRGAN discriminator: a VGG-style stack of strided convolutions and a dense head."""

from __future__ import annotations

import torch
from torch import nn

from imgsteal.models.registry import register_model


@register_model("vgg_discriminator")
class VGGStyleDiscriminator(nn.Module):
    """N x 3 x H x W in [0, 1] -> N logits (real vs generated).

    Eight 3x3 conv layers (channels base..8*base, stride 2 every other layer), LeakyReLU 0.2,
    batch norm after the first layer, then a dense head. Adaptive pooling accepts any input size.
    """

    def __init__(self, base_channels: int = 64, dense: int = 1024) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for i, out_ch in enumerate([base_channels, base_channels, 2 * base_channels, 2 * base_channels,
                                    4 * base_channels, 4 * base_channels, 8 * base_channels, 8 * base_channels]):
            stride = 2 if i % 2 == 1 else 1
            layers.append(nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1))
            if i > 0:
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(6),
            nn.Flatten(),
            nn.Linear(in_ch * 36, dense),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(dense, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x * 2 - 1)).squeeze(1)
