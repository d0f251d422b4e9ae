"""What every format converter returns, and the errors that tell formats apart."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from imgsteal.errors import CheckpointError

FORMATS = ("cyclegan", "ugatit", "basicsr", "esrgan-old", "srgan-pytorch", "onnx", "torchscript")


class FormatMismatch(Exception):
    """This converter does not recognise the file; the message says what it looked for and missed."""


class DiscriminatorFileError(CheckpointError):
    """The file holds a discriminator, not a generator: there is nothing to serve."""


class ImportOptions(BaseModel):
    """How to read a public model file.

    input_range / output_range: the value range the raw network reads and writes, [lo, hi]
    (None: the format's reference convention); channel_order: rgb or bgr; scale: upscaling factor
    (checked against the weights for torch formats, probed for ONNX/TorchScript when None);
    direction: U-GAT-IT generator (a2b: genA2B, b2a: genB2A); train_mode: answer with batch
    statistics and dropout active (as the reference test scripts without --eval), default eval mode.
    """

    model_config = ConfigDict(extra="forbid")

    format: str = "auto"
    direction: Literal["a2b", "b2a"] = "a2b"
    scale: Optional[int] = Field(None, ge=1)
    input_range: Optional[tuple[float, float]] = None
    output_range: Optional[tuple[float, float]] = None
    channel_order: Optional[Literal["rgb", "bgr"]] = None
    kind: Optional[Literal["sr", "style"]] = None
    size_multiple: Optional[int] = Field(None, ge=1)
    input_size: Optional[int] = Field(None, ge=8, description="ONNX/TorchScript: square side the network needs (inputs resized to it and back)")
    train_mode: bool = False


@dataclass
class Imported:
    """A public network turned into a module that reads and writes images in [0, 1], RGB.

    arch/kwargs: the registered architecture that rebuilds it (None for ONNX/TorchScript, which keep
    their file); contract: what the raw network reads and writes (applied around it by the Translator).
    """

    module: nn.Module
    format: str
    kind: str
    scale: int
    size_multiple: int = 1
    arch: Optional[str] = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    contract: dict[str, Any] = field(default_factory=lambda: {"input_range": [0.0, 1.0], "output_range": [0.0, 1.0],
                                                              "channel_order": "rgb"})
    input_size: Optional[int] = None  # the network only takes this square size (full U-GAT-IT)
    details: dict[str, Any] = field(default_factory=dict)


def strip_prefixes(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Tensors only, without DataParallel's `module.` or torch.compile's `_orig_mod.` prefixes."""
    out = {}
    for key, value in state.items():
        if not torch.is_tensor(value):
            continue
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def tensor_dict(obj: Any, what: str) -> dict[str, torch.Tensor]:
    """`obj` as a flat {name: tensor} dict, or FormatMismatch saying why not."""
    if not isinstance(obj, dict):
        raise FormatMismatch(f"{what}: expected a dict of tensors, found {type(obj).__name__}")
    state = strip_prefixes(obj)
    if not state:
        raise FormatMismatch(f"{what}: no tensors at the top level (keys: {preview(obj)})")
    return state


def preview(keys: Any, n: int = 6) -> str:
    keys = list(keys)
    shown = ", ".join(map(str, keys[:n]))
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def build_empty(arch: str, **kwargs: Any) -> nn.Module:
    """The registered architecture with weights on the meta device (no random init: load_exact fills it)."""
    from imgsteal.models import build_model

    with torch.device("meta"):
        return build_model(arch, **kwargs)


def load_exact(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load `state` into `module` (built by build_empty) exactly: FormatMismatch naming the keys that differ."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {preview(missing, 4)}")
        if unexpected:
            parts.append(f"unexpected {preview(unexpected, 4)}")
        if wrong:
            parts.append(f"wrong shape {preview(wrong, 3)}")
        raise FormatMismatch(f"{what}: the weights do not fit the architecture: " + "; ".join(parts))
    seen: set[int] = set()
    owned = {}
    for key, value in state.items():
        value = value.detach().to(expected[key].dtype).contiguous()
        if value.data_ptr() in seen:  # a tensor shared by two entries: each parameter gets its own
            value = value.clone()
        seen.add(value.data_ptr())
        owned[key] = value
    module.load_state_dict(owned, assign=True)
    for p in module.parameters():
        p.requires_grad_(True)


def count_indices(state: dict[str, torch.Tensor], prefix: str) -> int:
    """How many consecutive `prefix<N>.` groups (N = 0, 1, ...) the keys hold."""
    found = {int(k[len(prefix):].split(".")[0]) for k in state if k.startswith(prefix) and k[len(prefix):].split(".")[0].isdigit()}
    n = 0
    while n in found:
        n += 1
    return n
