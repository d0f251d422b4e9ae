"""The owner's watermark check: does a suspect model reproduce a client's trigger alterations?

Each trigger input of the client goes to the suspect (a checkpoint run locally, or a service at an
http(s) URL queried through the HTTP oracle). Per trigger, with MSE distances d_alt (suspect answer
to the altered answer the client received), d_clean (to the clean answer) and D (altered to clean,
the mark's own size), the trigger *matches* only when all of these hold:

1. the suspect is closer to the altered answer than to the clean one (d_alt < d_clean);
2. it is close to the altered answer in absolute terms: d_alt <= closeness x D (default 0.5). A
   blurry or weak model that never saw a mark is often "closer to the blurred answer" (a smooth
   image sits nearer a blurred one), but it is far from it compared with the mark's size;
3. with reference models (independent models the owner trusts: other seeds, architectures, or
   models trained on clean answers), the suspect is nearer the altered answer (smaller d_alt / D)
   than every reference on that trigger.

Under the null hypothesis (the suspect is exchangeable with the k references: it never saw the
marks) condition 3 holds on a trigger with probability at most 1/(k+1), and conditions 1-2 only
lower it; without references the null rate is taken as 1/2, as in DAWN. The verdict is a one-sided
binomial test of the matches against that rate. Triggers are treated as independent.

What no trigger set can tell apart: a model that applies about the same alteration to every image
(e.g. one that blurs everything by about the mark's radius) looks like one that learnt the marks.
Give such models as references, or check the suspect's answers on images that were never triggers.
"""

from __future__ import annotations

import math
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

DEFAULT_CLOSENESS = 0.5


@dataclass
class WatermarkVerdict:
    """Outcome of verifying one client's trigger set against one suspect (see the module docstring).

    closer: triggers where the suspect is closer to the altered than to the clean answer (condition 1
    alone: NOT evidence by itself); matched: triggers meeting all conditions; null_rate: the
    per-trigger match probability under the null (1/(references+1), or 1/2 without references);
    p_value: one-sided binomial P(X >= matched | n = triggers, null_rate); stolen: p_value < alpha.
    median_closeness: median over triggers of d_alt / D (0 = the altered answer exactly, 1 = as far
    as the clean answer is; a statistic to threshold when calibrating on independent models).
    distances: per trigger, (d_alt, d_clean, D); no images, hashes or ids of triggers.
    """

    client: str
    suspect: str
    triggers: int
    matched: int
    fraction: float
    p_value: float
    alpha: float
    stolen: bool
    closer: int = 0
    closeness: float = DEFAULT_CLOSENESS
    references: int = 0
    null_rate: float = 0.5
    median_closeness: float = float("nan")
    resized: int = 0  # answers of another size than the stored ones, resized before comparing
    distances: list[tuple[float, float, float]] = field(default_factory=list)

    @property
    def reproduced(self) -> float:
        """How much of the alterations the suspect reproduces: 1 - median_closeness (1: the altered
        answers exactly; 0: as far from them as the clean answers are; below 0: farther). Continuous,
        for thresholds calibrated on independent models (the adaptive-attack scorecard): unlike the
        count of matched triggers it does not jump where copies sit near the closeness cut-off."""
        return 1.0 - min(self.median_closeness, 2.0)  # no altered trigger (infinite closeness): -1

    def as_dict(self, with_distances: bool = False) -> dict:
        out = asdict(self)
        out["reproduced"] = self.reproduced
        if not with_distances:
            out.pop("distances")
        return out

    def summary(self) -> str:
        decision = "the suspect REPRODUCES the watermark" if self.stolen else "no evidence the suspect reproduces the watermark"
        against = (f"nearer the altered answer than all {self.references} reference model(s), " if self.references else "")
        return (f"{self.suspect}: {self.matched}/{self.triggers} triggers matched ({against}within {self.closeness:g} x the "
                f"mark's size of the altered answer; {self.closer} merely closer to the altered than to the clean answer; "
                f"median distance {self.median_closeness:.2f} x the mark's size), binomial p = {self.p_value:.3g} against "
                f"{self.null_rate:.3g} per trigger (alpha {self.alpha:g}): {decision}")


def binomial_p_value(matched: int, trials: int, p: float = 0.5) -> float:
    """One-sided P(X >= matched) for X ~ Binomial(trials, p); 1.0 when there are no trials."""
    if trials == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(matched, trials, p, alternative="greater").pvalue)


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(F.mse_loss(a.float(), b.float()))


def _fit(answer: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """`answer` resized (bilinear, antialiased) to `like`'s size when it differs; (image, resized?)."""
    if answer.shape == like.shape:
        return answer, False
    if answer.dim() != 3 or answer.shape[0] != like.shape[0]:
        raise ImgstealError(f"the suspect answered a {tuple(answer.shape)} image for a {tuple(like.shape)} trigger")
    answer = F.interpolate(answer[None].float(), size=like.shape[-2:], mode="bilinear", antialias=True,
                           align_corners=False)[0].clamp(0, 1)
    return answer, True


def compare_answers(answers: Sequence[torch.Tensor], altered: Sequence[torch.Tensor],
                    clean: Sequence[torch.Tensor]) -> tuple[list[tuple[float, float, float]], int]:
    """Per trigger (MSE(answer, altered), MSE(answer, clean), MSE(altered, clean)); answers of another
    size are resized (bilinear, antialiased) to the stored size first. Returns (distances, how many were resized)."""
    distances, resized = [], 0
    for answer, alt, ref in zip(answers, altered, clean, strict=True):
        answer, was_resized = _fit(answer, alt)
        resized += was_resized
        distances.append((_mse(answer, alt), _mse(answer, ref), _mse(alt, ref)))
    return distances, resized


def _closeness(d_alt: float, mark: float) -> float:
    """d_alt / D; an unaltered trigger (D = 0) is never evidence: infinity."""
    return d_alt / mark if mark > 0 else math.inf


def trigger_matches(distances: Sequence[tuple[float, float, float]], closeness: float = DEFAULT_CLOSENESS,
                    reference_distances: Sequence[Sequence[tuple[float, float, float]]] = ()) -> list[bool]:
    """Per trigger, whether the suspect meets conditions 1-3 of the module docstring."""
    out = []
    for i, (d_alt, d_clean, mark) in enumerate(distances):
        q = _closeness(d_alt, mark)
        ok = d_alt < d_clean and q <= closeness
        ok = ok and all(q < _closeness(ref[i][0], ref[i][2]) for ref in reference_distances)
        out.append(ok)
    return out


def _answers(suspect: Suspect, triggers, name: str) -> list[torch.Tensor]:
    answers = suspect([t.input for t in triggers])
    if len(answers) != len(triggers):
        raise ImgstealError(f"{name} answered {len(answers)} of {len(triggers)} trigger inputs")
    return answers


def verify_triggers(triggers, suspect: Suspect, client: str, suspect_name: str, alpha: float = 0.01,
                    references: Sequence[Suspect] = (), closeness: float = DEFAULT_CLOSENESS) -> WatermarkVerdict:
    """Verdict of `suspect` on a list of `Trigger`s, against optional reference models (see module docstring)."""
    if not triggers:
        raise ImgstealError(f"no triggers stored for client {client!r}: nothing to verify")
    if not closeness > 0:
        raise ImgstealError(f"closeness must be > 0 (a multiple of the mark's size), got {closeness}")
    altered, clean = [t.altered for t in triggers], [t.clean for t in triggers]
    distances, resized = compare_answers(_answers(suspect, triggers, "the suspect"), altered, clean)
    reference_distances = [compare_answers(_answers(ref, triggers, f"reference model {j + 1}"), altered, clean)[0]
                           for j, ref in enumerate(references)]
    matched = sum(trigger_matches(distances, closeness, reference_distances))
    null_rate = 1.0 / (len(references) + 1) if references else 0.5
    p = binomial_p_value(matched, len(triggers), null_rate)
    ratios = sorted(_closeness(d[0], d[2]) for d in distances)
    median = ratios[len(ratios) // 2] if len(ratios) % 2 else (ratios[len(ratios) // 2 - 1] + ratios[len(ratios) // 2]) / 2
    return WatermarkVerdict(client=client, suspect=suspect_name, triggers=len(triggers), matched=matched,
                            fraction=matched / len(triggers), p_value=p, alpha=alpha, stolen=p < alpha,
                            closer=sum(1 for d_alt, d_clean, _ in distances if d_alt < d_clean), closeness=closeness,
                            references=len(references), null_rate=null_rate, median_closeness=median,
                            resized=resized, distances=distances)


def verify_watermark(db: str | Path, client: str, suspect: Suspect, suspect_name: str = "suspect",
                     alpha: float = 0.01, references: Sequence[Suspect] = (),
                     closeness: float = DEFAULT_CLOSENESS) -> WatermarkVerdict:
    """Send `client`'s trigger inputs (from the trigger database `db`) to `suspect` (and to the
    `references`) and decide."""
    db = Path(db)
    if not db.exists():
        raise ImgstealError(f"no watermark trigger database at {db}")
    with TriggerStore(db, create=False) as store:
        triggers = store.triggers(client)
        if not triggers:
            known = ", ".join(repr(c) for c in store.clients()) or "none"
            raise ImgstealError(f"no triggers stored for client {client!r} in {db} (clients with triggers: {known})")
    return verify_triggers(triggers, suspect, client, suspect_name, alpha, references, closeness)


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
    from imgsteal.pipeline.oracle import open_oracle

    def run(images: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        with open_oracle(url, api_key=api_key, concurrency=concurrency, timeout_s=timeout_s) as oracle:
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
