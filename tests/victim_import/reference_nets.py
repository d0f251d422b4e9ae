"""Reference key layouts and independent forward passes, written from the published architectures.

Each `*_state` builds a random state dict with the reference implementation's key names and shapes;
each `*_forward` runs that state dict with torch.nn.functional only (no imgsteal modules), in the
reference's value convention. Tests import the state dicts through imgsteal and compare.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# -- building state dicts ----------------------------------------------------------------------------


class Builder:
    def __init__(self, seed: int) -> None:
        self.g = torch.Generator().manual_seed(seed)
        self.state: dict[str, torch.Tensor] = {}

    def rand(self, *shape: int, std: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=self.g) * std

    def conv(self, name: str, cin: int, cout: int, k: int, bias: bool = True, gain: float = 1.0) -> None:
        self.state[f"{name}.weight"] = self.rand(cout, cin, k, k, std=gain / math.sqrt(cin * k * k))
        if bias:
            self.state[f"{name}.bias"] = self.rand(cout, std=0.05)

    def convT(self, name: str, cin: int, cout: int, k: int, bias: bool = True) -> None:
        self.state[f"{name}.weight"] = self.rand(cin, cout, k, k, std=2.0 / math.sqrt(cin * k * k))
        if bias:
            self.state[f"{name}.bias"] = self.rand(cout, std=0.05)

    def bn(self, name: str, c: int) -> None:
        self.state[f"{name}.weight"] = 1 + self.rand(c, std=0.1)
        self.state[f"{name}.bias"] = self.rand(c, std=0.1)
        self.state[f"{name}.running_mean"] = self.rand(c, std=0.1)
        self.state[f"{name}.running_var"] = 0.5 + torch.rand(c, generator=self.g)
        self.state[f"{name}.num_batches_tracked"] = torch.tensor(1000)

    def instance_stats(self, name: str, c: int) -> None:
        """What old (PyTorch 0.3/0.4) InstanceNorm2d layers left in CycleGAN files."""
        self.state[f"{name}.running_mean"] = torch.zeros(c)
        self.state[f"{name}.running_var"] = torch.ones(c)
        self.state[f"{name}.num_batches_tracked"] = torch.tensor(0)

    def norm(self, kind: str, name: str, c: int, old: bool = False) -> None:
        if kind == "batch":
            self.bn(name, c)
        elif old:
            self.instance_stats(name, c)

    def linear(self, name: str, cin: int, cout: int, bias: bool = False) -> None:
        self.state[f"{name}.weight"] = self.rand(cout, cin, std=1 / math.sqrt(cin))
        if bias:
            self.state[f"{name}.bias"] = self.rand(cout, std=0.05)


def _conv(s, name, x, stride=1, padding=0):
    return F.conv2d(x, s[f"{name}.weight"], s.get(f"{name}.bias"), stride=stride, padding=padding)


def _convT(s, name, x):
    return F.conv_transpose2d(x, s[f"{name}.weight"], s.get(f"{name}.bias"), stride=2, padding=1, output_padding=0)


def _norm(s, kind, name, x):
    if kind == "batch":
        return F.batch_norm(x, s[f"{name}.running_mean"], s[f"{name}.running_var"], s[f"{name}.weight"],
                            s[f"{name}.bias"], False, 0.0, 1e-5)
    return F.instance_norm(x, eps=1e-5)


# -- pytorch-CycleGAN-and-pix2pix: ResnetGenerator --------------------------------------------------


def cyclegan_resnet_state(ngf=8, n_blocks=2, norm="instance", old=False, seed=0, cin=3, cout=3) -> dict:
    b = Builder(seed)
    bias = norm == "instance"
    b.conv("model.1", cin, ngf, 7, bias)
    b.norm(norm, "model.2", ngf, old)
    b.conv("model.4", ngf, 2 * ngf, 3, bias)
    b.norm(norm, "model.5", 2 * ngf, old)
    b.conv("model.7", 2 * ngf, 4 * ngf, 3, bias)
    b.norm(norm, "model.8", 4 * ngf, old)
    for i in range(n_blocks):
        p = f"model.{10 + i}.conv_block"
        b.conv(f"{p}.1", 4 * ngf, 4 * ngf, 3, bias, gain=0.5)
        b.norm(norm, f"{p}.2", 4 * ngf, old)
        b.conv(f"{p}.5", 4 * ngf, 4 * ngf, 3, bias, gain=0.5)
        b.norm(norm, f"{p}.6", 4 * ngf, old)
    up = 10 + n_blocks
    b.convT(f"model.{up}", 4 * ngf, 2 * ngf, 3, bias)
    b.norm(norm, f"model.{up + 1}", 2 * ngf, old)
    b.convT(f"model.{up + 3}", 2 * ngf, ngf, 3, bias)
    b.norm(norm, f"model.{up + 4}", ngf, old)
    b.conv(f"model.{up + 7}", ngf, cout, 7, True)
    return b.state


def cyclegan_resnet_forward(s: dict, x: torch.Tensor, n_blocks: int, norm: str) -> torch.Tensor:
    """x in [-1, 1] -> tanh output in [-1, 1] (the reference convention)."""
    y = F.relu(_norm(s, norm, "model.2", _conv(s, "model.1", F.pad(x, (3,) * 4, mode="reflect"))))
    y = F.relu(_norm(s, norm, "model.5", _conv(s, "model.4", y, 2, 1)))
    y = F.relu(_norm(s, norm, "model.8", _conv(s, "model.7", y, 2, 1)))
    for i in range(n_blocks):
        p = f"model.{10 + i}.conv_block"
        r = F.relu(_norm(s, norm, f"{p}.2", _conv(s, f"{p}.1", F.pad(y, (1,) * 4, mode="reflect"))))
        r = _norm(s, norm, f"{p}.6", _conv(s, f"{p}.5", F.pad(r, (1,) * 4, mode="reflect")))
        y = y + r
    up = 10 + n_blocks
    for idx in (up, up + 3):
        w = s[f"model.{idx}.weight"]
        y = F.conv_transpose2d(y, w, s.get(f"model.{idx}.bias"), stride=2, padding=1, output_padding=1)
        y = F.relu(_norm(s, norm, f"model.{idx + 1}", y))
    return torch.tanh(_conv(s, f"model.{up + 7}", F.pad(y, (3,) * 4, mode="reflect")))


# -- pix2pix UnetGenerator (nested UnetSkipConnectionBlocks) -----------------------------------------


def _unet_channels(ngf: int, depth: int) -> list[int]:
    return [ngf * min(2**i, 8) for i in range(depth)]


def unet_state(ngf=4, depth=5, norm="batch", old=False, seed=0, cin=3, cout=3) -> dict:
    b = Builder(seed)
    bias = norm == "instance"
    ch = _unet_channels(ngf, depth)

    def level(prefix: str, i: int) -> None:
        outer = cout if i == 0 else ch[i - 1]
        inner = ch[i]
        inp = cin if i == 0 else outer
        if i == 0:
            b.conv(prefix + "0", inp, inner, 4, bias)
            level(prefix + "1.model.", 1)
            b.convT(prefix + "3", inner * 2, outer, 4, True)
        elif i == depth - 1:
            b.conv(prefix + "1", inp, inner, 4, bias)
            b.convT(prefix + "3", inner, outer, 4, bias)
            b.norm(norm, prefix + "4", outer, old)
        else:
            b.conv(prefix + "1", inp, inner, 4, bias)
            b.norm(norm, prefix + "2", inner, old)
            level(prefix + "3.model.", i + 1)
            b.convT(prefix + "5", inner * 2, outer, 4, bias)
            b.norm(norm, prefix + "6", outer, old)

    level("model.model.", 0)
    return b.state


def unet_forward(s: dict, x: torch.Tensor, depth: int, norm: str) -> torch.Tensor:
    """x in [-1, 1] -> [-1, 1]. Skips carry LeakyReLU(x): the reference's in-place LeakyReLU changes x
    before torch.cat reads it."""

    def level(prefix: str, i: int, x: torch.Tensor) -> torch.Tensor:
        if i == 0:
            d = F.conv2d(x, s[prefix + "0.weight"], s.get(prefix + "0.bias"), stride=2, padding=1)
            inner = level(prefix + "1.model.", 1, d)
            return torch.tanh(_convT(s, prefix + "3", F.relu(inner)))
        xr = F.leaky_relu(x, 0.2)
        d = F.conv2d(xr, s[prefix + "1.weight"], s.get(prefix + "1.bias"), stride=2, padding=1)
        if i == depth - 1:
            u = _norm(s, norm, prefix + "4", _convT(s, prefix + "3", F.relu(d)))
        else:
            d = _norm(s, norm, prefix + "2", d)
            inner = level(prefix + "3.model.", i + 1, d)
            u = _norm(s, norm, prefix + "6", _convT(s, prefix + "5", F.relu(inner)))
        return torch.cat([xr, u], 1)

    return level("model.model.", 0, x)


def patchgan_state(ndf=8, seed=0) -> dict:
    b = Builder(seed)
    b.conv("model.0", 3, ndf, 4)
    b.conv("model.2", ndf, 2 * ndf, 4, False)
    b.bn("model.3", 2 * ndf)
    b.conv("model.5", 2 * ndf, 1, 4)
    return b.state


# -- UGATIT-pytorch ResnetGenerator --------------------------------------------------------------------


def ugatit_generator_state(ngf=4, n_blocks=2, light=True, size=32, seed=0) -> dict:
    b = Builder(seed)
    c = 4 * ngf
    b.conv("DownBlock.1", 3, ngf, 7, False)
    b.conv("DownBlock.5", ngf, 2 * ngf, 3, False)
    b.conv("DownBlock.9", 2 * ngf, c, 3, False)
    for i in range(n_blocks):
        b.conv(f"DownBlock.{12 + i}.conv_block.1", c, c, 3, False, gain=0.5)
        b.conv(f"DownBlock.{12 + i}.conv_block.5", c, c, 3, False, gain=0.5)
    b.linear("gap_fc", c, 1)
    b.linear("gmp_fc", c, 1)
    b.conv("conv1x1", 2 * c, c, 1, True)
    b.linear("FC.0", c if light else (size // 4) ** 2 * c, c)
    b.linear("FC.2", c, c)
    b.linear("gamma", c, c)
    b.linear("beta", c, c)
    for i in range(1, n_blocks + 1):
        b.conv(f"UpBlock1_{i}.conv1", c, c, 3, False, gain=0.5)
        b.state[f"UpBlock1_{i}.norm1.rho"] = torch.rand(1, c, 1, 1, generator=b.g)
        b.conv(f"UpBlock1_{i}.conv2", c, c, 3, False, gain=0.5)
        b.state[f"UpBlock1_{i}.norm2.rho"] = torch.rand(1, c, 1, 1, generator=b.g)
    for conv, iln, cin in ((2, 3, c), (7, 8, c // 2)):
        b.conv(f"UpBlock2.{conv}", cin, cin // 2, 3, False)
        b.state[f"UpBlock2.{iln}.rho"] = torch.rand(1, cin // 2, 1, 1, generator=b.g)
        b.state[f"UpBlock2.{iln}.gamma"] = 1 + b.rand(1, cin // 2, 1, 1, std=0.1)
        b.state[f"UpBlock2.{iln}.beta"] = b.rand(1, cin // 2, 1, 1, std=0.1)
    b.conv("UpBlock2.11", ngf, 3, 7, False)
    return b.state


def _lin_mix(x, rho, eps=1e-5):
    inst = (x - x.mean((2, 3), keepdim=True)) / torch.sqrt(x.var((2, 3), keepdim=True) + eps)
    layer = (x - x.mean((1, 2, 3), keepdim=True)) / torch.sqrt(x.var((1, 2, 3), keepdim=True) + eps)
    return rho * inst + (1 - rho) * layer


def ugatit_generator_forward(s: dict, x: torch.Tensor, n_blocks: int, light: bool) -> torch.Tensor:
    """x in [-1, 1] -> tanh output in [-1, 1]."""
    rp = lambda t, p: F.pad(t, (p,) * 4, mode="reflect")  # noqa: E731
    y = F.relu(F.instance_norm(_conv(s, "DownBlock.1", rp(x, 3))))
    y = F.relu(F.instance_norm(_conv(s, "DownBlock.5", rp(y, 1), stride=2)))
    y = F.relu(F.instance_norm(_conv(s, "DownBlock.9", rp(y, 1), stride=2)))
    for i in range(n_blocks):
        p = f"DownBlock.{12 + i}.conv_block"
        r = F.relu(F.instance_norm(_conv(s, f"{p}.1", rp(y, 1))))
        y = y + F.instance_norm(_conv(s, f"{p}.5", rp(r, 1)))
    wa, wm = s["gap_fc.weight"], s["gmp_fc.weight"]
    y = torch.cat([y * wa[0][None, :, None, None], y * wm[0][None, :, None, None]], 1)
    y = F.relu(_conv(s, "conv1x1", y))
    z = y.mean((2, 3)) if light else y.flatten(1)
    z = F.relu(F.linear(F.relu(F.linear(z, s["FC.0.weight"])), s["FC.2.weight"]))
    gamma, beta = F.linear(z, s["gamma.weight"]), F.linear(z, s["beta.weight"])
    g, bt = gamma[:, :, None, None], beta[:, :, None, None]
    for i in range(1, n_blocks + 1):
        p = f"UpBlock1_{i}"
        r = F.relu(_lin_mix(_conv(s, f"{p}.conv1", rp(y, 1)), s[f"{p}.norm1.rho"]) * g + bt)
        y = y + _lin_mix(_conv(s, f"{p}.conv2", rp(r, 1)), s[f"{p}.norm2.rho"]) * g + bt
    for conv, iln in ((2, 3), (7, 8)):
        y = _conv(s, f"UpBlock2.{conv}", rp(F.interpolate(y, scale_factor=2, mode="nearest"), 1))
        y = F.relu(_lin_mix(y, s[f"UpBlock2.{iln}.rho"]) * s[f"UpBlock2.{iln}.gamma"] + s[f"UpBlock2.{iln}.beta"])
    return torch.tanh(_conv(s, "UpBlock2.11", rp(y, 3)))


def ugatit_checkpoint(ngf=4, n_blocks=2, light=True, size=32) -> dict:
    return {"genA2B": ugatit_generator_state(ngf, n_blocks, light, size, seed=1),
            "genB2A": ugatit_generator_state(ngf, n_blocks, light, size, seed=2),
            "disGA": {"model.1.weight_orig": torch.zeros(8, 3, 4, 4), "model.1.weight_u": torch.zeros(8)},
            "disLA": {"model.1.weight_orig": torch.zeros(8, 3, 4, 4)}}


# -- BasicSR RRDBNet and MSRResNet ----------------------------------------------------------------------


def rrdbnet_state(nf=8, nb=2, gc=4, scale=4, seed=0) -> dict:
    b = Builder(seed)
    fold = 4 // scale
    b.conv("conv_first", 3 * fold * fold, nf, 3)
    for i in range(nb):
        for k in (1, 2, 3):
            for j in range(1, 6):
                b.conv(f"body.{i}.rdb{k}.conv{j}", nf + (j - 1) * gc, gc if j < 5 else nf, 3)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        b.conv(name, nf, nf, 3)
    b.conv("conv_last", nf, 3, 3)
    return b.state


def rrdbnet_forward(s: dict, x: torch.Tensor, nb: int, scale: int = 4) -> torch.Tensor:
    lrelu = lambda t: F.leaky_relu(t, 0.2)  # noqa: E731
    if scale < 4:
        x = F.pixel_unshuffle(x, 4 // scale)
    feat = _conv(s, "conv_first", x, padding=1)
    y = feat
    for i in range(nb):
        block_in = y
        for k in (1, 2, 3):
            p = f"body.{i}.rdb{k}"
            xs = [y]
            for j in range(1, 5):
                xs.append(lrelu(_conv(s, f"{p}.conv{j}", torch.cat(xs, 1), padding=1)))
            y = _conv(s, f"{p}.conv5", torch.cat(xs, 1), padding=1) * 0.2 + y
        y = y * 0.2 + block_in
    feat = feat + _conv(s, "conv_body", y, padding=1)
    feat = lrelu(_conv(s, "conv_up1", F.interpolate(feat, scale_factor=2, mode="nearest"), padding=1))
    feat = lrelu(_conv(s, "conv_up2", F.interpolate(feat, scale_factor=2, mode="nearest"), padding=1))
    return _conv(s, "conv_last", lrelu(_conv(s, "conv_hr", feat, padding=1)), padding=1)


def to_esrgan_old_keys(s: dict) -> dict:
    """BasicSR RRDBNet names -> xinntao/ESRGAN's RRDB_trunk scheme."""
    out = {}
    for key, value in s.items():
        parts = key.split(".")
        if parts[0] == "body":
            key = f"RRDB_trunk.{parts[1]}.RDB{parts[2][-1]}.{parts[3]}.{parts[4]}"
        else:
            key = {"conv_body": "trunk_conv", "conv_up1": "upconv1", "conv_up2": "upconv2", "conv_hr": "HRconv"}.get(parts[0], parts[0]) + "." + parts[1]
        out[key] = value
    return out


def to_esrgan_first_release_keys(s: dict, nb: int) -> dict:
    """BasicSR RRDBNet names -> ESRGAN's first release (`model.0`, `model.1.sub.<i>.RDBk.convJ.0`, `model.1.sub.<nb>`,
    `model.3`, `model.6`, `model.8`, `model.10`)."""
    out = {}
    top = {"conv_first": "model.0", "conv_body": f"model.1.sub.{nb}", "conv_up1": "model.3", "conv_up2": "model.6",
           "conv_hr": "model.8", "conv_last": "model.10"}
    for key, value in s.items():
        parts = key.split(".")
        if parts[0] == "body":
            key = f"model.1.sub.{parts[1]}.RDB{parts[2][-1]}.{parts[3]}.0.{parts[4]}"
        else:
            key = f"{top[parts[0]]}.{parts[1]}"
        out[key] = value
    return out


def msrresnet_state(nf=8, nb=2, scale=4, seed=0) -> dict:
    b = Builder(seed)
    b.conv("conv_first", 3, nf, 3)
    for i in range(nb):
        b.conv(f"body.{i}.conv1", nf, nf, 3, gain=0.5)
        b.conv(f"body.{i}.conv2", nf, nf, 3, gain=0.5)
    if scale == 4:
        b.conv("upconv1", nf, nf * 4, 3)
        b.conv("upconv2", nf, nf * 4, 3)
    else:
        b.conv("upconv1", nf, nf * scale * scale, 3)
    b.conv("conv_hr", nf, nf, 3)
    b.conv("conv_last", nf, 3, 3)
    return b.state


def msrresnet_forward(s: dict, x: torch.Tensor, nb: int, scale: int = 4) -> torch.Tensor:
    lrelu = lambda t: F.leaky_relu(t, 0.1)  # noqa: E731
    y = lrelu(_conv(s, "conv_first", x, padding=1))
    for i in range(nb):
        y = y + _conv(s, f"body.{i}.conv2", F.relu(_conv(s, f"body.{i}.conv1", y, padding=1)), padding=1)
    if scale == 4:
        y = lrelu(F.pixel_shuffle(_conv(s, "upconv1", y, padding=1), 2))
        y = lrelu(F.pixel_shuffle(_conv(s, "upconv2", y, padding=1), 2))
    else:
        y = lrelu(F.pixel_shuffle(_conv(s, "upconv1", y, padding=1), scale))
    y = _conv(s, "conv_last", lrelu(_conv(s, "conv_hr", y, padding=1)), padding=1)
    return y + F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


def vgg_discriminator_state(nf=4, seed=0) -> dict:
    b = Builder(seed)
    b.conv("conv0_0", 3, nf, 3)
    b.conv("conv0_1", nf, nf, 4, False)
    b.bn("bn0_1", nf)
    b.linear("linear1", nf * 16, 100, True)
    b.linear("linear2", 100, 1, True)
    return b.state


# -- SRGAN-PyTorch SRResNet ------------------------------------------------------------------------------


def srgan_pytorch_state(nf=8, nb=2, n_up=2, names=("conv_block1", "conv_block2", "conv_block3"), seed=0) -> dict:
    b = Builder(seed)
    h, m, t = names
    b.conv(f"{h}.0", 3, nf, 9)
    b.state[f"{h}.1.weight"] = torch.full((1,), 0.25)
    for i in range(nb):
        b.conv(f"trunk.{i}.rcb.0", nf, nf, 3, False, gain=0.5)
        b.bn(f"trunk.{i}.rcb.1", nf)
        b.state[f"trunk.{i}.rcb.2.weight"] = torch.rand(1, generator=b.g) * 0.5
        b.conv(f"trunk.{i}.rcb.3", nf, nf, 3, False, gain=0.5)
        b.bn(f"trunk.{i}.rcb.4", nf)
    b.conv(f"{m}.0", nf, nf, 3, False)
    b.bn(f"{m}.1", nf)
    for k in range(n_up):
        b.conv(f"upsampling.{k}.upsample_block.0", nf, nf * 4, 3)
        b.state[f"upsampling.{k}.upsample_block.2.weight"] = torch.full((1,), 0.2)
    b.conv(t, nf, 3, 9)
    return b.state


def srgan_pytorch_forward(s: dict, x: torch.Tensor, nb: int, n_up: int,
                          names=("conv_block1", "conv_block2", "conv_block3")) -> torch.Tensor:
    h, m, t = names
    out1 = F.prelu(_conv(s, f"{h}.0", x, padding=4), s[f"{h}.1.weight"])
    y = out1
    for i in range(nb):
        p = f"trunk.{i}.rcb"
        r = F.prelu(_norm(s, "batch", f"{p}.1", _conv(s, f"{p}.0", y, padding=1)), s[f"{p}.2.weight"])
        y = y + _norm(s, "batch", f"{p}.4", _conv(s, f"{p}.3", r, padding=1))
    y = out1 + _norm(s, "batch", f"{m}.1", _conv(s, f"{m}.0", y, padding=1))
    for k in range(n_up):
        p = f"upsampling.{k}.upsample_block"
        y = F.prelu(F.pixel_shuffle(_conv(s, f"{p}.0", y, padding=1), 2), s[f"{p}.2.weight"])
    return _conv(s, t, y, padding=4).clamp(0, 1)


def srgan_pytorch_discriminator_state(seed=0) -> dict:
    b = Builder(seed)
    b.conv("features.0", 3, 8, 3)
    b.linear("classifier.0", 8 * 36, 16, True)
    b.linear("classifier.2", 16, 1, True)
    return b.state
