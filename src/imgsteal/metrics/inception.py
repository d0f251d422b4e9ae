"""The Inception-v3 variant behind FID (the TensorFlow 2015-12-05 graph), built for feature extraction.

It differs from torchvision's Inception3 in the ways the ported FID weights expect: 1008 classes,
average pools in the A/C/E blocks that ignore padded zeros (count_include_pad=False), and a max pool
in the pooling branch of the last E block. Parameter names follow the common layout
(`Mixed_5b.branch1x1.conv.weight`, ...) so the file pytorch-fid downloads
(`pt_inception-2015-12-05-6726825d.pth`) loads as is.

Input convention: N x 3 x H x W float images in [0, 1]; they are resized to 299 x 299 (bilinear,
no antialias, as the reference implementations do) and mapped to [-1, 1] inside. Output: the
2048-d pool3 features. For speed, `prepare_for_inference` folds every batch norm into its
convolution and switches to channels_last; the arithmetic stays float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008
# Everything that changes the numbers a feature extractor produces, for cache keys.
RESIZE_SETTINGS = {"size": INPUT_SIZE, "mode": "bilinear", "align_corners": False, "antialias": False}


class ConvBnRelu(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3, as in the TF graph), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **conv_kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv_kwargs)
        self.bn: nn.Module = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)

    @torch.no_grad()
    def fold_batchnorm(self) -> None:
        """Fold the (eval-mode) batch norm into the convolution: one op instead of two, same output."""
        bn = self.bn
        if not isinstance(bn, nn.BatchNorm2d):
            return
        conv = self.conv
        # Fold in float64 so the folded float32 weights are as close as possible to conv-then-bn.
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        fused = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            kernel_size=conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            bias=True,
        ).to(device=conv.weight.device)
        fused.weight.copy_((conv.weight.double() * scale[:, None, None, None]).float())
        fused.bias.copy_((bn.bias.double() - bn.running_mean.double() * scale).float())
        self.conv = fused
        self.bn = nn.Identity()


def _avg_pool_no_pad(x: torch.Tensor) -> torch.Tensor:
    # TF's average pool divides by the number of real (not padded) inputs.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    """35 x 35 block: 1x1, 5x5, double 3x3 and pooled branches."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBnRelu(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = ConvBnRelu(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = ConvBnRelu(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = ConvBnRelu(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = ConvBnRelu(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = ConvBnRelu(96, 96, kernel_size=3, padding=1)
        self.branch_pool = ConvBnRelu(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_no_pad(x))
        return torch.cat([b1, b5, b3, bp], 1)


class ReductionB(nn.Module):
    """35 -> 17 grid reduction (torchvision's InceptionB)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBnRelu(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = ConvBnRelu(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = ConvBnRelu(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = ConvBnRelu(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)


class BlockC(nn.Module):
    """17 x 17 block with factorised 7x7 convolutions."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = ConvBnRelu(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = ConvBnRelu(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = ConvBnRelu(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBnRelu(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBnRelu(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = ConvBnRelu(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBnRelu(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBnRelu(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBnRelu(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = ConvBnRelu(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(_avg_pool_no_pad(x))
        return torch.cat([b1, b7, bd, bp], 1)


class ReductionD(nn.Module):
    """17 -> 8 grid reduction (torchvision's InceptionD)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBnRelu(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = ConvBnRelu(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = ConvBnRelu(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = ConvBnRelu(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBnRelu(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBnRelu(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class BlockE(nn.Module):
    """8 x 8 block with split 1x3 / 3x1 branches.

    `pool="avg"` (Mixed_7b) averages without padded zeros; `pool="max"` (Mixed_7c) is the max pool
    the FID graph has there instead of the paper's average pool.
    """

    def __init__(self, in_channels: int, pool: str) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = ConvBnRelu(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = ConvBnRelu(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = ConvBnRelu(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBnRelu(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBnRelu(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = ConvBnRelu(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = ConvBnRelu(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBnRelu(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = ConvBnRelu(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        if self.pool == "avg":
            pooled = _avg_pool_no_pad(x)
        else:
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        bp = self.branch_pool(pooled)
        return torch.cat([b1, b3, bd, bp], 1)


def resize_for_inception(images: torch.Tensor) -> torch.Tensor:
    """N x 3 x H x W in [0, 1] -> N x 3 x 299 x 299 in [-1, 1] (bilinear, align_corners=False)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected N x 3 x H x W images, got shape {tuple(images.shape)}")
    x = images
    if tuple(x.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    return x * 2 - 1


class FIDInceptionV3(nn.Module):
    """Inception-v3 as in the TF FID graph; `forward(images in [0, 1]) -> N x 2048 pool3 features`."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBnRelu(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = ConvBnRelu(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = ConvBnRelu(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = ConvBnRelu(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = ConvBnRelu(80, 192, kernel_size=3)
        self.Mixed_5b = BlockA(192, pool_features=32)
        self.Mixed_5c = BlockA(256, pool_features=64)
        self.Mixed_5d = BlockA(288, pool_features=64)
        self.Mixed_6a = ReductionB(288)
        self.Mixed_6b = BlockC(768, channels_7x7=128)
        self.Mixed_6c = BlockC(768, channels_7x7=160)
        self.Mixed_6d = BlockC(768, channels_7x7=160)
        self.Mixed_6e = BlockC(768, channels_7x7=192)
        self.Mixed_7a = ReductionD(768)
        self.Mixed_7b = BlockE(1280, pool="avg")
        self.Mixed_7c = BlockE(2048, pool="max")
        # Unused for features; kept so the published state dict loads strictly (and checks itself).
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def pool3(self, x: torch.Tensor) -> torch.Tensor:
        """N x 3 x 299 x 299 in [-1, 1] -> N x 2048 features after the final average pool."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (
            self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
            self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c,
        ):  # fmt: skip
            x = block(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """N x 3 x H x W images in [0, 1] (any size) -> N x 2048 float32 pool3 features."""
        x = resize_for_inception(images)
        if next(self.parameters()).is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        return self.pool3(x)

    def prepare_for_inference(self) -> "FIDInceptionV3":
        """Eval mode, no grads, batch norms folded into convolutions, channels_last. Returns self.

        Call after loading weights: the folded model no longer has batch-norm entries in its state dict.
        """
        self.eval()
        for module in self.modules():
            if isinstance(module, ConvBnRelu):
                module.fold_batchnorm()
        self.requires_grad_(False)
        return self.to(memory_format=torch.channels_last)


def random_fid_inception_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict in the FID Inception layout, for tests and benchmarks only.

    Scaled so features stay informative through 90+ layers (He-normal convolutions, batch norms
    with non-trivial statistics). Never used in place of the real weights.
    """
    generator = torch.Generator().manual_seed(seed)
    model = FIDInceptionV3()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu", generator=generator)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.2, 0.2, generator=generator)
                module.running_mean.uniform_(-0.2, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.01, generator=generator)
                nn.init.zeros_(module.bias)
    return model.state_dict()


def read_weights_file(path) -> object:
    """torch.load(path, weights_only=True) on the CPU: tensors and plain containers only, never
    arbitrary unpickling. Raises ValueError with imgsteal's own message (torch's advice to load with
    weights_only=False is never passed on: that would run code from the file)."""
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols: the message below says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):  # not a pickle of tensors at all: bytes of another format
            raise ValueError(f"{path} is not a PyTorch weights file (another format, or damaged)") from None
        raise ValueError(f"{path} holds Python objects besides tensors; imgsteal reads weights files as "
                         "plain state dicts of tensors only and never unpickles objects from them") from None
    except Exception:  # truncated zip, another format, a legacy file torch cannot parse
        raise ValueError(f"{path} is not a PyTorch weights file (truncated, damaged, or another format)") from None
