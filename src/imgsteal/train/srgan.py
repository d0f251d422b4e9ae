"""SRGAN training (Ledig et al. 2017): pixel-loss pre-training, then generator vs VGG-style discriminator.

Generator loss in the adversarial phase: content + adv_weight * BCE(D(G(x)), real), where content is
the VGG19 relu5_4 feature MSE (scaled as in the paper) or, offline, the pixel MSE.

Schedule: the phase switch comes after `pretrain_epochs` epochs or, when `pretrain_steps` is set,
after exactly that many steps (Ledig et al.: 10^6 MSE steps at 1e-4). In the adversarial phase the
learning rate is multiplied by `lr_gamma` at each of `gan_lr_milestones`, counted in steps from
the start of that phase (Ledig et al.: 10^5 steps at 1e-4, then 10^5 at 1e-5: milestones [100000],
gamma 0.1). The pre-training phase runs at `lr` throughout.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from imgsteal.models.vgg import VGGFeatures
from imgsteal.train.gan import gan_loss

VGG_SCALE = 1 / 12.75  # SRGAN rescales VGG features so the loss is comparable to the pixel MSE


class SRGANRecipe:
    export_module = "generator"

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        device: torch.device,
        pretrain_epochs: int = 0,
        content_loss: Literal["vgg", "pixel"] = "vgg",
        vgg_weights: str | None = None,
        lr: float = 1e-4,
        adv_weight: float = 1e-3,
        *,
        pretrain_steps: int | None = None,
        gan_lr_milestones: Sequence[int] = (),
        lr_gamma: float = 0.1,
    ) -> None:
        if pretrain_steps is not None and pretrain_steps < 0:
            raise ValueError(f"pretrain_steps must be >= 0, got {pretrain_steps}")
        if any(m < 1 for m in gan_lr_milestones) or list(gan_lr_milestones) != sorted(gan_lr_milestones):
            raise ValueError(f"gan_lr_milestones must be increasing step counts >= 1, got {list(gan_lr_milestones)}")
        self.device = device
        self.pretrain_epochs = pretrain_epochs
        self.pretrain_steps = pretrain_steps
        self.lr = lr
        self.gan_lr_milestones = tuple(int(m) for m in gan_lr_milestones)
        self.lr_gamma = lr_gamma
        self.gan_start: int | None = None  # global step at which the adversarial phase began
        self.adv_weight = adv_weight
        self.content_loss = content_loss
        # Loaded up front: a missing VGG19 must stop the run before any training, not at the phase switch.
        self.vgg = VGGFeatures(vgg_weights).to(device) if content_loss == "vgg" else None
        self.generator = generator.to(device).train()
        self.discriminator = discriminator.to(device).train()
        self.modules = {"generator": self.generator, "discriminator": self.discriminator}
        self.optimizers = {
            "generator": torch.optim.Adam(self.generator.parameters(), lr=lr, betas=(0.9, 0.999)),
            "discriminator": torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=(0.9, 0.999)),
        }
        self.adversarial = False

    def begin_epoch(self, epoch: int) -> None:
        if self.pretrain_steps is None:
            self.adversarial = epoch >= self.pretrain_epochs

    def current_lr(self, step: int) -> float:
        """Learning rate of both optimizers for 0-based global `step` (after begin_step(step))."""
        if not self.adversarial or self.gan_start is None:
            return self.lr
        into_gan = step - self.gan_start
        return self.lr * self.lr_gamma ** sum(into_gan >= m for m in self.gan_lr_milestones)

    def begin_step(self, step: int) -> None:
        """Phase switch (step-based schedules) and the adversarial phase's learning-rate milestones."""
        if self.pretrain_steps is not None:
            self.adversarial = step >= self.pretrain_steps
        if self.adversarial and self.gan_start is None:
            self.gan_start = step
        lr = self.current_lr(step)
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = lr

    def _content(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        if self.vgg is None:
            return F.mse_loss(fake, real)
        return F.mse_loss(self.vgg(fake) * VGG_SCALE, self.vgg(real).detach() * VGG_SCALE)

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        lr, hr = (t.to(self.device, non_blocking=True) for t in batch)
        opt_g, opt_d = self.optimizers["generator"], self.optimizers["discriminator"]
        if not self.adversarial:
            opt_g.zero_grad(set_to_none=True)
            loss = F.mse_loss(self.generator(lr), hr)
            loss.backward()
            opt_g.step()
            return {"pixel": loss.item()}

        fake = self.generator(lr)
        # Discriminator: real HR vs generated (detached).
        opt_d.zero_grad(set_to_none=True)
        real_logits = self.discriminator(hr)
        fake_logits = self.discriminator(fake.detach().clamp(0, 1))
        loss_d = gan_loss("vanilla", real_logits, True) + gan_loss("vanilla", fake_logits, False)
        loss_d.backward()
        opt_d.step()
        # Generator: content + adversarial.
        opt_g.zero_grad(set_to_none=True)
        gen_logits = self.discriminator(fake.clamp(0, 1))
        content = self._content(fake, hr)
        adv = gan_loss("vanilla", gen_logits, True)
        loss_g = content + self.adv_weight * adv
        loss_g.backward()
        opt_g.step()
        return {"content": content.item(), "adv": adv.item(), "d": loss_d.item()}

    def state(self) -> dict[str, Any]:
        return {"gan_start": self.gan_start}

    def load_state(self, state: dict[str, Any]) -> None:
        self.gan_start = state.get("gan_start")
