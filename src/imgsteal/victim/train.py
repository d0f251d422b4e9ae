"""Training the victim F_V (the model owner's side). Super-resolution here; style tasks in victim/style.py."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from imgsteal.data.images import bicubic_downscale, crop_to_multiple, load_images
from imgsteal.data.patches import PairedPatchSource, to_uint8_tensor
from imgsteal.device import pick_device
from imgsteal.errors import ImgstealError
from imgsteal.models import build_model
from imgsteal.data.layouts import resolve_image_specs
from imgsteal.train.loop import TrainingResult, run_training
from imgsteal.train.srgan import SRGANRecipe


class SRVictimConfig(BaseModel):
    """SRGAN victim: SRResNet generator, pixel pre-training, then adversarial + content loss.

    Length: `pretrain_epochs` + `gan_epochs` epochs, or, when `pretrain_steps` and `gan_steps` are
    set (they take precedence), exactly that many optimisation steps; Ledig et al. train 10^6 + 2 x
    10^5 steps. `gan_lr_milestones` (steps into the adversarial phase) multiply the learning rate by
    `lr_gamma` in either mode: Ledig et al. use [100000] and 0.1 (10^5 steps at 1e-4, 10^5 at 1e-5).
    """

    hr: list[str] = Field(description="folders (or dataset specs) of high-resolution training images")
    scale: int = 4
    generator: Literal["srresnet", "msrresnet"] = Field(
        "srresnet", description="srresnet (Ledig et al.) or msrresnet (BasicSR's SRGAN generator: no batch norm, the "
                              "bilinearly upscaled input added to the output, so training starts from an upscaling)")
    n_blocks: int = 16
    channels: int = 64
    disc_channels: int = 64
    patch: int = Field(24, description="LR patch size (HR patch = patch * scale)")
    batch_size: int = 16
    repeat: int = 1
    pretrain_epochs: int = Field(10, ge=0, description="pixel-loss (MSE) pre-training epochs (unless pretrain_steps is set)")
    gan_epochs: int = Field(10, ge=0, description="adversarial epochs (unless gan_steps is set)")
    pretrain_steps: int | None = Field(None, ge=0, description="pixel-loss pre-training steps; with gan_steps, replaces the epochs")
    gan_steps: int | None = Field(None, ge=0, description="adversarial steps; with pretrain_steps, replaces the epochs")
    gan_lr_milestones: list[int] = Field(default_factory=list, description="steps into the adversarial phase at which lr is multiplied by lr_gamma")
    lr_gamma: float = Field(0.1, gt=0, le=1, description="learning-rate factor at each milestone")
    lr: float = 1e-4
    adv_weight: float = 1e-3
    content_loss: Literal["vgg", "pixel"] = "vgg"
    vgg_weights: str | None = None
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 200

    @model_validator(mode="after")
    def _check_length(self) -> "SRVictimConfig":
        if (self.pretrain_steps is None) != (self.gan_steps is None):
            raise ValueError("set both pretrain_steps and gan_steps (a step-length run), or neither (epochs)")
        if self.gan_lr_milestones != sorted(set(self.gan_lr_milestones)) or any(m < 1 for m in self.gan_lr_milestones):
            raise ValueError(f"gan_lr_milestones must be increasing step counts >= 1, got {self.gan_lr_milestones}")
        if self.gan_steps is not None and any(m >= self.gan_steps for m in self.gan_lr_milestones):
            raise ValueError(f"gan_lr_milestones {self.gan_lr_milestones} must lie inside the {self.gan_steps} adversarial steps")
        total = self.total_steps()
        if total == 0 or (total is None and self.pretrain_epochs + self.gan_epochs == 0):
            raise ValueError("the run has no training: set some epochs or steps")
        return self

    def total_steps(self) -> int | None:
        """pretrain_steps + gan_steps for a step-length run, else None (the length is in epochs)."""
        if self.pretrain_steps is None or self.gan_steps is None:
            return None
        return self.pretrain_steps + self.gan_steps


def load_sr_pairs(paths: list[Path], scale: int) -> tuple[list, list]:
    """HR images -> (LR uint8 list, HR uint8 list), LR by bicubic downscaling."""
    lows, highs = [], []
    for _, hr in load_images(paths):
        hr = crop_to_multiple(hr, scale)
        lows.append(to_uint8_tensor(bicubic_downscale(hr, scale)))
        highs.append(to_uint8_tensor(hr))
    if not highs:
        raise ImgstealError("none of the HR images could be read")
    return lows, highs


def train_sr_victim(cfg: SRVictimConfig, out_dir: str | Path, *, resume: bool = False, progress: bool = True,
                    on_step=None) -> TrainingResult:
    """Train an SRGAN victim; writes a run folder with model.safetensors."""
    import torch

    device = pick_device(cfg.device)
    lows, highs = load_sr_pairs(resolve_image_specs(cfg.hr), cfg.scale)
    torch.manual_seed(cfg.seed)
    generator = build_model(cfg.generator, scale=cfg.scale, n_blocks=cfg.n_blocks, channels=cfg.channels)
    discriminator = build_model("vgg_discriminator", base_channels=cfg.disc_channels)
    recipe = SRGANRecipe(generator, discriminator, device, pretrain_epochs=cfg.pretrain_epochs,
                         content_loss=cfg.content_loss, vgg_weights=cfg.vgg_weights, lr=cfg.lr,
                         adv_weight=cfg.adv_weight, pretrain_steps=cfg.pretrain_steps,
                         gan_lr_milestones=cfg.gan_lr_milestones, lr_gamma=cfg.lr_gamma)
    source = PairedPatchSource(lows, highs, scale=cfg.scale, patch=cfg.patch, batch_size=cfg.batch_size,
                               seed=cfg.seed, repeat=cfg.repeat)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(cfg.model_dump_json(indent=2))
    meta = {"role": "victim", "kind": "sr", "scale": cfg.scale, "seed": cfg.seed, "images": len(highs),
            "config": cfg.model_dump(mode="json")}
    return run_training(recipe, source, run_dir=out_dir, epochs=cfg.pretrain_epochs + cfg.gan_epochs,
                        steps=cfg.total_steps(), meta=meta, resume=resume, checkpoint_every=cfg.checkpoint_every, progress=progress,
                        description="victim srgan", on_step=on_step)
