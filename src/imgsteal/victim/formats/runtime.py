"""Networks that keep their own file: ONNX (onnxruntime, the `imgsteal[onnx]` extra) and TorchScript.

Their contract (input/output value range, channel order, scale, fixed input size) is declared on
import; `ContractModule` applies it around any network so the rest of imgsteal sees [0, 1] RGB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from imgsteal.errors import CheckpointError


class ContractModule(nn.Module):
    """[0, 1] RGB in -> the wrapped network's convention -> [0, 1] RGB out.

    input_range/output_range: [lo, hi] the raw network reads/writes; channel_order: rgb or bgr.
    """

    def __init__(self, inner: nn.Module, input_range=(0.0, 1.0), output_range=(0.0, 1.0), channel_order: str = "rgb") -> None:
        super().__init__()
        self.inner = inner
        self.input_range = tuple(float(v) for v in input_range)
        self.output_range = tuple(float(v) for v in output_range)
        self.bgr = channel_order == "bgr"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.input_range
        y = x.flip(1) if self.bgr else x
        y = self.inner(y * (hi - lo) + lo)
        lo, hi = self.output_range
        y = (y - lo) / (hi - lo)
        return y.flip(1) if self.bgr else y


class OnnxModule(nn.Module):
    """An ONNX model run by onnxruntime (CUDA provider when the device is CUDA and it is installed).
    Models exported with batch size 1 are run image by image."""

    def __init__(self, path: str | Path, device: Optional[torch.device] = None) -> None:
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError:
            raise CheckpointError("ONNX models need onnxruntime: pip install 'imgsteal[onnx]'") from None
        providers = ["CPUExecutionProvider"]
        if device is not None and device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise CheckpointError(f"{path}: onnxruntime cannot load it ({exc})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise CheckpointError(f"{path}: the ONNX model takes {len(inputs)} inputs; an image model takes one")
        self.input_name = inputs[0].name
        self.input_shape = list(inputs[0].shape)
        if len(self.input_shape) != 4:
            raise CheckpointError(f"{path}: ONNX input {self.input_name} has shape {self.input_shape}, not N x C x H x W")
        self.batch_one = self.input_shape[0] == 1
        self.register_buffer("_device_probe", torch.zeros(0), persistent=False)

    def fixed_size(self) -> Optional[tuple[int, int]]:
        h, w = self.input_shape[2], self.input_shape[3]
        return (h, w) if isinstance(h, int) and isinstance(w, int) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arrays = [x[i: i + 1] for i in range(x.shape[0])] if self.batch_one else [x]
        outs = [torch.from_numpy(self.session.run(None, {self.input_name: a.detach().float().cpu().numpy()})[0])
                for a in arrays]
        return torch.cat(outs, 0).to(x.device)


def load_torchscript(path: str | Path) -> nn.Module:
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated but TorchScript files exist
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch.jit raises RuntimeError subclasses with long messages
        raise CheckpointError(f"{path}: not a loadable TorchScript model ({str(exc).splitlines()[0]})") from None


def load_runtime(kind: str, path: str | Path, device: Optional[torch.device] = None) -> nn.Module:
    if kind == "onnx":
        return OnnxModule(path, device)
    if kind == "torchscript":
        return load_torchscript(path)
    raise CheckpointError(f"unknown runtime {kind!r}")


def probe_scale(module: nn.Module, size: Optional[tuple[int, int]], channels: int = 3) -> int:
    """Output side / input side on a mid-grey probe image (32 x 32 unless the model fixes the size)."""
    h, w = size or (32, 32)
    with torch.inference_mode():
        y = module(torch.full((1, channels, h, w), 0.5))
    if y.dim() != 4 or y.shape[1] != channels:
        raise CheckpointError(f"the model answers a 1 x {channels} x {h} x {w} probe with shape {tuple(y.shape)}, "
                              f"not 1 x {channels} x H x W")
    scale, rem = divmod(int(y.shape[-2]), h)
    if rem or scale < 1 or y.shape[-1] != w * scale:
        raise CheckpointError(f"the model maps {h} x {w} to {y.shape[-2]} x {y.shape[-1]}: not an integer scale; "
                              "give --scale and --input-size if it needs a fixed size")
    return scale


def contract_of(options: Any, default_range=(0.0, 1.0)) -> dict:
    in_range = list(options.input_range or default_range)
    out_range = list(options.output_range or in_range)
    for name, (lo, hi) in (("input", in_range), ("output", out_range)):
        if not hi > lo:
            raise CheckpointError(f"--{name}-range {lo},{hi}: the upper bound must exceed the lower one")
    return {"input_range": in_range, "output_range": out_range, "channel_order": options.channel_order or "rgb"}


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
