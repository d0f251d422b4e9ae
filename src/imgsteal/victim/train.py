"""Training the victim F_V (the model owner's side). Super-resolution here; style tasks in victim/style.py."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from imgsteal.data.images import bicubic_downscale, crop_to_multiple, load_images
from imgsteal.data.patches import PairedPatchSource, to_uint8_tensor
from imgsteal.device import pick_device
from imgsteal.errors import ImgstealError
from imgsteal.models import build_model
from imgsteal.train.loop import TrainingResult, run_training
from imgsteal.train.srgan import SRGANRecipe


class SRVictimConfig(BaseModel):
    """SRGAN victim: SRResNet generator, pixel pre-training, then adversarial + content loss."""

    hr: list[str] = Field(description="folders (or dataset specs) of high-resolution training images")
    scale: int = 4
    n_blocks: int = 16
    channels: int = 64
    disc_channels: int = 64
    patch: int = Field(24, description="LR patch size (HR patch = patch * scale)")
    batch_size: int = 16
    repeat: int = 1
    pretrain_epochs: int = 10
    gan_epochs: int = 10
    lr: float = 1e-4
    adv_weight: float = 1e-3
    content_loss: Literal["vgg", "pixel"] = "vgg"
    vgg_weights: str | None = None
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 200


def resolve_image_paths(specs: list[str]) -> list[Path]:
    """Folders or dataset specs (see data.layouts) -> image paths; fails naming a missing path."""
    from imgsteal.data.layouts import resolve_images

    paths: list[Path] = []
    for spec in specs:
        paths.extend(resolve_images(spec))
    if not paths:
        raise ImgstealError(f"no images found in {', '.join(specs)}")
    return paths


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
    lows, highs = load_sr_pairs(resolve_image_paths(cfg.hr), cfg.scale)
    torch.manual_seed(cfg.seed)
    generator = build_model("srresnet", scale=cfg.scale, n_blocks=cfg.n_blocks, channels=cfg.channels)
    discriminator = build_model("vgg_discriminator", base_channels=cfg.disc_channels)
    recipe = SRGANRecipe(generator, discriminator, device, pretrain_epochs=cfg.pretrain_epochs,
                         content_loss=cfg.content_loss, vgg_weights=cfg.vgg_weights, lr=cfg.lr,
                         adv_weight=cfg.adv_weight)
    source = PairedPatchSource(lows, highs, scale=cfg.scale, patch=cfg.patch, batch_size=cfg.batch_size,
                               seed=cfg.seed, repeat=cfg.repeat)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(cfg.model_dump_json(indent=2))
    meta = {"role": "victim", "task": "sr", "scale": cfg.scale, "seed": cfg.seed, "images": len(highs),
            "config": cfg.model_dump(mode="json")}
    return run_training(recipe, source, run_dir=out_dir, epochs=cfg.pretrain_epochs + cfg.gan_epochs, meta=meta,
                        resume=resume, checkpoint_every=cfg.checkpoint_every, progress=progress,
                        description="victim srgan", on_step=on_step)
