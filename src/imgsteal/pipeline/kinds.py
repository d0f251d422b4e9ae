"""The kinds of translation imgsteal attacks: super-resolution (`sr`) and style transfer (`style`).

Everything that differs between them lives in one `Kind` object, so the rest of the pipeline never
switches on a string: what a query is (a bicubic downscale of a photo, or a centre crop resized to the
working size), the default surrogate, how a victim trains, how a surrogate is scored against the
victim, which do-nothing baseline its copy must beat, and what a gallery shows.

"kind" is the one word for this everywhere (configs: `kind: sr | style`; run folders' metadata:
`kind`); a "task" is a named entry of an experiment config.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from imgsteal.attack.methods import SR_ARCHS, STYLE_ARCHS
from imgsteal.errors import ImgstealError


@dataclass(frozen=True)
class Kind:
    """What one kind of translation needs from the pipeline (see the module docstring)."""

    name: str
    title: str
    victim_archs: tuple[str, ...]  # the first is the default
    surrogate_archs: tuple[str, ...]  # the first is the paper's surrogate
    main_metric: str  # of plots, plateaus and Table 6
    baseline: str  # the do-nothing answer F_A must beat in (B): "bicubic" or "input"
    input_label: str  # the gallery's first column
    has_truth: bool  # ground truth exists for (A) and (C) pixel scores (sr: the HR photo)
    victim_dataset_fields: tuple[str, ...]  # fields of the victim's training config that name datasets

    # -- victims ---------------------------------------------------------------------------
    def victim_config_class(self, arch: str) -> type:
        raise NotImplementedError

    def victim_config(self, settings: dict[str, Any], **extra: Any):
        """The typed victim training config (SRVictimConfig or StyleVictimConfig) from a settings dict
        with `arch` (pydantic.ValidationError naming unknown or invalid fields)."""
        settings = dict(settings)
        arch = settings.pop("arch", self.victim_archs[0])
        if arch not in self.victim_archs:
            raise ImgstealError(f"a {self.name} victim is one of {', '.join(self.victim_archs)}, not {arch!r}")
        cls = self.victim_config_class(arch)
        unknown = sorted(set(settings) - set(cls.model_fields))
        if unknown:
            raise ImgstealError(f"unknown victim.train settings {', '.join(unknown)}")
        if "arch" in cls.model_fields:
            settings["arch"] = arch
        return cls.model_validate({**settings, **extra})

    def train_victim(self, config, run_dir: Path, progress: bool = True) -> None:
        raise NotImplementedError

    # -- queries ---------------------------------------------------------------------------
    def test_query(self, path: str | Path, scale: int, size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the query the models get, the ground truth or None) for one test image, 3 x H x W in [0, 1]."""
        raise NotImplementedError

    # -- scoring ---------------------------------------------------------------------------
    def score(self, victim, surrogate, test_sets: dict[str, list[Path]], *, folder: Path, evaluation: dict[str, Any],
              style_set: list[Path] | None, size: int, device: str, progress: bool,
              keep_outputs: bool = False) -> list[dict[str, Any]]:
        """One record per test set: {test_set, n_images, metrics: {metric: {experiment: value}}, image_std}.
        keep_outputs: keep the scored images (input, F_V, F_A by input stem) under folder/evaluation/outputs."""
        raise NotImplementedError

    def warm_victim(self, victim, test_sets: dict[str, list[Path]], size: int, progress: bool) -> None:
        """Compute F_V's answers on the test images once, before the cells (a no-op where nothing is cached)."""


def _records(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Cell records from {test set name: SRTestResult | StyleTestResult} (one surrogate each)."""
    return [{
        "test_set": name, "n_images": r.n_images,
        "metrics": {m: {k: c.runs[0] for k, c in cells.items()} for m, cells in r.cells.items()},
        "image_std": {m: {k: c.image_std for k, c in cells.items()} for m, cells in r.cells.items()},
    } for name, r in results.items()]


class _SuperResolution(Kind):
    def victim_config_class(self, arch: str) -> type:
        from imgsteal.victim.train import SRVictimConfig

        return SRVictimConfig

    def train_victim(self, config, run_dir: Path, progress: bool = True) -> None:
        from imgsteal.victim.train import train_sr_victim

        train_sr_victim(config, run_dir, resume=True, progress=progress)

    def test_query(self, path, scale, size):
        from imgsteal.data.images import bicubic_downscale, crop_to_multiple, load_image

        hr = crop_to_multiple(load_image(path), scale)
        return bicubic_downscale(hr, scale), hr

    def score(self, victim, surrogate, test_sets, *, folder, evaluation, style_set, size, device, progress,
              keep_outputs=False):
        from imgsteal.evaluate.sr import SRConvention, evaluate_sr_set
        from imgsteal.files import safe_name

        crop = evaluation.get("crop_border")
        convention = SRConvention(crop_border=victim.scale if crop is None else crop,
                                  y_channel=bool(evaluation.get("y_channel")))
        # The report's gallery cells keep the scored images of the first test set (the gallery's) by input
        # stem, as style does, for a person or `imgsteal study create`; full-size HR sets are large, so
        # the other sets and cells keep only the scores.
        outputs = folder / "evaluation" / "outputs"
        if keep_outputs:
            shutil.rmtree(outputs, ignore_errors=True)  # a re-scored cell leaves no stale images
        return _records({name: evaluate_sr_set(safe_name(name), paths, victim, [surrogate], victim.scale, convention,
                                               gallery_dir=None, progress=progress,
                                               outputs_dir=outputs / safe_name(name) if keep_outputs and i == 0 else None)
                         for i, (name, paths) in enumerate(test_sets.items())})

    def warm_victim(self, victim, test_sets, size, progress):
        from tqdm.auto import tqdm

        # The queries are made exactly as the scoring makes them; the cache is keyed by content, so a
        # difference would only cost a recomputation, never a wrong score.
        for name, paths in test_sets.items():
            for path in tqdm(paths, desc=f"victim on {name}", disable=not progress, unit="img"):
                victim(self.test_query(path, victim.scale, size)[0][None])


class _Style(Kind):
    def victim_config_class(self, arch: str) -> type:
        from imgsteal.victim.style import StyleVictimConfig

        return StyleVictimConfig

    def train_victim(self, config, run_dir: Path, progress: bool = True) -> None:
        from imgsteal.victim.style import train_style_victim

        train_style_victim(config, run_dir, resume=True, progress=progress)

    def test_query(self, path, scale, size):
        from imgsteal.evaluate.style import prepare_photos

        return prepare_photos([Path(path)], size)[0][1], None

    def score(self, victim, surrogate, test_sets, *, folder, evaluation, style_set, size, device, progress,
              keep_outputs=False):
        from imgsteal.evaluate.style import evaluate_style

        if not style_set:
            raise ImgstealError("style scoring needs the style set S_X")
        eval_dir = folder / "evaluation"
        results, _ = evaluate_style(victim, [surrogate], test_sets, style_set, eval_dir, size=size,
                                    inception_weights=evaluation.get("inception_weights"), device=device,
                                    gallery_count=0, progress=progress)
        # Every scored image was written for the FID features; at paper scale that is gigabytes per cell,
        # so only the report's gallery cells keep them (for `imgsteal study create --experiment`).
        if not keep_outputs:
            shutil.rmtree(eval_dir / "outputs", ignore_errors=True)
        return _records({r.name: r for r in results})


SUPER_RESOLUTION = _SuperResolution(
    name="sr", title="super-resolution", victim_archs=("srgan",), surrogate_archs=SR_ARCHS,
    main_metric="ssim", baseline="bicubic", input_label="LR input", has_truth=True, victim_dataset_fields=("hr",))
STYLE = _Style(
    name="style", title="style transfer", victim_archs=("cyclegan", "ugatit"), surrogate_archs=STYLE_ARCHS,
    main_metric="fid", baseline="input", input_label="input", has_truth=False,
    victim_dataset_fields=("domain_a", "domain_b"))

KINDS: dict[str, Kind] = {k.name: k for k in (SUPER_RESOLUTION, STYLE)}


def kind_of(name: str) -> Kind:
    """The Kind called `name` (sr | style); ImgstealError naming the known kinds otherwise."""
    try:
        return KINDS[name]
    except KeyError:
        raise ImgstealError(f"unknown kind {name!r}; known: {', '.join(KINDS)}") from None
