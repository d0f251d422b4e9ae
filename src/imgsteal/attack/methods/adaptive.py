"""Adaptive attacks on output defences (issue 15's scorecard): what an adversary who expects a
watermark or fingerprint in the answers does to them, on top of the paper's recipe.

Answer transforms - applied to every harvested answer before the surrogate trains on it (the stored
pairs are left as harvested; the surrogate's batch source sees the transformed answers):
- `jpeg`:     re-encode each answer as JPEG at `jpeg_quality` (1-95) and decode it again;
- `resize`:   downscale each answer by `resize_factor` (bicubic, antialiased) and back to its size;
- `noise`:    add Gaussian noise of standard deviation `noise_sigma` (on [0, 1] pixels), seeded;
- `overmark`: stamp the attacker's own mark over every answer: a secret +-1 pattern (a tile of
              `overmark_tile` px, keyed by the attacker's seed) times `overmark_strength`, added to
              each answer - the attacker's watermark laid over the owner's.
Every transformed answer is rounded to 8 bits, as the attacker would store it.

Training change:
- `finetune`: the paper's recipe on the answers for the first (1 - `finetune_fraction`) of the steps,
              then the same surrogate fine-tuned on clean data the attacker owns, with no answer of
              the victim in it: its own query images as targets, their `scale`x bicubic downscales as
              inputs (super-resolution only: a style task gives the attacker no clean targets).

The surrogate's network and loss are the paper's (imgsteal.attack.methods.build_recipe treats these
as `paper`); `AdaptiveOptions` holds the settings (SurrogateConfig.adaptive).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from imgsteal.attack.methods.steps import batch_at

ANSWER_TRANSFORMS = ("jpeg", "resize", "noise", "overmark")
ADAPTIVE_ATTACKS = (*ANSWER_TRANSFORMS, "finetune")


class AdaptiveOptions(BaseModel):
    """Settings of the adaptive attacks (used only by the attack of the same name)."""

    model_config = ConfigDict(extra="forbid")

    jpeg_quality: int = Field(50, ge=1, le=95, description="[jpeg] JPEG quality of the re-encoded answers")
    resize_factor: float = Field(0.5, gt=0, lt=1, description="[resize] answers are downscaled by this factor and back")
    noise_sigma: float = Field(0.02, gt=0, le=0.5, description="[noise] Gaussian noise std on [0, 1] pixels (0.02 ~ 5/255)")
    overmark_strength: float = Field(0.02, gt=0, le=0.2, description="[overmark] amplitude of the attacker's +-1 mark, "
                                                                     "on [0, 1] pixels (0.02 ~ 34 dB)")
    overmark_tile: int = Field(16, ge=2, le=256, description="[overmark] side of the attacker's mark tile, px")
    finetune_fraction: float = Field(0.3, gt=0, lt=1, description="[finetune] share of the steps spent fine-tuning "
                                                                  "on the attacker's clean data")


def _jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    from PIL import Image

    from imgsteal.data.images import decode_image, to_uint8

    buf = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buf, format="JPEG", quality=quality)
    return decode_image(buf.getvalue(), "jpeg")


def _resize(image: torch.Tensor, factor: float) -> torch.Tensor:
    h, w = image.shape[-2:]
    small = (max(1, round(h * factor)), max(1, round(w * factor)))
    x = F.interpolate(image[None], size=small, mode="bicubic", antialias=True, align_corners=False)
    return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False)[0].clamp(0, 1)


def overmark_pattern(height: int, width: int, tile: int, seed: int) -> torch.Tensor:
    """The attacker's mark: a seeded tile of +-1 values (one per pixel, same for the 3 channels),
    repeated over height x width; 1 x H x W."""
    gen = torch.Generator().manual_seed(seed * 1_000_033 + 17)
    cell = torch.randint(0, 2, (1, tile, tile), generator=gen).float() * 2 - 1
    reps = (1, -(-height // tile), -(-width // tile))
    return cell.repeat(*reps)[:, :height, :width]


def transform_answer(image: torch.Tensor, attack: str, options: AdaptiveOptions, seed: int, index: int) -> torch.Tensor:
    """One answer (3 x H x W float in [0, 1]) as the `attack` adversary stores it (8-bit)."""
    from imgsteal.data.images import quantize

    if attack == "jpeg":
        out = _jpeg(image, options.jpeg_quality)
    elif attack == "resize":
        out = _resize(image, options.resize_factor)
    elif attack == "noise":
        gen = torch.Generator().manual_seed((seed * 100_003 + index) % (2**63))
        out = image + options.noise_sigma * torch.randn(image.shape, generator=gen)
    elif attack == "overmark":
        out = image + options.overmark_strength * overmark_pattern(*image.shape[-2:], options.overmark_tile, seed)
    else:
        raise ValueError(f"{attack!r} is not an answer transform; known: {', '.join(ANSWER_TRANSFORMS)}")
    return quantize(out.clamp(0, 1))


def transform_answers(targets: list[torch.Tensor], attack: str, options: AdaptiveOptions, seed: int) -> list[torch.Tensor]:
    """The harvested answers (uint8 C x H x W) transformed by `attack`, as uint8 tensors."""
    from imgsteal.data.patches import to_uint8_tensor

    return [to_uint8_tensor(transform_answer(y.float() / 255, attack, options, seed, i)) for i, y in enumerate(targets)]


def clean_pairs(queries: list[torch.Tensor], scale: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The attacker's own clean super-resolution pairs: (query downscaled `scale`x, query), uint8.

    No victim answer is in them: the query images are the attacker's photos (downscaled once already)."""
    from imgsteal.data.images import bicubic_downscale, crop_to_multiple, quantize
    from imgsteal.data.patches import to_uint8_tensor

    inputs, targets = [], []
    for q in queries:
        hr = crop_to_multiple(q.float() / 255, scale)
        if min(hr.shape[-2:]) < scale:
            continue
        inputs.append(to_uint8_tensor(quantize(bicubic_downscale(hr, scale))))
        targets.append(to_uint8_tensor(hr))
    if not inputs:
        raise ValueError(f"no query is large enough to downscale {scale}x for clean fine-tuning pairs")
    return inputs, targets


@dataclass
class FinetuneSource:
    """`answers` batches for the first `switch_at` global steps, then `clean` batches (a BatchSource).

    Global step g = epoch * steps_per_epoch + index; each wrapped source is read in its own epochs, so
    a resumed run sees the same batches."""

    answers: Any
    clean: Any
    switch_at: int
    steps_per_epoch: int

    @property
    def batches_per_epoch(self) -> int:
        return self.steps_per_epoch

    def batch(self, epoch: int, index: int) -> Any:
        g = epoch * self.steps_per_epoch + index
        return batch_at(self.answers, g) if g < self.switch_at else batch_at(self.clean, g - self.switch_at)
