"""pix2pix training (Isola et al. 2017): the style-transfer surrogate F_A on harvested pairs.

UNet generator with skip connections (depth log2(size): 8 down-samplings at 256 px), batch norm and
decoder dropout; a 70x70 PatchGAN that judges (input, output) pairs; vanilla GAN (BCE) loss plus
lambda_L1 = 100 times the L1 distance to the victim's answer; Adam with beta1 0.5; learning rate
constant for the first half of the epochs, then linearly decayed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import nn

from imgsteal.errors import ImgstealError
from imgsteal.train.gan import LinearDecaySchedule, Precision, gan_loss, l1_pm1, set_requires_grad

if TYPE_CHECKING:
    from imgsteal.attack.surrogate import SurrogateConfig


class Pix2PixRecipe:
    """One pix2pix step per batch (x: N x 3 x s x s query, y: N x 3 x s x s victim answer, in [0, 1]):
    discriminator (real pair vs generated pair, halved), then generator (fool D + lambda_l1 * L1).
    Modules saved: generator (exported) and discriminator. train_step returns detached loss tensors."""

    export_module = "generator"

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        device: torch.device,
        *,
        epochs: int,
        decay_epochs: int | None = None,
        lr: float = 2e-4,
        beta1: float = 0.5,
        lambda_l1: float = 100.0,
        amp: bool | None = None,
        channels_last: bool | None = None,
    ) -> None:
        self.precision = p = Precision.for_device(device, amp, channels_last)
        self.lambda_l1 = lambda_l1
        self.generator, self.discriminator = p.module(generator), p.module(discriminator)
        self.modules = {"generator": self.generator, "discriminator": self.discriminator}
        betas = (beta1, 0.999)
        self.optimizers = {
            "generator": torch.optim.Adam(self.generator.parameters(), lr=lr, betas=betas),
            "discriminator": torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=betas),
        }
        self.schedule = LinearDecaySchedule(self.optimizers, epochs, decay_epochs)

    def begin_epoch(self, epoch: int) -> None:
        self.schedule.begin_epoch(epoch)

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One discriminator step and one generator step; returns the losses."""
        p = self.precision
        x, y = (p.input(t) for t in batch)
        opt_g = self.optimizers["generator"]
        self.before_step()
        with p.autocast():
            fake = self.generator(x)
        fake_detached = fake.detach()

        def d_loss() -> torch.Tensor:
            with p.autocast():
                return 0.5 * (gan_loss("vanilla", self.discriminator(torch.cat([x, y], 1)), True)
                              + gan_loss("vanilla", self.discriminator(torch.cat([x, fake_detached], 1)), False))

        loss_d = self.update_discriminator(d_loss)

        set_requires_grad([self.discriminator], False)
        opt_g.zero_grad(set_to_none=True)
        with p.autocast():
            adversarial = gan_loss("vanilla", self.discriminator(torch.cat([x, fake], 1)), True)
        l1 = l1_pm1(fake.float(), y)
        extra = self.generator_terms(fake.float(), y)
        loss_g = adversarial + self.lambda_l1 * l1 + sum(weight * term for weight, term in extra.values())
        p.backward(loss_g)
        p.step(opt_g)
        set_requires_grad([self.discriminator], True)
        p.end_step()
        return {"g_adv": adversarial.detach(), "l1": l1.detach(),
                **{name: term.detach() for name, (_, term) in extra.items()}, "d": loss_d.detach()}

    # Hooks for recipes built on this step (attack.methods.domain_shift): the schedule, the
    # discriminator's optimiser step, and extra weighted generator terms.
    def before_step(self) -> None:
        """Called first in every step (pix2pix's schedule is per epoch: nothing here)."""

    def update_discriminator(self, d_loss: Callable[[], torch.Tensor]) -> torch.Tensor:
        """One optimiser step of the discriminator on d_loss(); returns the loss."""
        opt_d = self.optimizers["discriminator"]
        opt_d.zero_grad(set_to_none=True)
        loss = d_loss()
        self.precision.backward(loss)
        self.precision.step(opt_d)
        return loss

    def generator_terms(self, fake: torch.Tensor, y: torch.Tensor) -> dict[str, tuple[float, torch.Tensor]]:
        """Extra generator losses as name -> (weight, loss), added to GAN + lambda_l1 * L1 (none here)."""
        return {}

    def state(self) -> dict[str, Any]:
        return {"schedule": self.schedule.state(), **self.precision.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.schedule.load_state(state.get("schedule", {}))
        self.precision.load_state(state)


def unet_depth_for(size: int) -> int:
    """UNet depth for square training images of `size` px: log2(size), so the bottleneck is 1 x 1
    (8 at 256 px). Raises ImgstealError for sizes that are not a power of two >= 8."""
    from imgsteal.models.unet import default_depth

    try:
        depth = default_depth(size)
    except ValueError:
        depth = 0
    if depth < 3:
        lower = 1 << max(3, size.bit_length() - 1)
        raise ImgstealError(
            f"--size {size} does not fit a pix2pix UNet: its depth follows the image size (log2(size) down-samplings "
            f"to a 1 x 1 bottleneck, 8 at 256 px), so the size must be a power of two >= 8, e.g. {lower} or {lower * 2}"
        )
    return depth


def make_pix2pix_recipe(cfg: "SurrogateConfig", device: torch.device) -> tuple[Pix2PixRecipe, int]:
    """The pix2pix recipe for a surrogate config: UNet (ngf = cfg.channels, depth from cfg.size) and
    PatchGAN on 6-channel pairs (ndf = cfg.channels), both with batch norm and the reference's
    N(0, 0.02) initialisation (cfg.init 'pytorch' turns it off); Adam at cfg.lr, beta1 0.5.

    Returns (recipe, size_multiple): inputs at inference are padded to a multiple of 2**depth.
    Raises ImgstealError when cfg.size does not fit a UNet.
    """
    from imgsteal.models import build_model

    depth = unet_depth_for(cfg.size)
    init_kind = getattr(cfg, "init", "reference")
    init = {} if init_kind == "reference" else {"init": init_kind}  # the networks' default is the reference's
    generator = build_model("unet", ngf=cfg.channels, image_size=cfg.size, norm="batch", use_dropout=True, **init)
    discriminator = build_model("patchgan", in_channels=6, ndf=cfg.channels, n_layers=3, norm="batch", **init)
    if cfg.size < discriminator.min_input_size():
        raise ImgstealError(f"--size {cfg.size} is too small for the 70x70 PatchGAN (at least {discriminator.min_input_size()} px)")
    recipe = Pix2PixRecipe(generator, discriminator, device, epochs=cfg.epochs, lr=cfg.lr, lambda_l1=cfg.lambda_l1)
    return recipe, 2**depth
