"""Pixel-loss training of a generator on (input, target) pairs: SRResNet surrogates, SRGAN pre-training."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn


def pixel_loss(kind: Literal["l1", "mse"], output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(output, target) if kind == "l1" else F.mse_loss(output, target)


class CosineSchedule:
    """Per-step cosine decay of every learning rate of `optimizers`: base x (1 + cos(pi t / T)) / 2 at
    step t of T (base at the first step, 0 after the last). Its position is part of the recipe state."""

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer], total_steps: int) -> None:
        if total_steps < 1:
            raise ValueError(f"total_steps must be >= 1, got {total_steps}")
        self.optimizers, self.total = optimizers, total_steps
        self.base_lr = {name: [g["lr"] for g in opt.param_groups] for name, opt in optimizers.items()}
        self.step = 0

    def factor(self, step: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(step, self.total) / self.total))

    def before_step(self) -> None:
        """Set the learning rates of the coming step, then advance."""
        f = self.factor(self.step)
        for name, opt in self.optimizers.items():
            for group, base in zip(opt.param_groups, self.base_lr[name]):
                group["lr"] = base * f
        self.step += 1

    def state(self) -> dict[str, Any]:
        return {"base_lr": self.base_lr, "step": self.step, "total": self.total}

    def load_state(self, state: dict[str, Any]) -> None:
        if "base_lr" in state:
            self.base_lr = {name: list(values) for name, values in state["base_lr"].items()}
            self.step = int(state["step"])


class PixelRecipe:
    """Minimise a pixel loss between generator(input) and target (Adam). SRResNet uses MSE.

    decay_steps: None keeps `lr` constant (the paper's recipes); a number anneals it to 0 over that many
    steps (CosineSchedule) - short runs at a high rate otherwise stop wherever the rate leaves them (a small
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
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.generator = generator.to(device, memory_format=self.memory_format).train()
        self.modules = {"generator": self.generator}
        self.optimizers = {"generator": torch.optim.Adam(self.generator.parameters(), lr=lr, betas=(0.9, 0.999))}
        self.schedule = CosineSchedule(self.optimizers, decay_steps) if decay_steps else None

    def begin_epoch(self, epoch: int) -> None:
        pass

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        x, y = (t.to(self.device, non_blocking=True, memory_format=self.memory_format) for t in batch)
        optimizer = self.optimizers["generator"]
        if self.schedule is not None:
            self.schedule.before_step()
        optimizer.zero_grad(set_to_none=True)
        loss = pixel_loss(self.loss, self.generator(x), y)
        loss.backward()
        optimizer.step()
        return {"pixel": loss.item()}

    def state(self) -> dict[str, Any]:
        return {"schedule": self.schedule.state()} if self.schedule is not None else {}

    def load_state(self, state: dict[str, Any]) -> None:
        if self.schedule is not None:
            self.schedule.load_state(state.get("schedule", {}))
