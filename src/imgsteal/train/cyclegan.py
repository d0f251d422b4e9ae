"""CycleGAN training (Zhu et al. 2017): the unpaired style-transfer victim (photo -> painting).

Two generators (G: A -> B, exported as F_V; F: B -> A), two 70x70 PatchGAN discriminators (D_B judges
domain-B images, D_A domain-A images), LSGAN loss, cycle-consistency weight 10 per direction,
identity weight 0.5 x 10, image pools of 50 fakes, Adam 2e-4 with beta1 0.5, and the learning rate
held for the first epochs, then decayed linearly towards 0 (`linear_decay_factor`).

What it shares with the other GAN recipes (the loss, the learning-rate policy, the device settings)
lives in imgsteal.train.gan.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

from imgsteal.train.gan import LinearDecaySchedule, Precision, gan_loss, l1_pm1, set_requires_grad
from imgsteal.train.image_pool import ImagePool

class CycleGANRecipe:
    """One CycleGAN step per batch (real_a N x 3 x s x s, real_b N x 3 x s x s, in [0, 1]).

    Generators step first (adversarial + cycle + identity, discriminators frozen), then the
    discriminators (LSGAN, halved, on real images and on pool-drawn fakes). Modules saved in
    checkpoints: generator (A -> B, exported), generator_ba, discriminator_a, discriminator_b and the
    two image pools. train_step returns detached loss tensors (no device sync per step).
    """

    export_module = "generator"

    def __init__(
        self,
        generator_ab: nn.Module,
        generator_ba: nn.Module,
        discriminator_a: nn.Module,
        discriminator_b: nn.Module,
        device: torch.device,
        *,
        epochs: int,
        decay_epochs: int | None = None,
        lr: float = 2e-4,
        beta1: float = 0.5,
        lambda_cycle: float = 10.0,
        lambda_identity: float = 0.5,
        pool_size: int = 50,
        amp: bool | None = None,
        channels_last: bool | None = None,
    ) -> None:
        self.precision = Precision.for_device(device, amp, channels_last)
        self.lambda_cycle, self.lambda_identity = lambda_cycle, lambda_identity
        p = self.precision
        self.g_ab, self.g_ba = p.module(generator_ab), p.module(generator_ba)
        self.d_a, self.d_b = p.module(discriminator_a), p.module(discriminator_b)
        self.pool_a, self.pool_b = ImagePool(pool_size).to(device), ImagePool(pool_size).to(device)
        self.modules = {"generator": self.g_ab, "generator_ba": self.g_ba, "discriminator_a": self.d_a,
                        "discriminator_b": self.d_b, "pool_a": self.pool_a, "pool_b": self.pool_b}
        betas = (beta1, 0.999)
        self.optimizers = {
            "generators": torch.optim.Adam(itertools.chain(self.g_ab.parameters(), self.g_ba.parameters()), lr=lr, betas=betas),
            "discriminators": torch.optim.Adam(itertools.chain(self.d_a.parameters(), self.d_b.parameters()), lr=lr, betas=betas),
        }
        self.schedule = LinearDecaySchedule(self.optimizers, epochs, decay_epochs)

    def begin_epoch(self, epoch: int) -> None:
        self.schedule.begin_epoch(epoch)

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One generator step and one discriminator step; returns the losses."""
        p = self.precision
        real_a, real_b = (p.input(t) for t in batch)
        opt_g, opt_d = self.optimizers["generators"], self.optimizers["discriminators"]

        # Generators: fool both discriminators, reconstruct through the cycle, leave own-domain images alone.
        set_requires_grad((self.d_a, self.d_b), False)
        opt_g.zero_grad(set_to_none=True)
        with p.autocast():
            fake_b = self.g_ab(real_a)
            fake_a = self.g_ba(real_b)
            cycle = l1_pm1(self.g_ba(fake_b), real_a) + l1_pm1(self.g_ab(fake_a), real_b)
            adversarial = gan_loss("lsgan", self.d_b(fake_b), True) + gan_loss("lsgan", self.d_a(fake_a), True)
            loss_g = adversarial + self.lambda_cycle * cycle
            identity = torch.zeros((), device=real_a.device)
            if self.lambda_identity > 0:
                identity = l1_pm1(self.g_ab(real_b), real_b) + l1_pm1(self.g_ba(real_a), real_a)
                loss_g = loss_g + self.lambda_cycle * self.lambda_identity * identity
        p.backward(loss_g)
        p.step(opt_g)

        # Discriminators: real vs a mix of new and past fakes.
        set_requires_grad((self.d_a, self.d_b), True)
        opt_d.zero_grad(set_to_none=True)
        pooled_b = p.input(self.pool_b.query(fake_b))
        pooled_a = p.input(self.pool_a.query(fake_a))
        with p.autocast():
            loss_d_b = 0.5 * (gan_loss("lsgan", self.d_b(real_b), True) + gan_loss("lsgan", self.d_b(pooled_b), False))
            loss_d_a = 0.5 * (gan_loss("lsgan", self.d_a(real_a), True) + gan_loss("lsgan", self.d_a(pooled_a), False))
            loss_d = loss_d_a + loss_d_b
        p.backward(loss_d)
        p.step(opt_d)
        p.end_step()
        return {"g_adv": adversarial.detach(), "cycle": cycle.detach(), "identity": identity.detach(),
                "d": loss_d.detach()}

    def state(self) -> dict[str, Any]:
        return {"schedule": self.schedule.state(), **self.precision.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.schedule.load_state(state.get("schedule", {}))
        self.precision.load_state(state)
