"""ResNet generator (Johnson et al. 2016) as used by CycleGAN (Zhu et al. 2017): the Monet-to-Photo victim.

Also home of the small normalisation helper shared by the pix2pix/CycleGAN networks (unet, patchgan).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imgsteal.models.init import apply_init
from imgsteal.models.registry import register_model

NORMS = ("batch", "instance", "none")


def make_norm(kind: str, channels: int) -> nn.Module:
    """Normalisation layer by name: 'batch' (affine, running stats), 'instance' (no affine, no running
    stats, as CycleGAN/pix2pix use it) or 'none'."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {kind!r}")


def conv_bias_for(kind: str) -> bool:
    """Convolutions before batch norm need no bias (the norm's shift replaces it); others keep one."""
    if kind not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {kind!r}")
    return kind != "batch"


class ResnetBlock(nn.Module):
    """x + (reflect-pad, conv3x3, norm, ReLU, [dropout], reflect-pad, conv3x3, norm)(x)."""

    def __init__(self, channels: int, norm: str, use_dropout: bool, bias: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            make_norm(norm, channels),
            nn.ReLU(True),
        ]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), make_norm(norm, channels)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


@register_model("resnet_generator")
class ResnetGenerator(nn.Module):
    """CycleGAN generator: N x C x H x W in [0, 1] -> N x C_out x H x W in [0, 1].

    Reflection pad + 7x7 conv, two stride-2 down-samplings, `n_blocks` residual blocks at 4*ngf
    channels, two transposed-conv up-samplings, 7x7 conv, tanh (mapped from [-1, 1] to [0, 1]).
    n_blocks: 9 for 256 px training images, 6 for 128 px and below (CycleGAN's choice).
    Any H, W >= 8 works: inputs are reflection-padded to a multiple of 4 and the output cropped back.
    The module layout (`model.<i>`) is the reference implementation's, so its published CycleGAN
    generator state dicts load with `load_state_dict` (drop stale InstanceNorm running-stat keys).
    init: 'reference' (N(0, 0.02) weights, as the reference; see models.init) or 'pytorch'.
    upsample: 'transpose' (the reference's stride-2 transposed convolutions) or 'resize' (nearest-neighbour
    2x, then a 3x3 convolution: no checkerboard pattern, Odena et al. 2016, "Deconvolution and
    Checkerboard Artifacts"; the reference's state dicts then no longer load).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        ngf: int = 64,
        n_blocks: int = 9,
        norm: str = "instance",
        use_dropout: bool = False,
        init: str = "reference",
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        if upsample not in ("transpose", "resize"):
            raise ValueError(f"upsample must be 'transpose' or 'resize', got {upsample!r}")
        bias = conv_bias_for(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, 7, bias=bias),
            make_norm(norm, ngf),
            nn.ReLU(True),
        ]
        for i in range(2):  # down-sampling
            c = ngf * 2**i
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=bias), make_norm(norm, 2 * c), nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4, norm, use_dropout, bias) for _ in range(n_blocks)]
        for i in range(2):  # up-sampling
            c = ngf * 2 ** (2 - i)
            up = (nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1, bias=bias)
                  if upsample == "transpose" else
                  nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1),
                                nn.Conv2d(c, c // 2, 3, bias=bias)))
            layers += [
                up,
                make_norm(norm, c // 2),
                nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        apply_init(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h < 8 or w < 8:
            raise ValueError(f"image of {h}x{w} px is too small for the ResNet generator (at least 8x8)")
        pad_h, pad_w = -h % 4, -w % 4  # two stride-2 stages need multiples of 4 to come back to size
        y = x * 2 - 1
        if pad_h or pad_w:
            y = F.pad(y, (0, pad_w, 0, pad_h), mode="reflect")
        y = self.model(y)[..., :h, :w]
        return (y + 1) / 2
