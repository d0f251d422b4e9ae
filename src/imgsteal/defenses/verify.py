"""The owner's watermark check: does a suspect model reproduce a client's trigger alterations?

Each trigger input of the client goes to the suspect (a checkpoint run locally, or a service at an
http(s) URL queried through the HTTP oracle). Per trigger, the suspect's answer is compared (mean
squared error) with the altered answer the client received and with the clean answer; it "matches"
when it is strictly closer to the altered one. Under the null hypothesis (the suspect never saw the
alterations) a match is no likelier than chance, so the verdict is a one-sided binomial test of the
number of matches against p = 0.5.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from imgsteal.data.images import decode_image, encode_png
from imgsteal.defenses.watermark import TriggerStore
from imgsteal.errors import ImgstealError

# A suspect: list of 3 x h x w inputs in [0, 1] -> list of 3 x H x W outputs in [0, 1].
Suspect = Callable[[Sequence[torch.Tensor]], list[torch.Tensor]]


@dataclass
class WatermarkVerdict:
    """Outcome of verifying one client's trigger set against one suspect.

    matched: triggers whose suspect answer is closer to the altered than to the clean answer;
    p_value: one-sided binomial P(X >= matched | n = triggers, p = 0.5); stolen: p_value < alpha.
    distances: per trigger, (MSE to altered, MSE to clean); no images, hashes or ids of triggers.
    """

    client: str
    suspect: str
    triggers: int
    matched: int
    fraction: float
    p_value: float
    alpha: float
    stolen: bool
    resized: int = 0  # answers of another size than the stored ones, resized before comparing
    distances: list[tuple[float, float]] = field(default_factory=list)

    def as_dict(self, with_distances: bool = False) -> dict:
        out = asdict(self)
        if not with_distances:
            out.pop("distances")
        return out

    def summary(self) -> str:
        decision = "the suspect REPRODUCES the watermark" if self.stolen else "no evidence the suspect reproduces the watermark"
        return (f"{self.suspect}: {self.matched}/{self.triggers} triggers closer to the altered answer "
                f"({self.fraction:.1%}), binomial p = {self.p_value:.3g} (alpha {self.alpha:g}): {decision}")


def binomial_p_value(matched: int, trials: int, p: float = 0.5) -> float:
    """One-sided P(X >= matched) for X ~ Binomial(trials, p); 1.0 when there are no trials."""
    if trials == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(matched, trials, p, alternative="greater").pvalue)


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.mse_loss(a.float(), b.float()))


def compare_answers(answers: Sequence[torch.Tensor], altered: Sequence[torch.Tensor],
                    clean: Sequence[torch.Tensor]) -> tuple[list[tuple[float, float]], int]:
    """Per trigger (MSE(answer, altered), MSE(answer, clean)); answers of another size are resized
    (bilinear, antialiased) to the stored size first. Returns (distances, how many were resized)."""
    distances, resized = [], 0
    for answer, alt, ref in zip(answers, altered, clean, strict=True):
        if answer.shape != alt.shape:
            if answer.dim() != 3 or answer.shape[0] != alt.shape[0]:
                raise ImgstealError(f"the suspect answered a {tuple(answer.shape)} image for a {tuple(alt.shape)} trigger")
            answer = F.interpolate(answer[None].float(), size=alt.shape[-2:], mode="bilinear", antialias=True,
                                   align_corners=False)[0].clamp(0, 1)
            resized += 1
        distances.append((_mse(answer, alt), _mse(answer, ref)))
    return distances, resized


def verify_triggers(triggers, suspect: Suspect, client: str, suspect_name: str, alpha: float = 0.01) -> WatermarkVerdict:
    """Verdict of `suspect` on a list of `Trigger`s (see module docstring)."""
    if not triggers:
        raise ImgstealError(f"no triggers stored for client {client!r}: nothing to verify")
    answers = suspect([t.input for t in triggers])
    if len(answers) != len(triggers):
        raise ImgstealError(f"the suspect answered {len(answers)} of {len(triggers)} trigger inputs")
    distances, resized = compare_answers(answers, [t.altered for t in triggers], [t.clean for t in triggers])
    matched = sum(1 for d_alt, d_clean in distances if d_alt < d_clean)
    p = binomial_p_value(matched, len(triggers))
    return WatermarkVerdict(client=client, suspect=suspect_name, triggers=len(triggers), matched=matched,
                            fraction=matched / len(triggers), p_value=p, alpha=alpha, stolen=p < alpha,
                            resized=resized, distances=distances)


def verify_watermark(db: str | Path, client: str, suspect: Suspect, suspect_name: str = "suspect",
                     alpha: float = 0.01) -> WatermarkVerdict:
    """Send `client`'s trigger inputs (from the trigger database `db`) to `suspect` and decide."""
    db = Path(db)
    if not db.exists():
        raise ImgstealError(f"no watermark trigger database at {db}")
    with TriggerStore(db, create=False) as store:
        triggers = store.triggers(client)
        if not triggers:
            known = ", ".join(repr(c) for c in store.clients()) or "none"
            raise ImgstealError(f"no triggers stored for client {client!r} in {db} (clients with triggers: {known})")
    return verify_triggers(triggers, suspect, client, suspect_name, alpha)


# -- suspects ----------------------------------------------------------------------------------
def checkpoint_suspect(path: str | Path, device: str | None = "cpu") -> Suspect:
    """A suspect model given as a checkpoint (model.safetensors or a run folder), run locally."""
    from imgsteal.victim.inference import load_translator

    translator = load_translator(path, device)

    def run(images: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [translator.translate(image) for image in images]

    return run


def http_suspect(url: str, api_key: str | None = None, concurrency: int = 4, timeout_s: float = 120.0) -> Suspect:
    """A suspect service at `url` (an imgsteal-style API: POST /v1/translate), queried as a client would."""
    from imgsteal.attack.http_oracle import HttpOracle

    def run(images: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        with HttpOracle(url, api_key=api_key, concurrency=concurrency, timeout_s=timeout_s) as oracle:
            answers: dict[int, torch.Tensor] = {}
            for answer in oracle.stream((i, encode_png(image)) for i, image in enumerate(images)):
                if answer.image is None:
                    raise ImgstealError(f"the suspect at {url} did not answer a trigger input: {answer.error}")
                answers[answer.key] = decode_image(answer.image, "suspect answer")
        return [answers[i] for i in range(len(images))]

    return run


def open_suspect(spec: str, api_key: str | None = None, device: str | None = "cpu") -> Suspect:
    """`spec` is an http(s):// URL (queried over HTTP) or a checkpoint path (run locally)."""
    if spec.startswith(("http://", "https://")):
        return http_suspect(spec, api_key)
    if not Path(spec).exists():
        raise ImgstealError(f"suspect not found: {spec} (give a checkpoint/run folder or an http(s):// URL)")
    return checkpoint_suspect(spec, device)
