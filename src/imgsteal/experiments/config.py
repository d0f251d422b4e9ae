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

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from imgsteal.attack.harvest import packed_query_count
from imgsteal.config import load_yaml_config
from imgsteal.data.augment import Augmentation
from imgsteal.defenses.registry import DEFENSES, DefenseSetup
from imgsteal.errors import ImgstealError
from imgsteal.pipeline.kinds import KINDS, Kind, kind_of

PAPER_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
NO_DEFENSE = "none"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # src/imgsteal: `{package}` in paths
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
    defenses: list[str] = Field(default_factory=lambda: [NO_DEFENSE],
                                description="output defences the victim's API runs while it is harvested: `none`, a "
                                            "defence name (watermark, fingerprint, pgd) or a key of `defense_setups`")
    attacks: list[Literal["paper", "domain-shift", "few-shot", "jpeg", "resize", "noise", "overmark", "finetune"]] = Field(
        default_factory=lambda: ["paper"], description="surrogate training methods (docs/attacks.md)")
    budgets: list[int | Literal["all"]] | None = Field(
        None, description="queries a cell trains on: nested subsets of the harvest (one harvest serves every "
                          "budget); `all` = every pair of the cell's fraction. None: no budget axis")
    surrogates: list[str] | None = Field(
        None, description="surrogate architectures (default: the task's `surrogate.arch`); the adversary does not "
                          "know the victim's, so a mismatched one shows whether the copy still works")
    selections: list[Literal["random", "diverse", "adaptive"]] = Field(
        default_factory=lambda: ["random"], description="query selection: which of its images the adversary sends "
                                                        "(imgsteal.attack.selection); other than random needs budgets")

    @field_validator("attacks", "selections", "surrogates")
    @classmethod
    def _unique(cls, value: list | None) -> list | None:
        if value is not None and not value:
            raise ValueError("needs at least one entry")
        return None if value is None else list(dict.fromkeys(value))

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, value: list | None) -> list | None:
        if value is None:
            return None
        if not value:
            raise ValueError("needs at least one budget (a number of queries, or all)")
        for budget in value:
            if budget != "all" and (isinstance(budget, bool) or budget < 1):
                raise ValueError(f"a budget is a number of queries of at least 1 (or all), got {budget!r}")
        numbers = sorted({b for b in value if b != "all"})
        return numbers + (["all"] if "all" in value else [])

    @model_validator(mode="after")
    def _selection_needs_budgets(self) -> "GridConfig":
        if any(s != "random" for s in self.selections) and not [b for b in self.budgets or [] if b != "all"]:
            raise ValueError("query selection other than random chooses up to a budget: give `budgets` as numbers")
        return self

    def budget_list(self) -> list[int | None]:
        """The budgets as numbers of queries, None for all (a single None without a budget axis)."""
        return [None] if self.budgets is None else [None if b == "all" else b for b in self.budgets]

    def max_budget(self) -> int | None:
        numbers = [b for b in self.budget_list() if b is not None]
        return max(numbers) if numbers else None

    @field_validator("defenses")
    @classmethod
    def _some_defense(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError(f"needs at least one entry ({NO_DEFENSE} for an undefended victim)")
        for name in value:
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
                raise ValueError(f"defence entry {name!r} must be letters, digits, - and _ (it names folders)")
        return list(dict.fromkeys(value))

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
    defenses: list[str] | None = None
    attacks: list[str] | None = None
    budgets: list[int | str] | None = None
    surrogates: list[str] | None = None
    selections: list[str] | None = None


class VictimSpec(_Strict):
    """One of `model` (an existing victim: run folder or .safetensors), `train` (a training spec) or
    `url` (a service reached only through its API: every harvest query and every test image's answer
    is a query; no defences can be added to it).

    train: {arch: srgan, hr: [...], ...SRVictimConfig fields} or
           {arch: cyclegan | ugatit, domain_a: SPEC, domain_b: SPEC, ...StyleVictimConfig fields}.
    The experiment trains it once into OUT/tasks/<task>/victim, before any cell.
    """

    model: str | None = None
    train: dict[str, Any] | None = None
    url: str | None = Field(None, description="http(s) URL of the victim's API (imgsteal's, or any API with `api_spec`)")
    api_spec: str | None = Field(None, description="[url] API spec YAML of a third-party API (docs/api-spec.md)")
    scale: int | None = Field(None, ge=1, description="[url] the API's upscaling factor (1 for style transfer)")

    @model_validator(mode="after")
    def _exactly_one(self) -> "VictimSpec":
        if sum(x is not None for x in (self.model, self.train, self.url)) != 1:
            raise ValueError("victim needs exactly one of `model` (path of a trained victim), `train` (how to train "
                             "one) or `url` (its API)")
        if self.url is not None:
            if not self.url.startswith(("http://", "https://")):
                raise ValueError(f"victim.url must be an http(s):// URL, not {self.url!r}")
            if self.scale is None:
                raise ValueError("a victim reached by `url` needs `scale` (its upscaling factor; 1 for style transfer)")
        elif self.api_spec is not None or self.scale is not None:
            raise ValueError("`api_spec` and `scale` describe a victim reached by `url`")
        archs = [a for k in KINDS.values() for a in k.victim_archs]
        if self.train is not None and self.train.get("arch") not in archs:
            raise ValueError(f"victim.train.arch must be one of {', '.join(archs)}, not {self.train.get('arch')!r}")
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
    pack_pixels: int | None = Field(None, ge=1, description="tile the prepared images into mosaics of at most this "
                                                          "many pixels, one query each (imgsteal.attack.packing; "
                                                          "e.g. the API's max_pixels); budgets then count mosaics")
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

        kind = self.kind_spec
        known = set(SurrogateConfig.model_fields)
        owned = sorted(set(self.surrogate) & set(GRID_OWNED))
        if owned:
            raise ValueError(f"surrogate settings {', '.join(owned)} are set by the grid (or the task's `device`)")
        unknown = sorted(set(self.surrogate) - known)
        if unknown:
            raise ValueError(f"unknown surrogate settings {', '.join(unknown)}; known: {', '.join(sorted(known - set(GRID_OWNED)))}")
        arch = self.surrogate_settings()["arch"]
        if arch not in kind.surrogate_archs:
            raise ValueError(f"a {self.kind} task's surrogate is one of {', '.join(kind.surrogate_archs)}, not {arch!r}")
        if not kind.has_truth and not self.style_set:
            raise ValueError(f"a {self.kind} task needs `style_set` (the style images S_X for experiments A and C)")
        if self.victim.train is not None and self.victim.train["arch"] not in kind.victim_archs:
            raise ValueError(f"victim arch {self.victim.train['arch']!r} does not fit a {self.kind} task "
                             f"({self.kind}: {' or '.join(kind.victim_archs)})")
        return self

    @property
    def kind_spec(self) -> Kind:
        return kind_of(self.kind)

    @property
    def display_title(self) -> str:
        return self.title or self.name

    @property
    def main_metric(self) -> str:
        return self.evaluation.metric or self.kind_spec.main_metric

    def surrogate_settings(self) -> dict[str, Any]:
        return {"arch": self.kind_spec.surrogate_archs[0], **self.surrogate}


class ExperimentConfig(_Strict):
    """A whole experiment: one or more tasks run over a grid, priced per query."""

    name: str
    description: str = ""
    data_root: str = Field(".", description="replaces {data_root} in dataset specs and model paths")
    price_usd: float = Field(PAPER_PRICE_USD, ge=0, description="price of one 256 x 256 answer (harvest) and of "
                                                                "one query (the paper's flat estimate)")
    grid: GridConfig = Field(default_factory=GridConfig)
    tasks: list[TaskConfig] = Field(min_length=1)
    defense_setups: dict[str, DefenseSetup] = Field(
        default_factory=dict, description="named defence setups the grid's `defenses` can name (defences and their "
                                          "options; a plain defence name in the grid uses that defence's defaults)")
    fingerprint_training: dict[str, Any] | None = Field(
        None, description="FingerprintTrainConfig settings: trains the fingerprint once per task when a defence setup "
                          "uses the fingerprint without a `model`")
    client: str = Field("adversary", description="the adversary's API key name (the watermark's client)")

    @model_validator(mode="after")
    def _unique_tasks(self) -> "ExperimentConfig":
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"task names must be unique; repeated: {', '.join(dupes)}")
        for task in self.tasks:
            if task.victim.url is not None and self.task_grid(task).defenses != [NO_DEFENSE]:
                raise ValueError(f"task {task.name}: a victim reached by URL answers with whatever its service "
                                 "runs; the grid cannot add defences to it (defenses: [none])")
            if task.victim.url is not None and (task.victim.scale > 1) != (task.kind == "sr"):
                raise ValueError(f"task {task.name}: a {task.kind} task's victim has scale "
                                 f"{'> 1' if task.kind == 'sr' else '1'}, not {task.victim.scale}")
            if task.harvest.pack_pixels and any(s != "random" for s in self.task_grid(task).selections):
                raise ValueError(f"task {task.name}: packed queries (harvest.pack_pixels) and query selection other "
                                 "than random cannot be combined: selection chooses single images")
            for arch in self.task_grid(task).surrogates or []:
                if arch not in task.kind_spec.surrogate_archs:
                    raise ValueError(f"task {task.name}: a {task.kind} surrogate is one of "
                                     f"{', '.join(task.kind_spec.surrogate_archs)}, not {arch!r}")
            for name in self.task_grid(task).defenses:
                setup = self.defense_setup(name)
                if "fingerprint" in setup.defenses and setup.options("fingerprint").model is None \
                        and self.fingerprint_training is None:
                    raise ValueError(f"defence {name!r} uses the fingerprint: give fingerprint.model in its setup "
                                     "or `fingerprint_training`")
        return self

    def defense_setup(self, name: str) -> DefenseSetup:
        """The defences of grid entry `name`: none, a named setup, or one defence with its defaults."""
        if name == NO_DEFENSE:
            return DefenseSetup()
        if name in self.defense_setups:
            return self.defense_setups[name]
        if name in DEFENSES:
            return DefenseSetup(defenses=[name])
        raise ValueError(f"unknown defence {name!r} in the grid; known: {NO_DEFENSE}, "
                         f"{', '.join([*self.defense_setups, *DEFENSES])}")

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

    def victim_api_spec(self, task: TaskConfig) -> str | None:
        """The path of a URL victim's API spec, expanded (None: imgsteal's own API, or not a URL victim)."""
        return self.expand(task.victim.api_spec) if task.victim.api_spec else None

    def expand(self, text: str) -> str:
        """Substitute {data_root} (the config's data root) and {package} (the folder imgsteal is installed
        in, for models shipped with it, e.g. the demo's victims) in a dataset spec or path."""
        return text.replace("{data_root}", self.data_root).replace("{package}", str(PACKAGE_ROOT))

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
    if "device" in spec:
        raise ConfigError(f"task {task.name}: set the device with the task's `device`, not in victim.train")
    kind = task.kind_spec
    for key in kind.victim_dataset_fields:
        if isinstance(spec.get(key), str):
            spec[key] = cfg.expand(spec[key])
        elif isinstance(spec.get(key), list):
            spec[key] = [cfg.expand(s) for s in spec[key]]
    try:
        return kind.victim_config(spec, device=task.device)
    except ImgstealError as exc:
        raise ConfigError(f"task {task.name}: {exc}") from None
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
        elif task.victim.url is not None:
            spec = cfg.victim_api_spec(task)
            if spec is not None and not Path(spec).is_file():
                raise ConfigError(f"task {task.name}: API spec not found: {spec}")
        else:
            vcfg = victim_training_config(cfg, task)
            for key in task.kind_spec.victim_dataset_fields:
                specs = getattr(vcfg, key)
                specs = [specs] if isinstance(specs, str) else specs
                found[f"victim:{key}"] = [p for spec in specs for p in _resolve(cfg, task, f"victim training images ({key})", spec)]
        found["harvest"] = [p for spec in task.harvest.inputs for p in _resolve(cfg, task, "harvest input", spec)]
        most = cfg.task_grid(task).max_budget()
        if most is not None:
            h = task.harvest
            queries = len(found["harvest"]) if not h.pack_pixels else \
                packed_query_count(found["harvest"], h.pack_pixels, h.downscale, h.resize)
            if most > queries:
                what = "images of the harvest inputs" if not h.pack_pixels else \
                    f"mosaics of at most {h.pack_pixels} px that the {len(found['harvest'])} harvest inputs fill"
                raise ConfigError(f"task {task.name}: a budget of {most} queries is more than the {queries} {what}; "
                                  "lower the budget or add images")
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


def task_settings(cfg: ExperimentConfig, task: TaskConfig) -> dict[str, dict[str, Any]]:
    """The settings a task's numbers depend on, by section (victim, harvest, surrogate, evaluation):
    what the pipeline's stages fingerprint (imgsteal.pipeline.stage).

    Speed-only settings (device, checkpoint_every, concurrency, oracle transport) are left out, so
    moving an experiment to a GPU does not invalidate its finished stages and cells.
    """
    # A shipped model ({package}) is named as written: the settings stay the same wherever imgsteal is installed.
    model = task.victim.model
    if task.victim.url is not None:
        victim = {"url": task.victim.url, "scale": task.victim.scale, "api_spec": cfg.victim_api_spec(task)}
    else:
        victim = {"model": model if model and "{package}" in model else cfg.expand(model or "")} if model else {
            k: (cfg.expand(v) if isinstance(v, str) else v) for k, v in (task.victim.train or {}).items()
            if k not in NOT_FINGERPRINTED}
    harvest = {"inputs": [cfg.expand(s) for s in task.harvest.inputs], "downscale": task.harvest.downscale,
               "resize": task.harvest.resize, "budget": task.harvest.budget,
               # only when set, so the fingerprints of unpacked harvests stay as they were
               **({"pack_pixels": task.harvest.pack_pixels} if task.harvest.pack_pixels else {})}
    surrogate = {k: v for k, v in task.surrogate_settings().items() if k not in NOT_FINGERPRINTED}
    ev = task.evaluation
    evaluation = {"kind": task.kind, "test_sets": {k: cfg.expand(v) for k, v in task.test_sets.items()},
                  "style_set": cfg.expand(task.style_set) if task.style_set else None,
                  "crop_border": ev.crop_border, "y_channel": ev.y_channel}
    return {"victim": victim, "harvest": harvest, "surrogate": surrogate, "evaluation": evaluation}


def task_fingerprints(cfg: ExperimentConfig, task: TaskConfig) -> dict[str, str]:
    """Hashes of `task_settings`, by section."""
    from imgsteal.pipeline.stage import fingerprint

    return {section: fingerprint(value) for section, value in task_settings(cfg, task).items()}
