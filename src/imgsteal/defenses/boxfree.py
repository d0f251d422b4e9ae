"""Box-free output watermark (after Zhang et al., AAAI 2020 and TPAMI 2021): a secret mark image
hidden in every answer, which an extractor recovers from the outputs of any model trained on them.

Networks (all fully convolutional up to the extractor's global pooling, so any answer size works):
- embedder H: (answer, key) -> answer + residual; the residual is 5-15 px structure (a real copy
  learns that; it treats 1-2 px detail as noise), a local function of the answer's content whose
  last layer's weights the secret key seeds, decorrelated from the answer's own detail (so a blurrier or
  sharper copy does not carry it by chance), clipped at +-`clip` RMS to a peak of `strength` per
  pixel, and scaled per answer to the largest factor whose 8-bit answer stays `min_psnr` (38 dB)
  from the unmarked one (checked after the rounding): every marked answer is >= 38 dB PSNR by
  construction, at the budget's edge.
- extractor R: image -> mark_size x mark_size mark image in [0, 1]; the secret mark for marked
  images and for outputs of models trained on marked answers, a blank (all-zero) image otherwise.
  It reads how the image's detail in the residual's band correlates with the residual H would add.
- discriminator D: marked vs clean answers (adversarial loss on H), as in the papers.

Differences from the papers, on purpose: the papers' residual is tied to pixel positions (the mark
image is concatenated spatially), which a surrogate trained on random crops cannot learn (the
structure-consistency follow-up, Zhang et al. 2021, shows exactly this failure under crops). Here the
residual is a content-dependent texture that a translation-equivariant surrogate can learn, and R
reads it through global pooling.

Training (`train_boxfree`), as in Zhang et al.:
- stage 1: H, R, D on clean answers: fidelity (L2 + adversarial), mark recovery from marked
  answers (through 8-bit rounding), blank from clean answers; H is trained on random keys, never on
  the owner's, with a loss that keeps two keys' residuals apart (see the decision below);
- stage 2 ("adversarial stage"): small surrogates are trained on (input, answer marked with the
  owner's key) pairs and others on (input, clean answer) pairs; R is fine-tuned to return the mark
  from the former's outputs (and from marked answers) and the blank from the latter's;
- check: more models trained on clean answers, with other seeds and architectures than any used in
  stage 2, are verified like suspects; how many the decision accuses is stored (it should be about
  alpha of them). Nothing is fitted on them, nor ever on a suspect.

Verification: the suspect answers the stored query inputs; each answer is read against the owner's
own clean answer to that query (stored with the queries): what the suspect adds to the clean answer,
against the residual H adds to it. The content both share cancels, so only the learnt residual
counts, not a model's own sharpness, blur or texture. The decision is a rank test (`BoxfreeModel.
rank_tests`): the share of the owner's key's residual the answers carry, pooled over every query,
against the shares of `decoys` random keys drawn like it; p = (1 + decoys at or above) / (1 +
decoys), verified when p <= alpha. An innocent model cannot tell the owner's key from a decoy (H
never saw the owner's key in training), so it is accused with probability at most alpha, exactly.
R's extraction (the mark it draws, SSIM and NCC with the secret mark) is reported beside it. The
verifier needs only the suspect's answers to chosen queries and its own private files, never the
suspect's weights.

Run folder (0700; everything in it owner-only):
    config.json, metrics.jsonl, checkpoints/   stage-1 training (resumable)
    boxfree_model.safetensors                  H, R, D and the decoy seed (0600)
    key.png, mark.png                          the secret key of the residual, the mark R draws (0600)
    queries/, answers/                         verification query inputs and the clean answers to them (PNG)
    stage2/, calibration/                      the surrogates and independent models trained here
    calibration.json                           independent models' p-values and shares, how many accused
    metrics.json                               PSNR, similarities of marked/clean/surrogate outputs
"""

from __future__ import annotations

import functools
import json
import math
import secrets
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from imgsteal.errors import ImgstealError
from imgsteal.files import private_dir, read_private, write_private
from imgsteal.models.registry import register_model

MODEL_FILE = "boxfree_model.safetensors"
MARK_FILE = "mark.png"  # the image the extractor draws
KEY_FILE = "key.png"  # the secret key the embedder's residual is made from (an 8 x 8 grid, like new_mark)
QUERIES_DIR = "queries"
ANSWERS_DIR = "answers"  # the owner's clean answers to the verification queries: the reference of every score
CALIBRATION_FILE = "calibration.json"
METRICS_FILE = "metrics.json"
LABEL = "boxfree"

# A suspect: list of 3 x h x w inputs in [0, 1] -> list of 3 x H x W outputs in [0, 1].
Suspect = Callable[[Sequence[torch.Tensor]], list[torch.Tensor]]


# -- networks ----------------------------------------------------------------------------------
def local_mean(image: torch.Tensor, side: int) -> torch.Tensor:
    """N x C x H x W averaged over every side x side window (odd side; replicate padding; 1: the image)."""
    if side == 1:
        return image
    # separable running sums: a few reads per pixel whatever the side (avg_pool2d reads side^2; decoy keys
    # call this thousands of times)
    return _box_mean(_box_mean(image, side, -1), side, -2)


def _box_mean(x: torch.Tensor, side: int, dim: int) -> torch.Tensor:
    """Mean over `side` (odd) neighbours along `dim`, the edge values repeated beyond the border."""
    r, n = side // 2, x.shape[dim]
    first, last = x.narrow(dim, 0, 1), x.narrow(dim, n - 1, 1)
    # one extra leading copy: the running sum's difference then needs no index shift
    padded = torch.cat([first.repeat_interleave(r + 1, dim), x, last.repeat_interleave(r, dim)], dim)
    sums = padded.cumsum(dim)
    return (sums.narrow(dim, side, n) - sums.narrow(dim, 0, n)) / side


def band_pass(image: torch.Tensor, smooth: int, band: int) -> torch.Tensor:
    """Detail between smooth and band px: the smooth x smooth local mean minus the band x band one."""
    return local_mean(image, smooth) - local_mean(image, band)


# The answer's own detail, in bands that tile 1 to 31 px: what a copy that is blurrier or sharper than
# the victim gets wrong lies (nearly) in their span.
CONTENT_BANDS = ((1, 3), (3, 7), (7, 15), (15, 31))


def content_regressors(image: torch.Tensor, within: tuple[int, int] = (1, 3),
                       bands: Sequence[tuple[int, int]] = CONTENT_BANDS) -> tuple[torch.Tensor, torch.Tensor]:
    """(regressors N x K x P, their ridge-regularised Gram matrix N x K x K): the image's own detail in
    each of `bands` (every channel's), passed through the residual's band `within` = (smooth, band).
    They depend on the image only, so many residuals of one image (decoy keys) share them."""
    regressors = torch.cat([band_pass(band_pass(image, s, b), *within) for s, b in bands], 1).flatten(2)
    gram = regressors @ regressors.transpose(1, 2)
    eye = torch.eye(gram.shape[-1], device=gram.device)
    ridge = 1e-6 * gram.diagonal(dim1=1, dim2=2).mean(1).clamp_min(1e-12)[:, None, None] * eye
    return regressors, gram + ridge


def decorrelate(residual: torch.Tensor, image: torch.Tensor, within: tuple[int, int] = (1, 3),
                bands: Sequence[tuple[int, int]] = CONTENT_BANDS,
                regressors: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The residual (N x 3 x H x W, band-passed to `within` = (smooth, band)) minus its least-squares
    fit, per image, on the image's own detail in each of `bands` (`content_regressors`; pass them when
    already computed): what is left correlates with no blur or sharpening of the image, so a copy that
    merely renders the victim's detail more or less strongly carries none of it, and it stays in its band."""
    x, gram = content_regressors(image, within, bands) if regressors is None else regressors
    flat = residual.flatten(2)  # N x 3 x P
    coef = torch.linalg.solve(gram, x @ flat.transpose(1, 2))  # N x K x 3
    return residual - (coef.transpose(1, 2) @ x).view_as(residual)


def detail(image: torch.Tensor, band: int = 3) -> torch.Tensor:
    """N x C x H x W minus its band x band local mean: the fine detail (band: odd, >= 3)."""
    return band_pass(image, 1, band)


@register_model("boxfree_embedder")
class BoxfreeEmbedder(nn.Module):
    """(N x 3 x H x W answers in [0, 1], 1 or N x 1 x M x M key in [0, 1]) -> marked answers in [0, 1].

    The residual: a conv net of the answer, made key-specific one of two ways (`keyed`):
    - "filters" (the default since 2026-12-02, evening): a key-independent trunk of the answer, then a
      3 x 3 conv to 3 channels whose weights are a Gaussian draw seeded by the key's 64 cells. Every key
      gets its own filter bank, channels x 27 independent weights, so two keys' residuals are nearly
      orthogonal and an innocent model's errors cannot correlate with all of them alike;
    - "code" (runs before): a learnt code of the key broadcast to every position and fed to the first
      layer (a low-dimensional family: a model's error correlated with a key's residual much as with
      its neighbours'),
    then (through tanh when `saturate`, as in runs before 2026-12-02) band-passed (its smooth x smooth
    local mean minus its band x band one), decorrelated from the answer's own detail (`decorrelate`),
    scaled to an RMS of 1, clamped to +-1 and times `strength`: at most `strength` per pixel, any H x W.
    """

    def __init__(self, mark_size: int = 32, channels: int = 16, depth: int = 2, code: int = 8,
                 strength: float = 0.012, gain: float = 5.0, band: int = 3, spread: int = 0, smooth: int = 1,
                 padding_mode: str = "zeros", decorrelated: bool = False, saturate: bool = True,
                 keyed: str = "code", min_psnr: float = 0.0, clip: float = 1.0) -> None:
        super().__init__()
        # the texture (RMS 1) is clamped to +-clip, then scaled so that clip is `strength`: 1 (runs before
        # the night of 2026-12-02) clips about 30% of pixels to one level, whose rounding moves in steps of a whole
        # 8-bit level, so min_psnr could only be met up to ~1 dB below it; 3 clips ~0.3%
        if clip <= 0:
            raise ValueError(f"clip must be > 0, not {clip}")
        self.clip = clip
        # 0: the residual's cost is bounded only by `strength` (PSNR >= 20 log10(1 / strength)); > 0: each
        # answer's residual is also scaled down to keep it at least min_psnr dB (runs before 2026-12-02: 0)
        self.min_psnr = min_psnr
        if keyed not in ("code", "filters"):
            raise ValueError(f"keyed must be code or filters, not {keyed!r}")
        self.mark_size, self.strength, self.gain, self.band = mark_size, strength, gain, band
        self.keyed, self.channels = keyed, channels
        self.code_dim = code if keyed == "code" else 0
        self.smooth = smooth  # 1: detail down to single pixels (runs trained before 2026-12-02 have no smooth)
        self.spread = spread  # 0: RMS-normalised over the whole image; k: over every k x k window (odd)
        self.decorrelated = decorrelated  # runs trained before 2026-12-02: False
        self.padding_mode = padding_mode
        # tanh(gain x) before the band-pass (runs before 2026-12-02): where it saturates the texture is flat and
        # the band-pass leaves nothing, so stage 1 learnt residuals on a few pixels (58 dB answers)
        self.saturate = saturate
        # replicate: zero padding gives every image a structured border that a band-passed residual keeps
        # and the per-image RMS then concentrates on (runs trained before 2026-12-02: zeros)
        conv = functools.partial(nn.Conv2d, kernel_size=3, padding=1, padding_mode=padding_mode)
        if keyed == "code":
            self.code = nn.Linear(mark_size * mark_size, code)
        self.stem = nn.Sequential(conv(3, channels), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [conv(channels + (self.code_dim if i == 0 else 0), channels), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        if keyed == "code":
            self.residual = conv(channels, 3)

    def key_filters(self, key: torch.Tensor) -> torch.Tensor:
        """The 3 x channels x 3 x 3 filter bank of a key (1 x M x M, an 8 x 8 grid of cells): a standard
        normal draw seeded by its 64 cells (so equal keys give equal banks and any two keys' banks are
        independent draws), scaled to unit gain."""
        cells = F.adaptive_avg_pool2d(key.reshape(1, 1, *key.shape[-2:]).float().cpu(), 8).flatten() > 0.5
        seed = sum(1 << i for i, on in enumerate(cells.tolist()) if on)
        bank = torch.randn(3, self.channels, 3, 3, generator=torch.Generator().manual_seed(seed))
        return (bank / math.sqrt(self.channels * 9)).to(key.device)

    def _keyed_texture(self, h: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(h, (1, 1, 1, 1), mode=self.padding_mode if self.padding_mode != "zeros" else "constant"),
                        self.key_filters(key))

    def forward(self, image: torch.Tensor, mark: torch.Tensor) -> torch.Tensor:
        if self.keyed == "filters":
            h = self.body(self.stem(image * 2 - 1))
            if mark.shape[0] == 1:
                return self._marked(image, self._keyed_texture(h, mark[0]))
            texture = torch.cat([self._keyed_texture(h[i : i + 1], mark[i]) for i in range(len(mark))])
            return self._marked(image, texture)
        code = self.code(mark.reshape(mark.shape[0], -1) * 2 - 1)
        code = code.expand(image.shape[0], -1)[:, :, None, None].expand(-1, -1, *image.shape[-2:])
        h = self.body(torch.cat([self.stem(image * 2 - 1), code], 1))
        return self._marked(image, self.residual(h))

    @torch.no_grad()
    def hints(self, image: torch.Tensor, keys: Sequence[torch.Tensor]):
        """For each key (1 x M x M): forward(image, key) - image, the residual it adds (N x 3 x H x W).

        The work that does not depend on the key - the trunk (with a code: the stem and its part of the
        first conv), the content regressors - is done once, so reading hundreds of decoy keys costs a
        fraction of as many forward passes. Same values as forward (a code is a constant map: with
        replicate padding its part of the first conv is a per-channel bias)."""
        regressors = content_regressors(image, (self.smooth, self.band)) if self.decorrelated else None
        if self.keyed == "filters":
            h = self.body(self.stem(image * 2 - 1))
            for key in keys:
                yield self._marked(image, self._keyed_texture(h, key), regressors) - image
            return
        if self.padding_mode != "replicate":  # zero padding: the code's part is not constant at the borders
            for key in keys:
                yield self(image, key[None]) - image
            return
        first, rest = self.body[0], self.body[1:]
        stem = self.stem(image * 2 - 1)
        base = first(torch.cat([stem, stem.new_zeros(stem.shape[0], self.code_dim, *stem.shape[-2:])], 1))
        code_weight = first.weight[:, stem.shape[1]:].sum((2, 3))  # channels x code
        for key in keys:
            code = self.code(key.reshape(1, -1) * 2 - 1)  # 1 x code
            h = rest(base + (code @ code_weight.T)[:, :, None, None])
            yield self._marked(image, self.residual(h), regressors) - image

    def _marked(self, image: torch.Tensor, texture: torch.Tensor,
                regressors: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """The answer plus the residual made of the net's raw texture (see the class docstring)."""
        if self.saturate:
            texture = torch.tanh(self.gain * texture)
        # Detail between smooth and band px: a real SR copy at 39 dB from its victim treats 1-2 px detail
        # as noise and learns 5-15 px structure (benchmarks/bench_residual_bands.py). Scaled to an RMS of 1
        # per image, then clamped: the residual is at most `strength` per pixel, so the marked answer is
        # >= 20 log10(1 / strength) dB PSNR.
        texture = band_pass(texture, self.smooth, self.band)
        if self.spread:  # every k x k window carries the residual (per image, a few detailed pixels carry it all)
            texture = texture / local_mean(texture.pow(2).mean(1, keepdim=True), self.spread).add(1e-6).sqrt()
        if self.decorrelated:  # a blurrier or sharper copy of the victim does not carry it by chance
            texture = decorrelate(texture, image, (self.smooth, self.band), regressors=regressors)
        if not self.spread:
            texture = texture / texture.pow(2).mean((1, 2, 3), keepdim=True).add(1e-8).sqrt()
        residual = self.strength / self.clip * texture.clamp(-self.clip, self.clip)
        if self.min_psnr:  # scale down any answer whose residual would cost more than min_psnr allows
            residual = residual * self._budget_scale(image, residual)
        return (image + residual).clamp(0, 1)

    @torch.no_grad()
    def _budget_scale(self, image: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """N x 1 x 1 x 1 factors <= 1: for each answer the largest found (by bisection) that keeps the served
        (8-bit) marked answer at least min_psnr dB from the served unmarked one, checked after the rounding
        itself. (A bound on the rounding instead, half an 8-bit step in line with the residual, cost 1.5-2 dB
        of the budget; and the cost is a step function of the factor - the clamped pixels round together -
        so no formula finds the edge.) Every factor returned was checked; 0 (unmarked) passes always."""
        from imgsteal.data.images import quantize

        target = 10 ** (-self.min_psnr / 20)  # the largest RMS error min_psnr allows
        served = quantize(image)

        def within(scale: torch.Tensor) -> torch.Tensor:
            error = quantize(image + scale * residual) - served
            return error.pow(2).mean((1, 2, 3), keepdim=True).sqrt() <= target

        ones = residual.new_ones(residual.shape[0], 1, 1, 1)
        whole = within(ones)
        if whole.all():
            return ones
        low, high = torch.zeros_like(ones), ones
        for _ in range(14):  # to 1e-4 of the residual's peak
            middle = (low + high) / 2
            ok = within(middle)
            low, high = torch.where(ok, middle, low), torch.where(ok, high, middle)
        return torch.where(whole, ones, low)


@register_model("boxfree_extractor")
class BoxfreeExtractor(nn.Module):
    """(N x 3 x H x W image in [0, 1], N x 3 x H x W hint) -> N x 1 x M x M mark image in [0, 1].

    At verification (`BoxfreeModel.extract`) the image is what a suspect's answer adds to the owner's
    clean answer to the same query, and the hint is the residual H adds to that clean answer; in
    stage 1 the image is an answer and the hint H(answer) - answer (which shapes H's residual into a
    stable function of the content). An image that carries the mark - or the learnt imprint of it -
    has fine detail that correlates with the hint, a clean one does not. The extractor sees the image's
    detail (image minus its 3x3 local mean), the hint and their product, then a shallow conv stack,
    global mean and standard deviation of its features, and two dense layers that draw the mark.
    Still box-free: it needs the suspect's output image only.
    """

    def __init__(self, mark_size: int = 32, channels: int = 32, hidden: int = 64, strength: float = 0.012,
                 band: int = 3) -> None:
        super().__init__()
        self.mark_size, self.strength = mark_size, strength  # the embedder's: detail and hint are read in its units
        self.band = band
        self.features = nn.Sequential(nn.Conv2d(9, channels, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Linear(2 * channels + 3, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, mark_size * mark_size))

    def forward(self, image: torch.Tensor, hint: torch.Tensor) -> torch.Tensor:
        fine = detail(image, self.band) / self.strength
        hint = hint / self.strength
        product = fine * hint
        f = self.features(torch.cat([fine, hint, product], 1)).flatten(2)
        pooled = torch.cat([f.mean(-1), f.std(-1), product.flatten(2).mean(-1)], 1)
        m = self.mark_size
        return torch.sigmoid(self.head(pooled)).view(-1, 1, m, m)


@register_model("boxfree_matched_extractor")
class BoxfreeMatchedExtractor(nn.Module):
    """(image, hint) -> confidence x the mark (N x 1 x M x M in [0, 1]): a matched filter.

    The confidence is sigmoid(a * (c - b)), c the correlation of the image's detail in the residual's
    band (smooth..band px) with the hint (the residual H adds; see BoxfreeExtractor for what image and
    hint are) in units of the hint's own in-band energy: exactly 1 for a marked answer (but for 8-bit
    rounding), about 0 for a clean image, in between for a surrogate that learnt part of the mark.
    (Runs trained before 2026-12-02, `in_band` False: the image's 1..band px detail, in units of the
    hint's whole energy.) Only
    a and b are learnt, so it cannot key on other features of the image (a textured photo, a model's
    artifacts). The mark is a buffer set at training time (and kept in the private model file).
    """

    def __init__(self, mark_size: int = 32, strength: float = 0.012, band: int = 3, smooth: int = 1,
                 in_band: bool = False) -> None:
        super().__init__()
        self.mark_size, self.strength, self.band, self.smooth, self.in_band = mark_size, strength, band, smooth, in_band
        self.register_buffer("mark", torch.zeros(1, 1, mark_size, mark_size))
        self.gain = nn.Parameter(torch.tensor(8.0))
        self.center = nn.Parameter(torch.tensor(0.5))

    def correlation_terms(self, image: torch.Tensor, hint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample: (sum of the image's in-band detail times the hint, the same for the hint itself)."""
        if not self.in_band:
            return (detail(image, self.band) * hint).sum((1, 2, 3)), hint.pow(2).sum((1, 2, 3))
        return ((band_pass(image, self.smooth, self.band) * hint).sum((1, 2, 3)),
                (band_pass(hint, self.smooth, self.band) * hint).sum((1, 2, 3)))

    def correlation(self, image: torch.Tensor, hint: torch.Tensor) -> torch.Tensor:
        num, den = self.correlation_terms(image, hint)
        return num / den.add(1e-12)

    def confidence(self, correlation: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.gain * (correlation - self.center))

    def forward(self, image: torch.Tensor, hint: torch.Tensor) -> torch.Tensor:
        return self.confidence(self.correlation(image, hint))[:, None, None, None] * self.mark


@register_model("boxfree_discriminator")
class BoxfreeDiscriminator(nn.Module):
    """N x 3 x H x W in [0, 1] -> N logits (> 0: reads as a clean answer); a small patch discriminator."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
                                 nn.Conv2d(channels, 2 * channels, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
                                 nn.Conv2d(2 * channels, 1, 3, padding=1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image * 2 - 1).mean((1, 2, 3))


# -- marks and similarity ------------------------------------------------------------------------
def grid_marks(bits: torch.Tensor, size: int) -> torch.Tensor:
    """N x 64 bits (0/1) -> N x 1 x size x size marks: 8 x 8 grids of black/white cells, row by row
    (a nearly uniform grid gets a fixed frame: it makes a poor mark)."""
    grid = bits.float().view(-1, 1, 8, 8).clone()
    flat = grid.flatten(1).std(1) < 0.3
    grid[flat, :, 0, :], grid[flat, :, -1, :] = 1.0, 0.0
    return F.interpolate(grid, size=(size, size), mode="nearest")


def new_mark(size: int) -> torch.Tensor:
    """A fresh secret mark or key: an 8 x 8 grid of black/white cells from the OS's CSPRNG (1 x size x size)."""
    cells = secrets.randbits(64)
    return grid_marks(torch.tensor([(cells >> i) & 1 for i in range(64)]), size)[0]


def random_keys(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """count x 1 x size x size keys drawn like `new_mark` (the same distribution) from a seeded generator:
    stage 1's training keys and the decoys of the rank test."""
    return grid_marks(torch.randint(0, 2, (count, 64), generator=generator), size)


def load_mark(path: str | Path, size: int) -> torch.Tensor:
    """A mark image file (any format PIL reads) -> 1 x size x size grayscale in [0, 1]."""
    from imgsteal.data.images import load_image

    path = Path(path)
    if not path.is_file():
        raise ImgstealError(f"mark image not found: {path}")
    rgb = load_image(path)
    gray = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])[None, None]
    mark = F.interpolate(gray, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    if float(mark.std()) < 0.05:
        raise ImgstealError(f"the mark image {path} is (nearly) uniform: a mark needs visible structure")
    return mark.clamp(0, 1)


def mark_ssim(extracted: torch.Tensor, mark: torch.Tensor) -> float:
    """Global SSIM (one window over the whole image) of two 1 x M x M images in [0, 1], in [-1, 1].

    Needs the right mean, contrast and structure: a blank or faint extraction scores near 0.
    """
    x, y = extracted.double().flatten(), mark.double().flatten()
    c1, c2 = 0.01**2, 0.03**2
    mx, my = x.mean(), y.mean()
    vx, vy = x.var(unbiased=False), y.var(unbiased=False)
    cov = ((x - mx) * (y - my)).mean()
    return float((2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))


def mark_ncc(extracted: torch.Tensor, mark: torch.Tensor) -> float:
    """Normalised cross-correlation (Pearson) of two images, in [-1, 1]; 0 when one is constant."""
    x, y = extracted.double().flatten(), mark.double().flatten()
    x, y = x - x.mean(), y - y.mean()
    denom = float(x.norm() * y.norm())
    return 0.0 if denom < 1e-12 else float((x * y).sum()) / denom


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [0, 1] (100 when identical)."""
    mse = float(F.mse_loss(a.detach().float(), b.detach().float()))
    return 100.0 if mse == 0 else 10 * math.log10(1 / mse)


# -- the trained model -----------------------------------------------------------------------------
def _save_private_modules(path: Path, meta: dict, modules: dict[str, nn.Module]) -> None:
    from safetensors.torch import save

    tensors = {f"{name}.{k}": v.detach().cpu().contiguous().clone() for name, m in modules.items()
               for k, v in m.state_dict().items()}
    write_private(path, save(tensors, metadata={"meta": json.dumps(meta)}))


def _load_private_modules(path: Path) -> tuple[dict, dict[str, nn.Module]]:
    """Rebuild the networks of a private model file (safetensors: no pickle)."""
    from safetensors.torch import load

    from imgsteal.models import build_model

    data = read_private(path)
    tensors = load(data)
    meta = _safetensors_meta(data)
    modules = {}
    for name, spec in meta["archs"].items():
        module = build_model(spec["arch"], **spec.get("kwargs", {}))
        prefix = f"{name}."
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        modules[name] = module.eval()
    return meta, modules


def _safetensors_meta(data: bytes) -> dict:
    """The JSON `meta` entry of a safetensors file's header (read without loading tensors)."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    return json.loads(header.get("__metadata__", {}).get("meta", "{}"))


class BoxfreeModel:
    """The owner's trained networks, secret key and mark, verification queries and decoy seed."""

    def __init__(self, embedder: nn.Module, extractor: nn.Module, mark: torch.Tensor,
                 device: torch.device = torch.device("cpu"), run_dir: Path | None = None,
                 key: torch.Tensor | None = None, decoy_seed: int = 0, decoys: int | None = None,
                 alpha: float | None = None) -> None:
        self.device = device
        self.embedder, self.extractor = embedder.to(device).eval(), extractor.to(device).eval()
        self.mark = mark.float().to(device)
        self.key = self.mark if key is None else key.float().to(device)  # what the residual is made from
        # the rank test's defaults, as trained (`BoxfreeTrainConfig.decoys`, `.alpha`)
        self.decoy_seed, self.decoys, self.alpha = decoy_seed, decoys or DEFAULT_DECOYS, alpha or DEFAULT_ALPHA
        self.run_dir = run_dir
        self._stored: dict[str, list[torch.Tensor]] = {}

    @classmethod
    def load(cls, run_dir: str | Path, device: str | torch.device | None = "cpu") -> "BoxfreeModel":
        """Load a run folder of `train_boxfree` (networks and the secret mark)."""
        from imgsteal.data.images import decode_image
        from imgsteal.device import pick_device

        run_dir = Path(run_dir)
        model_path, mark_path, key_path = run_dir / MODEL_FILE, run_dir / MARK_FILE, run_dir / KEY_FILE
        if not model_path.exists() or not mark_path.exists():
            raise ImgstealError(f"{run_dir} is not a trained box-free watermark (needs {MODEL_FILE} and {MARK_FILE}); "
                                "run `imgsteal watermark train --method boxfree` first")
        if not key_path.exists():
            raise ImgstealError(f"{run_dir} was trained by an older imgsteal (no {KEY_FILE}: its embedder was trained "
                                "for one mark, so the decoy-key test cannot decide): train it again with "
                                "`imgsteal watermark train --method boxfree`")
        meta, modules = _load_private_modules(model_path)
        mark = decode_image(read_private(mark_path), "mark")[:1]
        key = decode_image(read_private(key_path), "key")[:1]
        device = device if isinstance(device, torch.device) else pick_device(device)
        return cls(modules["embedder"], modules["extractor"], mark, device, run_dir, key=key,
                   decoy_seed=int(meta.get("decoy_seed", 0)), decoys=meta.get("decoys"), alpha=meta.get("alpha"))

    @torch.no_grad()
    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """3 x H x W answer in [0, 1] -> the same answer carrying the owner's mark (residual <= strength)."""
        return self.embedder(image.to(self.device, torch.float32)[None], self.key[None])[0].cpu()

    @torch.no_grad()
    def extract(self, image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """3 x H x W image in [0, 1] made for the same query as `reference` (the owner's clean answer to
        it) -> 1 x M x M extracted mark (blank, all 0, for the clean answer itself)."""
        return self.extractor(*self._reading(image, reference))[0].cpu()

    @torch.no_grad()
    def _reading(self, image: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the extractor reads, 1 x 3 x H x W each: what the image adds to the clean answer (image -
        reference), and the residual the owner's marked answer adds to it (the hint). The content both
        share cancels, so a model that is merely sharp, blurry or textured is not mistaken for one that
        learnt the mark."""
        x = image.to(self.device, torch.float32)[None]
        ref = reference.to(self.device, torch.float32)[None]
        if x.shape != ref.shape:
            raise ImgstealError(f"an answer of {tuple(x.shape[-2:])} px cannot be compared with the owner's "
                                f"{tuple(ref.shape[-2:])} px answer to the same query")
        return x - ref, self.embedder(ref, self.key[None]) - ref

    def score(self, images: Sequence[torch.Tensor], references: Sequence[torch.Tensor]) -> "MarkScore":
        """Similarity to the secret mark of the mean extraction over `images`, each scored against the
        owner's clean answer to the same query (`references`, in the same order; see MarkScore)."""
        if not images:
            raise ImgstealError("no images to extract the mark from")
        if len(images) != len(references):
            raise ImgstealError(f"{len(images)} images but {len(references)} reference answers")
        readings = [self._reading(img, ref) for img, ref in zip(images, references)]
        with torch.no_grad():
            extracted = torch.stack([self.extractor(*reading)[0].cpu() for reading in readings])
        mean = extracted.mean(0)
        mark = self.mark.cpu()
        share = None
        if isinstance(self.extractor, BoxfreeMatchedExtractor):
            # A matched filter pools its evidence before deciding: one correlation over every answer's
            # pixels (the noise of each small answer averages out), then one confidence times the mark.
            with torch.no_grad():
                terms = [self.extractor.correlation_terms(*reading) for reading in readings]
                share = float(sum(num for num, _ in terms)) / max(float(sum(den for _, den in terms)), 1e-12)
                mean = self._mark_at(share)
        return MarkScore(images=len(images), ssim=mark_ssim(mean, mark), ncc=mark_ncc(mean, mark),
                         per_image_ssim=sum(mark_ssim(e, mark) for e in extracted) / len(extracted), share=share)

    @torch.no_grad()
    def _mark_at(self, share: float) -> torch.Tensor:
        """The matched filter's mean extraction for a pooled share: the mark times its confidence."""
        return self.extractor.confidence(torch.tensor(float(share), device=self.device)).cpu() * self.mark.cpu()

    @torch.no_grad()
    def rank_tests(self, answer_sets: Sequence[Sequence[torch.Tensor]], decoys: int | None = None,
                   alpha: float | None = None, progress: bool = False,
                   table: torch.Tensor | None = None) -> list["RankTest"]:
        """The decoy-key rank test of each suspect (its answers to the stored verification queries, in order).

        The statistic is the share of a key's residual the answers carry, pooled over every query (what
        they add to the owner's clean answers, in the residual's band, against the residual the key
        adds). It is read for the owner's key and for `decoys` keys drawn the same way (`random_keys`,
        from the model's decoy seed): p = (1 + decoys at or above the owner's) / (1 + decoys). A model
        that never saw the owner's marked answers has no reason to prefer the owner's key over any
        decoy - the embedder was trained on random keys, not on the owner's - so its p is uniform and
        p <= alpha happens with probability at most alpha, with no independent models and no normal
        fit. A copy carries the owner's key's residual and not the decoys'. decoys, alpha: None = as
        trained. table: the decoys' shares of these answer sets when already read (`share_table` of
        `decoy_keys(decoys)`, decoys x suspects), so that other keys can be read against the same decoys."""
        decoys, alpha = decoys or self.decoys, alpha or self.alpha
        try:
            rank = decoy_rank(decoys, alpha)  # above the rank-th highest decoy: p <= alpha
        except ValueError as error:
            raise ImgstealError(str(error)) from None
        shares = self.share_table(answer_sets, self.key[None])  # 1 x suspects: the owner's key
        if table is None:
            table = self.share_table(answer_sets, self.decoy_keys(decoys), progress)  # decoys x suspects
        elif table.shape != (decoys, len(answer_sets)):
            raise ImgstealError(f"a decoy table of {tuple(table.shape)} for {decoys} decoys x {len(answer_sets)} suspects")
        owner, p_values = shares[0], decoy_p_values(shares, table)[0]
        results = []
        for j in range(len(answer_sets)):
            column = table[:, j].sort(descending=True).values
            results.append(RankTest(
                share=float(owner[j]), p_value=float(p_values[j]), alpha=alpha,
                decoys=decoys, share_threshold=float(column[rank - 1]), decoy_mean=float(column.mean()),
                decoy_sd=float(column.std())))
        return results

    def decoy_keys(self, decoys: int | None = None) -> torch.Tensor:
        """decoys x 1 x M x M: the rank test's decoy keys (`random_keys` from the model's decoy seed)."""
        return random_keys(decoys or self.decoys, self.key.shape[-1], torch.Generator().manual_seed(self.decoy_seed))

    @torch.no_grad()
    def share_table(self, answer_sets: Sequence[Sequence[torch.Tensor]], keys: torch.Tensor,
                    progress: bool = False) -> torch.Tensor:
        """keys x suspects: the share of each key's residual each suspect's answers carry (the rank test's
        statistic): what the answers add to the owner's clean answers, in the residual's band, against
        the residual the key adds to them, pooled over every query."""
        from tqdm import tqdm

        refs = torch.stack(self.reference_answers()).to(self.device)
        smooth, band = self.embedder.smooth, self.embedder.band
        errors = []
        for answers in answer_sets:
            if len(answers) != len(refs):
                raise ImgstealError(f"{len(answers)} answers for {len(refs)} verification queries")
            x = torch.stack([a.to(self.device, torch.float32) for a in answers])
            if x.shape != refs.shape:
                raise ImgstealError(f"answers of {tuple(x.shape[-2:])} px cannot be compared with the owner's "
                                    f"{tuple(refs.shape[-2:])} px answers to the same queries")
            errors.append(band_pass(x - refs, smooth, band))
        errors = torch.stack(errors)  # suspects x queries x 3 x H x W

        def shares(hint: torch.Tensor) -> torch.Tensor:
            energy = (band_pass(hint, smooth, band) * hint).sum().clamp_min(1e-12)
            return (errors * hint[None]).sum((1, 2, 3, 4)) / energy

        hints = self.embedder.hints(refs, list(keys.to(self.device)))
        bar = tqdm(hints, total=len(keys), desc="decoy keys", disable=not progress or len(keys) < 2, leave=False)
        return torch.stack([shares(h) for h in bar]).cpu()

    def score_suspect(self, suspect: Suspect) -> "MarkScore":
        """Ask the suspect the stored verification queries and score its answers against the owner's."""
        return self.score(suspect_outputs(suspect, self.queries()), self.reference_answers())

    def queries(self) -> list[torch.Tensor]:
        """The stored verification query inputs (3 x h x w in [0, 1])."""
        return self._stored_images(QUERIES_DIR, "verification queries")

    def reference_answers(self) -> list[torch.Tensor]:
        """The owner's clean (unmarked) answers to the verification queries, in the same order."""
        answers = self._stored_images(ANSWERS_DIR, "reference answers")
        if len(answers) != len(self.queries()):
            raise ImgstealError(f"{len(answers)} reference answers for {len(self.queries())} verification queries "
                                f"in {self.run_dir}; train the watermark again")
        return answers

    def _stored_images(self, name: str, what: str) -> list[torch.Tensor]:
        """The PNGs of a run sub-folder, decoded once per model (every suspect is asked the same queries)."""
        if name not in self._stored:
            self._stored[name] = self._read_stored_images(name, what)
        return self._stored[name]

    def _read_stored_images(self, name: str, what: str) -> list[torch.Tensor]:
        from imgsteal.data.images import decode_image

        folder = None if self.run_dir is None else self.run_dir / name
        files = sorted(folder.glob("*.png")) if folder is not None and folder.is_dir() else []
        if not files:
            raise ImgstealError(f"this box-free model has no stored {what} ({folder}); it was trained by an older "
                                "imgsteal: train it again with `imgsteal watermark train --method boxfree`")
        return [decode_image(read_private(p), p.name) for p in files]

    def calibration(self) -> dict:
        path = None if self.run_dir is None else self.run_dir / CALIBRATION_FILE
        if path is None or not path.exists():
            raise ImgstealError("the box-free watermark has not been checked on independent models yet: run "
                                "`imgsteal watermark calibrate --method boxfree --model RUN --reference MODEL ...`")
        return json.loads(read_private(path))


@dataclass
class MarkScore:
    """How much of the owner's mark a set of images carries.

    ssim: global SSIM of the mean extraction vs the mark (the decision statistic; ~1 for the mark, ~0 blank);
    ncc: Pearson correlation of the same two images (shape only, amplitude-blind: informative);
    per_image_ssim: mean over images of each extraction's SSIM;
    share: (matched filter) the share of the owner's residual the images carry, pooled over all of
    them (1 for marked answers, about 0 for clean ones); the mean extraction is then the mark times
    the filter's confidence in that share.
    """

    images: int
    ssim: float
    ncc: float
    per_image_ssim: float
    share: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


class BoxfreeDefense:
    """Output defence: hides the owner's mark in every answer (label "boxfree")."""

    name = LABEL

    def __init__(self, model: BoxfreeModel) -> None:
        self.model = model

    def apply(self, key_name: str, input_image: torch.Tensor, output_image: torch.Tensor,
              input_sha256: str) -> tuple[torch.Tensor, str | None]:
        return self.model.embed(output_image), self.name


# -- verification and calibration ------------------------------------------------------------------
DEFAULT_ALPHA, DEFAULT_DECOYS = 0.01, 999


def decoy_p_values(shares: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """keys x suspects p-values of the rank test: for each key's share of each suspect's answers
    (`shares`, keys x suspects), (1 + decoys at or above it) / (1 + decoys), the decoys' shares in
    `table` (decoys x suspects)."""
    return (1 + (table[None] >= shares[:, None]).sum(1)).double() / (table.shape[0] + 1)  # as exact as float(k) / n


def decoy_rank(decoys: int, alpha: float) -> int:
    """How many decoys may score at or above the owner's key with p still <= alpha (floor(alpha (decoys + 1)),
    counting the owner's key's own place); ValueError when even beating every decoy cannot give p <= alpha."""
    rank = math.floor(alpha * (decoys + 1) + 1e-9)
    if rank < 1:
        raise ValueError(f"{decoys} decoys cannot give p <= {alpha}: take at least {math.ceil(1 / alpha) - 1}")
    return rank


@dataclass
class RankTest:
    """The decoy-key rank test of one suspect (`BoxfreeModel.rank_tests`)."""

    share: float  # the share of the owner's key's residual the answers carry (1: marked answers, ~0: clean)
    p_value: float  # (1 + decoy keys whose share is at or above it) / (1 + decoys)
    alpha: float
    decoys: int
    share_threshold: float  # a share strictly above this gives p <= alpha (from the decoys, for this suspect)
    decoy_mean: float
    decoy_sd: float

    @property
    def verified(self) -> bool:
        return self.p_value <= self.alpha

    @property
    def z(self) -> float:
        """How many decoy standard deviations the owner's key stands above the decoys' mean."""
        return (self.share - self.decoy_mean) / max(self.decoy_sd, 1e-12)


@dataclass
class BoxfreeVerdict:
    """Outcome of checking one suspect: the decoy-key rank test, and the mark the extractor draws."""

    suspect: str
    queries: int
    share: float  # the share of the owner's residual the answers carry
    p_value: float
    alpha: float  # the threshold on p: the false-positive rate, by construction
    decoys: int
    share_threshold: float  # the share this suspect needed (above the decoys' alpha-quantile)
    z: float  # how many decoy standard deviations the share stands above the decoys' mean (a margin, not the decision)
    similarity: float  # global SSIM of the extracted mark vs the secret mark (what the extractor draws)
    ncc: float
    verified: bool

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        decision = ("the suspect CARRIES the box-free watermark" if self.verified
                    else "no evidence the suspect carries the box-free watermark")
        spare = decoy_rank(self.decoys, self.alpha) - 1  # decoys a verified suspect may lie below
        above = f"all {self.decoys}" if spare == 0 else f"all but {spare} of {self.decoys}"
        return (f"{self.suspect}: the answers to {self.queries} queries carry {self.share:.1%} of the owner's residual "
                f"(threshold {self.share_threshold:.1%}: above {above} decoy keys' shares; z = {self.z:+.1f}); "
                f"p = {self.p_value:.4f}, "
                f"alpha {self.alpha}; extracted mark SSIM "
                f"{self.similarity:.3f}, NCC {self.ncc:.3f}: {decision}")


def suspect_outputs(suspect: Suspect, queries: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The suspect's answers to the queries, rounded to 8 bits (as any image API serves them): a
    checkpoint run locally and the same model behind a URL score alike."""
    from imgsteal.data.images import quantize

    answers = suspect(list(queries))
    if len(answers) != len(queries):
        raise ImgstealError(f"the suspect answered {len(answers)} of {len(queries)} queries")
    return [quantize(a) for a in answers]


def verify_many(model: BoxfreeModel, suspects: dict[str, Suspect], alpha: float | None = None,
                decoys: int | None = None, progress: bool = False) -> dict[str, BoxfreeVerdict]:
    """Ask every suspect the stored verification queries and decide each by the decoy-key rank test
    (the decoys' residuals are made once for all of them). alpha, decoys: None = the model's, as trained."""
    alpha, decoys = alpha or model.alpha, decoys or model.decoys
    queries, references = model.queries(), model.reference_answers()
    answers = {name: suspect_outputs(s, queries) for name, s in suspects.items()}
    tests = model.rank_tests(list(answers.values()), decoys, alpha, progress)
    verdicts = {}
    for (name, outs), test in zip(answers.items(), tests):
        drawn = model.score(outs, references)
        verdicts[name] = BoxfreeVerdict(suspect=name, queries=len(outs), share=test.share, p_value=test.p_value,
                                        alpha=alpha, decoys=decoys, share_threshold=test.share_threshold,
                                        z=test.z, similarity=drawn.ssim, ncc=drawn.ncc, verified=test.verified)
    return verdicts


def verify_boxfree(model: BoxfreeModel, suspect: Suspect, suspect_name: str = "suspect", alpha: float | None = None,
                   decoys: int | None = None, progress: bool = False) -> BoxfreeVerdict:
    """Query the suspect with the stored inputs and decide by the decoy-key rank test (`verify_many`)."""
    return verify_many(model, {suspect_name: suspect}, alpha, decoys, progress)[suspect_name]


def calibrate_boxfree(model: BoxfreeModel, references: dict[str, Suspect], alpha: float | None = None,
                      decoys: int | None = None, progress: bool = False) -> dict:
    """Check the decision on independent models (trained on clean answers, never the suspect): the
    rank test holds its false-positive rate at alpha by construction; this counts how many of them it
    would accuse, as a check. Stored in the run folder; returns the record."""
    if model.run_dir is None:
        raise ImgstealError("calibration needs the model's run folder")
    verdicts = verify_many(model, references, alpha, decoys, progress)
    some = next(iter(verdicts.values()))
    record = {"rule": "decoy-key rank test: p <= alpha", "alpha": some.alpha, "decoys": some.decoys, "models": len(verdicts),
              "false_positives": sum(v.verified for v in verdicts.values()),
              "p_values": {name: v.p_value for name, v in verdicts.items()},
              "shares": {name: v.share for name, v in verdicts.items()},
              "share_thresholds": {name: v.share_threshold for name, v in verdicts.items()}}
    write_private(model.run_dir / CALIBRATION_FILE, json.dumps(record, indent=2).encode())
    return record


# -- surrogates (stage 2 and calibration) ----------------------------------------------------------
def surrogate_specs(scale: int) -> list[tuple[str, dict]]:
    """Small architectures for surrogates / independent models of a task of `scale` (1: same size)."""
    if scale == 1:
        return [("unet", {"ngf": 8, "depth": 3, "use_dropout": False}),
                ("resnet_generator", {"ngf": 8, "n_blocks": 1}),
                ("unet", {"ngf": 4, "depth": 2, "use_dropout": False, "norm": "instance"}),
                # 16 features (4 until 2026-12-01): ResNet generators this small copied even an identity
                # service at only 16-18 dB, no copy a watermark could be judged on; 16 features reach 22 dB
                # after 1,200 steps (benchmarks/bench_boxfree.py)
                ("resnet_generator", {"ngf": 16, "n_blocks": 2})]
    return [("srresnet", {"scale": scale, "n_blocks": 1, "channels": 16}),
            ("msrresnet", {"scale": scale, "n_blocks": 1, "channels": 16}),
            ("edsr", {"scale": scale, "n_blocks": 1, "channels": 16}),
            ("srresnet", {"scale": scale, "n_blocks": 2, "channels": 8})]


def train_surrogate(inputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], arch: str, kwargs: dict,
                    run_dir: Path, *, steps: int, seed: int, lr: float = 2e-3, batch_size: int = 8,
                    patch: int | None = None, device: torch.device = torch.device("cpu"),
                    progress: bool = False) -> nn.Module:
    """Train one small generator on (input, target) pairs with a pixel (L1) loss, the rate annealed to 0
    over `steps` (as an attacker who trains to the end would); returns it (eval mode).

    inputs / targets: 3 x h x w and 3 x sh x sw in [0, 1]; patch: input crop side (None: whole images).
    """
    from imgsteal.data.patches import PairedPatchSource, to_uint8_tensor
    from imgsteal.models import build_model
    from imgsteal.train.loop import run_training
    from imgsteal.train.paired import PixelRecipe

    scale = targets[0].shape[-1] // inputs[0].shape[-1]
    torch.manual_seed(seed)
    generator = build_model(arch, **kwargs)
    recipe = PixelRecipe(generator, device, lr=lr, loss="l1", decay_steps=steps)
    source = PairedPatchSource([to_uint8_tensor(x) for x in inputs], [to_uint8_tensor(y) for y in targets],
                               scale=scale, patch=patch, batch_size=batch_size, seed=seed, repeat=1)
    source.repeat = max(1, math.ceil(steps * source.batch_size / len(inputs)))  # one epoch: one checkpoint
    run_training(recipe, source, run_dir=run_dir, epochs=1, steps=steps, progress=progress, checkpoint_every=0,
                 meta={"role": "boxfree-surrogate", "task": "sr" if scale > 1 else "style", "scale": scale, "seed": seed,
                       "size_multiple": _size_multiple(generator)},
                 description=f"surrogate {arch}")
    return generator.eval()


def _size_multiple(generator: nn.Module) -> int:
    depth = getattr(generator, "depth", None)
    if depth is not None:
        return 2**depth
    return 4 if type(generator).__name__ == "ResnetGenerator" else 1


@torch.no_grad()
def run_generator(generator: nn.Module, inputs: Sequence[torch.Tensor], device: torch.device = torch.device("cpu"),
                  batch: int = 16) -> list[torch.Tensor]:
    """Outputs of a generator in eval mode on equally sized inputs, clamped and rounded to 8 bits."""
    from imgsteal.data.images import quantize

    generator = generator.to(device).eval()
    out: list[torch.Tensor] = []
    for i in range(0, len(inputs), batch):
        x = torch.stack(list(inputs[i : i + batch])).to(device)
        out += [quantize(y.cpu()) for y in generator(x)]
    return out


def module_suspect(generator: nn.Module, device: torch.device = torch.device("cpu")) -> Suspect:
    return lambda images: run_generator(generator, images, device)


# -- training ----------------------------------------------------------------------------------------
class BoxfreeTrainConfig(BaseModel):
    """Box-free watermark training (stage 1, stage 2, calibration). Defaults: a small CPU-sized run."""

    model_config = ConfigDict(extra="forbid")

    images: list[str] = Field(description="folders or dataset specs of images (victim inputs, or answers when no victim)")
    victim: Optional[str] = Field(None, description="victim checkpoint/run folder; None: the images are the answers")
    mark: str = Field("auto", description="mark image file, or 'auto' for a fresh random secret mark")
    size: int = Field(64, ge=16, description="answer crop side, px (a multiple of the victim's scale)")
    mark_size: int = Field(32, ge=8, le=128)
    crops_per_image: int = Field(2, ge=1)
    max_images: int = Field(64, ge=1)
    queries: int = Field(64, ge=1, description="verification query inputs kept in the run folder")
    query_size: Optional[int] = Field(None, ge=16, description="answer side of the verification queries, px (None: the "
                                                              "larger of size and 128, at most the smallest image). The "
                                                              "score pools every pixel of the answers: larger queries read "
                                                              "a copy's share more clearly (an innocent model's chance "
                                                              "correlation did not shrink with them: docs/defenses.md)")
    channels: int = Field(16, ge=1)
    depth: int = Field(2, ge=1)
    extractor_channels: int = Field(32, ge=1)
    extractor: str = Field("matched", pattern="^(learned|matched)$",
                           description="matched: a 2-parameter matched filter scales the mark (stable, few false "
                                       "positives); learned: a small CNN draws it (can key on other image features)")
    strength: float = Field(0.05, gt=0, le=0.2, description="max residual per pixel (the peak; min_psnr then sets "
                                                           "its RMS: with clip 3, about the whole budget)")
    clip: float = Field(3.0, gt=0, le=10, description="the residual (RMS 1 before scaling) is clamped to +-clip, which is "
                                                     "then `strength`; 1: the square-ish residual of runs before "
                                                     "the night of 2026-12-02, whose 8-bit rounding left ~1 dB of min_psnr unused")
    min_psnr: float = Field(38.0, ge=0, le=80, description="every marked answer stays at least this many dB from the "
                                                           "unmarked one (its residual is scaled down when needed; 0: off)")
    band: int = Field(15, ge=3, le=31, description="the residual is detail finer than band x band px (odd)")
    smooth: int = Field(5, ge=1, le=29, description="... and coarser than smooth x smooth px (odd, < band): a real "
                                                     "copy learns 5-15 px structure, not 1-2 px detail (1: the "
                                                     "residual of runs before 2026-12-02, with band 3)")
    spread: int = Field(0, ge=0, le=63, description="0: the residual is RMS-normalised per image (on large answers a "
                                                    "few detailed pixels carry it); k (odd): per k x k window, meant to "
                                                    "let every region carry it (first try: stage 1 still left most "
                                                    "windows empty; docs/defenses.md)")
    steps: int = Field(600, ge=1, description="stage-1 steps")
    batch_size: int = Field(16, ge=1)
    lr: float = 1e-3
    image_weight: float = Field(0.0, ge=0, description="weight of an extra L2 fidelity loss (the residual is bounded by `strength` anyway)")
    adv_weight: float = Field(0.01, ge=0, description="weight of the discriminator's loss on H (0: no discriminator)")
    ramp: float = Field(0.3, ge=0, le=1, description="share of stage 1 over which the fidelity weight rises from 0")
    surrogates: int = Field(2, ge=0, description="stage 2: surrogates trained on marked answers")
    negatives: int = Field(4, ge=0, description="stage 2: models trained on clean answers (R learns blank on them)")
    surrogate_steps: int = Field(300, ge=1)
    surrogate_lr: float = 2e-3
    finetune_steps: int = Field(300, ge=0, description="stage 2: extractor fine-tuning steps")
    distinct_weight: float = Field(1.0, ge=0, description="stage 1: weight of the loss that keeps the residuals of "
                                                          "two keys on one answer apart (uncorrelated)")
    keyed: str = Field("filters", pattern="^(filters|code)$",
                       description="how the key shapes the residual: filters (the key seeds the last layer's weights: "
                                   "many independent directions) or code (a learnt code fed to the first layer)")
    calibration_models: int = Field(10, ge=0, description="independent clean-answer models the decision is checked on "
                                                           "(0: check later with `watermark calibrate`)")
    alpha: float = Field(DEFAULT_ALPHA, gt=0, lt=1, description="the rank test's level: innocent models accused at most "
                                                                "this often")
    decoys: int = Field(DEFAULT_DECOYS, ge=19, description="decoy keys of the rank test (at least 1 / alpha - 1)")
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 500

    @field_validator("band", "spread", "smooth")
    @classmethod
    def _odd(cls, value: int, info) -> int:
        # a window centred on its pixel: odd sides only (spread 0: no window)
        if value and value % 2 == 0:
            raise ValueError(f"{info.field_name} must be odd{' (or 0)' if info.field_name == 'spread' else ''}, got {value}")
        return value

    @property
    def verification_size(self) -> int:
        return self.query_size or max(self.size, 128)

    @model_validator(mode="after")
    def _a_band(self) -> "BoxfreeTrainConfig":
        if self.smooth >= self.band:
            raise ValueError(f"smooth ({self.smooth}) must be smaller than band ({self.band}): the residual is the detail between them")
        return self

    @model_validator(mode="after")
    def _enough_decoys(self) -> "BoxfreeTrainConfig":
        decoy_rank(self.decoys, self.alpha)  # ValueError when too few
        return self


class BoxfreeStage1Recipe:
    """Stage 1: H, R (and D) on clean answers (a `train.loop` recipe).

    H is trained on a fresh random key per answer (`random_keys`), never on the owner's: the owner's
    key is then one draw among the decoys of the rank test, which is what makes its false-positive rate
    exact. A second key per answer and a loss on the squared cosine between the two residuals keep the
    residuals of different keys apart (trained on one mark, H gave every key nearly the owner's residual:
    cosine 0.53-0.57, and copies carried the decoys' residuals too). R learns to draw the mark from
    any key's residual, read against that key's hint."""

    export_module = "embedder"

    def __init__(self, embedder: nn.Module, extractor: nn.Module, discriminator: nn.Module, mark: torch.Tensor,
                 device: torch.device, lr: float, image_weight: float, adv_weight: float, seed: int,
                 ramp_steps: int = 0, distinct_weight: float = 1.0) -> None:
        self.embedder, self.extractor = embedder.to(device), extractor.to(device)
        self.discriminator = discriminator.to(device)
        self.mark = mark.to(device)[None]
        self.device, self.image_weight, self.adv_weight, self.seed = device, image_weight, adv_weight, seed
        self.ramp_steps, self.distinct_weight = ramp_steps, distinct_weight
        self.modules = {"embedder": self.embedder, "extractor": self.extractor, "discriminator": self.discriminator}
        params = list(self.embedder.parameters()) + list(self.extractor.parameters())
        self.optimizers = {"hr": torch.optim.Adam(params, lr=lr),
                           "d": torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=(0.5, 0.999))}
        self.step = 0

    def begin_epoch(self, epoch: int) -> None:
        for m in self.modules.values():
            m.train()

    def train_step(self, batch) -> dict[str, float]:
        clean = batch[1].to(self.device)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.step)
        noise = ((torch.rand(clean.shape, generator=gen) - 0.5) / 255).to(self.device)
        keys = random_keys(2 * len(clean), self.mark.shape[-1], gen).to(self.device)
        keys, others = keys[: len(clean)], keys[len(clean) :]
        marked = self.embedder(clean, keys)
        target = self.mark.expand(len(clean), -1, -1, -1)
        seen = marked + noise  # answers are 8-bit PNGs
        mark_loss = F.mse_loss(self.extractor(seen, self.embedder(seen, keys) - seen), target)
        blank_loss = F.mse_loss(self.extractor(clean, marked - clean), torch.zeros_like(target))
        image_loss = F.mse_loss(marked, clean)
        distinct = torch.zeros((), device=self.device)
        if self.distinct_weight > 0:
            other = self.embedder(clean, others)
            distinct = F.cosine_similarity((marked - clean).flatten(1), (other - clean).flatten(1), dim=1).pow(2).mean()
        weight = self.image_weight * min(1.0, self.step / self.ramp_steps) if self.ramp_steps else self.image_weight
        loss = mark_loss + blank_loss + weight * image_loss + self.distinct_weight * distinct
        adv = torch.zeros(())
        if self.adv_weight > 0:
            adv = F.binary_cross_entropy_with_logits(self.discriminator(marked), torch.ones(len(clean), device=self.device))
            loss = loss + self.adv_weight * adv
        opt = self.optimizers["hr"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if self.adv_weight > 0:
            d = self.optimizers["d"]
            d.zero_grad(set_to_none=True)
            real, fake = self.discriminator(clean), self.discriminator(marked.detach())
            d_loss = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                      + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
            d_loss.backward()
            d.step()
        self.step += 1
        return {"mark": mark_loss.item(), "blank": blank_loss.item(), "l2": image_loss.item(), "adv": adv.item(),
                "distinct": distinct.item()}

    def state(self) -> dict[str, Any]:
        return {"step": self.step}

    def load_state(self, state: dict[str, Any]) -> None:
        self.step = int(state.get("step", 0))


@dataclass
class LabelledImages:
    """Equally sized images (N x 3 x S x S, uint8), the owner's clean answer each was made for (same
    shape), and whether each should give the mark (1) or the blank (0)."""

    images: torch.Tensor
    references: torch.Tensor
    flags: torch.Tensor
    batch_size: int
    seed: int
    steps: int

    @property
    def batches_per_epoch(self) -> int:
        return self.steps

    def batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed((self.seed * 7919 + epoch) * 1_000_003 + index)
        pick = torch.randint(0, len(self.images), (self.batch_size,), generator=gen)
        return self.images[pick].float() / 255, self.references[pick].float() / 255, self.flags[pick].float()


class ExtractorFinetuneRecipe:
    """Stage 2: fine-tune R on marked/clean answers and on the outputs of surrogates trained on
    marked (-> mark) and on clean answers (-> blank), each read against the clean answer to its query
    (as `BoxfreeModel.extract` reads a suspect's answers at verification)."""

    export_module = "extractor"

    def __init__(self, extractor: nn.Module, embedder: nn.Module, mark: torch.Tensor, key: torch.Tensor,
                 device: torch.device, lr: float) -> None:
        self.extractor, self.embedder, self.device = extractor.to(device), embedder.to(device).eval(), device
        self.mark, self.key = mark.to(device)[None], key.to(device)[None]
        self.modules = {"extractor": self.extractor}
        self.optimizers = {"r": torch.optim.Adam(self.extractor.parameters(), lr=lr)}

    def begin_epoch(self, epoch: int) -> None:
        self.extractor.train()

    def train_step(self, batch) -> dict[str, float]:
        images, references, flags = (t.to(self.device) for t in batch)
        target = flags[:, None, None, None] * self.mark
        with torch.no_grad():
            hint = self.embedder(references, self.key) - references
        loss = F.mse_loss(self.extractor(images - references, hint), target)
        opt = self.optimizers["r"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"r": loss.item()}

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass


def _crop(image: torch.Tensor, side: int, gen: torch.Generator) -> torch.Tensor:
    h, w = image.shape[-2:]
    top = int(torch.randint(0, h - side + 1, (), generator=gen))
    left = int(torch.randint(0, w - side + 1, (), generator=gen))
    return image[:, top : top + side, left : left + side]


def make_pairs(cfg: BoxfreeTrainConfig, device: torch.device, seed_offset: int = 0,
               images: list[str] | None = None, with_answers: bool = True, count: int | None = None,
               shrink_to_fit: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor], int]:
    """(victim inputs, clean answers, scale): crops of the images (`count` spread over them; None:
    crops_per_image of each) and the victim's answers on them (no answers when `with_answers` is
    False). shrink_to_fit: crops no larger than the smallest image (else smaller images are skipped)."""
    from imgsteal.data.images import load_images, quantize
    from imgsteal.data.layouts import resolve_image_specs

    scale, translator = 1, None
    if cfg.victim is not None:
        from imgsteal.victim.inference import load_translator

        translator = load_translator(cfg.victim, device)
        scale = int(translator.scale)
    if cfg.size % scale:
        raise ImgstealError(f"--size {cfg.size} is not a multiple of the victim's scale {scale}")
    side = cfg.size // scale
    paths = resolve_image_specs(images or cfg.images)[: cfg.max_images]
    loaded = [img for _, img in load_images(paths)]
    if shrink_to_fit and loaded:
        side = min(side, *(min(img.shape[-2:]) for img in loaded))
    loaded = [img for img in loaded if min(img.shape[-2:]) >= side]
    if not loaded:
        raise ImgstealError(f"no image is at least {side} px on its shorter side")
    gen = torch.Generator().manual_seed(cfg.seed * 31 + seed_offset)
    if count is None:
        inputs = [quantize(_crop(img, side, gen)) for img in loaded for _ in range(cfg.crops_per_image)]
    else:  # `count` crops spread over every image (as many rounds over them as it takes)
        rounds = math.ceil(count / len(loaded))
        inputs = [quantize(_crop(img, side, gen)) for _ in range(rounds) for img in loaded][:count]
    if translator is None or not with_answers:
        return inputs, list(inputs) if translator is None else [], scale
    answers = [quantize(translator.translate(x)) for x in inputs]
    return inputs, answers, scale


def train_boxfree(cfg: BoxfreeTrainConfig, out_dir: str | Path, *, resume: bool = False,
                  progress: bool = True) -> "BoxfreeTrainResult":
    """Stage 1, stage 2 and calibration (see the module docstring); returns what was measured."""
    from imgsteal.data.images import encode_png, quantize
    from imgsteal.data.patches import PairedPatchSource, to_uint8_tensor
    from imgsteal.device import pick_device
    from imgsteal.models import build_model
    from imgsteal.train.loop import run_training

    started = time.perf_counter()
    device = pick_device(cfg.device)
    out_dir = private_dir(out_dir)
    private_dir(out_dir / "checkpoints")
    (out_dir / "config.json").write_text(cfg.model_dump_json(indent=2))

    mark_path, key_path = out_dir / MARK_FILE, out_dir / KEY_FILE
    if mark_path.exists() and key_path.exists():  # keep the owner's secrets if an earlier run drew them
        from imgsteal.data.images import decode_image

        mark = decode_image(read_private(mark_path), "mark")[:1]
        key = decode_image(read_private(key_path), "key")[:1]
    else:
        # The key must be a draw like the decoys (`random_keys`): a drawn mark is one; a mark image is not,
        # so it gets a key of its own and is only what the extractor draws.
        mark = new_mark(cfg.mark_size) if cfg.mark == "auto" else quantize(load_mark(cfg.mark, cfg.mark_size))
        key = mark if cfg.mark == "auto" else new_mark(cfg.mark_size)
        write_private(mark_path, encode_png(mark.expand(3, -1, -1)))
        write_private(key_path, encode_png(key.expand(3, -1, -1)))

    inputs, answers, scale = make_pairs(cfg, device)
    # Verification queries (crops the owner keeps) and the owner's clean answers to them: every
    # verification reads a suspect's answers against these.
    queries_dir, answers_dir = private_dir(out_dir / QUERIES_DIR), private_dir(out_dir / ANSWERS_DIR)
    q_inputs, q_answers, _ = make_pairs(cfg.model_copy(update={"size": cfg.verification_size}), device, seed_offset=1,
                                        count=cfg.queries, shrink_to_fit=cfg.query_size is None)
    for i, (q, a) in enumerate(zip(q_inputs, q_answers)):
        write_private(queries_dir / f"query_{i:03d}.png", encode_png(q))
        write_private(answers_dir / f"answer_{i:03d}.png", encode_png(a))

    # -- stage 1
    torch.manual_seed(cfg.seed)
    embedder = build_model("boxfree_embedder", mark_size=cfg.mark_size, channels=cfg.channels, depth=cfg.depth,
                           strength=cfg.strength, band=cfg.band, spread=cfg.spread, smooth=cfg.smooth,
                           padding_mode="replicate", decorrelated=True, saturate=False, keyed=cfg.keyed,
                           min_psnr=cfg.min_psnr, clip=cfg.clip)
    if cfg.extractor == "matched":
        extractor = build_model("boxfree_matched_extractor", mark_size=cfg.mark_size, strength=cfg.strength, band=cfg.band,
                                smooth=cfg.smooth, in_band=True)
        extractor.mark.copy_(mark[None])
    else:
        extractor = build_model("boxfree_extractor", mark_size=cfg.mark_size, channels=cfg.extractor_channels,
                                strength=cfg.strength, band=cfg.band)
    discriminator = build_model("boxfree_discriminator", channels=cfg.channels)
    recipe = BoxfreeStage1Recipe(embedder, extractor, discriminator, mark, device, cfg.lr, cfg.image_weight,
                                 cfg.adv_weight, cfg.seed, ramp_steps=round(cfg.ramp * cfg.steps),
                                 distinct_weight=cfg.distinct_weight)
    u8 = [to_uint8_tensor(a) for a in answers]
    source = PairedPatchSource(u8, u8, scale=1, patch=None, batch_size=cfg.batch_size, seed=cfg.seed,
                               repeat=max(1, math.ceil(min(cfg.steps, 100) * cfg.batch_size / len(u8))))
    training = run_training(recipe, source, run_dir=out_dir, epochs=1, steps=cfg.steps, resume=resume, progress=progress,
                            meta={"role": "boxfree", "seed": cfg.seed}, checkpoint_every=cfg.checkpoint_every,
                            description="boxfree stage 1")
    (out_dir / "model.safetensors").unlink(missing_ok=True)  # the networks live in the private MODEL_FILE
    decoy_seed = secrets.randbits(31)  # any seed will do: the decoys need only be drawn independently of the key
    model = BoxfreeModel(embedder, extractor, mark, device, out_dir, key=key, decoy_seed=decoy_seed, decoys=cfg.decoys,
                         alpha=cfg.alpha)
    marked = [quantize(model.embed(a)) for a in answers]

    # -- stage 2: surrogates on marked answers (-> mark) and on clean answers (-> blank), then fine-tune R
    for derived in ("stage2", "calibration"):  # a resumed run trains these again from scratch
        shutil.rmtree(out_dir / derived, ignore_errors=True)
    specs = surrogate_specs(scale)
    pos_out, neg_out = [], []
    for k in range(cfg.surrogates):
        arch, kwargs = specs[k % len(specs)]
        g = train_surrogate(inputs, marked, arch, kwargs, out_dir / "stage2" / f"marked-{k}", steps=cfg.surrogate_steps,
                            seed=cfg.seed * 101 + k, lr=cfg.surrogate_lr, device=device)
        pos_out += run_generator(g, inputs, device)
    for k in range(cfg.negatives):
        arch, kwargs = specs[(k + 1) % len(specs)]
        g = train_surrogate(inputs, answers, arch, kwargs, out_dir / "stage2" / f"clean-{k}", steps=cfg.surrogate_steps,
                            seed=cfg.seed * 101 + 50 + k, lr=cfg.surrogate_lr, device=device)
        neg_out += run_generator(g, inputs, device)
    if cfg.finetune_steps and (pos_out or neg_out):
        # Every image here answers one of `inputs`: its reference is the clean answer to that input.
        groups = [(marked, 1.0), (pos_out, 1.0), (answers, 0.0), (neg_out, 0.0)]
        pool = [(img, answers[i % len(answers)], flag) for images, flag in groups for i, img in enumerate(images)]
        labelled = LabelledImages(torch.stack([to_uint8_tensor(i) for i, _, _ in pool]),
                                  torch.stack([to_uint8_tensor(r) for _, r, _ in pool]),
                                  torch.tensor([f for _, _, f in pool]), cfg.batch_size, cfg.seed, cfg.finetune_steps)
        ft = ExtractorFinetuneRecipe(extractor, embedder, mark, key, device, cfg.lr)
        run_training(ft, labelled, run_dir=out_dir / "stage2" / "extractor", epochs=1, steps=cfg.finetune_steps,
                     progress=progress, checkpoint_every=0, meta={"role": "boxfree-extractor"},
                     description="boxfree stage 2")
        (out_dir / "stage2" / "extractor" / "model.safetensors").unlink(missing_ok=True)
        model = BoxfreeModel(embedder, extractor, mark, device, out_dir, key=key, decoy_seed=decoy_seed, decoys=cfg.decoys,
                         alpha=cfg.alpha)

    meta = {"role": "boxfree", "scale": scale, "size": cfg.size, "mark_size": cfg.mark_size, "steps": training.steps,
            "decoy_seed": decoy_seed, "decoys": cfg.decoys, "alpha": cfg.alpha, "archs": {"embedder": embedder.build_spec, "extractor": extractor.build_spec,
                      "discriminator": discriminator.build_spec}}
    _save_private_modules(out_dir / MODEL_FILE, meta, {"embedder": embedder, "extractor": extractor,
                                                        "discriminator": discriminator})

    # -- calibration on independent models (clean answers; seeds and architectures not used above)
    calibration = None
    if cfg.calibration_models:
        references = {}
        for k in range(cfg.calibration_models):
            arch, kwargs = specs[(k + 2) % len(specs)]
            g = train_surrogate(inputs, answers, arch, kwargs, out_dir / "calibration" / f"independent-{k}",
                                steps=cfg.surrogate_steps, seed=cfg.seed * 101 + 500 + k, lr=cfg.surrogate_lr,
                                device=device)
            references[f"independent-{k}"] = module_suspect(g, device)
        calibration = calibrate_boxfree(model, references, cfg.alpha, cfg.decoys, progress)

    result = BoxfreeTrainResult(
        images=len(answers), scale=scale,
        psnr_db=sum(psnr(m, a) for m, a in zip(marked, answers)) / len(answers),
        marked=model.score(marked, answers), clean=model.score(answers, answers),
        surrogates=model.score(pos_out, answers * cfg.surrogates) if pos_out else None,
        negatives=model.score(neg_out, answers * cfg.negatives) if neg_out else None,
        alpha=cfg.alpha, checked=0 if calibration is None else calibration["models"],
        false_positives=None if calibration is None else calibration["false_positives"],
        steps=training.steps, seconds=time.perf_counter() - started)
    write_private(out_dir / METRICS_FILE, json.dumps(result.as_dict(), indent=2).encode())
    return result


@dataclass
class BoxfreeTrainResult:
    """What `train_boxfree` measured on its training crops (stage-2 models on their own training inputs)."""

    images: int
    scale: int
    psnr_db: float  # marked (8-bit) vs clean answers, mean
    marked: MarkScore
    clean: MarkScore
    surrogates: MarkScore | None = None  # stage-2 surrogates trained on marked answers
    negatives: MarkScore | None = None  # stage-2 models trained on clean answers
    alpha: float = DEFAULT_ALPHA
    checked: int = 0  # independent models the decision was checked on
    false_positives: int | None = None  # of them, accused (expected: about alpha x checked)
    steps: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        out = asdict(self)
        out.pop("extra")
        return out

    def summary(self) -> str:
        lines = [f"marked vs clean answers: PSNR {self.psnr_db:.2f} dB on {self.images} crops",
                 f"mark similarity (SSIM): marked {self.marked.ssim:.3f}, clean {self.clean.ssim:.3f}"]
        if self.surrogates is not None:
            lines.append(f"stage-2 surrogates on marked answers {self.surrogates.ssim:.3f}"
                         + (f", on clean answers {self.negatives.ssim:.3f}" if self.negatives is not None else ""))
        lines.append(f"decision: the decoy-key rank test, p <= {self.alpha} (innocent models accused at most that often); "
                     + (f"{self.false_positives} of {self.checked} independent models accused" if self.checked
                        else "not checked on independent models yet: `imgsteal watermark calibrate --method boxfree`"))
        return "\n".join(lines)
