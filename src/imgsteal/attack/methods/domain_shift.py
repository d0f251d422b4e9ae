"""The domain-shift recipe (after Mi et al., AAAI 2024, "Towards Model Extraction Attacks in GAN-Based
Image Translation via Domain Shift Mitigation").

The adversary's queries come from another distribution than the victim's training data; instead of
closing that gap, Mi et al. make the surrogate less sensitive to it:
- a wavelet regulariser: L1 between the high-frequency sub-bands of a 2-level Daubechies-3 DWT of
  F_A(x) and F_V(x), weight 0.15, added to the surrogate's loss (see wavelet.py);
- sharpness-aware minimisation (rho 0.05) on the discriminator, for flatter minima (see sam.py);
- cosine learning-rate decay (here per step, to 0 at the last step).

Two recipes: `DomainShiftPix2PixRecipe` (style: pix2pix with SAM on the PatchGAN) and
`DomainShiftPixelRecipe` (super-resolution: the paper's pixel-loss SRResNet/EDSR surrogate has no
discriminator, so SAM goes on the generator, or off with sam_rho = 0; docs/attacks.md says why).
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import torch
from torch import nn

from imgsteal.attack.methods.sam import SharpnessAwareMinimization
from imgsteal.attack.methods.wavelet import WaveletHighFrequencyLoss
from imgsteal.train.paired import CosineSchedule, pixel_loss
from imgsteal.train.pix2pix import Pix2PixRecipe

WAVELET_WEIGHT = 0.15
SAM_RHO = 0.05


class DomainShiftPixelRecipe:
    """Super-resolution: pixel loss (MSE, as the paper's recipe) + wavelet_weight x wavelet loss, Adam,
    cosine decay over total_steps, SAM with radius sam_rho on the generator (0 = plain steps).
    Images in [0, 1]; the wavelet term is on that scale. train_step returns detached loss tensors."""

    export_module = "generator"

    def __init__(self, generator: nn.Module, device: torch.device, *, total_steps: int, lr: float = 1e-4,
                 loss: Literal["l1", "mse"] = "mse", wavelet_weight: float = WAVELET_WEIGHT,
                 sam_rho: float = SAM_RHO) -> None:
        self.device, self.loss, self.wavelet_weight = device, loss, wavelet_weight
        self.generator = generator.to(device).train()
        self.modules = {"generator": self.generator}
        self.optimizers = {"generator": torch.optim.Adam(self.generator.parameters(), lr=lr, betas=(0.9, 0.999))}
        self.schedule = CosineSchedule(self.optimizers, total_steps)
        self.wavelet = WaveletHighFrequencyLoss()
        self.sam = SharpnessAwareMinimization(self.generator.parameters(), sam_rho) if sam_rho > 0 else None

    def begin_epoch(self, epoch: int) -> None:
        pass

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, y = (t.to(self.device, non_blocking=True) for t in batch)
        optimizer = self.optimizers["generator"]
        self.schedule.before_step()
        parts: dict[str, torch.Tensor] = {}

        def closure() -> torch.Tensor:
            out = self.generator(x)
            pixel = pixel_loss(self.loss, out, y)
            wavelet = self.wavelet(out, y) if self.wavelet_weight else out.new_zeros(())
            parts.setdefault("pixel", pixel.detach())
            parts.setdefault("wavelet", wavelet.detach())
            return pixel + self.wavelet_weight * wavelet

        if self.sam is not None:
            self.sam.step(optimizer, closure, module=self.generator)
        else:
            optimizer.zero_grad(set_to_none=True)
            closure().backward()
            optimizer.step()
        return parts

    def state(self) -> dict[str, Any]:
        return {"schedule": self.schedule.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.schedule.load_state(state.get("schedule", {}))


class DomainShiftPix2PixRecipe(Pix2PixRecipe):
    """Style: the pix2pix step (see train.pix2pix) with the discriminator updated by SAM (radius
    sam_rho; 0 = plain), wavelet_weight x wavelet loss added to the generator's loss, and per-step
    cosine decay of both learning rates over total_steps instead of pix2pix's linear decay."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, device: torch.device, *, total_steps: int,
                 wavelet_weight: float = WAVELET_WEIGHT, sam_rho: float = SAM_RHO, **pix2pix: Any) -> None:
        super().__init__(generator, discriminator, device, epochs=1, **pix2pix)
        self.wavelet_weight = wavelet_weight
        self.schedule = CosineSchedule(self.optimizers, total_steps)
        self.wavelet = WaveletHighFrequencyLoss()
        self.sam = SharpnessAwareMinimization(self.discriminator.parameters(), sam_rho) if sam_rho > 0 else None

    def begin_epoch(self, epoch: int) -> None:
        pass  # the schedule is per step

    def before_step(self) -> None:
        self.schedule.before_step()

    def update_discriminator(self, d_loss: Callable[[], torch.Tensor]) -> torch.Tensor:
        if self.sam is None:
            return super().update_discriminator(d_loss)
        p = self.precision
        return self.sam.step(self.optimizers["discriminator"], d_loss, backward=p.backward, apply=p.step,
                             module=self.discriminator)

    def generator_terms(self, fake: torch.Tensor, y: torch.Tensor) -> dict[str, tuple[float, torch.Tensor]]:
        wavelet = self.wavelet(fake, y) if self.wavelet_weight else fake.new_zeros(())
        return {"wavelet": (self.wavelet_weight, wavelet)}

    def state(self) -> dict[str, Any]:
        return {"schedule": self.schedule.state(), **self.precision.state()}
