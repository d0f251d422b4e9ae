"""The victim's trained model as a service would run it: images in, images out.

`Translator` is the only thing the server and the local oracle need from a checkpoint. It knows the
task (`sr` or `style`), the scale, and the size rule of its network, and pads inputs to fit it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from imgsteal.device import pick_device
from imgsteal.errors import CheckpointError
from imgsteal.train.checkpoint import Checkpoint, load_checkpoint


@dataclass
class Translator:
    """Wraps a generator: `translate(3 x H x W in [0,1]) -> 3 x sH x sW in [0,1]`."""

    generator: nn.Module
    task: str
    scale: int = 1
    size_multiple: int = 1  # inputs are reflect-padded to this multiple, outputs cropped back
    device: torch.device = torch.device("cpu")

    def __post_init__(self) -> None:
        self.generator = self.generator.to(self.device).eval()

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """N x 3 x H x W in [0, 1] -> N x 3 x (scale H) x (scale W) in [0, 1]."""
        if batch.dim() != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected N x 3 x H x W, got {tuple(batch.shape)}")
        h, w = batch.shape[-2:]
        m = self.size_multiple
        pad_h, pad_w = (-h) % m, (-w) % m
        x = batch.to(self.device, torch.float32)
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        y = self.generator(x).clamp(0, 1)
        return y[..., : h * self.scale, : w * self.scale].cpu()

    def translate(self, image: torch.Tensor) -> torch.Tensor:
        return self(image.unsqueeze(0))[0]

    def info(self) -> dict:
        return {"task": self.task, "scale": self.scale}


def translator_from_checkpoint(ckpt: Checkpoint, device: torch.device) -> Translator:
    meta = ckpt.meta
    name = meta.get("export", "generator")
    if "task" not in meta:
        raise CheckpointError(f"{ckpt.path}: checkpoint does not record a task; is it a victim or surrogate model?")
    return Translator(
        generator=ckpt.build_module(name),
        task=meta["task"],
        scale=int(meta.get("scale", 1)),
        size_multiple=int(meta.get("size_multiple", 1)),
        device=device,
    )


def load_translator(path: str | Path, device: str | torch.device | None = None) -> Translator:
    """Load a trained model (model.safetensors, a run folder, or a training checkpoint) as a Translator."""
    device = device if isinstance(device, torch.device) else pick_device(device)
    return translator_from_checkpoint(load_checkpoint(path), device)
