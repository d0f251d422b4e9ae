"""The typed configuration of an experiment: tasks, the grid they are run over, and the price per query.

An experiment YAML names, per task, the victim (a trained model, or how to train one), the
adversary's query images, the surrogate's training settings and the test sets; the grid
(data fractions x augmentations x seeds) is shared by all tasks unless a task overrides part of it.
Datasets are named by dataset specs (`layout:path[:split]`, see imgsteal.data.layouts); the
placeholder `{data_root}` in any spec or model path is replaced by the config's `data_root`.

`check_datasets(cfg)` resolves every spec and path up front, so a config that names a missing
dataset fails before any training starts, with a message naming the path.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from imgsteal.data.augment import Augmentation
from imgsteal.config import load_yaml_config
from imgsteal.errors import ImgstealError

PAPER_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
# The paper's per-query price (section 8): $0.016 for a 256 x 256 answer.
PAPER_PRICE_USD = 0.016

# Settings the grid owns: a task's surrogate block must not set them.
GRID_OWNED = ("store", "seed", "fraction", "augmentation", "device")
# Settings that change how fast a run goes, not what it computes: left out of the fingerprints.
NOT_FINGERPRINTED = ("device", "checkpoint_every")


class ConfigError(ImgstealError, ValueError):
    """The experiment config is malformed or names data that is not there."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GridConfig(_Strict):
    """Fractions of the harvested pairs x paired augmentations x seeds (paper, sections 6.1-6.2)."""

    fractions: list[float] = Field(default_factory=lambda: list(PAPER_FRACTIONS))
    augmentations: list[Augmentation] = Field(default_factory=lambda: list(Augmentation))
    seeds: list[int] | int = Field(5, description="a count n (seeds 0..n-1) or an explicit list")
    augmentation_fractions: list[float] | None = Field(
        None, description="fractions at which augmentations other than `none` run (default: all); "
                          "the paper augments only up to each task's plateau")

    @field_validator("fractions", "augmentation_fractions")
    @classmethod
    def _fractions_in_range(cls, value: list[float] | None) -> list[float] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("needs at least one fraction")
        for f in value:
            if not 0 < f <= 1:
                raise ValueError(f"fractions are shares of the pairs in (0, 1], got {f}")
        return sorted(set(value))

    @field_validator("augmentations")
    @classmethod
    def _some_augmentation(cls, value: list[Augmentation]) -> list[Augmentation]:
        if not value:
            raise ValueError("needs at least one augmentation (none for the plain runs)")
        return list(dict.fromkeys(value))

    @field_validator("seeds")
    @classmethod
    def _seed_list(cls, value: list[int] | int) -> list[int]:
        if isinstance(value, int):
            if value < 1:
                raise ValueError("needs at least one seed")
            return list(range(value))
        if not value:
            raise ValueError("needs at least one seed")
        return list(dict.fromkeys(value))

    def seed_list(self) -> list[int]:
        """The seeds as a list (a count n means seeds 0..n-1)."""
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


class GridOverride(_Strict):
    """Part of the grid a task sets for itself (e.g. no cutout for super-resolution)."""

    fractions: list[float] | None = None
    augmentations: list[Augmentation] | None = None
    seeds: list[int] | int | None = None
    augmentation_fractions: list[float] | None = None


class VictimSpec(_Strict):
    """Either `model` (an existing victim: run folder or .safetensors) or `train` (a training spec).

    train: {arch: srgan, hr: [...], ...SRVictimConfig fields} or
           {arch: cyclegan | ugatit, domain_a: SPEC, domain_b: SPEC, ...StyleVictimConfig fields}.
    The experiment trains it once into OUT/tasks/<task>/victim, before any cell.
    """

    model: str | None = None
    train: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "VictimSpec":
        if (self.model is None) == (self.train is None):
            raise ValueError("victim needs exactly one of `model` (path of a trained victim) or `train` (how to train one)")
        if self.train is not None and self.train.get("arch") not in ("srgan", "cyclegan", "ugatit"):
            raise ValueError(f"victim.train.arch must be srgan, cyclegan or ugatit, not {self.train.get('arch')!r}")
        return self


class HarvestSpec(_Strict):
    """The adversary's queries: which images, how they are sent, through which oracle."""

    inputs: list[str] = Field(min_length=1, description="dataset specs of the adversary's images X_A")
    downscale: int | None = Field(None, description="send an Nx bicubic-downscaled copy (4 for super-resolution)")
    resize: int | None = Field(None, description="send a centre square crop resized to N x N px (style transfer "
                                                 "at the surrogate's size)")
    oracle: Literal["http", "local"] = Field("http", description="http: the victim served over its HTTP API on "
                                                                   "loopback (the black box); local: in process")
    budget: int | None = Field(None, ge=1, description="at most this many answered queries in the store")
    concurrency: int = Field(8, ge=1, description="requests in flight (http)")


class EvaluationSpec(_Strict):
    metric: str | None = Field(None, description="main metric of plots, plateau and Table 6: ssim (sr) / fid (style)")
    crop_border: int | None = Field(None, description="[sr] pixels cropped from each border (default: the scale)")
    y_channel: bool = Field(False, description="[sr] score the BT.601 luma channel instead of RGB")
    inception_weights: str | None = Field(None, description="[style] FID Inception weights file")
    gallery_images: int = Field(3, ge=0, description="test images shown per task in the report's gallery")


class TaskConfig(_Strict):
    name: str = Field(description="short identifier, used in folder names (letters, digits, - and _)")
    title: str | None = None
    kind: Literal["sr", "style"]
    victim: VictimSpec
    harvest: HarvestSpec
    surrogate: dict[str, Any] = Field(description="SurrogateConfig settings: arch, epochs, batch_size, ...")
    test_sets: dict[str, str] = Field(min_length=1, description="display name -> dataset spec")
    style_set: str | None = Field(None, description="[style] the style images S_X that (A) and (C) compare against")
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    grid: GridOverride | None = None
    device: str = Field("auto", description="auto (cuda when present), cpu, cuda, cuda:1 ...")
    processes_per_cell: int = Field(1, ge=1, description="> 1: each cell trains under torchrun with "
                                                         "DistributedDataParallel, one process per GPU")

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", value):
            raise ValueError(f"task name {value!r} must be letters, digits, - and _ (it names folders)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "TaskConfig":
        from imgsteal.attack.surrogate import SurrogateConfig

        known = set(SurrogateConfig.model_fields)
        owned = sorted(set(self.surrogate) & set(GRID_OWNED))
        if owned:
            raise ValueError(f"surrogate settings {', '.join(owned)} are set by the grid (or the task's `device`)")
        unknown = sorted(set(self.surrogate) - known)
        if unknown:
            raise ValueError(f"unknown surrogate settings {', '.join(unknown)}; known: {', '.join(sorted(known - set(GRID_OWNED)))}")
        arch = self.surrogate.get("arch", "srresnet")
        if self.kind == "sr" and arch != "srresnet":
            raise ValueError(f"an sr task trains an srresnet surrogate, not {arch!r}")
        if self.kind == "style" and arch != "pix2pix":
            raise ValueError(f"a style task trains a pix2pix surrogate (surrogate.arch: pix2pix), not {arch!r}")
        if self.kind == "style" and not self.style_set:
            raise ValueError("a style task needs `style_set` (the style images S_X for experiments A and C)")
        if self.victim.train is not None:
            arch_v = self.victim.train["arch"]
            if (self.kind == "sr") != (arch_v == "srgan"):
                raise ValueError(f"victim arch {arch_v!r} does not fit a {self.kind} task (sr: srgan; style: cyclegan or ugatit)")
        return self

    @property
    def display_title(self) -> str:
        return self.title or self.name

    @property
    def main_metric(self) -> str:
        return self.evaluation.metric or ("ssim" if self.kind == "sr" else "fid")

    def surrogate_settings(self) -> dict[str, Any]:
        return {"arch": "srresnet" if self.kind == "sr" else "pix2pix", **self.surrogate}


class ExperimentConfig(_Strict):
    """A whole experiment: one or more tasks run over a grid, priced per query."""

    name: str
    description: str = ""
    data_root: str = Field(".", description="replaces {data_root} in dataset specs and model paths")
    price_usd: float = Field(PAPER_PRICE_USD, ge=0, description="price of one 256 x 256 answer (harvest) and of "
                                                                "one query (the paper's flat estimate)")
    grid: GridConfig = Field(default_factory=GridConfig)
    tasks: list[TaskConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_tasks(self) -> "ExperimentConfig":
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"task names must be unique; repeated: {', '.join(dupes)}")
        return self

    def task(self, name: str) -> TaskConfig:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(name)

    def task_grid(self, task: TaskConfig) -> GridConfig:
        """The experiment's grid with the task's overrides applied."""
        if task.grid is None:
            return self.grid
        merged = self.grid.model_dump()
        merged.update({k: v for k, v in task.grid.model_dump().items() if v is not None})
        return GridConfig.model_validate(merged)

    def expand(self, text: str) -> str:
        """Substitute {data_root} in a dataset spec or path."""
        return text.replace("{data_root}", self.data_root)

    def dump_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def load_config(path: str | Path, data_root: str | None = None) -> ExperimentConfig:
    """Read and validate an experiment YAML. data_root overrides the file's `data_root`.

    Raises ConfigError (an ImgstealError) with the field path for anything malformed.
    """
    return load_yaml_config(path, ExperimentConfig, "experiment config", ConfigError, {"data_root": data_root})


# --------------------------------------------------------------------------- dataset checks


def _resolve(cfg: ExperimentConfig, task: TaskConfig, role: str, spec: str) -> list[Path]:
    from imgsteal.data.layouts import resolve_images

    spec = cfg.expand(spec)
    try:
        return resolve_images(spec)
    except (FileNotFoundError, ImgstealError) as exc:
        raise ConfigError(f"task {task.name}: {role} {spec!r}: {exc}") from None


def victim_training_config(cfg: ExperimentConfig, task: TaskConfig):
    """The typed victim training config (SRVictimConfig or StyleVictimConfig) with specs expanded."""
    spec = dict(task.victim.train or {})
    arch = spec.pop("arch")
    if "device" in spec:
        raise ConfigError(f"task {task.name}: set the device with the task's `device`, not in victim.train")
    try:
        if arch == "srgan":
            from imgsteal.victim.train import SRVictimConfig

            spec["hr"] = [cfg.expand(s) for s in spec.get("hr", [])]
            unknown = sorted(set(spec) - set(SRVictimConfig.model_fields))
            if unknown:
                raise ConfigError(f"task {task.name}: unknown victim.train settings {', '.join(unknown)}")
            return SRVictimConfig(**spec, device=task.device)
        try:
            from imgsteal.victim.style import StyleVictimConfig
        except ImportError as exc:
            raise ConfigError(f"task {task.name}: training a {arch} victim needs imgsteal.victim.style ({exc})") from None
        for key in ("domain_a", "domain_b"):
            if isinstance(spec.get(key), str):
                spec[key] = cfg.expand(spec[key])
            elif isinstance(spec.get(key), list):
                spec[key] = [cfg.expand(s) for s in spec[key]]
        unknown = sorted(set(spec) - set(StyleVictimConfig.model_fields))
        if unknown:
            raise ConfigError(f"task {task.name}: unknown victim.train settings {', '.join(unknown)}")
        return StyleVictimConfig(arch=arch, **spec, device=task.device)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise ConfigError(f"task {task.name}: invalid victim.train:\n" + "\n".join(lines)) from None


def check_datasets(cfg: ExperimentConfig) -> dict[str, dict[str, list[Path]]]:
    """Resolve every dataset and model path of every task; ConfigError naming the first missing one.

    Returns {task: {"harvest": paths, "test:<name>": paths, "style": paths, ...}} for the runner.
    """
    resolved: dict[str, dict[str, list[Path]]] = {}
    for task in cfg.tasks:
        found: dict[str, list[Path]] = {}
        if task.victim.model is not None:
            model = Path(cfg.expand(task.victim.model))
            if not model.exists():
                raise ConfigError(f"task {task.name}: victim model not found: {model}")
        else:
            vcfg = victim_training_config(cfg, task)
            if task.kind == "sr":
                found["victim"] = [p for spec in vcfg.hr for p in _resolve(cfg, task, "victim training images", spec)]
            else:
                for key, role in (("domain_a", "victim domain A"), ("domain_b", "victim domain B (style set)")):
                    specs = getattr(vcfg, key)
                    specs = [specs] if isinstance(specs, str) else specs
                    found[key] = [p for spec in specs for p in _resolve(cfg, task, role, spec)]
        found["harvest"] = [p for spec in task.harvest.inputs for p in _resolve(cfg, task, "harvest input", spec)]
        for name, spec in task.test_sets.items():
            found[f"test:{name}"] = _resolve(cfg, task, f"test set {name!r}", spec)
        if task.style_set:
            found["style"] = _resolve(cfg, task, "style set", task.style_set)
        if task.evaluation.inception_weights:
            weights = Path(cfg.expand(task.evaluation.inception_weights))
            if not weights.is_file():
                raise ConfigError(f"task {task.name}: Inception weights not found: {weights}")
        resolved[task.name] = found
    return resolved


# --------------------------------------------------------------------------- fingerprints


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def task_fingerprints(cfg: ExperimentConfig, task: TaskConfig) -> dict[str, str]:
    """Hashes of the settings a cell's numbers depend on, by section (victim, harvest, surrogate, evaluation).

    Speed-only settings (device, checkpoint_every, concurrency, oracle transport) are left out, so
    moving an experiment to a GPU does not invalidate its finished cells.
    """
    victim = {"model": cfg.expand(task.victim.model)} if task.victim.model else {
        k: (cfg.expand(v) if isinstance(v, str) else v) for k, v in (task.victim.train or {}).items()
        if k not in NOT_FINGERPRINTED}
    harvest = {"inputs": [cfg.expand(s) for s in task.harvest.inputs], "downscale": task.harvest.downscale,
               "resize": task.harvest.resize, "budget": task.harvest.budget}
    surrogate = {k: v for k, v in task.surrogate_settings().items() if k not in NOT_FINGERPRINTED}
    ev = task.evaluation
    evaluation = {"kind": task.kind, "test_sets": {k: cfg.expand(v) for k, v in task.test_sets.items()},
                  "style_set": cfg.expand(task.style_set) if task.style_set else None,
                  "crop_border": ev.crop_border, "y_channel": ev.y_channel}
    return {"victim": _digest(victim), "harvest": _digest(harvest), "surrogate": _digest(surrogate),
            "evaluation": _digest(evaluation)}
