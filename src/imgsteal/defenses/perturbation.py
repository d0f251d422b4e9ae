"""Adversarial perturbation of the victim's answers, and the transfer experiment of the paper's Figure 9.

Defence (section 7.2): to every answer X_S add an L-infinity-bounded perturbation found by projected
gradient descent (Madry et al. 2017) that increases the loss of the victim's own discriminator, in
the hope that it spoils the adversary's training. Default epsilon 0.25 as in the paper.

Transfer (Figure 9): adversarial *inputs* crafted against the victim's generator F_V (maximising how
far F_V's answer moves from its clean answer) are given to F_V and to the surrogate F_A; if F_A's
answer hardly moves, the examples do not transfer.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from imgsteal.errors import CheckpointError, ImgstealError

# Module names under which victims' training checkpoints keep the discriminator that judges F_V's
# answers, and the loss it was trained with: SRGAN ('discriminator', BCE); CycleGAN ('discriminator_b',
# LSGAN) and U-GAT-IT ('disc_global_b', LSGAN) style victims: the domain-B (target style) one.
DISCRIMINATOR_LOSSES = {"discriminator": "bce", "discriminator_b": "mse", "disc_global_b": "mse"}
DISCRIMINATOR_NAMES = tuple(DISCRIMINATOR_LOSSES)


def pgd_linf(
    objective: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    epsilon: float,
    steps: int,
    step_size: float | None = None,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Maximise `objective(x')` (a scalar) over ||x' - x||_inf <= epsilon, x' in [0, 1].

    x: any shape, values in [0, 1]; step_size defaults to 2.5 * epsilon / steps (Madry et al.).
    Signed-gradient ascent steps, each followed by projection onto the ball and the image range.
    Returns x' (detached, same shape and device as x).
    """
    if epsilon < 0 or steps < 0:
        raise ValueError(f"epsilon and steps must be >= 0, got {epsilon}, {steps}")
    x0 = x.detach().clone()  # also turns an inference-mode tensor into a normal one
    if epsilon == 0 or steps == 0:
        return x0
    step = step_size if step_size is not None else 2.5 * epsilon / steps
    if random_start:
        noise = torch.rand(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device) * 2 - 1
        adv = (x0 + epsilon * noise).clamp(0, 1)
    else:
        adv = x0.clone()
    with torch.enable_grad():
        for _ in range(steps):
            adv.requires_grad_(True)
            loss = objective(adv)
            (grad,) = torch.autograd.grad(loss, adv)
            with torch.no_grad():
                adv = adv + step * grad.sign()
                adv = torch.min(torch.max(adv, x0 - epsilon), x0 + epsilon).clamp(0, 1)
    return adv.detach()


def discriminator_loss(discriminator: nn.Module, images: torch.Tensor, target: Literal["fake", "real"] = "fake",
                       loss: Literal["bce", "mse"] = "bce") -> torch.Tensor:
    """The discriminator's loss on N x 3 x H x W images labelled `target` (a scalar).

    bce: binary cross-entropy on logits (SRGAN, pix2pix); mse: least squares (CycleGAN's LSGAN).
    Works for one logit per image and for PatchGAN maps alike (mean over all outputs).
    """
    out = discriminator(images)
    out = getattr(out, "output", out)  # U-GAT-IT discriminators may return (output, cam_logit, ...)
    from imgsteal.train.gan import gan_loss

    return gan_loss("lsgan" if loss == "mse" else "vanilla", out, real=target == "real")


def find_discriminator_name(module_names: Sequence[str], wanted: str | None = None) -> str:
    """The module holding the victim's (domain-B) discriminator among a checkpoint's module names."""
    if wanted is not None:
        if wanted not in module_names:
            raise CheckpointError(f"the checkpoint has no module {wanted!r} (has: {', '.join(module_names)})")
        return wanted
    for name in DISCRIMINATOR_NAMES:
        if name in module_names:
            return name
    raise CheckpointError("no discriminator found in the checkpoint (has: " + ", ".join(module_names) +
                          "); name it with the discriminator module option, or give the victim's training "
                          "checkpoint (run_dir/checkpoints/last.safetensors), not its exported model")


def load_discriminator(path: str | Path, module: str | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """The victim's discriminator from its training checkpoint (a file or the run folder), in eval mode."""
    return load_discriminator_named(path, module, device)[0]


def load_discriminator_named(path: str | Path, module: str | None = None,
                             device: str | torch.device = "cpu") -> tuple[nn.Module, str]:
    """(discriminator in eval mode, its module name) from a victim's training checkpoint or run folder."""
    from imgsteal.train.checkpoint import load_checkpoint

    path = Path(path)
    if path.is_dir() and (path / "checkpoints" / "last.safetensors").exists():
        path = path / "checkpoints" / "last.safetensors"
    ckpt = load_checkpoint(path)
    name = find_discriminator_name(ckpt.module_names(), module)
    disc = ckpt.build_module(name).to(device).eval()
    for p in disc.parameters():
        p.requires_grad_(False)
    return disc, name


class PGDOptions(BaseModel):
    """Settings of the adversarial-perturbation defence."""

    model_config = ConfigDict(extra="forbid")

    discriminator: Optional[Path] = Field(None, description="victim training checkpoint (or its run folder) holding the "
                                                            "discriminator (default: the served victim's)")
    module: str | None = Field(None, description="discriminator module name in the checkpoint (default: found by name)")
    epsilon: float = Field(0.25, ge=0, le=1, description="L-infinity bound of the perturbation, in [0, 1] pixel units")
    steps: int = Field(10, ge=0, description="gradient steps")
    step_size: float | None = Field(None, gt=0, description="step size (default 2.5 * epsilon / steps)")
    target: Literal["fake", "real"] = Field("fake", description="label whose discriminator loss is increased")
    loss: Literal["auto", "bce", "mse"] = Field("auto", description="auto: the loss the discriminator was trained with")
    random_start: bool = Field(True, description="start from a random point in the epsilon ball")


def _seed_of(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") & (2**63 - 1)


class PGDDefense:
    """Output defence: PGD against the victim's discriminator added to every answer (label "pgd").

    The random start is seeded by the query's sha256, so the same query gets the same answer.
    """

    name = "pgd"

    def __init__(self, options: PGDOptions, discriminator: nn.Module | None = None, device: str = "cpu") -> None:
        self.options = options
        from imgsteal.device import pick_device

        self.device = pick_device(device)
        if discriminator is None:
            if options.discriminator is None:
                raise ImgstealError("pgd needs the victim's discriminator (--pgd-discriminator)")
            discriminator, module = load_discriminator_named(options.discriminator, options.module, self.device)
        else:
            module = options.module or "discriminator"
        self.discriminator = discriminator
        self.loss = options.loss if options.loss != "auto" else DISCRIMINATOR_LOSSES.get(module, "bce")
        self._lock = threading.Lock()  # one PGD at a time: they would only fight over the cores

    def perturb(self, image: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """3 x H x W answer in [0, 1] -> perturbed answer, ||delta||_inf <= epsilon."""
        o = self.options
        x = image.detach().clone().to(self.device)[None]
        gen = torch.Generator().manual_seed(seed)

        def objective(batch: torch.Tensor) -> torch.Tensor:
            return discriminator_loss(self.discriminator, batch, o.target, self.loss)

        with self._lock:
            adv = pgd_linf(objective, x, o.epsilon, o.steps, o.step_size, o.random_start, gen)
        return adv[0].cpu()

    def apply(self, key_name: str, input_image: torch.Tensor, output_image: torch.Tensor,
              input_sha256: str) -> tuple[torch.Tensor, str | None]:
        return self.perturb(output_image, _seed_of(input_sha256)), self.name


# -- Figure 9: do adversarial inputs crafted on F_V transfer to F_A? ---------------------------
@dataclass
class TransferExample:
    """One input: clean and adversarial inputs, and both models' answers to each (3 x H x W, [0, 1])."""

    clean_input: torch.Tensor
    adv_input: torch.Tensor
    victim_clean: torch.Tensor
    victim_adv: torch.Tensor
    surrogate_clean: torch.Tensor
    surrogate_adv: torch.Tensor


@dataclass
class TransferResult:
    """PSNR (dB) between each model's answers to the adversarial and the clean input, per image.

    Low PSNR = the answer was pushed far. Examples transfer when the surrogate's PSNR is about as low
    as the victim's; `transfer_ratio` = mean surrogate MSE / mean victim MSE (1 = full transfer).
    """

    epsilon: float
    steps: int
    victim_psnr: list[float] = field(default_factory=list)
    surrogate_psnr: list[float] = field(default_factory=list)
    victim_mse: list[float] = field(default_factory=list)
    surrogate_mse: list[float] = field(default_factory=list)
    examples: list[TransferExample] = field(default_factory=list, repr=False)

    @property
    def transfer_ratio(self) -> float:
        v = sum(self.victim_mse) / max(1, len(self.victim_mse))
        s = sum(self.surrogate_mse) / max(1, len(self.surrogate_mse))
        return s / v if v > 0 else float("nan")

    def as_dict(self) -> dict:
        mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
        return {"epsilon": self.epsilon, "steps": self.steps, "images": len(self.victim_psnr),
                "victim_psnr_db": mean(self.victim_psnr), "surrogate_psnr_db": mean(self.surrogate_psnr),
                "transfer_ratio": self.transfer_ratio}


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    import math

    mse = float(F.mse_loss(a, b))
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def transfer_experiment(victim, surrogate, inputs: Sequence[torch.Tensor], epsilon: float = 8 / 255, steps: int = 10,
                        step_size: float | None = None, keep_examples: int = 4, seed: int = 0) -> TransferResult:
    """Craft PGD inputs against `victim` (a Translator: its generator is differentiated) and answer them
    with both models. inputs: 3 x h x w in [0, 1] (cropped to the victim's size multiple)."""
    from imgsteal.data.images import crop_to_multiple

    if not inputs:
        raise ImgstealError("the transfer experiment needs at least one input image")
    generator = victim.generator
    result = TransferResult(epsilon=epsilon, steps=steps)
    gen = torch.Generator().manual_seed(seed)
    for i, image in enumerate(inputs):
        x = crop_to_multiple(image, victim.size_multiple)[None]
        v_clean = victim(x)
        target = v_clean.clone().to(victim.device)  # a normal tensor: the answer came from inference mode

        def objective(batch: torch.Tensor) -> torch.Tensor:
            return F.mse_loss(generator(batch.to(victim.device)).clamp(0, 1), target)

        adv = pgd_linf(objective, x, epsilon, steps, step_size, True, gen)
        v_adv = victim(adv)
        s_clean, s_adv = surrogate(x), surrogate(adv)
        result.victim_mse.append(float(F.mse_loss(v_adv, v_clean)))
        result.surrogate_mse.append(float(F.mse_loss(s_adv, s_clean)))
        result.victim_psnr.append(_psnr(v_adv, v_clean))
        result.surrogate_psnr.append(_psnr(s_adv, s_clean))
        if i < keep_examples:
            result.examples.append(TransferExample(x[0], adv[0], v_clean[0], v_adv[0], s_clean[0], s_adv[0]))
    return result
