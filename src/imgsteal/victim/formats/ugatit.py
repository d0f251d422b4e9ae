"""UGATIT-pytorch checkpoints: a dict {genA2B, genB2A, disGA, disGB, disLA, disLB} of state dicts.

The generator's layout matches imgsteal's UGATITGenerator except the AdaLIN residual blocks, which
the reference registers as attributes `UpBlock1_1 ... UpBlock1_n` (imgsteal: `UpBlock1.0 ...`).
Light or full is read from the first MLP layer's input width (4 ngf: light; (size/4)^2 * 4 ngf: full,
which also gives the image size the full model was built for).
"""

from __future__ import annotations

import math
import re

from imgsteal.victim.formats.base import (DiscriminatorFileError, FormatMismatch, Imported, build_empty,
                                          load_exact, strip_prefixes)

NAME = "ugatit"
GENERATORS = {"a2b": "genA2B", "b2a": "genB2A"}
DISCRIMINATORS = ("disGA", "disGB", "disLA", "disLB")


def convert(obj, options) -> Imported:
    if not isinstance(obj, dict):
        raise FormatMismatch(f"ugatit: expected a dict with genA2B/genB2A, found {type(obj).__name__}")
    key = GENERATORS[options.direction]
    if key not in obj:
        if any(d in obj for d in DISCRIMINATORS):
            raise DiscriminatorFileError(f"this U-GAT-IT file holds only discriminators ({', '.join(d for d in DISCRIMINATORS if d in obj)}), no {key}")
        raise FormatMismatch(f"ugatit: no `{key}` entry (top-level keys: {', '.join(map(str, list(obj)[:8]))})")
    raw = obj[key]
    if not isinstance(raw, dict):
        raise FormatMismatch(f"ugatit: `{key}` is a {type(raw).__name__}, not a state dict")
    state = {}
    for name, value in strip_prefixes(raw).items():
        m = re.match(r"UpBlock1_(\d+)\.(.*)$", name)
        state[f"UpBlock1.{int(m.group(1)) - 1}.{m.group(2)}" if m else name] = value
    for needed in ("DownBlock.1.weight", "FC.0.weight"):
        if needed not in state:
            raise FormatMismatch(f"ugatit: `{key}` has no {needed}")
    ngf = int(state["DownBlock.1.weight"].shape[0])
    in_ch = int(state["DownBlock.1.weight"].shape[1])
    n_blocks = len({k.split(".")[1] for k in state if k.startswith("UpBlock1.")})
    last = max(int(k.split(".")[1]) for k in state if re.match(r"UpBlock2\.\d+\.weight$", k))
    out_ch = int(state[f"UpBlock2.{last}.weight"].shape[0])
    mlp_in = int(state["FC.0.weight"].shape[1])
    c = 4 * ngf
    if mlp_in == c:
        light, size = True, 256
    else:
        side = math.isqrt(mlp_in // c) if mlp_in % c == 0 else 0
        if side * side * c != mlp_in:
            raise FormatMismatch(f"ugatit: FC.0 input width {mlp_in} fits neither light ({c}) nor full ((size/4)^2 x {c})")
        light, size = False, side * 4
    kwargs = dict(in_channels=in_ch, out_channels=out_ch, ngf=ngf, n_blocks=n_blocks, image_size=size, light=light)
    module = build_empty("ugatit", **kwargs)
    load_exact(module, state, f"ugatit {key}")
    return Imported(module, NAME, "style", 1, 1, "ugatit", kwargs,
                    contract={"input_range": [0.0, 1.0], "output_range": [0.0, 1.0], "channel_order": "rgb",
                              "reference_range": [-1.0, 1.0]},
                    input_size=None if light else size,
                    details={"variant": "light" if light else f"full ({size} px)", "generator": key,
                             "n_blocks": n_blocks})
