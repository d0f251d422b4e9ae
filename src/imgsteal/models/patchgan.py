"""PatchGAN discriminator (Isola et al. 2017): real/fake logits per overlapping image patch.

With n_layers=3 each output logit sees a 70x70 input patch. pix2pix conditions on the (input,
output) pair, so it is built with in_channels=6 and batch norm; CycleGAN uses in_channels=3 and
instance norm.
"""

from __future__ import annotations

import torch
from torch import nn

from imgsteal.models.init import apply_init
from imgsteal.models.registry import register_model
from imgsteal.models.resnet_generator import conv_bias_for, make_norm


@register_model("patchgan")
class PatchGANDiscriminator(nn.Module):
    """N x in_channels x H x W in [0, 1] -> N x 1 x h x w raw logits (h = H/8 - 2 for n_layers=3).

    Layers: 4x4 conv stride 2 + LeakyReLU(0.2), then n_layers-1 stride-2 and one stride-1 conv
    (channels doubling up to 8*ndf) with norm + LeakyReLU, then a 4x4 conv to one channel.
    Inputs are mapped to [-1, 1] inside; for pix2pix pass torch.cat([input, output], 1).
    init: 'reference' (N(0, 0.02) weights, batch-norm weights N(1, 0.02); see models.init) or 'pytorch'.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "batch",
                 init: str = "reference") -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        bias = conv_bias_for(norm)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=bias),
                make_norm(norm, ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)
        self.in_channels = in_channels
        self.n_layers = n_layers
        apply_init(self, init)

    def output_size(self, size: int) -> int:
        """Logit-map side for an input side of `size` px (4x4 convs, padding 1)."""
        for _ in range(self.n_layers):  # stride 2
            size = (size + 2 - 4) // 2 + 1
        return size - 2  # two stride-1 4x4 convs each remove one pixel

    def min_input_size(self) -> int:
        """Smallest H (and W) giving a non-empty logit map (24 px for n_layers=3)."""
        size = 1
        while self.output_size(size) < 1:
            size += 1
        return size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected N x {self.in_channels} x H x W input, got shape {tuple(x.shape)}")
        if min(x.shape[-2:]) < self.min_input_size():
            raise ValueError(
                f"image of {x.shape[-2]}x{x.shape[-1]} px is too small for a {self.n_layers}-layer PatchGAN "
                f"(at least {self.min_input_size()} px)"
            )
        return self.model(x * 2 - 1)
