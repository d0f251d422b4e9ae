"""pytorch-CycleGAN-and-pix2pix generators (`latest_net_G.pth`, `*_net_G_A.pth`).

ResNet generators (`resnet_9blocks`, `resnet_6blocks`) share the reference's flat `model.<i>` layout
with imgsteal's ResnetGenerator and load directly. UNet generators (`unet_256`, `unet_128`) nest one
skip-connection block inside the next (`model.model.1.model.3.model.3...`); their keys are mapped onto
imgsteal's flat UNetGenerator (`downs.<level>`, `ups.<level>`), whose forward pass is the reference's
(including the skip that carries the next level's in-place LeakyReLU).
Old files hold running statistics of the affine-free InstanceNorm layers; they are dropped, as the
reference's loader does. Normalisation is read from the keys: affine weights mean batch norm.
"""

from __future__ import annotations

import re

import torch

from imgsteal.victim.formats.base import (DiscriminatorFileError, FormatMismatch, Imported, build_empty,
                                          count_indices, load_exact, tensor_dict)

NAME = "cyclegan"
_STATS = ("running_mean", "running_var", "num_batches_tracked")


def _level_prefix(level: int) -> str:
    """Prefix of the reference UNet's Sequential at nesting `level` (0 = outermost)."""
    if level == 0:
        return "model.model."
    return "model.model.1.model." + "3.model." * (level - 1)


def _drop_instance_stats(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Drop running statistics of norm layers without affine weights (InstanceNorm2d(affine=False))."""
    dropped = []
    kept = {}
    for key, value in state.items():
        base, _, leaf = key.rpartition(".")
        if leaf in _STATS and f"{base}.weight" not in state:
            dropped.append(key)
        else:
            kept[key] = value
    return kept, dropped


def _norm_kind(state: dict[str, torch.Tensor], norm_prefix: str) -> str:
    return "batch" if f"{norm_prefix}.weight" in state else "instance"


def _resnet(state: dict[str, torch.Tensor]) -> Imported:
    first = state["model.1.weight"]
    ngf, in_ch = first.shape[0], first.shape[1]
    norm = _norm_kind(state, "model.2")
    state, dropped = _drop_instance_stats(state)
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"model\.(\d+)\.conv_block\.", k))})
    if not blocks:
        raise FormatMismatch("cyclegan resnet: no residual blocks (model.<i>.conv_block.*)")
    sixth = state.get(f"model.{blocks[0]}.conv_block.6.weight")
    dropout = sixth is not None and sixth.dim() == 4  # a conv at index 6: Dropout(0.5) shifted it
    last = max(int(k.split(".")[1]) for k in state if re.match(r"model\.\d+\.weight$", k))
    out_ch = state[f"model.{last}.weight"].shape[0]
    kwargs = dict(in_channels=int(in_ch), out_channels=int(out_ch), ngf=int(ngf), n_blocks=len(blocks), norm=norm,
                  use_dropout=dropout)
    module = build_empty("resnet_generator", **kwargs)
    load_exact(module, state, f"cyclegan resnet_{len(blocks)}blocks")
    return Imported(module, NAME, "style", 1, 1, "resnet_generator", kwargs,
                    contract=_unit_contract(), details={"variant": f"resnet_{len(blocks)}blocks", "norm": norm,
                                                        "dropped_keys": dropped})


def _unet(state: dict[str, torch.Tensor]) -> Imported:
    depth = 0
    while any(k.startswith(_level_prefix(depth)) for k in state):
        depth += 1
    # Keys of the deepest prefix also start with every shallower one: count levels with a conv of their own.
    depth = sum(1 for lvl in range(depth) if f"{_level_prefix(lvl)}{0 if lvl == 0 else 1}.weight" in state)
    first = state["model.model.0.weight"]
    ngf, in_ch = first.shape[0], first.shape[1]
    out_ch = state["model.model.3.weight"].shape[1]  # ConvTranspose2d weight: in x out x k x k
    norm = _norm_kind(state, _level_prefix(1) + "2") if depth > 2 else "batch"
    state, dropped = _drop_instance_stats(state)
    mapped = {}
    for key, value in state.items():
        mapped[_unet_key(key, depth)] = value
    kwargs = dict(in_channels=int(in_ch), out_channels=int(out_ch), ngf=int(ngf), depth=depth, norm=norm,
                  use_dropout=True)
    module = build_empty("unet", **kwargs)
    load_exact(module, mapped, f"pix2pix unet (depth {depth})")
    return Imported(module, NAME, "style", 1, 2**depth, "unet", kwargs, contract=_unit_contract(),
                    details={"variant": f"unet_{2**depth}", "norm": norm, "dropped_keys": dropped})


def _unet_key(key: str, depth: int) -> str:
    """Reference UNet key -> imgsteal UNetGenerator key (unchanged when it matches no level)."""
    for level in range(depth - 1, -1, -1):  # deepest first: deeper prefixes extend shallower ones
        prefix = _level_prefix(level)
        if not key.startswith(prefix):
            continue
        index, _, leaf = key[len(prefix):].partition(".")
        if not index.isdigit() or not leaf or "." in leaf:
            continue
        i = int(index)
        if level == 0:
            table = {0: "downs.0.block.0", 3: "ups.0.block.1"}
        elif level == depth - 1:
            table = {1: f"downs.{level}.block.1", 3: f"ups.{level}.block.1", 4: f"ups.{level}.block.2"}
        else:
            table = {1: f"downs.{level}.block.1", 2: f"downs.{level}.block.2", 5: f"ups.{level}.block.1",
                     6: f"ups.{level}.block.2"}
        if i in table:
            return f"{table[i]}.{leaf}"
    return key


def _unit_contract() -> dict:
    # imgsteal's style networks map [0, 1] to the reference's [-1, 1] (and tanh back) internally.
    return {"input_range": [0.0, 1.0], "output_range": [0.0, 1.0], "channel_order": "rgb",
            "reference_range": [-1.0, 1.0]}


def convert(obj, options) -> Imported:
    state = tensor_dict(obj, NAME)
    if "model.model.0.weight" in state:
        return _unet(state)
    if "model.1.weight" in state and state["model.1.weight"].dim() == 4 and state["model.1.weight"].shape[-1] == 7:
        return _resnet(state)
    w0 = state.get("model.0.weight")
    if w0 is not None and w0.dim() == 4 and w0.shape[-1] == 4 and count_indices(state, "model.") > 0 \
            and not any(".sub." in k for k in state):
        raise DiscriminatorFileError(
            "this is a pytorch-CycleGAN-and-pix2pix discriminator (PatchGAN: model.0 is a 4x4 conv on the image), "
            "not a generator: import the generator file (latest_net_G.pth or latest_net_G_A.pth / _B)")
    raise FormatMismatch("cyclegan: no `model.1.weight` 7x7 conv (ResNet generator) and no `model.model.0.weight` (UNet)")
