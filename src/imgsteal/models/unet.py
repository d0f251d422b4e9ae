"""pix2pix's UNet generator (Isola et al. 2017): the paper's style-transfer surrogate.

An encoder of `depth` stride-2 4x4 convolutions (channels ngf, 2ngf, 4ngf, then 8ngf) and a mirrored
decoder of transposed convolutions, each decoder stage concatenated with the encoder stage of the
same resolution. At depth 8 (256 px) this is pix2pix's `unet_256`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from imgsteal.models.init import apply_init
from imgsteal.models.registry import register_model
from imgsteal.models.resnet_generator import conv_bias_for, make_norm

# pix2pix puts dropout in the decoder stages that sit below the three outer 8*ngf-free stages.
_OUTER_STAGES_WITHOUT_DROPOUT = 4


def default_depth(image_size: int) -> int:
    """Number of down-samplings that bring `image_size` to 1 px: log2(size) (8 at 256 px)."""
    if image_size < 2 or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two >= 2 to derive a UNet depth, got {image_size}")
    return int(math.log2(image_size))


class _Down(nn.Module):
    """LeakyReLU(0.2) (not on the raw input), 4x4 stride-2 conv, norm (not at the ends)."""

    def __init__(self, cin: int, cout: int, norm: str, bias: bool, outermost: bool, innermost: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [] if outermost else [nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=bias))
        if not (outermost or innermost):
            layers.append(make_norm(norm, cout))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class _Up(nn.Module):
    """ReLU, 4x4 stride-2 transposed conv, then norm [+ dropout], or tanh at the output."""

    def __init__(self, cin: int, cout: int, norm: str, bias: bool, outermost: bool, dropout: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.ReLU(True)]
        if outermost:
            layers += [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.Tanh()]
        else:
            layers += [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=bias), make_norm(norm, cout)]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


@register_model("unet")
class UNetGenerator(nn.Module):
    """pix2pix generator: N x C x H x W in [0, 1] -> N x C_out x H x W in [0, 1].

    depth: number of stride-2 stages; default log2(image_size), i.e. 8 for 256 px, 6 for 64 px.
    H and W must be multiples of 2**depth (checked in forward with a clear ValueError).
    norm: 'batch' (pix2pix) or 'instance'. use_dropout: 0.5 dropout in the inner 8*ngf decoder stages,
    as pix2pix (the noise source of its generator); it follows train()/eval() like any nn.Dropout.
    init: 'reference' (N(0, 0.02) weights, batch-norm weights N(1, 0.02); see models.init) or 'pytorch'.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        ngf: int = 64,
        depth: int | None = None,
        image_size: int = 256,
        norm: str = "batch",
        use_dropout: bool = True,
        init: str = "reference",
    ) -> None:
        super().__init__()
        depth = default_depth(image_size) if depth is None else depth
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.depth = depth
        bias = conv_bias_for(norm)
        channels = [ngf * min(2**i, 8) for i in range(depth)]  # encoder output channels per stage
        self.downs = nn.ModuleList(
            _Down(in_channels if i == 0 else channels[i - 1], channels[i], norm, bias, i == 0, i == depth - 1)
            for i in range(depth)
        )
        ups = []
        for i in range(depth):  # decoder stage i mirrors encoder stage i; built outermost first
            cin = channels[i] if i == depth - 1 else 2 * channels[i]  # skip concat except at the bottom
            cout = out_channels if i == 0 else channels[i - 1]
            dropout = use_dropout and _OUTER_STAGES_WITHOUT_DROPOUT <= i < depth - 1
            ups.append(_Up(cin, cout, norm, bias, i == 0, dropout))
        self.ups = nn.ModuleList(ups)
        apply_init(self, init)

    def check_size(self, height: int, width: int) -> None:
        """Raise ValueError unless H and W are positive multiples of 2**depth."""
        unit = 2**self.depth
        for side in (height, width):
            if side < unit or side % unit:
                raise ValueError(
                    f"image size {side} does not fit a UNet of depth {self.depth}: use a multiple of {unit} "
                    f"(resize or crop the images), or build the UNet for this size (image_size=... or a smaller depth)"
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_size(x.shape[-2], x.shape[-1])
        skips = []
        y = x * 2 - 1
        for down in self.downs:
            y = down(y)
            skips.append(y)
        y = self.ups[-1](skips.pop())
        for i in range(self.depth - 2, -1, -1):
            y = self.ups[i](torch.cat([skips.pop(), y], 1))
        return (y + 1) / 2
