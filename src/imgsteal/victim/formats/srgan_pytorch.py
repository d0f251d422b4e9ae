"""SRGAN-PyTorch (Lornatang) `.pth.tar` checkpoints: {"state_dict": ..., "epoch", "optimizer", ...}.

The generator is SRGAN's SRResNet: 9x9 conv + PReLU (`conv_block1` / `conv1`), `trunk.<i>.rcb`
residual blocks (conv, BN, PReLU, conv, BN; convs without bias), conv + BN (`conv_block2` / `conv2`),
`upsampling.<k>.upsample_block` (conv, PixelShuffle x2, PReLU), 9x9 conv (`conv_block3` / `conv3`).
It maps onto imgsteal's `srresnet` with zero biases where the reference has none. Images in [0, 1], RGB.
"""

from __future__ import annotations

import torch

from imgsteal.victim.formats.base import (DiscriminatorFileError, FormatMismatch, Imported, build_empty,
                                          count_indices, load_exact, tensor_dict)

NAME = "srgan-pytorch"
_ALIASES = {"head": ("conv_block1", "conv1"), "mid": ("conv_block2", "conv2"), "tail": ("conv_block3", "conv3")}


def _pick(state: dict[str, torch.Tensor], names: tuple[str, ...], leaf: str) -> str:
    for name in names:
        if f"{name}.{leaf}" in state:
            return name
    raise FormatMismatch(f"srgan-pytorch: none of {', '.join(n + '.' + leaf for n in names)}")


def convert(obj, options) -> Imported:
    raw = obj.get("state_dict") if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) else obj
    state = tensor_dict(raw, NAME)
    if any(k.startswith("features.") for k in state) and any(k.startswith("classifier.") for k in state):
        raise DiscriminatorFileError("this is an SRGAN-PyTorch discriminator (features.* + classifier.*), not the "
                                     "generator: import the g_*.pth.tar file")
    if "trunk.0.rcb.0.weight" not in state:
        raise FormatMismatch("srgan-pytorch: no trunk.0.rcb.0.weight (residual conv blocks)")
    head, mid, tail = (_pick(state, _ALIASES[k], leaf) for k, leaf in (("head", "0.weight"), ("mid", "0.weight"), ("tail", "weight")))
    channels = int(state[f"{head}.0.weight"].shape[0])
    n_blocks = count_indices(state, "trunk.")
    n_up = count_indices(state, "upsampling.")
    scale = 2**n_up
    mapped: dict[str, torch.Tensor] = {
        "head.0.weight": state[f"{head}.0.weight"], "head.0.bias": state[f"{head}.0.bias"],
        "head.1.weight": state[f"{head}.1.weight"],
        "tail.weight": state[f"{tail}.weight"], "tail.bias": state[f"{tail}.bias"],
    }

    def conv_bn(src_conv: str, src_bn: str, dst_conv: str, dst_bn: str) -> None:
        mapped[f"{dst_conv}.weight"] = state[f"{src_conv}.weight"]
        mapped[f"{dst_conv}.bias"] = state.get(f"{src_conv}.bias", torch.zeros(channels))
        for leaf in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            if f"{src_bn}.{leaf}" in state:
                mapped[f"{dst_bn}.{leaf}"] = state[f"{src_bn}.{leaf}"]

    for i in range(n_blocks):
        conv_bn(f"trunk.{i}.rcb.0", f"trunk.{i}.rcb.1", f"blocks.{i}.body.0", f"blocks.{i}.body.1")
        mapped[f"blocks.{i}.body.2.weight"] = state[f"trunk.{i}.rcb.2.weight"]
        conv_bn(f"trunk.{i}.rcb.3", f"trunk.{i}.rcb.4", f"blocks.{i}.body.3", f"blocks.{i}.body.4")
    conv_bn(f"{mid}.0", f"{mid}.1", "body_tail.0", "body_tail.1")
    for k in range(n_up):
        mapped[f"upsample.{3 * k}.weight"] = state[f"upsampling.{k}.upsample_block.0.weight"]
        mapped[f"upsample.{3 * k}.bias"] = state[f"upsampling.{k}.upsample_block.0.bias"]
        mapped[f"upsample.{3 * k + 2}.weight"] = state[f"upsampling.{k}.upsample_block.2.weight"]
    kwargs = dict(scale=scale, n_blocks=n_blocks, channels=channels)
    module = build_empty("srresnet", **kwargs)
    load_exact(module, mapped, "srgan-pytorch SRResNet")
    return Imported(module, NAME, "sr", scale, 1, "srresnet", kwargs,
                    contract={"input_range": [0.0, 1.0], "output_range": [0.0, 1.0], "channel_order": "rgb"},
                    details={"arch": "SRResNet", "n_blocks": n_blocks, "epoch": obj.get("epoch") if isinstance(obj, dict) else None})
