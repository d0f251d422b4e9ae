"""U-GAT-IT training (Kim et al. 2020): the unpaired Selfie-to-Anime victim.

Two generators (A -> B exported as F_V, B -> A) with CAM attention and AdaLIN, and per domain a global
and a local CAM discriminator. Losses as the reference: LSGAN on the discriminators' logit maps and
on their CAM logits (weight 1), cycle L1 (10), identity L1 (10), and the generators' CAM loss (BCE,
1000): an image from the other domain must be recognised as such, one from the own domain not.
Adam 1e-4, betas (0.5, 0.999), weight decay 1e-4; learning rate constant for the first half of the
epochs, then linearly decayed; every AdaLIN/LIN rho is clipped to [0, 1] after each generator step.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

from imgsteal.train.gan import LinearDecaySchedule, Precision, gan_loss, l1_pm1, set_requires_grad


class UGATITRecipe:
    """One U-GAT-IT step per batch (real_a, real_b: N x 3 x s x s in [0, 1]): discriminators, then
    generators. Modules saved: generator (A -> B, exported), generator_ba, and the discriminators
    disc_global_a/b, disc_local_a/b. train_step returns detached loss tensors."""

    export_module = "generator"

    def __init__(
        self,
        generator_ab: nn.Module,
        generator_ba: nn.Module,
        disc_global_a: nn.Module,
        disc_global_b: nn.Module,
        disc_local_a: nn.Module,
        disc_local_b: nn.Module,
        device: torch.device,
        *,
        epochs: int,
        decay_epochs: int | None = None,
        lr: float = 1e-4,
        weight_decay: float = 1e-4,
        adv_weight: float = 1.0,
        cycle_weight: float = 10.0,
        identity_weight: float = 10.0,
        cam_weight: float = 1000.0,
        amp: bool | None = None,
        channels_last: bool | None = None,
    ) -> None:
        self.precision = p = Precision.for_device(device, amp, channels_last)
        self.weights = {"adv": adv_weight, "cycle": cycle_weight, "identity": identity_weight, "cam": cam_weight}
        self.g_ab, self.g_ba = p.module(generator_ab), p.module(generator_ba)
        self.discs = {
            "a": (p.module(disc_global_a), p.module(disc_local_a)),
            "b": (p.module(disc_global_b), p.module(disc_local_b)),
        }
        self.modules = {"generator": self.g_ab, "generator_ba": self.g_ba,
                        "disc_global_a": disc_global_a, "disc_global_b": disc_global_b,
                        "disc_local_a": disc_local_a, "disc_local_b": disc_local_b}
        all_discs = [d for pair in self.discs.values() for d in pair]
        opt = dict(lr=lr, betas=(0.5, 0.999), weight_decay=weight_decay)
        self.optimizers = {
            "generators": torch.optim.Adam(itertools.chain(self.g_ab.parameters(), self.g_ba.parameters()), **opt),
            "discriminators": torch.optim.Adam(itertools.chain(*(d.parameters() for d in all_discs)), **opt),
        }
        self.schedule = LinearDecaySchedule(self.optimizers, epochs, decay_epochs)

    def begin_epoch(self, epoch: int) -> None:
        self.schedule.begin_epoch(epoch)

    def _disc_terms(self, domain: str, image: torch.Tensor, real: bool) -> torch.Tensor:
        """LSGAN on the logit maps and CAM logits of the domain's global and local discriminators."""
        total = torch.zeros((), device=image.device)
        for disc in self.discs[domain]:
            out = disc(image)
            total = total + gan_loss("lsgan", out.output, real) + gan_loss("lsgan", out.cam_logit, real)
        return total

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One discriminator step and one generator step (then rho clipping); returns the losses."""
        p, w = self.precision, self.weights
        real_a, real_b = (p.input(t) for t in batch)
        opt_g, opt_d = self.optimizers["generators"], self.optimizers["discriminators"]
        discs = [d for pair in self.discs.values() for d in pair]

        # Discriminators on real images and on fresh translations (no generator graph needed).
        opt_d.zero_grad(set_to_none=True)
        with torch.no_grad(), p.autocast():
            fake_b, fake_a = self.g_ab(real_a), self.g_ba(real_b)
        with p.autocast():
            loss_d = w["adv"] * (
                self._disc_terms("a", real_a, True) + self._disc_terms("a", fake_a, False)
                + self._disc_terms("b", real_b, True) + self._disc_terms("b", fake_b, False)
            )
        p.backward(loss_d)
        p.step(opt_d)

        # Generators.
        set_requires_grad(discs, False)
        opt_g.zero_grad(set_to_none=True)
        with p.autocast():
            fake_b, cam_ab, _ = self.g_ab.forward_with_cam(real_a)
            fake_a, cam_ba, _ = self.g_ba.forward_with_cam(real_b)
            cycle = l1_pm1(self.g_ba(fake_b), real_a) + l1_pm1(self.g_ab(fake_a), real_b)
            same_a, cam_aa, _ = self.g_ba.forward_with_cam(real_a)
            same_b, cam_bb, _ = self.g_ab.forward_with_cam(real_b)
            identity = l1_pm1(same_a, real_a) + l1_pm1(same_b, real_b)
            # The A -> B generator must flag A images as foreign and B images as its own (and vice versa).
            cam = gan_loss("vanilla", cam_ab, True) + gan_loss("vanilla", cam_bb, False) + gan_loss("vanilla", cam_ba, True) + gan_loss("vanilla", cam_aa, False)
            adversarial = self._disc_terms("b", fake_b, True) + self._disc_terms("a", fake_a, True)
            loss_g = (w["adv"] * adversarial + w["cycle"] * cycle + w["identity"] * identity + w["cam"] * cam)
        p.backward(loss_g)
        p.step(opt_g)
        set_requires_grad(discs, True)
        p.end_step()
        self.g_ab.clip_rho(0.0, 1.0)
        self.g_ba.clip_rho(0.0, 1.0)
        return {"g_adv": adversarial.detach(), "cycle": cycle.detach(), "identity": identity.detach(),
                "cam": cam.detach(), "d": loss_d.detach()}

    def state(self) -> dict[str, Any]:
        return {"schedule": self.schedule.state(), **self.precision.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.schedule.load_state(state.get("schedule", {}))
        self.precision.load_state(state)
