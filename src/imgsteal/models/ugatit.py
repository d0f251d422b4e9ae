"""U-GAT-IT (Kim et al. 2020): the Selfie-to-Anime victim. Generator and CAM discriminators.

Generator: encoder (7x7 conv, two stride-2 convs, residual blocks, instance norm), a CAM attention
module (global average- and max-pooling branches, each with its own linear classifier whose logits
feed the CAM loss and whose weights re-weight the feature maps), an MLP giving the AdaLIN gamma/beta,
AdaLIN residual blocks, and an up-sampling path with LIN. `light=True` feeds the MLP globally pooled
features instead of the flattened map (far fewer parameters, any input size).

Discriminators: spectral-normalised conv stacks with the same CAM module; the paper uses a global
one (n_layers=7) and a local one (n_layers=5) per domain.

Convention: every module takes images in [0, 1]; generator outputs are in [0, 1] too (tanh mapped
from [-1, 1]). L1 losses on [0, 1] images are half their [-1, 1] value: scale the reference loss
weights (cycle 10, identity 10) accordingly, or compare `2 * x - 1`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from imgsteal.models.registry import register_model


class CAMOutput(NamedTuple):
    """What training needs from a U-GAT-IT network.

    output: generator image N x 3 x H x W in [0, 1], or discriminator logit map N x 1 x h x w.
    cam_logit: N x 2 logits of the average- and max-pooling CAM classifiers (for the CAM loss).
    heatmap: N x 1 x h x w attention map (channel sum of the attended features), for visualisation.
    """

    output: torch.Tensor
    cam_logit: torch.Tensor
    heatmap: torch.Tensor


def _norm_stats(x: torch.Tensor, dims: tuple[int, ...], eps: float) -> torch.Tensor:
    # Unbiased variance, as the reference implementation.
    mean, var = x.mean(dim=dims, keepdim=True), x.var(dim=dims, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


class AdaLIN(nn.Module):
    """Adaptive layer-instance norm: rho * IN(x) + (1 - rho) * LN(x), scaled by gamma, shifted by beta
    (both N x C, from the generator's MLP). rho is learnt per channel, starts at 0.9, kept in [0, 1]."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.rho = nn.Parameter(torch.full((1, channels, 1, 1), 0.9))

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        mixed = self.rho * _norm_stats(x, (2, 3), self.eps) + (1 - self.rho) * _norm_stats(x, (1, 2, 3), self.eps)
        return mixed * gamma[:, :, None, None] + beta[:, :, None, None]


class LIN(nn.Module):
    """Layer-instance norm with its own affine parameters (rho starts at 0: pure layer norm)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.rho = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = self.rho * _norm_stats(x, (2, 3), self.eps) + (1 - self.rho) * _norm_stats(x, (1, 2, 3), self.eps)
        return mixed * self.gamma + self.beta


class RhoClipper:
    """Clamp every AdaLIN/LIN `rho` to [low, high] in place; use as `module.apply(RhoClipper())`
    after each optimiser step (U-GAT-IT keeps rho in [0, 1])."""

    def __init__(self, low: float = 0.0, high: float = 1.0) -> None:
        if low > high:
            raise ValueError(f"low must be <= high, got {low} > {high}")
        self.low, self.high = low, high

    def __call__(self, module: nn.Module) -> None:
        rho = getattr(module, "rho", None)
        if isinstance(rho, nn.Parameter):
            with torch.no_grad():
                rho.clamp_(self.low, self.high)


class ResnetBlock(nn.Module):
    """x + (pad, conv3x3, IN, ReLU, pad, conv3x3, IN)(x): the encoder's residual block."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=False),
            nn.InstanceNorm2d(channels),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=False),
            nn.InstanceNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetAdaLINBlock(nn.Module):
    """x + (pad, conv3x3, AdaLIN, ReLU, pad, conv3x3, AdaLIN)(x), with gamma/beta from the MLP."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pad1 = nn.ReflectionPad2d(1)
        self.conv1 = nn.Conv2d(channels, channels, 3, bias=False)
        self.norm1 = AdaLIN(channels)
        self.relu1 = nn.ReLU(True)
        self.pad2 = nn.ReflectionPad2d(1)
        self.conv2 = nn.Conv2d(channels, channels, 3, bias=False)
        self.norm2 = AdaLIN(channels)

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.norm1(self.conv1(self.pad1(x)), gamma, beta))
        out = self.norm2(self.conv2(self.pad2(out)), gamma, beta)
        return x + out


def _attend(features: torch.Tensor, pooled: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CAM branch: logit of a linear classifier on the pooled features, and the feature maps
    re-weighted per channel by that classifier's weights (weight: 1 x C)."""
    logit = F.linear(pooled, weight)
    return logit, features * weight[0][None, :, None, None]


@register_model("ugatit")
class UGATITGenerator(nn.Module):
    """U-GAT-IT generator: N x 3 x H x W in [0, 1] -> N x 3 x H x W in [0, 1].

    ngf: base channels (64); n_blocks: residual blocks in encoder and decoder (4 in the paper);
    light: pooled (True) or flattened (False, the paper's full model) features for the gamma/beta
    MLP. The full model's MLP input is fixed by image_size: it only accepts image_size x image_size
    inputs and, at 256 px with ngf 64, holds ~270M parameters. The light model takes any H, W >= 8
    (reflection-padded to a multiple of 4, output cropped back).
    `forward` returns the image; `forward_with_cam` also returns CAM logits and heatmap for training.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        ngf: int = 64,
        n_blocks: int = 4,
        image_size: int = 256,
        light: bool = False,
    ) -> None:
        super().__init__()
        if not light and (image_size < 8 or image_size % 4):
            raise ValueError(f"image_size must be a multiple of 4 and >= 8 for the full model, got {image_size}")
        self.light = light
        self.image_size = image_size
        c = ngf * 4  # channels after two down-samplings
        down: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, 7, bias=False),
            nn.InstanceNorm2d(ngf),
            nn.ReLU(True),
        ]
        for i in range(2):
            ch = ngf * 2**i
            down += [nn.ReflectionPad2d(1), nn.Conv2d(ch, ch * 2, 3, stride=2, bias=False), nn.InstanceNorm2d(ch * 2),
                     nn.ReLU(True)]  # fmt: skip
        down += [ResnetBlock(c) for _ in range(n_blocks)]
        self.DownBlock = nn.Sequential(*down)

        # Class activation map: which regions tell the domains apart.
        self.gap_fc = nn.Linear(c, 1, bias=False)
        self.gmp_fc = nn.Linear(c, 1, bias=False)
        self.conv1x1 = nn.Conv2d(2 * c, c, 1)
        self.relu = nn.ReLU(True)

        mlp_in = c if light else (image_size // 4) ** 2 * c
        self.FC = nn.Sequential(nn.Linear(mlp_in, c, bias=False), nn.ReLU(True), nn.Linear(c, c, bias=False),
                                nn.ReLU(True))  # fmt: skip
        self.gamma = nn.Linear(c, c, bias=False)
        self.beta = nn.Linear(c, c, bias=False)
        self.UpBlock1 = nn.ModuleList(ResnetAdaLINBlock(c) for _ in range(n_blocks))

        up: list[nn.Module] = []
        for i in range(2):
            ch = c // 2**i
            up += [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1),
                   nn.Conv2d(ch, ch // 2, 3, bias=False), LIN(ch // 2), nn.ReLU(True)]  # fmt: skip
        up += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7, bias=False), nn.Tanh()]
        self.UpBlock2 = nn.Sequential(*up)

    def _check_size(self, h: int, w: int) -> None:
        if not self.light and (h, w) != (self.image_size, self.image_size):
            raise ValueError(
                f"the full U-GAT-IT generator was built for {self.image_size}x{self.image_size} px images, got "
                f"{h}x{w}: resize the images, build it with image_size={h} (square only), or use light=True"
            )
        if h < 8 or w < 8:
            raise ValueError(f"image of {h}x{w} px is too small for the U-GAT-IT generator (at least 8x8)")

    def forward_with_cam(self, x: torch.Tensor) -> CAMOutput:
        """Image in [0, 1] -> CAMOutput(image in [0, 1], cam_logit N x 2, heatmap N x 1 x H/4 x W/4)."""
        h, w = x.shape[-2:]
        self._check_size(h, w)
        pad_h, pad_w = -h % 4, -w % 4
        y = x * 2 - 1
        if pad_h or pad_w:
            y = F.pad(y, (0, pad_w, 0, pad_h), mode="reflect")
        features = self.DownBlock(y)

        gap_logit, gap = _attend(features, F.adaptive_avg_pool2d(features, 1).flatten(1), self.gap_fc.weight)
        gmp_logit, gmp = _attend(features, F.adaptive_max_pool2d(features, 1).flatten(1), self.gmp_fc.weight)
        cam_logit = torch.cat([gap_logit, gmp_logit], 1)
        features = self.relu(self.conv1x1(torch.cat([gap, gmp], 1)))
        heatmap = features.sum(dim=1, keepdim=True)

        style = F.adaptive_avg_pool2d(features, 1).flatten(1) if self.light else features.flatten(1)
        style = self.FC(style)
        gamma, beta = self.gamma(style), self.beta(style)
        for block in self.UpBlock1:
            features = block(features, gamma, beta)
        out = self.UpBlock2(features)[..., :h, :w]
        return CAMOutput((out + 1) / 2, cam_logit, heatmap)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x 3 x H x W in [0, 1] -> translated N x 3 x H x W in [0, 1]."""
        return self.forward_with_cam(x).output

    def clip_rho(self, low: float = 0.0, high: float = 1.0) -> None:
        """Clamp every AdaLIN/LIN rho to [low, high] (call after each optimiser step)."""
        self.apply(RhoClipper(low, high))


@register_model("ugatit_discriminator")
class UGATITDiscriminator(nn.Module):
    """U-GAT-IT discriminator: N x 3 x H x W in [0, 1] -> CAMOutput(logit map, cam_logit N x 2, heatmap).

    n_layers=7: the global discriminator (5 stride-2 convs, 6x6 logits at 256 px); n_layers=5: the
    local one (3 stride-2 convs, 30x30 logits at 256 px). Spectral norm on every conv and CAM linear.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 5) -> None:
        super().__init__()
        if n_layers < 3:
            raise ValueError(f"n_layers must be >= 3, got {n_layers}")
        self.n_layers = n_layers
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            spectral_norm(nn.Conv2d(in_channels, ndf, 4, stride=2)),
            nn.LeakyReLU(0.2, True),
        ]
        for i in range(1, n_layers - 2):
            ch = ndf * 2 ** (i - 1)
            conv = spectral_norm(nn.Conv2d(ch, ch * 2, 4, stride=2))
            layers += [nn.ReflectionPad2d(1), conv, nn.LeakyReLU(0.2, True)]
        ch = ndf * 2 ** (n_layers - 3)
        layers += [nn.ReflectionPad2d(1), spectral_norm(nn.Conv2d(ch, ch * 2, 4, stride=1)), nn.LeakyReLU(0.2, True)]
        self.model = nn.Sequential(*layers)

        c = ndf * 2 ** (n_layers - 2)
        self.gap_fc = spectral_norm(nn.Linear(c, 1, bias=False))
        self.gmp_fc = spectral_norm(nn.Linear(c, 1, bias=False))
        self.conv1x1 = nn.Conv2d(2 * c, c, 1)
        self.leaky_relu = nn.LeakyReLU(0.2, True)
        self.pad = nn.ReflectionPad2d(1)
        self.conv = spectral_norm(nn.Conv2d(c, 1, 4, bias=False))

    def output_size(self, size: int) -> int:
        """Logit-map side for an input side of `size` px (0 or less: too small)."""
        for _ in range(self.n_layers - 2):
            if size < 2:  # reflection padding needs at least 2 px
                return 0
            size = size // 2
        return size - 2  # two stride-1 4x4 convs after 1 px padding

    def min_input_size(self) -> int:
        """Smallest H (and W) the discriminator accepts (24 px for n_layers=5, 96 px for 7)."""
        size = 1
        while self.output_size(size) < 1:
            size += 1
        return size

    def forward(self, x: torch.Tensor) -> CAMOutput:
        if min(x.shape[-2:]) < self.min_input_size():
            raise ValueError(
                f"image of {x.shape[-2]}x{x.shape[-1]} px is too small for a {self.n_layers}-layer U-GAT-IT "
                f"discriminator (at least {self.min_input_size()} px)"
            )
        features = self.model(x * 2 - 1)
        # Read each spectrally normalised weight once: every read runs a power iteration in training.
        gap_logit, gap = _attend(features, F.adaptive_avg_pool2d(features, 1).flatten(1), self.gap_fc.weight)
        gmp_logit, gmp = _attend(features, F.adaptive_max_pool2d(features, 1).flatten(1), self.gmp_fc.weight)
        features = self.leaky_relu(self.conv1x1(torch.cat([gap, gmp], 1)))
        heatmap = features.sum(dim=1, keepdim=True)
        return CAMOutput(self.conv(self.pad(features)), torch.cat([gap_logit, gmp_logit], 1), heatmap)
