"""Pixel-loss training of a generator on (input, target) pairs: SRResNet surrogates, SRGAN pre-training."""

from __future__ import annotations

from typing import Any, Literal

import math

import torch
import torch.nn.functional as F
from torch import nn


def pixel_loss(kind: Literal["l1", "mse"], output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(output, target) if kind == "l1" else F.mse_loss(output, target)


class PixelRecipe:
    """Minimise a pixel loss between generator(input) and target (Adam). SRResNet uses MSE.

    decay_steps: None keeps `lr` constant (the paper's recipes); a number anneals it to 0 over that many
    steps on a cosine - short runs at a high rate otherwise stop wherever the rate leaves them (a small
    SRResNet after 1,200 steps at 2e-3: 28.8 dB from its targets constant, 33.6 dB annealed).
    """

    export_module = "generator"

    def __init__(
        self,
        generator: nn.Module,
        device: torch.device,
        lr: float = 1e-4,
        loss: Literal["l1", "mse"] = "mse",
        channels_last: bool = False,
        decay_steps: int | None = None,
    ) -> None:
        self.device = device
        self.loss = loss
        self.lr, self.decay_steps = lr, decay_steps
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.generator = generator.to(device, memory_format=self.memory_format).train()
        self.modules = {"generator": self.generator}
        self.optimizers = {"generator": torch.optim.Adam(self.generator.parameters(), lr=lr, betas=(0.9, 0.999))}

    def begin_epoch(self, epoch: int) -> None:
        pass

    def begin_step(self, step: int) -> None:
        if self.decay_steps:  # from the step alone, so a resumed run anneals exactly as an unbroken one
            lr = self.lr * 0.5 * (1 + math.cos(math.pi * min(step, self.decay_steps) / self.decay_steps))
            for group in self.optimizers["generator"].param_groups:
                group["lr"] = lr

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        x, y = (t.to(self.device, non_blocking=True, memory_format=self.memory_format) for t in batch)
        optimizer = self.optimizers["generator"]
        optimizer.zero_grad(set_to_none=True)
        loss = pixel_loss(self.loss, self.generator(x), y)
        loss.backward()
        optimizer.step()
        return {"pixel": loss.item()}

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass
