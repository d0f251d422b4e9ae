"""Steganographic fingerprinting of the victim's answers (Yu et al. 2021, "artificial GAN fingerprints").

An encoder hides an n-bit fingerprint in an image as a small residual; a decoder reads the bits
back. Both are trained jointly on random fingerprints with an L2 image loss plus a binary
cross-entropy bit loss (StegaStamp-like). The owner then draws one secret fingerprint, stamps every
answer of the service with it, and later checks whether a suspect's images carry it: bitwise
accuracy against the owner's fingerprint, and a one-sided binomial p-value against 50 % (chance;
conservative, since the secret is drawn so that unstamped images read fewer of its bits).

The fingerprint is spread evenly over the image (the code is broadcast to every position and the
decoder averages over positions), so one trained pair stamps and reads images of any size.

Run folder of `train_fingerprint`:
    config.json, metrics.jsonl, checkpoints/     training (resumable)
    fingerprint_model.safetensors                encoder + decoder
    fingerprint.secret                           the owner's bits ('0'/'1' text), mode 0600: a secret
    metrics.json                                 bit accuracy on fingerprinted and clean images, PSNR
"""

from __future__ import annotations

import json
import math
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from imgsteal.files import read_private, write_private
from imgsteal.errors import ImgstealError
from imgsteal.models.registry import register_model

MODEL_FILE = "fingerprint_model.safetensors"
SECRET_FILE = "fingerprint.secret"
METRICS_FILE = "metrics.json"


# -- networks ----------------------------------------------------------------------------------
@register_model("fingerprint_encoder")
class FingerprintEncoder(nn.Module):
    """(N x 3 x size x size image in [0, 1], N x bits in {0, 1}) -> fingerprinted image in [0, 1].

    The bits become a code image (a Linear layer to code_channels x size x size), concatenated with
    image features; a small conv stack and a 1x1 layer over both give the residual added to the image.
    """

    def __init__(self, bits: int = 100, size: int = 128, channels: int = 16, depth: int = 2, code_channels: int = 3) -> None:
        super().__init__()
        self.bits, self.size, self.code_channels = bits, size, code_channels
        self.code = nn.Linear(bits, code_channels * size * size)
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(inplace=True))
        layers: list[nn.Module] = [nn.Conv2d(channels + code_channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 1):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.residual = nn.Conv2d(channels + code_channels, 3, 1)

    def forward(self, image: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
        if image.shape[-2:] != (self.size, self.size):
            raise ValueError(f"the encoder takes {self.size} x {self.size} images, got {tuple(image.shape[-2:])}")
        code = self.code(bits.float() * 2 - 1).view(-1, self.code_channels, self.size, self.size)
        h = self.body(torch.cat([self.stem(image * 2 - 1), code], 1))
        return (image + self.residual(torch.cat([h, code], 1))).clamp(0, 1)


@register_model("fingerprint_decoder")
class FingerprintDecoder(nn.Module):
    """N x 3 x H x W image in [0, 1] -> N x bits logits (> 0 reads as bit 1). Images of another size
    than `size` are resized to size x size first (antialiased bilinear).

    Deliberately light and almost linear (3x3 filters, 4x4 average pooling, one dense layer): it
    learns to read the code within a few hundred CPU steps, where deep decoders sit at chance for
    thousands (the paper's failure mode 2).
    """

    def __init__(self, bits: int = 100, size: int = 128, channels: int = 16) -> None:
        super().__init__()
        self.size = size
        self.features = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.AvgPool2d(4), nn.Flatten())
        self.head = nn.Linear(channels * (size // 4) ** 2, bits)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[-2:] != (self.size, self.size):
            image = resize(image, self.size, self.size)
        return self.head(self.features(image * 2 - 1))


def resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """N x C x h x w -> N x C x height x width, bilinear (antialiased when shrinking)."""
    return F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False, antialias=True)


# -- training ----------------------------------------------------------------------------------
class FingerprintTrainConfig(BaseModel):
    """Fingerprint encoder/decoder training (paper scale: 100 bits at 128 px, the defaults)."""

    model_config = ConfigDict(extra="forbid")

    images: list[str] = Field(description="folders (or dataset specs) of images like the answers to stamp")
    eval_images: list[str] | None = Field(None, description="images for the final bit accuracy (default: `images`)")
    bits: int = Field(100, ge=1, le=1024)
    size: int = Field(128, ge=16, multiple_of=4, description="training crop size, px")
    channels: int = Field(16, ge=1)
    depth: int = Field(2, ge=1)
    steps: int = Field(3000, ge=1, description="optimisation steps, exactly (the progress bar counts these)")
    batch_size: int = Field(16, ge=1)
    lr: float = 1e-3
    image_weight: float = Field(100.0, ge=0, description="weight of the L2 image loss against the BCE bit loss")
    ramp: float = Field(0.3, ge=0, le=1, description="share of the steps over which the image loss weight rises from 0")
    max_eval_images: int = Field(32, ge=1)
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 500


class FingerprintRecipe:
    """Joint encoder/decoder training on random fingerprints (a `train.loop` recipe)."""

    export_module = "encoder"

    def __init__(self, encoder: nn.Module, decoder: nn.Module, bits: int, device: torch.device, lr: float,
                 image_weight: float, seed: int, ramp_steps: int = 0) -> None:
        self.encoder, self.decoder = encoder.to(device), decoder.to(device)
        self.bits, self.device, self.image_weight, self.seed = bits, device, image_weight, seed
        self.ramp_steps = ramp_steps
        self.modules = {"encoder": self.encoder, "decoder": self.decoder}
        params = list(self.encoder.parameters()) + list(self.decoder.parameters())
        self.optimizers = {"fingerprint": torch.optim.Adam(params, lr=lr)}
        self.step = 0

    def begin_epoch(self, epoch: int) -> None:
        self.encoder.train()
        self.decoder.train()

    def train_step(self, batch) -> dict[str, float]:
        images = batch[0].to(self.device)
        # Fingerprints and quantisation noise depend on (seed, step) only: a resumed run sees the same ones.
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.step)
        bits = torch.randint(0, 2, (len(images), self.bits), generator=gen).float().to(self.device)
        noise = (torch.rand(images.shape, generator=gen) - 0.5).to(self.device) / 255
        stamped = self.encoder(images, bits)
        seen = stamped
        if torch.rand((), generator=gen) < 0.5:
            # Answers of other sizes are stamped through a resized residual and read after resizing:
            # train through a resampling round trip too.
            size = images.shape[-1]
            side = int(torch.randint(size // 2, 2 * size + 1, (), generator=gen))
            seen = resize(resize(stamped, side, side), *images.shape[-2:])
        logits = self.decoder(seen + noise)  # the API answers 8-bit PNGs: train through that rounding
        bit_loss = F.binary_cross_entropy_with_logits(logits, bits)
        image_loss = F.mse_loss(stamped, images)
        # The image loss weight rises from 0: without the ramp the residual collapses to nothing
        # before the decoder has learnt to read anything.
        weight = self.image_weight * min(1.0, self.step / self.ramp_steps) if self.ramp_steps else self.image_weight
        loss = bit_loss + weight * image_loss
        opt = self.optimizers["fingerprint"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self.step += 1
        with torch.no_grad():
            acc = ((logits > 0).float() == bits).float().mean()
        return {"bce": bit_loss.item(), "l2": image_loss.item(), "bit_acc": acc.item()}

    def state(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state(self, state: dict[str, Any]) -> None:
        self.step = int(state.get("step", 0))


def bits_to_text(bits: torch.Tensor) -> str:
    return "".join("1" if b else "0" for b in bits.flatten().round().int().tolist())


def text_to_bits(text: str) -> torch.Tensor:
    text = text.strip()
    if not text or set(text) - {"0", "1"}:
        raise ImgstealError("the fingerprint file must hold only '0' and '1' characters")
    return torch.tensor([float(c) for c in text])


def new_fingerprint(bits: int, unstamped_reads: torch.Tensor | None = None, lean: float = 0.1) -> torch.Tensor:
    """A fresh secret fingerprint of `bits` bits (from the OS's CSPRNG), as a float tensor of 0/1.

    unstamped_reads: images x bits, what the decoder reads from images that carry no fingerprint. A
    decoder reads unstamped images partly as a fixed pattern of its own (the same for every image
    and every model's outputs), and a random secret agrees with that pattern on about half its bits:
    those bits look "found" in every innocent image and can gain nothing in a copy. So each bit that
    the unstamped images read one way in more than 0.5 + `lean` of them is set against that reading;
    the other bits stay random. Innocent images then read below 50% of the secret and a copy's gain
    is measured on every such bit (docs/defenses.md, "Fingerprint").
    """
    value = secrets.randbits(bits)
    secret = torch.tensor([float((value >> i) & 1) for i in range(bits)])
    if unstamped_reads is not None:
        ones = unstamped_reads.float().mean(0)
        secret = torch.where(ones > 0.5 + lean, 0.0, torch.where(ones < 0.5 - lean, 1.0, secret))
    return secret


def train_fingerprint(cfg: FingerprintTrainConfig, out_dir: str | Path, *, resume: bool = False,
                      progress: bool = True) -> "FingerprintTrainResult":
    """Train the encoder/decoder, draw the owner's fingerprint and measure it (see module docstring).

    Returns the bit accuracies (fingerprinted vs clean evaluation images) and the stamped images' PSNR.
    """
    from imgsteal.data.images import counting_skipped, load_images
    from imgsteal.data.patches import PairedPatchSource, to_uint8_tensor
    from imgsteal.device import pick_device
    from imgsteal.models import build_model
    from imgsteal.train.checkpoint import save_checkpoint
    from imgsteal.train.loop import run_training
    from imgsteal.data.layouts import resolve_image_specs

    started = time.perf_counter()
    device = pick_device(cfg.device)
    out_dir = Path(out_dir)
    with counting_skipped() as skipped:  # each broken file is reported once, not again for the evaluation
        loaded = load_images(resolve_image_specs(cfg.images))
    images = [to_uint8_tensor(img) for _, img in loaded if min(img.shape[-2:]) >= cfg.size]
    if not images:
        raise ImgstealError(f"no training image is at least {cfg.size} px on its shorter side")
    torch.manual_seed(cfg.seed)
    encoder = build_model("fingerprint_encoder", bits=cfg.bits, size=cfg.size, channels=cfg.channels, depth=cfg.depth)
    decoder = build_model("fingerprint_decoder", bits=cfg.bits, size=cfg.size, channels=cfg.channels)
    recipe = FingerprintRecipe(encoder, decoder, cfg.bits, device, cfg.lr, cfg.image_weight, cfg.seed,
                               ramp_steps=round(cfg.ramp * cfg.steps))
    # Epochs of about 100 steps (or the whole run): a checkpoint is written after each epoch.
    repeat = max(1, math.ceil(min(cfg.steps, 100) * cfg.batch_size / len(images)))
    source = PairedPatchSource(images, images, scale=1, patch=cfg.size, batch_size=cfg.batch_size, seed=cfg.seed,
                               repeat=repeat)
    epochs = max(1, math.ceil(cfg.steps / source.batches_per_epoch))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(cfg.model_dump_json(indent=2))
    training = run_training(recipe, source, run_dir=out_dir, epochs=epochs, steps=cfg.steps, resume=resume, progress=progress,
                            meta={"role": "fingerprint", "bits": cfg.bits, "seed": cfg.seed, "config": cfg.model_dump(mode="json")},
                            checkpoint_every=cfg.checkpoint_every, description="fingerprint")
    meta = {"role": "fingerprint", "bits": cfg.bits, "size": cfg.size, "steps": training.steps,
            "archs": {"encoder": encoder.build_spec, "decoder": decoder.build_spec}}
    save_checkpoint(out_dir / MODEL_FILE, meta, {"encoder": encoder, "decoder": decoder})
    secret_path = out_dir / SECRET_FILE
    if not secret_path.exists():  # keep the owner's fingerprint if an earlier run drew one
        decoder.eval()
        with torch.no_grad():  # the decoder's reading of unstamped training images (uint8 -> [0, 1])
            sample = [img[None].to(device).float() / 255 for img in images[: cfg.max_eval_images]]
            reads = torch.cat([(decoder(x) > 0).float().cpu() for x in sample])
        write_private(secret_path, bits_to_text(new_fingerprint(cfg.bits, reads)).encode())
    model = FingerprintModel.load(out_dir, device)
    eval_paths = [p for p in resolve_image_specs(cfg.eval_images or cfg.images)
                  if str(p) not in skipped.unreadable][: cfg.max_eval_images]
    clean = [img for _, img in load_images(eval_paths)]
    result = evaluate_fingerprint(model, clean)
    result.steps = training.steps
    result.seconds = time.perf_counter() - started
    (out_dir / METRICS_FILE).write_text(json.dumps(result.as_dict(), indent=2))
    return result


# -- the trained model, stamping and detection ------------------------------------------------
class FingerprintModel:
    """A trained encoder/decoder pair and the owner's secret fingerprint."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, fingerprint: torch.Tensor,
                 device: torch.device = torch.device("cpu")) -> None:
        if fingerprint.numel() != encoder.bits:
            raise ImgstealError(f"the fingerprint has {fingerprint.numel()} bits, the encoder takes {encoder.bits}")
        self.device = device
        self.encoder, self.decoder = encoder.to(device).eval(), decoder.to(device).eval()
        self.fingerprint = fingerprint.float().flatten()

    @property
    def bits(self) -> int:
        return self.fingerprint.numel()

    @classmethod
    def load(cls, run_dir: str | Path, device: str | torch.device | None = "cpu") -> "FingerprintModel":
        """Load `run_dir` (from `train_fingerprint`): networks and the secret fingerprint."""
        from imgsteal.device import pick_device
        from imgsteal.train.checkpoint import load_checkpoint

        run_dir = Path(run_dir)
        model_path, secret_path = run_dir / MODEL_FILE, run_dir / SECRET_FILE
        if not model_path.exists() or not secret_path.exists():
            raise ImgstealError(f"{run_dir} is not a trained fingerprint (needs {MODEL_FILE} and {SECRET_FILE}); "
                                "run `imgsteal fingerprint train` first")
        ckpt = load_checkpoint(model_path)
        fingerprint = text_to_bits(read_private(secret_path).decode("ascii", errors="replace"))
        device = device if isinstance(device, torch.device) else pick_device(device)
        return cls(ckpt.build_module("encoder"), ckpt.build_module("decoder"), fingerprint, device)

    @property
    def size(self) -> int:
        return self.encoder.size

    @torch.no_grad()
    def stamp(self, image: torch.Tensor, fingerprint: torch.Tensor | None = None) -> torch.Tensor:
        """3 x H x W in [0, 1] -> the same image carrying the owner's (or the given) fingerprint.

        An image of another size than the encoder's is stamped through its size x size copy: the
        residual found there is resized to H x W and added, which is what the decoder reads back.
        """
        bits = (self.fingerprint if fingerprint is None else fingerprint).to(self.device)[None]
        x = image.detach().clone().to(self.device)[None]
        h, w = x.shape[-2:]
        if (h, w) == (self.size, self.size):
            return self.encoder(x, bits)[0].cpu()
        small = resize(x, self.size, self.size)
        residual = self.encoder(small, bits) - small
        return (x + resize(residual, h, w)).clamp(0, 1)[0].cpu()

    @torch.no_grad()
    def decode(self, image: torch.Tensor) -> torch.Tensor:
        """3 x H x W in [0, 1] -> the bits read from it (float 0/1, length `bits`)."""
        return (self.decoder(image.detach().clone().to(self.device)[None])[0] > 0).float().cpu()

    def bit_accuracy(self, image: torch.Tensor) -> float:
        """Share of the owner's bits read correctly from `image` (at most about 0.5 for a clean image:
        the secret is drawn against the decoder's reading of unstamped images, see new_fingerprint)."""
        return float((self.decode(image) == self.fingerprint).float().mean())


class FingerprintDefense:
    """Output defence: stamps every answer with the owner's fingerprint (label "fingerprint")."""

    name = "fingerprint"

    def __init__(self, model: FingerprintModel) -> None:
        self.model = model

    def apply(self, key_name: str, input_image: torch.Tensor, output_image: torch.Tensor,
              input_sha256: str) -> tuple[torch.Tensor, str | None]:
        return self.model.stamp(output_image), self.name


@dataclass
class FingerprintDetection:
    """Bitwise accuracy of the owner's fingerprint in a set of images.

    p_value: one-sided binomial P(X >= matched bits | all bits read, p = 0.5); it treats bits as
    independent, which they are not quite (same decoder, similar images): read it as an indication.
    """

    images: int
    bits: int
    accuracy: float  # mean over images of the share of bits read correctly
    matched_bits: int
    total_bits: int
    p_value: float
    per_image: list[float] = field(default_factory=list)

    def as_dict(self, with_per_image: bool = False) -> dict:
        out = asdict(self)
        if not with_per_image:
            out.pop("per_image")
        return out

    def summary(self) -> str:
        return (f"{self.images} images: bitwise accuracy {self.accuracy:.1%} on {self.bits} bits "
                f"(binomial p = {self.p_value:.3g} against 50%)")


def detect_fingerprint(model: FingerprintModel, images: Sequence[torch.Tensor]) -> FingerprintDetection:
    """Read the owner's fingerprint from each image (3 x H x W in [0, 1]); see FingerprintDetection."""
    from imgsteal.defenses.verify import binomial_p_value

    if not images:
        raise ImgstealError("no images to look for the fingerprint in")
    per_image = [model.bit_accuracy(img) for img in images]
    matched = round(sum(per_image) * model.bits)
    total = model.bits * len(per_image)
    return FingerprintDetection(images=len(per_image), bits=model.bits, accuracy=sum(per_image) / len(per_image),
                                matched_bits=matched, total_bits=total, p_value=binomial_p_value(matched, total),
                                per_image=per_image)


@dataclass
class FingerprintVerdict:
    """Is the owner's fingerprint in a suspect's images, beyond what unstamped images give?

    Images are the units (bits of one image are not independent): one-sided Welch t-test of the
    suspect's per-image accuracies against the per-image accuracies on unstamped reference images
    (outputs of independent models, or the victim without stamping), or against 50% without
    references. found: p_value < alpha and the mean accuracy exceeds the references' (or 50%) by at
    least `margin` (share of bits).
    """

    found: bool
    accuracy: float
    reference_accuracy: float
    margin: float
    p_value: float
    alpha: float
    images: int
    reference_images: int

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        against = (f"unstamped references {self.reference_accuracy:.1%} ({self.reference_images} images)"
                   if self.reference_images else "50% (no unstamped reference given: pass some)")
        decision = "fingerprint FOUND" if self.found else "no evidence of the fingerprint"
        return (f"{self.accuracy:.1%} of bits on {self.images} images against {against}: Welch p = {self.p_value:.3g}, "
                f"required margin {self.margin:.0%} (alpha {self.alpha:g}): {decision}")


def fingerprint_verdict(suspect: FingerprintDetection, references: Sequence[FingerprintDetection] = (),
                        alpha: float = 0.01, margin: float = 0.05) -> FingerprintVerdict:
    """Decide on `suspect` (per-image accuracies) against unstamped `references`; see FingerprintVerdict."""
    import numpy as np
    from scipy.stats import ttest_1samp, ttest_ind

    x = np.asarray(suspect.per_image, dtype=float)
    ref = np.asarray([a for r in references for a in r.per_image], dtype=float)
    if x.size == 0 or (references and ref.size == 0):
        raise ImgstealError("the fingerprint verdict needs per-image accuracies of the suspect and of the references")
    base = float(ref.mean()) if ref.size else 0.5
    diff = float(x.mean()) - base
    if ref.size and (x.var() > 0 or ref.var() > 0) and x.size + ref.size > 2:
        p = float(ttest_ind(x, ref, equal_var=False, alternative="greater").pvalue)
    elif not ref.size and x.var() > 0 and x.size > 1:
        p = float(ttest_1samp(x, 0.5, alternative="greater").pvalue)
    else:  # no spread (or one image): only a clear difference counts, and no significance to claim with one image
        p = 0.0 if diff > 0 and x.size > 1 else 1.0
    if math.isnan(p):
        p = 1.0
    return FingerprintVerdict(found=p < alpha and diff >= margin, accuracy=float(x.mean()), reference_accuracy=base,
                              margin=margin, p_value=p, alpha=alpha, images=int(x.size), reference_images=int(ref.size))


@dataclass
class FingerprintTrainResult:
    """What `train_fingerprint` measured on the evaluation images."""

    bits: int
    images: int
    fingerprinted: FingerprintDetection
    clean: FingerprintDetection
    psnr_db: float  # stamped (8-bit) vs clean, mean over images
    steps: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"bits": self.bits, "images": self.images, "steps": self.steps, "seconds": self.seconds, "psnr_db": self.psnr_db,
                "fingerprinted": self.fingerprinted.as_dict(), "clean": self.clean.as_dict()}


def evaluate_fingerprint(model: FingerprintModel, clean: Sequence[torch.Tensor]) -> FingerprintTrainResult:
    """Bit accuracy of the owner's fingerprint on stamped (8-bit quantised) and on clean images."""
    from imgsteal.data.images import quantize

    clean = [img for img in clean if min(img.shape[-2:]) >= 8]
    stamped = [quantize(model.stamp(img)) for img in clean]
    psnrs = []
    for s, c in zip(stamped, clean):
        mse = float(F.mse_loss(s, c))
        psnrs.append(100.0 if mse == 0 else 10 * math.log10(1 / mse))
    return FingerprintTrainResult(bits=model.bits, images=len(clean), fingerprinted=detect_fingerprint(model, stamped),
                                  clean=detect_fingerprint(model, clean), psnr_db=sum(psnrs) / max(1, len(psnrs)))
