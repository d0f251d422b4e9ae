"""BasicSR generators (`params` / `params_ema`, EMA preferred) and the older ESRGAN key schemes.

BasicSR: `MSRResNet` (its SRResNet and SRGAN releases) and `RRDBNet` (ESRGAN; Real-ESRGAN x4plus,
x2plus with pixel-unshuffle, and the 6-block anime model) load into imgsteal's classes of the same
module names. esrgan-old: xinntao/ESRGAN's `RRDB_trunk.N.RDBk.convJ`, `trunk_conv`, `upconv1/2`,
`HRconv` scheme, and the first release's `model.0 / model.1.sub.N.RDBk.convJ.0 / model.3 ...`
scheme, both mapped onto RRDBNet. Discriminator files (VGG-style or spectral-norm UNet) are refused.
"""

from __future__ import annotations

import re

import torch

from imgsteal.victim.formats.base import (DiscriminatorFileError, FormatMismatch, Imported, build_empty,
                                          count_indices, load_exact, tensor_dict)

_SR_CONTRACT = {"input_range": [0.0, 1.0], "output_range": [0.0, 1.0], "channel_order": "rgb"}


def _params(obj, what: str) -> tuple[dict[str, torch.Tensor], str]:
    if isinstance(obj, dict):
        for key in ("params_ema", "params"):
            if key in obj and isinstance(obj[key], dict):
                return tensor_dict(obj[key], what), key
    return tensor_dict(obj, what), "top level"


def refuse_discriminator(state: dict[str, torch.Tensor]) -> None:
    if "conv0_0.weight" in state and any(k.startswith("linear") for k in state):
        raise DiscriminatorFileError("this is a BasicSR VGG-style discriminator (conv0_0 ... linear1/linear2), not a "
                                     "generator: import the net_g file")
    if any(k.endswith("weight_orig") for k in state):
        raise DiscriminatorFileError("this is a spectral-norm discriminator (weights stored as weight_orig/weight_u, as "
                                     "Real-ESRGAN's UNetDiscriminatorSN), not a generator: import the net_g file")


def _rrdb(state: dict[str, torch.Tensor], fmt: str, details: dict) -> Imported:
    channels = int(state["conv_first.weight"].shape[0])
    out_ch = int(state["conv_last.weight"].shape[0])
    fold2, rem = divmod(int(state["conv_first.weight"].shape[1]), out_ch)
    fold = {1: 1, 4: 2, 16: 4}.get(fold2)
    if rem or fold is None:
        raise FormatMismatch(f"{fmt}: conv_first takes {state['conv_first.weight'].shape[1]} channels, not 3 x 1, 4 or 16")
    kwargs = dict(in_channels=out_ch, out_channels=out_ch, scale=4 // fold, channels=channels,
                  n_blocks=count_indices(state, "body."), growth=int(state["body.0.rdb1.conv1.weight"].shape[0]))
    module = build_empty("rrdbnet", **kwargs)
    load_exact(module, state, f"{fmt} RRDBNet")
    details = {"arch": "RRDBNet", "n_blocks": kwargs["n_blocks"], **details}
    return Imported(module, fmt, "sr", 4 // fold, fold, "rrdbnet", kwargs, contract=dict(_SR_CONTRACT), details=details)


def _msrresnet(state: dict[str, torch.Tensor], details: dict) -> Imported:
    channels = int(state["conv_first.weight"].shape[0])
    if "upconv2.weight" in state:
        scale = 4
    else:
        scale = {channels * 4: 2, channels * 9: 3}.get(int(state["upconv1.weight"].shape[0]), 0)
        if not scale:
            raise FormatMismatch(f"basicsr MSRResNet: upconv1 gives {state['upconv1.weight'].shape[0]} channels, "
                                 f"not {channels} x 4 or x 9")
    kwargs = dict(in_channels=int(state["conv_first.weight"].shape[1]), out_channels=int(state["conv_last.weight"].shape[0]),
                  channels=channels, n_blocks=count_indices(state, "body."), scale=scale)
    module = build_empty("msrresnet", **kwargs)
    load_exact(module, state, "basicsr MSRResNet")
    return Imported(module, "basicsr", "sr", scale, 1, "msrresnet", kwargs, contract=dict(_SR_CONTRACT),
                    details={"arch": "MSRResNet", "n_blocks": kwargs["n_blocks"], **details})


def convert_basicsr(obj, options) -> Imported:
    state, where = _params(obj, "basicsr")
    refuse_discriminator(state)
    if "conv_first.weight" in state and "body.0.rdb1.conv1.weight" in state:
        return _rrdb(state, "basicsr", {"weights": where})
    if "conv_first.weight" in state and "body.0.conv1.weight" in state and "upconv1.weight" in state:
        return _msrresnet(state, {"weights": where})
    raise FormatMismatch("basicsr: neither RRDBNet (conv_first, body.0.rdb1.conv1) nor MSRResNet "
                         "(conv_first, body.0.conv1, upconv1) keys")


_OLD_RENAMES = (
    (re.compile(r"^RRDB_trunk\.(\d+)\.RDB(\d)\.conv(\d)\.(weight|bias)$"), r"body.\1.rdb\2.conv\3.\4"),
    (re.compile(r"^trunk_conv\."), "conv_body."),
    (re.compile(r"^upconv1\."), "conv_up1."),
    (re.compile(r"^upconv2\."), "conv_up2."),
    (re.compile(r"^HRconv\."), "conv_hr."),
)


def _rename_oldest(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ESRGAN's first release: model.0 conv, model.1.sub.<i> RRDBs + model.1.sub.<n> trunk conv, model.3/6/8/10."""
    n = count_indices(state, "model.1.sub.")
    trunk = n - 1  # the last sub entry is the trunk conv
    fixed = {"model.0.": "conv_first.", f"model.1.sub.{trunk}.": "conv_body.", "model.3.": "conv_up1.",
             "model.6.": "conv_up2.", "model.8.": "conv_hr.", "model.10.": "conv_last."}
    out = {}
    for key, value in state.items():
        m = re.match(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$", key)
        if m:
            out[f"body.{m.group(1)}.rdb{m.group(2)}.conv{m.group(3)}.{m.group(4)}"] = value
            continue
        for old, new in fixed.items():
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
        else:
            out[key] = value
    return out


def convert_esrgan_old(obj, options) -> Imported:
    state, where = _params(obj, "esrgan-old")
    refuse_discriminator(state)
    if "RRDB_trunk.0.RDB1.conv1.weight" in state:
        renamed = {}
        for key, value in state.items():
            for pattern, new in _OLD_RENAMES:
                if pattern.search(key):
                    key = pattern.sub(new, key)
                    break
            renamed[key] = value
        return _rrdb(renamed, "esrgan-old", {"scheme": "RRDB_trunk", "weights": where})
    if "model.1.sub.0.RDB1.conv1.0.weight" in state:
        return _rrdb(_rename_oldest(state), "esrgan-old", {"scheme": "model.1.sub (first release)", "weights": where})
    raise FormatMismatch("esrgan-old: no RRDB_trunk.0.RDB1.conv1.weight and no model.1.sub.0.RDB1.conv1.0.weight")
