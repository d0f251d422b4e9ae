"""Surrogate training methods ("attacks") on the same harvested pairs, each a Recipe and a batch source.

- `paper`: the paper's recipe (SRResNet + MSE on random patches; pix2pix on the pairs).
- `domain-shift`: Mi et al. (AAAI 2024): + wavelet high-frequency loss, SAM, cosine decay.
- `few-shot`: after Spingarn-Eliezer and Michaeli (2024): many multi-scale, flipped and rotated
  crops of a few pairs, pixel L2 loss, trained for a number of steps.
- `jpeg`, `resize`, `noise`, `overmark`, `finetune`: adaptive attacks on output defences (the paper's
  recipe on transformed answers, or fine-tuned on clean data afterwards; imgsteal.attack.methods.adaptive).

`build_source` and `build_recipe` turn a SurrogateConfig into what `run_training` needs; networks
come from `surrogate_networks` (architectures by kind: super-resolution or style).
docs/attacks.md describes each method and how it differs from its paper.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from imgsteal.errors import ImgstealError

if TYPE_CHECKING:
    from imgsteal.attack.surrogate import SurrogateConfig

AttackMethod = Literal["paper", "domain-shift", "few-shot", "jpeg", "resize", "noise", "overmark", "finetune"]
ATTACK_METHODS: tuple[str, ...] = ("paper", "domain-shift", "few-shot", "jpeg", "resize", "noise", "overmark", "finetune")

# Surrogate architectures by kind: the grid's `surrogate` axis picks among these (the only list of them).
# msrresnet adds the bilinearly upsampled input to its output, so even a short training starts from
# an upscaling, not from noise.
SR_ARCHS = ("srresnet", "edsr", "msrresnet")
STYLE_ARCHS = ("pix2pix", "pix2pix_resnet")


def arch_kind(arch: str) -> Literal["sr", "style"]:
    """'sr' for super-resolution surrogates, 'style' for same-size image translation ones."""
    if arch in SR_ARCHS:
        return "sr"
    if arch in STYLE_ARCHS:
        return "style"
    raise ImgstealError(f"unknown surrogate architecture {arch!r}; known: {', '.join(SR_ARCHS + STYLE_ARCHS)}")


def resnet_blocks_for(size: int) -> int:
    """CycleGAN's choice of residual blocks for a ResNet generator: 9 at 256 px and above, else 6."""
    return 9 if size >= 256 else 6


def surrogate_networks(cfg: "SurrogateConfig", scale: int, *, discriminator: bool) -> tuple[nn.Module, nn.Module | None, int]:
    """(generator, discriminator or None, size_multiple) for cfg.arch.

    srresnet / edsr: cfg.n_blocks x cfg.channels, `scale`x. pix2pix: UNet (ngf cfg.channels, depth
    log2(cfg.size)); pix2pix_resnet: CycleGAN's ResNet generator (ngf cfg.channels, batch norm and
    dropout as pix2pix's `resnet_9blocks`); both with a 70x70 PatchGAN on (input, output) pairs when
    `discriminator`. size_multiple: inputs at inference are padded to it (2**depth for the UNet).
    """
    import imgsteal.models.edsr  # noqa: F401  (registers "edsr" even where the registry does not list it yet)
    from imgsteal.models import build_model

    if cfg.arch in SR_ARCHS:
        return build_model(cfg.arch, scale=scale, n_blocks=cfg.n_blocks, channels=cfg.channels), None, 1
    from imgsteal.train.pix2pix import unet_depth_for

    # Weight initialisation as make_pix2pix_recipe does it: the networks' default (the reference's
    # N(0, 0.02)) unless the config asks for another.
    init_kind = getattr(cfg, "init", "reference")
    init = {} if init_kind == "reference" else {"init": init_kind}
    if cfg.arch == "pix2pix":
        depth = unet_depth_for(cfg.size)
        generator = build_model("unet", ngf=cfg.channels, image_size=cfg.size, norm="batch", use_dropout=True, **init)
        multiple = 2**depth
    else:
        generator = build_model("resnet_generator", ngf=cfg.channels, n_blocks=resnet_blocks_for(cfg.size),
                                norm="batch", use_dropout=True, **init)
        multiple = 1
    critic = None
    if discriminator:
        critic = build_model("patchgan", in_channels=6, ndf=cfg.channels, n_layers=3, norm="batch", **init)
        if cfg.size < critic.min_input_size():
            raise ImgstealError(f"--size {cfg.size} is too small for the 70x70 PatchGAN (at least {critic.min_input_size()} px)")
    return generator, critic, multiple


def build_source(cfg: "SurrogateConfig", inputs: list[torch.Tensor], targets: list[torch.Tensor], scale: int,
                 *, steps_per_epoch: int | None = None) -> Any:
    """The batch source of cfg.attack: random (augmented) patches for paper and domain-shift, random
    multi-scale dihedral crops for few-shot (`steps_per_epoch` batches per epoch)."""
    from imgsteal.data.patches import PairedPatchSource

    kind = arch_kind(cfg.arch)
    patch = cfg.patch if kind == "sr" else cfg.size
    if cfg.attack == "few-shot":
        from imgsteal.attack.methods.few_shot import MultiScaleCropSource

        crop = patch if patch is not None else min(min(x.shape[-2:]) for x in inputs)
        try:
            return MultiScaleCropSource(inputs, targets, scale=scale, crop=crop, batch_size=cfg.batch_size, seed=cfg.seed,
                                        zooms=tuple(cfg.crop_zooms), resample=kind == "style",
                                        symmetries=cfg.crop_symmetries,
                                        steps_per_epoch=steps_per_epoch or natural_epoch_steps(cfg, len(inputs)))
        except ValueError as exc:
            raise ImgstealError(f"few-shot crops: {exc}") from exc
    from imgsteal.attack.methods import adaptive

    if cfg.attack in adaptive.ANSWER_TRANSFORMS:
        targets = adaptive.transform_answers(targets, cfg.attack, cfg.adaptive, cfg.seed)
    answers = PairedPatchSource(inputs, targets, scale=scale, patch=patch, batch_size=cfg.batch_size,
                                seed=cfg.seed, augmentation=cfg.augmentation, repeat=cfg.repeat)
    if cfg.attack != "finetune":
        return answers
    if kind != "sr":
        raise ImgstealError("the finetune attack needs super-resolution pairs (a style task gives the attacker no clean targets)")
    try:
        clean_in, clean_out = adaptive.clean_pairs(inputs, scale)
        side = min(min(x.shape[-2:]) for x in clean_in)
        clean = PairedPatchSource(clean_in, clean_out, scale=scale, patch=None if patch is None else min(patch, side),
                                  batch_size=cfg.batch_size, seed=cfg.seed + 1, repeat=cfg.repeat)
    except ValueError as exc:
        raise ImgstealError(f"finetune: {exc}") from exc
    per_epoch = steps_per_epoch or answers.batches_per_epoch
    total = cfg.steps if cfg.steps is not None else cfg.epochs * natural_epoch_steps(cfg, len(inputs))
    switch_at = max(1, round(total * (1 - cfg.adaptive.finetune_fraction)))
    return adaptive.FinetuneSource(answers, clean, switch_at, per_epoch)


def natural_epoch_steps(cfg: "SurrogateConfig", pairs: int) -> int:
    """Steps in one pass over `pairs` pairs (x cfg.repeat) at cfg.batch_size, as the paper's recipe counts
    an epoch: with patches every batch is full (several crops of one pair when there are few), a batch
    of whole images never exceeds the number of pairs (as PairedPatchSource batches them)."""
    batch = cfg.batch_size if cfg.patch is not None else min(cfg.batch_size, pairs)
    return -(-pairs * cfg.repeat // batch)


def build_recipe(cfg: "SurrogateConfig", scale: int, device: torch.device, *, epochs: int, total_steps: int) -> tuple[Any, int]:
    """(recipe, size_multiple) of cfg.attack for cfg.arch. epochs: epochs the run will begin (for
    pix2pix's per-epoch linear decay); total_steps: its steps (for the per-step cosine decay)."""
    from imgsteal.train.paired import PixelRecipe

    kind = arch_kind(cfg.arch)
    if cfg.attack == "few-shot":  # pixel L2 distillation, no discriminator, for either kind
        generator, _, multiple = surrogate_networks(cfg, scale, discriminator=False)
        return PixelRecipe(generator, device, lr=cfg.lr, loss="mse"), multiple
    if cfg.attack == "domain-shift":
        from imgsteal.attack.methods.domain_shift import DomainShiftPix2PixRecipe, DomainShiftPixelRecipe

        if kind == "sr":
            generator, _, multiple = surrogate_networks(cfg, scale, discriminator=False)
            return DomainShiftPixelRecipe(generator, device, total_steps=total_steps, lr=cfg.lr, loss="mse",
                                          wavelet_weight=cfg.wavelet_weight, sam_rho=cfg.sam_rho), multiple
        generator, critic, multiple = surrogate_networks(cfg, scale, discriminator=True)
        return DomainShiftPix2PixRecipe(generator, critic, device, total_steps=total_steps, lr=cfg.lr,
                                        lambda_l1=cfg.lambda_l1, wavelet_weight=cfg.wavelet_weight,
                                        sam_rho=cfg.sam_rho), multiple
    if cfg.attack not in ("paper", "jpeg", "resize", "noise", "overmark", "finetune"):  # adaptive: the paper's recipe
        raise ImgstealError(f"unknown attack method {cfg.attack!r}; known: {', '.join(ATTACK_METHODS)}")
    if kind == "sr":
        generator, _, multiple = surrogate_networks(cfg, scale, discriminator=False)
        return PixelRecipe(generator, device, lr=cfg.lr, loss="mse"), multiple
    if cfg.arch == "pix2pix":  # exactly the paper's recipe, as before
        from imgsteal.train.pix2pix import make_pix2pix_recipe

        return make_pix2pix_recipe(cfg.model_copy(update={"epochs": epochs}), device)
    from imgsteal.train.pix2pix import Pix2PixRecipe

    generator, critic, multiple = surrogate_networks(cfg, scale, discriminator=True)
    return Pix2PixRecipe(generator, critic, device, epochs=epochs, lr=cfg.lr, lambda_l1=cfg.lambda_l1), multiple
