"""What every GAN recipe shares: the adversarial loss, the learning-rate policy of the pix2pix/CycleGAN
reference (held, then decayed linearly towards 0), the device settings (mixed precision and
channels-last on CUDA, plain float32 on CPU), and the L1 loss on the reference's [-1, 1] scale.

Used by the CycleGAN, pix2pix, U-GAT-IT and SRGAN recipes and by the attack methods.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterable, Literal

import torch
import torch.nn.functional as F
from torch import nn

GanLoss = Literal["vanilla", "lsgan"]


def gan_loss(kind: GanLoss, logits: torch.Tensor, real: bool) -> torch.Tensor:
    """The adversarial loss of `logits` against the label real (1) or fake (0), in float32:
    vanilla = binary cross-entropy on logits (pix2pix, SRGAN, U-GAT-IT's CAM heads), lsgan = mean
    squared error (CycleGAN, U-GAT-IT)."""
    target = torch.full_like(logits, float(real), dtype=torch.float32)
    if kind == "vanilla":
        return F.binary_cross_entropy_with_logits(logits.float(), target)
    if kind == "lsgan":
        return F.mse_loss(logits.float(), target)
    raise ValueError(f"unknown GAN loss {kind!r} (vanilla, lsgan)")


def linear_decay_factor(epoch: int, epochs: int, decay_epochs: int | None = None) -> float:
    """Learning-rate multiplier of 0-based `epoch`: 1 for the first `epochs - decay_epochs` epochs,
    then 1 - k / (decay_epochs + 1) in the k-th decay epoch (the reference 'linear' policy, which
    ends just above 0). decay_epochs defaults to half the epochs (100 + 100 in the reference)."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    decay = epochs // 2 if decay_epochs is None else decay_epochs
    if not 0 <= decay <= epochs:
        raise ValueError(f"decay_epochs must be between 0 and epochs ({epochs}), got {decay}")
    constant = epochs - decay
    return 1.0 - max(0, epoch + 1 - constant) / (decay + 1)


def l1_pm1(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 distance as the reference implementations compute it, on images mapped to [-1, 1]
    (twice the L1 of the [0, 1] images), so their loss weights (10, 100) carry over unchanged."""
    return 2.0 * F.l1_loss(output, target)


def set_requires_grad(modules: Iterable[nn.Module], flag: bool) -> None:
    """Freeze (False) or unfreeze the parameters of `modules` (saves the discriminators' weight
    gradients while the generators learn)."""
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(flag)


@dataclass
class Precision:
    """How a recipe runs on its device: float32 on CPU; on CUDA, autocast (bfloat16 where the GPU has
    it, else float16 with a gradient scaler) and channels-last tensors, both on unless turned off."""

    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False

    def __post_init__(self) -> None:
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype is torch.float16 else None

    @classmethod
    def for_device(cls, device: torch.device, amp: bool | None = None, channels_last: bool | None = None) -> "Precision":
        """amp / channels_last: None = on for CUDA, off otherwise. amp=True off CUDA is an error."""
        cuda = device.type == "cuda"
        amp = cuda if amp is None else amp
        if amp and not cuda:
            raise ValueError("mixed precision needs a CUDA device; CPU training runs in float32")
        dtype = None
        if amp:
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return cls(device, dtype, cuda if channels_last is None else channels_last)

    @property
    def memory_format(self) -> torch.memory_format:
        """channels_last or contiguous_format."""
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def module(self, module: nn.Module) -> nn.Module:
        """Move a network to the device (and layout), in training mode."""
        return module.to(self.device, memory_format=self.memory_format).train()

    def input(self, tensor: torch.Tensor) -> torch.Tensor:
        """Move a batch to the device (and layout)."""
        return tensor.to(self.device, non_blocking=True, memory_format=self.memory_format)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for forward passes (a no-op in float32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """loss.backward(), scaled when float16 needs it."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """optimizer.step() (skipped by the scaler on inf/NaN gradients)."""
        if self.scaler is not None:
            self.scaler.step(optimizer)
        else:
            optimizer.step()

    def end_step(self) -> None:
        """Call once per training step, after every optimizer stepped (updates the float16 scale)."""
        if self.scaler is not None:
            self.scaler.update()

    def state(self) -> dict[str, Any]:
        """JSON-able state: the float16 gradient scaler's, if any."""
        return {"grad_scaler": self.scaler.state_dict()} if self.scaler is not None else {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what `state` returned."""
        if self.scaler is not None and state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])

    def describe(self) -> dict[str, Any]:
        """For run metadata: the autocast dtype (or None) and the memory layout."""
        return {"amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else None,
                "channels_last": self.channels_last}


class LinearDecaySchedule:
    """The reference learning-rate policy applied to a recipe's optimizers at each epoch start;
    its position (base learning rates, epoch, factor) is part of the recipe's saved state."""

    def __init__(self, optimizers: dict[str, torch.optim.Optimizer], epochs: int, decay_epochs: int | None) -> None:
        self.optimizers = optimizers
        self.epochs, self.decay_epochs = epochs, decay_epochs
        linear_decay_factor(0, epochs, decay_epochs)  # validate now, not at the first epoch
        self.base_lr = {name: [g["lr"] for g in opt.param_groups] for name, opt in optimizers.items()}
        self.epoch, self.factor = 0, 1.0

    def begin_epoch(self, epoch: int) -> None:
        """Set every learning rate to base x linear_decay_factor(epoch)."""
        self.epoch, self.factor = epoch, linear_decay_factor(epoch, self.epochs, self.decay_epochs)
        for name, opt in self.optimizers.items():
            for group, base in zip(opt.param_groups, self.base_lr[name]):
                group["lr"] = base * self.factor

    def state(self) -> dict[str, Any]:
        """JSON-able position of the schedule."""
        return {"base_lr": self.base_lr, "epoch": self.epoch, "lr_factor": self.factor,
                "epochs": self.epochs, "decay_epochs": self.decay_epochs}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore the base rates and position of a saved run (a resume with another --lr keeps the run's)."""
        if "base_lr" in state:
            self.base_lr = {name: list(values) for name, values in state["base_lr"].items()}
            self.epoch, self.factor = state["epoch"], state["lr_factor"]
