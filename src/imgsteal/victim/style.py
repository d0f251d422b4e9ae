"""Training the style-transfer victim F_V on unpaired domains: photos (A) -> the secret style set (B).

CycleGAN (Monet-to-Photo setting) or U-GAT-IT, full by default as in the paper, or light
(Selfie-to-Anime setting). The exported model is
the A -> B generator; it is what the inference server runs. Both domains are decoded once into
uint8 memory at the load size (size x 286/256, the references' resize-then-crop), and every batch is
random `size` crops with random horizontal flips, determined by (seed, epoch, index) alone so that a
killed run resumes on exactly the batches it would have seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, Field, model_validator

from imgsteal.data.images import load_images
from imgsteal.data.layouts import center_crop_resize
from imgsteal.data.patches import to_uint8_tensor
from imgsteal.device import pick_device
from imgsteal.errors import ImgstealError
from imgsteal.models import build_model
from imgsteal.train.loop import TrainingResult, run_training
from imgsteal.data.layouts import resolve_image_specs

# Both references resize 256 px training images to 286 px and take random 256 px crops.
LOAD_RATIO = 286 / 256
DEFAULT_LR = {"cyclegan": 2e-4, "ugatit": 1e-4}


class StyleVictimConfig(BaseModel):
    """An unpaired style-transfer victim run (saved as config.json in the run folder)."""

    arch: Literal["cyclegan", "ugatit"]
    domain_a: str | list[str] = Field(description="domain A images (photos): folders or dataset specs")
    domain_b: str | list[str] = Field(description="domain B images (the secret style set S_X)")
    size: int = Field(256, ge=24, description="working resolution: square training crops of size x size px")
    load_size: int | None = Field(None, description="images are centre-cropped and resized to this before cropping; default size x 286/256")
    epochs: int = Field(200, ge=1)
    decay_epochs: int | None = Field(None, ge=0, description="epochs of linear learning-rate decay at the end; default half")
    batch_size: int = Field(1, ge=1)
    repeat: int = Field(1, ge=1, description="passes over the larger domain per epoch")
    lr: float | None = Field(None, gt=0, description="default 2e-4 (cyclegan) or 1e-4 (ugatit)")
    ngf: int = Field(64, ge=1)
    ndf: int = Field(64, ge=1)
    n_blocks: int | None = Field(None, ge=0, description="residual blocks; default 9 at >= 256 px else 6 (cyclegan), 4 (ugatit)")
    lambda_cycle: float = 10.0
    lambda_identity: float = Field(0.5, description="[cyclegan] identity weight relative to lambda_cycle")
    pool_size: int = Field(50, ge=0, description="[cyclegan] image pool of past fakes")
    light: bool = Field(False, description="[ugatit] the light variant (pooled features for the AdaLIN MLP); default "
                        "the full model, as the paper's Selfie2Anime victim (light: a fraction of the memory at 256 px)")
    init: Literal["reference", "pytorch"] = Field(
        "reference", description="[cyclegan] weight initialisation: reference = N(0, 0.02) as pytorch-CycleGAN-and-pix2pix, "
        "pytorch = PyTorch's defaults (U-GAT-IT always keeps PyTorch's, as its reference does)")
    upsample: Literal["transpose", "resize"] = Field(
        "transpose", description="[cyclegan] the generator's up-sampling: transpose = stride-2 transposed convolutions "
        "(the reference), resize = nearest 2x + 3x3 convolution (no checkerboard pattern)")
    amp: bool | None = Field(None, description="mixed precision; default on for CUDA, off on CPU")
    channels_last: bool | None = Field(None, description="channels-last tensors; default on for CUDA")
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 200

    @model_validator(mode="after")
    def _check(self) -> "StyleVictimConfig":
        if self.load_size is not None and self.load_size < self.size:
            raise ValueError(f"load_size {self.load_size} is smaller than the crop size {self.size}")
        return self

    def resolved_load_size(self) -> int:
        """load_size, or size x 286/256."""
        return self.load_size or round(self.size * LOAD_RATIO)

    def resolved_lr(self) -> float:
        """lr, or the architecture's reference rate."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.arch]

    def resolved_blocks(self) -> int:
        """n_blocks, or the architecture's default for this size."""
        if self.n_blocks is not None:
            return self.n_blocks
        if self.arch == "ugatit":
            return 4
        return 9 if self.size >= 256 else 6


def load_domain(specs: str | list[str], load_size: int) -> torch.Tensor:
    """Images of one domain (folders or dataset specs), centre-cropped to squares and resized to
    load_size: N x 3 x load_size x load_size uint8. Unreadable files are skipped with a warning."""
    specs = [specs] if isinstance(specs, str) else list(specs)
    images = [to_uint8_tensor(center_crop_resize(image, load_size)) for _, image in load_images(resolve_image_specs(specs))]
    if not images:
        raise ImgstealError(f"none of the images in {', '.join(specs)} could be read")
    return torch.stack(images)


@dataclass
class UnpairedCropSource:
    """Batches (a, b) of random size x size crops (+ random horizontal flip) from two unaligned domains.

    a, b: N x 3 x L x L uint8 (L >= size). An epoch visits every image of the larger domain `repeat`
    times, in a seeded random order; the other domain is drawn at random, as CycleGAN's unaligned
    loader does. Batch (epoch, index) depends only on (seed, epoch, index).
    """

    a: torch.Tensor
    b: torch.Tensor
    size: int
    batch_size: int
    seed: int
    flip: bool = True
    repeat: int = 1

    def __post_init__(self) -> None:
        for name, images in (("A", self.a), ("B", self.b)):
            if images.dim() != 4 or images.shape[0] == 0:
                raise ValueError(f"domain {name}: expected N x C x H x W images, got {tuple(images.shape)}")
            if min(images.shape[-2:]) < self.size:
                raise ValueError(f"domain {name}: images of {tuple(images.shape[-2:])} px are smaller than the crop size {self.size}")

    @property
    def batches_per_epoch(self) -> int:
        """Steps per epoch: the larger domain, `repeat` times, in batches."""
        return math.ceil(max(len(self.a), len(self.b)) * self.repeat / self.batch_size)

    def _crops(self, images: torch.Tensor, chosen: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        h, w = images.shape[-2:]
        out = []
        for k in chosen.tolist():
            top = int(torch.randint(0, h - self.size + 1, (), generator=gen))
            left = int(torch.randint(0, w - self.size + 1, (), generator=gen))
            crop = images[k, :, top : top + self.size, left : left + self.size]
            if self.flip and torch.rand((), generator=gen).item() < 0.5:
                crop = crop.flip(-1)
            out.append(crop)
        return torch.stack(out).float().div_(255)

    def batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch `index` of `epoch` -> (a, b), each batch_size x 3 x size x size float in [0, 1]."""
        big, small = (self.a, self.b) if len(self.a) >= len(self.b) else (self.b, self.a)
        order_gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.cat([torch.randperm(len(big), generator=order_gen) for _ in range(self.repeat)])
        start = (index * self.batch_size) % len(order)
        chosen_big = order[start : start + self.batch_size]
        if len(chosen_big) < self.batch_size:  # last batch: top up so every step sees a full batch
            chosen_big = torch.cat([chosen_big, order[: self.batch_size - len(chosen_big)]])
        gen = torch.Generator().manual_seed(((self.seed * 7919 + epoch) * 1_000_003 + index) % (2**63))
        chosen_small = torch.randint(0, len(small), (self.batch_size,), generator=gen)
        crops_big, crops_small = self._crops(big, chosen_big, gen), self._crops(small, chosen_small, gen)
        return (crops_big, crops_small) if big is self.a else (crops_small, crops_big)


def _ugatit_global_layers(size: int) -> int:
    """The global discriminator has 7 layers (a 6x6 logit map at 256 px); below 96 px it gets the
    deepest stack whose logit map is still non-empty."""
    for n_layers in range(7, 4, -1):
        if build_model("ugatit_discriminator", ndf=1, n_layers=n_layers).min_input_size() <= size:
            return n_layers
    return 5


def build_style_recipe(cfg: StyleVictimConfig, device: torch.device):
    """The CycleGAN or U-GAT-IT recipe for `cfg` (networks built with build_model, so checkpoints can
    rebuild them). Raises ImgstealError when cfg.size is too small for the discriminators."""
    blocks, lr = cfg.resolved_blocks(), cfg.resolved_lr()
    if cfg.arch == "cyclegan":
        from imgsteal.train.cyclegan import CycleGANRecipe

        init = {} if cfg.init == "reference" else {"init": cfg.init}  # the networks' default is the reference's
        up = {} if cfg.upsample == "transpose" else {"upsample": cfg.upsample}  # old checkpoints keep their kwargs
        gens = [build_model("resnet_generator", ngf=cfg.ngf, n_blocks=blocks, norm="instance", **init, **up)
                for _ in range(2)]
        discs = [build_model("patchgan", in_channels=3, ndf=cfg.ndf, n_layers=3, norm="instance", **init) for _ in range(2)]
        if cfg.size < discs[0].min_input_size():
            raise ImgstealError(f"--size {cfg.size} is too small for the 70x70 PatchGAN (at least {discs[0].min_input_size()} px)")
        return CycleGANRecipe(gens[0], gens[1], discs[0], discs[1], device, epochs=cfg.epochs,
                              decay_epochs=cfg.decay_epochs, lr=lr, lambda_cycle=cfg.lambda_cycle,
                              lambda_identity=cfg.lambda_identity, pool_size=cfg.pool_size, amp=cfg.amp,
                              channels_last=cfg.channels_last)
    from imgsteal.train.ugatit import UGATITRecipe

    gens = [build_model("ugatit", ngf=cfg.ngf, n_blocks=blocks, image_size=cfg.size, light=cfg.light) for _ in range(2)]
    local_layers, global_layers = 5, _ugatit_global_layers(cfg.size)
    discs = [build_model("ugatit_discriminator", ndf=cfg.ndf, n_layers=n) for n in (global_layers, global_layers, local_layers, local_layers)]
    if cfg.size < discs[-1].min_input_size():
        raise ImgstealError(f"--size {cfg.size} is too small for the U-GAT-IT local discriminator (at least {discs[-1].min_input_size()} px)")
    return UGATITRecipe(*gens, *discs, device, epochs=cfg.epochs, decay_epochs=cfg.decay_epochs, lr=lr,
                        cycle_weight=cfg.lambda_cycle, amp=cfg.amp, channels_last=cfg.channels_last)


def train_style_victim(cfg: StyleVictimConfig, out_dir: str | Path, *, resume: bool = False, progress: bool = True,
                       on_step=None) -> TrainingResult:
    """Train a CycleGAN or U-GAT-IT victim (A -> B); writes a run folder with model.safetensors."""
    device = pick_device(cfg.device)
    load_size = cfg.resolved_load_size()
    a, b = load_domain(cfg.domain_a, load_size), load_domain(cfg.domain_b, load_size)
    torch.manual_seed(cfg.seed)
    recipe = build_style_recipe(cfg, device)
    source = UnpairedCropSource(a, b, size=cfg.size, batch_size=cfg.batch_size, seed=cfg.seed, repeat=cfg.repeat)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(cfg.model_dump_json(indent=2))
    meta = {"role": "victim", "kind": "style", "arch": cfg.arch, "scale": 1, "size_multiple": 1, "size": cfg.size,
            "seed": cfg.seed, "images_a": len(a), "images_b": len(b), "precision": recipe.precision.describe(),
            "config": cfg.model_dump(mode="json")}
    return run_training(recipe, source, run_dir=out_dir, epochs=cfg.epochs, meta=meta, resume=resume,
                        checkpoint_every=cfg.checkpoint_every, progress=progress,
                        description=f"victim {cfg.arch}", on_step=on_step)
