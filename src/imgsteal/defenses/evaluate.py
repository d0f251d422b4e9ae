"""`imgsteal defense evaluate CONFIG.yaml`: does each output defence survive the extraction attack?

A defence evaluation is an experiment whose grid has one axis, the defences: a clean run `none`
and one run per defended setup, each harvesting the adversary's queries through the victim's API with
those defences on, training a surrogate on the answers and scoring it (A/B/C) - all through the
experiment pipeline (imgsteal.experiments, imgsteal.pipeline), into OUT/experiment. This module
converts its config into that experiment and then measures what each defence was meant to achieve:

    watermark    verdict on the surrogate, and on the clean run's surrogate (negative control)
    fingerprint  bit accuracy on the answers the API gave (positive control), on the surrogate's
                 outputs, and on the clean surrogate's and the unstamped victim's (negative controls)
    pgd          the victim discriminator's loss on clean vs perturbed answers, the perturbation's size
    transfer     Figure 9: adversarial inputs crafted on F_V, given to F_V and to the clean F_A
    every run    the surrogate's quality with and without it, and what it costs honest clients
                 (PSNR of the defended answers against the clean ones)

    OUT/experiment/            the experiment (victim, fingerprint, harvests, cells; see imgsteal.pipeline.stages)
    OUT/figures/               image panels (Figures 8 and 9, previews)
    OUT/config.yaml, OUT/results.json, OUT/report.html

The defences' settings are their option models' fields (imgsteal.defenses.registry), the same as
`imgsteal serve --defense ...` flags. Secrets (HMAC secret, trigger sets, fingerprint bits, API keys)
stay in their owner-only files: the report and results hold counts, accuracies and p-values only;
the previews show the defences applied to test images, never a trigger. Every stage resumes.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from imgsteal.defenses.registry import DEFENSES, DefenseSetup
from imgsteal.defenses.scorecard import ScorecardSection
from imgsteal.errors import ImgstealError
from imgsteal.experiments.config import NO_DEFENSE, TaskConfig

CLEAN_RUN = NO_DEFENSE
Log = Callable[[str], None]


def _print(message: str) -> None:
    print(f"[defense] {message}", flush=True)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FingerprintSection(_Strict):
    """Either `model` (a trained fingerprint run folder) or `train` (FingerprintTrainConfig settings)."""

    model: str | None = None
    train: dict[str, Any] = Field(default_factory=dict)


class BoxfreeSection(_Strict):
    """Either `model` (a run folder of `imgsteal watermark train --method boxfree`) or `train`
    (BoxfreeTrainConfig settings; trained once on the experiment's victim into OUT/boxfree)."""

    model: str | None = None
    train: dict[str, Any] = Field(default_factory=dict)


class TransferSection(_Strict):
    """Figure 9: PGD inputs against F_V's generator (its answer pushed away from the clean one)."""

    enabled: bool = True
    epsilon: float = Field(8 / 255, ge=0, le=1, description="L-infinity bound on the *input* perturbation")
    steps: int = Field(10, ge=1)
    step_size: float | None = Field(None, gt=0)
    images: int = Field(4, ge=1, description="test images attacked")


class RunSpec(_Strict):
    """A defended run: its defences, applied in order, and watermark/pgd settings of its own (merged
    over the top-level sections; e.g. one run per alteration of Figure 8). A plain list means defences only."""

    defenses: list[str] = Field(min_length=1)
    watermark: dict[str, Any] = Field(default_factory=dict)
    pgd: dict[str, Any] = Field(default_factory=dict)


class DefenseEvalConfig(_Strict):
    """A defence evaluation: one task, the defences' settings, and the defended runs to compare.

    `watermark` and `pgd` hold the fields of the defences' option models (WatermarkOptions, PGDOptions:
    the same as `imgsteal serve --watermark-*/--pgd-*`); `fingerprint` names a trained fingerprint or
    how to train one.
    """

    name: str = "defenses"
    description: str = ""
    data_root: str = Field(".", description="replaces {data_root} in dataset specs and model paths")
    price_usd: float = Field(0.016, ge=0)
    task: TaskConfig
    client: str = Field("adversary", description="the adversary's API key name (the watermark's client)")
    seed: int = Field(0, description="seed of every surrogate")
    runs: dict[str, RunSpec] = Field(
        default_factory=lambda: {n: RunSpec(defenses=[n]) for n in ("watermark", "fingerprint", "pgd")},
        description="run name -> defences applied (in order) or a RunSpec; a clean run 'none' is always added")
    watermark: dict[str, Any] = Field(default_factory=dict, description="WatermarkOptions fields")
    fingerprint: FingerprintSection = Field(default_factory=FingerprintSection)
    boxfree: BoxfreeSection = Field(default_factory=BoxfreeSection)
    pgd: dict[str, Any] = Field(default_factory=dict, description="PGDOptions fields")
    scorecard: ScorecardSection | None = Field(None, description="the adaptive-attack scorecard (imgsteal.defenses.scorecard)")
    transfer: TransferSection = Field(default_factory=TransferSection)
    alpha: float = Field(0.01, gt=0, lt=1, description="significance level of the watermark verdict")
    detect_images: int = Field(16, ge=1, description="test images whose outputs are checked for the fingerprint")
    gallery_images: int = Field(2, ge=0, description="test images shown in the preview panels")
    notes: list[str] = Field(default_factory=list, description="shown at the top of the report")
    _boxfree_dir: Path | None = PrivateAttr(None)  # OUT/boxfree once trained there

    @field_validator("runs", mode="before")
    @classmethod
    def _runs(cls, value: Any) -> Any:
        if not isinstance(value, dict) or not value:
            raise ValueError("needs at least one defended run (name: [defences])")
        specs = {}
        for name, spec in value.items():
            if name == CLEAN_RUN or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", str(name)):
                raise ValueError(f"run name {name!r} must be letters, digits, - and _, and not {CLEAN_RUN!r}")
            spec = {"defenses": spec} if isinstance(spec, list) else spec
            if not isinstance(spec, dict) or not spec.get("defenses"):
                raise ValueError(f"run {name!r} applies no defence")
            unknown = [d for d in spec["defenses"] if d not in DEFENSES]
            if unknown:
                raise ValueError(f"run {name!r}: unknown defence(s) {', '.join(unknown)}; known: {', '.join(DEFENSES)}")
            specs[name] = spec
        return specs

    @model_validator(mode="after")
    def _consistent(self) -> "DefenseEvalConfig":
        if self.uses("fingerprint") and self.fingerprint.model is None and not self.fingerprint.train.get("images"):
            raise ValueError("fingerprint: give `model` (a trained run folder) or `train.images` (images to train it on)")
        if self.uses("boxfree") and self.boxfree.model is None and not self.boxfree.train.get("images"):
            raise ValueError("boxfree: give `model` (a run folder of `imgsteal watermark train --method boxfree`) or "
                             "`train.images` (the owner's images to train it on)")
        if self.boxfree.train:
            from imgsteal.defenses.boxfree import BoxfreeTrainConfig

            unknown = sorted(set(self.boxfree.train) - set(BoxfreeTrainConfig.model_fields))
            if unknown:
                raise ValueError(f"boxfree.train: unknown settings {', '.join(unknown)}")
        if self.scorecard is not None:
            archs = len(self.scorecard.independent_archs) or 1
            n = self.scorecard.independent_count(archs)
            if n < 10:
                raise ValueError(f"scorecard: {n} independent models (clean-answer surrogates: attacks x seeds + "
                                 "independent_seeds x independent_archs); the threshold needs at least 10")
        for run in self.runs:  # every run's settings must be valid, now rather than after the harvests
            try:
                self.setup(run)
            except (ImgstealError, ValueError) as exc:
                raise ValueError(f"run {run!r}: {exc}") from None
        return self

    def uses(self, defense: str) -> bool:
        return any(defense in spec.defenses for spec in self.runs.values())

    def setup(self, run: str) -> DefenseSetup:
        """The defences of `run` with their options: the top-level sections with the run's overrides."""
        if run == CLEAN_RUN:
            return DefenseSetup()
        spec = self.runs[run]
        sections: dict[str, dict[str, Any]] = {}
        if "watermark" in spec.defenses:
            sections["watermark"] = {**self.watermark, **spec.watermark}
        if "pgd" in spec.defenses:
            sections["pgd"] = {**self.pgd, **spec.pgd}
            if sections["pgd"].get("discriminator"):
                sections["pgd"]["discriminator"] = self.expand(str(sections["pgd"]["discriminator"]))
        if "fingerprint" in spec.defenses and self.fingerprint.model:
            sections["fingerprint"] = {"model": self.expand(self.fingerprint.model)}
        if "boxfree" in spec.defenses and (self.boxfree.model or self._boxfree_dir):
            sections["boxfree"] = {"model": self.expand(self.boxfree.model) if self.boxfree.model else str(self._boxfree_dir)}
        return DefenseSetup(defenses=spec.defenses, **sections)

    def expand(self, text: str) -> str:
        return text.replace("{data_root}", self.data_root)

    def experiment(self, defenses: list[str] | None = None, attacks: list[str] | None = None,
                   seeds: list[int] | None = None, augmentations: list[str] | None = None,
                   surrogates: list[str] | None = None):
        """The evaluation as an experiment: its task over the defences axis (none + every run), one cell
        each; the scorecard asks for other axes (attacks, seeds, augmentations, architectures)."""
        from imgsteal.experiments.config import ExperimentConfig, GridConfig

        fingerprint_training = None
        defenses = defenses or [CLEAN_RUN, *self.runs]
        if self.uses("fingerprint") and self.fingerprint.model is None:
            fingerprint_training = dict(self.fingerprint.train)
        return ExperimentConfig(
            name=self.name, description=self.description, data_root=self.data_root, price_usd=self.price_usd,
            grid=GridConfig(fractions=[1.0], augmentations=augmentations or ["none"], seeds=seeds or [self.seed],
                            defenses=defenses, attacks=attacks or ["paper"], surrogates=surrogates),
            tasks=[self.task], defense_setups={run: self.setup(run) for run in self.runs if run in defenses},
            fingerprint_training=fingerprint_training, client=self.client)


def load_defense_config(path: str | Path, data_root: str | None = None) -> DefenseEvalConfig:
    """Read and validate a defence-evaluation YAML; ImgstealError naming the field for anything malformed.

    With `base: preset:NAME` (or another experiment config), `task: NAME` picks that task of the base.
    """
    from imgsteal.config import read_raw_config, validate_config

    raw = read_raw_config(path, "defence evaluation config")
    if isinstance(raw.get("task"), str):
        tasks = {t.get("name"): t for t in raw.get("tasks", []) if isinstance(t, dict)}
        if raw["task"] not in tasks:
            raise ImgstealError(f"{path}: task {raw['task']!r} is not among the base's tasks ({', '.join(map(str, tasks))})")
        raw["task"] = tasks[raw["task"]]
    for key in ("tasks", "grid", "defense_setups", "fingerprint_training"):  # experiment keys a base may bring
        raw.pop(key, None)
    if data_root is not None:
        raw["data_root"] = data_root
    return validate_config(raw, DefenseEvalConfig, "defence evaluation config", str(path))


# -- where the experiment put things -----------------------------------------------------------
@dataclass
class Context:
    """Paths and loaded things shared by the measurements."""

    cfg: DefenseEvalConfig
    out: Path
    resolved: dict[str, list[Path]]
    victim_model: Path
    fingerprint_dir: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    progress: bool = True
    log: Log = _print

    @property
    def experiment(self) -> Path:
        return self.out / "experiment"

    @property
    def task_folder(self) -> Path:
        return self.experiment / "tasks" / self.cfg.task.name

    def run_dir(self, run: str) -> Path:
        """The run's harvest folder (pairs/, and service/ for a defended run)."""
        from imgsteal.experiments.runner import defended_folder

        return defended_folder(self.task_folder, run)

    def store(self, run: str) -> Path:
        return self.run_dir(run) / "pairs"

    def service_dir(self, run: str) -> Path:
        return self.run_dir(run) / "service"

    def watermark_db(self, run: str) -> Path:
        from imgsteal.pipeline.oracle import watermark_db

        configured = self.cfg.setup(run).options("watermark").db if "watermark" in self.defenses(run) else None
        return Path(configured) if configured else watermark_db(self.service_dir(run))

    def surrogate_dir(self, run: str) -> Path:
        from imgsteal.experiments.grid import GridCell

        return GridCell(self.cfg.task.name, 1.0, "none", self.cfg.seed, run).folder(self.experiment) / "surrogate"

    def cell_result(self, run: str) -> dict:
        return json.loads((self.surrogate_dir(run).parent / "result.json").read_text())

    def defenses(self, run: str) -> list[str]:
        return self.cfg.setup(run).defenses

    def boxfree_dir(self, run: str) -> Path:
        return Path(self.cfg.setup(run).options("boxfree").model)

    def pgd_options(self, run: str):
        return self.cfg.setup(run).options("pgd")

    def discriminator_path(self, run: str) -> Path:
        configured = self.pgd_options(run).discriminator
        return Path(configured) if configured else self.victim_model.parent  # the victim's run folder

    def test_queries(self, count: int) -> list[tuple[Path, torch.Tensor]]:
        """(path, the query the evaluation sends) for the first `count` images of the first test set."""
        from imgsteal.experiments.runner import work_size

        first = next(iter(self.cfg.task.test_sets))
        paths = self.resolved[f"test:{first}"][:count]
        return [(p, self.cfg.task.kind_spec.test_query(p, self.scale, work_size(self.cfg.task))[0]) for p in paths]

    @property
    def scale(self) -> int:
        return self.cfg.task.harvest.downscale or 1


def logged_labels(run_dir: Path) -> dict[str, int]:
    """How many answers each defence label marked, from the API's query logs (or the local oracle's counts)."""
    from collections import Counter

    from imgsteal.victim.accounts import AccountsDB

    counts: Counter = Counter()
    for db in sorted(run_dir.glob("api-session-*.sqlite")):
        with AccountsDB(db) as accounts:
            for row in accounts.queries():
                for label in (row["defense"] or "").split(","):
                    counts[label or "(none)"] += 1
    local = run_dir / "local-labels.json"
    if local.exists():
        counts.update(json.loads(local.read_text()))
    return dict(counts)


# -- measurements ------------------------------------------------------------------------------
def _psnr_of_mse(mse: float) -> float:
    return float("inf") if mse <= 0 else 10 * math.log10(1.0 / mse)


def matched_answers(store_a: Path, store_b: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(answer in A, answer in B) for every query both pair stores answered, by input sha256."""
    from imgsteal.data.pairs import PairStore

    with PairStore(store_a, create=False) as a, PairStore(store_b, create=False) as b:
        in_b = {r.input_sha256: r for r in b.records()}
        pairs = []
        for record in a.records():
            if record.input_sha256 in in_b:
                pairs.append((a.load_pair(record)[1], b.load_pair(in_b[record.input_sha256])[1]))
    return pairs


def answer_cost(ctx: Context, run: str) -> dict:
    """What the run's defences cost honest clients: the defended answers against the clean answers."""
    pairs = matched_answers(ctx.store(run), ctx.store(CLEAN_RUN))
    if not pairs:
        return {"answers": 0}
    from imgsteal.metrics.ssim import ssim

    mses = [float(F.mse_loss(d, c)) for d, c in pairs]
    changed = sum(1 for m in mses if m > 0)
    linf = max(float((d - c).abs().max()) for d, c in pairs)
    ssims = [float(ssim(d, c)[0]) for d, c in pairs if min(d.shape[-2:]) >= 11]
    return {"answers": len(pairs), "changed": changed, "psnr_db": _psnr_of_mse(sum(mses) / len(mses)),
            "ssim": sum(ssims) / len(ssims) if ssims else None, "max_abs_change": linf}


def watermark_results(ctx: Context, run: str, surrogate_dir: Path, clean_dir: Path) -> dict:
    """Verdicts on the run's surrogate and on the clean surrogate (negative control)."""
    from imgsteal.defenses.verify import checkpoint_suspect, verify_watermark
    from imgsteal.defenses.watermark import TriggerStore

    db = ctx.watermark_db(run)
    if not db.exists():
        return {"triggers": 0, "note": "no trigger database (no query was answered with the watermark on)"}
    with TriggerStore(db, create=False) as store:
        count = store.count(ctx.cfg.client)
    if count == 0:
        return {"triggers": 0, "note": f"no query was selected at fraction {ctx.cfg.setup(run).options('watermark').fraction:g}"}
    wm = ctx.cfg.setup(run).options("watermark")
    out = {"triggers": count, "fraction": wm.fraction, "alteration": wm.alteration.value}
    for label, folder in (("surrogate", surrogate_dir), ("negative_control", clean_dir)):
        verdict = verify_watermark(db, ctx.cfg.client, checkpoint_suspect(folder, ctx.cfg.task.device),
                                   suspect_name=label, alpha=ctx.cfg.alpha)
        out[label] = verdict.as_dict()
    return out


def fingerprint_results(ctx: Context, run: str, surrogate, clean_surrogate, victim, queries: list[torch.Tensor]) -> dict:
    """Bit accuracy of the owner's fingerprint in the API's answers and in each model's outputs."""
    from imgsteal.data.pairs import PairStore
    from imgsteal.defenses.fingerprint import FingerprintModel, detect_fingerprint, fingerprint_verdict

    fp = FingerprintModel.load(ctx.fingerprint_dir, "cpu")
    with PairStore(ctx.store(run), create=False) as store:
        answers = [store.load_pair(r)[1] for r in store.records()]
    outputs = {
        "api_answers": answers,  # positive control: what the defended API returned
        "surrogate": [surrogate.translate(q) for q in queries],
        "clean_surrogate": [clean_surrogate.translate(q) for q in queries],  # negative control
        "victim_unstamped": [victim.translate(q) for q in queries],  # negative control
    }
    found = {name: detect_fingerprint(fp, images) for name, images in outputs.items()}
    out = {name: d.as_dict() for name, d in found.items()}
    # The verdict on F_A is relative to the unstamped models' outputs (negative controls), never to 50% alone.
    out["surrogate"]["verdict"] = fingerprint_verdict(
        found["surrogate"], [found["clean_surrogate"], found["victim_unstamped"]], alpha=ctx.cfg.alpha).as_dict()
    return out


def pgd_results(ctx: Context, run: str) -> dict:
    """The victim discriminator's loss on the clean vs the perturbed answers (PGD raises it) and the
    measured perturbation size (bounded by epsilon, plus 8-bit rounding)."""
    from imgsteal.defenses.perturbation import DISCRIMINATOR_LOSSES, discriminator_loss, load_discriminator_named

    p = ctx.pgd_options(run)
    disc, name = load_discriminator_named(ctx.discriminator_path(run), p.module)
    loss = DISCRIMINATOR_LOSSES.get(name, "bce")
    pairs = matched_answers(ctx.store(run), ctx.store(CLEAN_RUN))
    with torch.no_grad():
        clean = [float(discriminator_loss(disc, c[None], p.target, loss)) for _, c in pairs]
        pert = [float(discriminator_loss(disc, d[None], p.target, loss)) for d, _ in pairs]
    return {"epsilon": p.epsilon, "steps": p.steps, "answers": len(pairs),
            "discriminator_loss_clean": sum(clean) / max(1, len(clean)),
            "discriminator_loss_perturbed": sum(pert) / max(1, len(pert)),
            "max_abs_change": max((float((d - c).abs().max()) for d, c in pairs), default=0.0)}


# -- figures -----------------------------------------------------------------------------------
def panel(rows: list[list[torch.Tensor]], height: int = 160, gap: int = 4) -> torch.Tensor:
    """Images laid out in rows (each resized to `height` px, aspect kept), white gaps; 3 x H x W."""
    lines = []
    for row in rows:
        cells = []
        for image in row:
            w = max(1, round(image.shape[-1] * height / image.shape[-2]))
            cells.append(F.interpolate(image[None].float(), size=(height, w), mode="bilinear", antialias=True,
                                       align_corners=False)[0].clamp(0, 1))
            cells.append(torch.ones(3, height, gap))
        lines.append(torch.cat(cells[:-1], dim=-1))
    width = max(line.shape[-1] for line in lines)
    padded = []
    for line in lines:
        padded.append(F.pad(line, (0, width - line.shape[-1]), value=1.0))
        padded.append(torch.ones(3, gap, width))
    return torch.cat(padded[:-1], dim=-2)


def _preview(ctx: Context, run: str, answer: torch.Tensor, cache: dict) -> torch.Tensor:
    """The answer as the run's defences would change it, computed here (no trigger is recorded)."""
    from imgsteal.data.images import quantize
    from imgsteal.defenses.watermark import alter

    out = answer
    for name in ctx.defenses(run):
        if name == "watermark":
            out = alter(out, ctx.cfg.setup(run).options("watermark"))
        elif name == "fingerprint":
            if "fingerprint" not in cache:
                from imgsteal.defenses.fingerprint import FingerprintModel

                cache["fingerprint"] = FingerprintModel.load(ctx.fingerprint_dir, "cpu")
            out = cache["fingerprint"].stamp(out)
        elif name == "boxfree":
            if "boxfree" not in cache:
                from imgsteal.defenses.boxfree import BoxfreeModel

                cache["boxfree"] = BoxfreeModel.load(ctx.boxfree_dir(run), "cpu")
            out = cache["boxfree"].embed(out)
        elif name == "pgd":
            if f"pgd:{run}" not in cache:
                from imgsteal.defenses.perturbation import PGDDefense

                options = ctx.pgd_options(run).model_copy(update={"discriminator": ctx.discriminator_path(run)})
                cache[f"pgd:{run}"] = PGDDefense(options)
            out = cache[f"pgd:{run}"].perturb(out, seed=0)
    return quantize(out)


# -- the whole evaluation ----------------------------------------------------------------------
def run_defense_evaluation(cfg: DefenseEvalConfig, out: str | Path, progress: bool = True, log: Log = _print) -> dict:
    """Run the evaluation described in the module docstring; writes OUT/results.json and OUT/report.html."""
    from imgsteal.experiments.config import check_datasets
    from imgsteal.experiments.runner import run_experiment
    from imgsteal.victim.inference import load_translator

    out = Path(out)
    started = time.perf_counter()
    exp = cfg.experiment()
    task = exp.tasks[0]
    resolved = check_datasets(exp)[task.name]  # every path, before anything is created
    for run in cfg.runs:  # a given discriminator must load now, not after the harvests
        if "pgd" in cfg.setup(run).defenses and cfg.setup(run).options("pgd").discriminator:
            from imgsteal.defenses.perturbation import load_discriminator

            load_discriminator(cfg.setup(run).options("pgd").discriminator, cfg.setup(run).options("pgd").module)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
    prepare_boxfree_and_scorecard(cfg, out, progress, log)  # the scorecard's cells first; the evaluation's own last
    exp = cfg.experiment()
    run = run_experiment(exp, out / "experiment", progress=progress, log=log)
    assets = run.assets.get(task.name)
    victim_model = Path(assets.victim_model) if assets else _victim_model(exp, out / "experiment")
    ctx = Context(cfg=cfg, out=out, resolved=resolved, victim_model=victim_model, progress=progress, log=log)
    fingerprint = cfg.setup(next((r for r in cfg.runs if "fingerprint" in cfg.setup(r).defenses), CLEAN_RUN))
    if "fingerprint" in fingerprint.defenses:
        given = fingerprint.options("fingerprint").model
        ctx.fingerprint_dir = Path(given) if given else ctx.task_folder / "fingerprint"
    timings: dict[str, float] = {"experiment_s": time.perf_counter() - started}

    results: dict[str, Any] = {"name": cfg.name, "task": {"name": task.name, "kind": task.kind}, "client": cfg.client,
                               "oracle": task.harvest.oracle, "runs": {}}
    surrogate_dirs: dict[str, Path] = {}
    from imgsteal.data.pairs import PairStore

    for name in [CLEAN_RUN, *cfg.runs]:
        surrogate_dirs[name] = ctx.surrogate_dir(name)
        with PairStore(ctx.store(name), create=False) as store:
            harvest = {"pairs": len(store), "cost_usd": store.total_cost()}
        results["runs"][name] = {"defenses": ctx.defenses(name), "harvest": harvest,
                                 "quality": ctx.cell_result(name)["records"],
                                 "labels": logged_labels(ctx.service_dir(name))}

    t = time.perf_counter()
    log("measuring the defences (watermark verdicts, fingerprint bits, PGD, transfer)")
    victim = load_translator(victim_model, task.device)
    models = {run: load_translator(d, task.device) for run, d in surrogate_dirs.items()}
    detect = [q for _, q in ctx.test_queries(cfg.detect_images)]
    if ctx.fingerprint_dir is not None:
        fp_metrics = ctx.fingerprint_dir / "metrics.json"
        results["fingerprint_training"] = json.loads(fp_metrics.read_text()) if fp_metrics.exists() else None
    for run in cfg.runs:
        entry = results["runs"][run]
        entry["answer_cost"] = answer_cost(ctx, run)
        names = ctx.defenses(run)
        if "watermark" in names:
            entry["watermark"] = watermark_results(ctx, run, surrogate_dirs[run], surrogate_dirs[CLEAN_RUN])
        if "fingerprint" in names:
            entry["fingerprint"] = fingerprint_results(ctx, run, models[run], models[CLEAN_RUN], victim, detect)
        if "pgd" in names:
            entry["pgd"] = pgd_results(ctx, run)
    transfer = None
    if cfg.transfer.enabled:
        from imgsteal.defenses.perturbation import transfer_experiment

        tr = cfg.transfer
        transfer = transfer_experiment(victim, models[CLEAN_RUN], detect[: tr.images], epsilon=tr.epsilon, steps=tr.steps,
                                       step_size=tr.step_size, keep_examples=min(2, tr.images), seed=cfg.seed)
        results["transfer"] = transfer.as_dict()
    timings["measurements_s"] = time.perf_counter() - t

    t = time.perf_counter()
    figures = write_figures(ctx, victim, models, transfer)
    timings["figures_s"] = time.perf_counter() - t
    if cfg.scorecard is not None:
        from imgsteal.defenses.scorecard import build_scorecard, plot_scorecard

        t = time.perf_counter()
        costs = {run: results["runs"][run]["answer_cost"] for run in cfg.runs}
        results["scorecard"] = build_scorecard(ctx, cfg.scorecard, costs, log=log)
        figures["scorecard"] = str(plot_scorecard(results["scorecard"], out / "figures" / "scorecard.png").relative_to(out))
        timings["scorecard_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - started
    results["timings"] = timings
    results["figures"] = figures
    (out / "results.json").write_text(json.dumps(results, indent=2, default=_json_default))
    report = write_report(ctx, results)
    report.write(out / "report.html")
    (out / "report.md").write_text(report.markdown(), encoding="utf-8")  # the same report, in Markdown
    log(f"report: {out / 'report.html'} (and report.md)  results: {out / 'results.json'}")
    return results


def prepare_boxfree_and_scorecard(cfg: DefenseEvalConfig, out: Path, progress: bool, log: Log) -> None:
    """Before the evaluation's own experiment: train the box-free watermark on the victim when the config
    says how (the victim comes from a first, undefended experiment), then run the scorecard's cells."""
    from imgsteal.experiments.runner import run_experiment

    needs_boxfree = cfg.uses("boxfree") and cfg.boxfree.model is None
    if not needs_boxfree and cfg.scorecard is None:
        return
    plan = []
    if cfg.scorecard is not None:
        from imgsteal.defenses.scorecard import experiments

        plan = experiments(cfg, cfg.scorecard)
    first = plan[0][1] if plan else cfg.experiment(defenses=[CLEAN_RUN])
    log("scorecard: independent models" if plan else "an undefended run first (the box-free watermark needs the victim)")
    run = run_experiment(first, out / "experiment", progress=progress, log=log)
    if needs_boxfree:
        assets = run.assets.get(cfg.task.name)
        victim = Path(assets.victim_model) if assets else _victim_model(first, out / "experiment")
        cfg._boxfree_dir = train_boxfree_once(cfg, out / "boxfree", victim, progress, log)
    for label, exp in plan[1:]:
        exp = exp.model_copy(update={"defense_setups": {r: cfg.setup(r) for r in exp.defense_setups}})
        log(f"scorecard: {label}")
        run_experiment(exp, out / "experiment", progress=progress, log=log)


def train_boxfree_once(cfg: DefenseEvalConfig, folder: Path, victim: Path, progress: bool, log: Log) -> Path:
    """Train the box-free watermark (cfg.boxfree.train) on the victim's answers into `folder`, unless done."""
    from imgsteal.defenses.boxfree import BoxfreeTrainConfig, train_boxfree

    done = folder / "metrics.json"
    if done.exists():
        return folder
    settings = {k: (self_expand(cfg, v)) for k, v in cfg.boxfree.train.items()}
    settings.setdefault("device", cfg.task.device)
    train_cfg = BoxfreeTrainConfig.model_validate({**settings, "victim": str(victim)})
    log(f"training the box-free watermark on the victim's answers into {folder}")
    result = train_boxfree(train_cfg, folder, progress=progress)
    log(result.summary())
    return folder


def self_expand(cfg: DefenseEvalConfig, value: Any) -> Any:
    if isinstance(value, str):
        return cfg.expand(value)
    if isinstance(value, list):
        return [cfg.expand(v) if isinstance(v, str) else v for v in value]
    return value


def _victim_model(exp, experiment: Path) -> Path:
    task = exp.tasks[0]
    if task.victim.model:
        return Path(exp.expand(task.victim.model))
    return experiment / "tasks" / task.name / "victim" / "model.safetensors"


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def write_figures(ctx: Context, victim, models: dict, transfer) -> dict:
    """Image panels under OUT/figures; returns their paths relative to OUT, by figure."""
    from imgsteal.data.images import quantize, save_image
    from imgsteal.defenses.watermark import blur, embed_text, monochrome

    fig_dir = ctx.out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {}
    queries = ctx.test_queries(max(1, ctx.cfg.gallery_images))
    answers = [quantize(victim.translate(q)) for _, q in queries]

    def save(image: torch.Tensor, name: str) -> str:
        save_image(image, fig_dir / name)
        return f"figures/{name}"

    from imgsteal.defenses.watermark import WatermarkOptions

    wm = WatermarkOptions.model_validate(ctx.cfg.watermark)
    a = answers[0]
    figures["figure8"] = save(panel([[a, blur(a, wm.blur_sigma), monochrome(a), embed_text(a, wm.text)]]), "figure8_alterations.png")
    cache: dict = {}
    previews = {}
    for run in ctx.cfg.runs:
        rows = []
        for i, ((_, query), answer) in enumerate(zip(queries, answers)):
            defended = _preview(ctx, run, answer, cache)
            row = [query, answer, defended, models[run].translate(query), models[CLEAN_RUN].translate(query)]
            rows.append([save(img, f"{run}_{i:02d}_{label}.png") for img, label in
                         zip(row, ("query", "victim", "defended", "surrogate", "clean_surrogate"))])
        previews[run] = rows
    figures["previews"] = previews
    if "fingerprint" in cache:
        stamped = quantize(cache["fingerprint"].stamp(a))
        residual = ((stamped - a).abs() * 10).clamp(0, 1)
        figures["fingerprint"] = save(panel([[a, stamped, residual]]), "fingerprint_residual.png")
    if transfer is not None and transfer.examples:
        rows = []
        for ex in transfer.examples:
            rows.append([ex.clean_input, ex.victim_clean, ex.surrogate_clean])
            rows.append([ex.adv_input, ex.victim_adv, ex.surrogate_adv])
        figures["figure9"] = save(panel(rows), "figure9_transfer.png")
    return figures


# -- the report --------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isinf(value):
            return "∞"
        return f"{value:.{digits}f}"
    return str(value)


def _p(value: float) -> str:
    return f"{value:.3g}"


def _headline_quality(entry: dict) -> tuple[str, float] | None:
    """(metric, B) of the first test set: psnr for super-resolution, else the first metric reported."""
    if not entry["quality"]:
        return None
    metrics = entry["quality"][0]["metrics"]
    metric = "psnr" if "psnr" in metrics else sorted(metrics)[0]
    value = metrics[metric].get("B")
    return None if value is None else (metric, value)


def summary_rows(cfg: DefenseEvalConfig, results: dict) -> list[list[str]]:
    """One line per defended run: what the owner can say after the attack."""
    runs = results["runs"]
    clean = _headline_quality(runs[CLEAN_RUN])
    rows = []
    for run in cfg.runs:
        entry = runs[run]
        parts = []
        wm = entry.get("watermark")
        if wm is not None:
            if not wm.get("triggers"):
                parts.append("watermark: no trigger was recorded")
            else:
                s, n = wm["surrogate"], wm["negative_control"]
                parts.append(f"watermark {'REPRODUCED' if s['stolen'] else 'not reproduced'} by F_A "
                             f"({s['matched']}/{s['triggers']}, p = {_p(s['p_value'])}; independent model: "
                             f"{n['matched']}/{n['triggers']}, p = {_p(n['p_value'])})")
        fp = entry.get("fingerprint")
        if fp is not None:
            s = fp["surrogate"]
            found = s["verdict"]["found"] if "verdict" in s else s["p_value"] < cfg.alpha and s["accuracy"] > 0.5
            parts.append(f"fingerprint {'FOUND' if found else 'not found'} in F_A's outputs ({s['accuracy']:.1%} of bits, "
                         f"p = {_p(s['p_value'])}; in the API's answers: {fp['api_answers']['accuracy']:.1%})")
        quality = _headline_quality(entry)
        if quality is not None and clean is not None:
            parts.append(f"F_A vs F_V {quality[0]} {_fmt(quality[1], 3)} (without defences: {_fmt(clean[1], 3)})")
        rows.append([run, ", ".join(entry["defenses"]), "; ".join(parts)])
    return rows


def write_scorecard_section(report, card: dict, figure: str | None) -> None:
    """The adaptive-attack scorecard: one table (a row per defence x attack) and one figure."""
    from imgsteal.defenses.scorecard import scorecard_rows

    report.heading("Adaptive-attack scorecard")
    lines = []
    for run, cal in card["calibration"].items():
        lines.append(f"{run}: {cal['statistic']} > {cal['threshold']:.3f}, {cal['false_positives']}/{cal['independent_models']} "
                     f"independent models above it (95% upper bound on the false-positive rate "
                     f"{cal['fpr_upper_95']:.0%})")
    report.text(f"Each defence was attacked by every attack below ({len(card['seeds'])} surrogate seed(s) each). A surrogate "
                "is verified when the defence's statistic on it is above a threshold fixed on independent models only "
                f"({len(card['independent_models'])} surrogates trained on clean answers: every attack of the undefended "
                f"run and extra seeds/architectures), chosen so that at most {card['fpr']:.0%} of them are above it. "
                "Thresholds: " + "; ".join(lines) + ". PGD verifies nothing (n/a). Fidelity: (B) on the first test set. "
                "Answers PSNR/SSIM: the defended answers against the undefended ones (what honest clients pay).")
    header, rows = scorecard_rows(card)
    report.table(header, rows, caption="Adaptive-attack scorecard: a row per defence x attack.")
    if figure:
        report.figure(figure, "Verification rate (colour) and F_A vs F_V PSNR per defence x attack.")


def write_report(ctx: Context, results: dict):
    """The HTML report (no secrets: counts, accuracies, p-values and previews on test images)."""
    from imgsteal.report.html import Report

    cfg = ctx.cfg
    runs = results["runs"]
    report = Report(f"imgsteal: do output defences survive extraction? ({cfg.name})")
    report.text(f"Task {cfg.task.display_title} ({cfg.task.kind}). The adversary '{cfg.client}' queries the victim through "
                f"the {results['oracle']} oracle; per run, the same queries are answered with the listed defences on, a "
                "surrogate F_A is trained on the answers and scored. The paper (section 7) reports that these defences "
                "fail for image translation; what this run measured is below.")
    for note in cfg.notes:
        report.text(f"Note: {note}")
    report.heading("Does each defence survive the attack?")
    report.table(["run", "defences", "outcome"], summary_rows(cfg, results))

    if "scorecard" in results:
        write_scorecard_section(report, results["scorecard"], results["figures"].get("scorecard"))

    report.heading("Surrogate quality with and without each defence")
    metrics = sorted({m for r in runs.values() for rec in r["quality"] for m in rec["metrics"]})
    header = ["run", "defences", "test set"] + [f"{m} {k}" for m in metrics for k in ("B", "C")]
    rows = []
    for run, entry in runs.items():
        for rec in entry["quality"]:
            cells = [_fmt(rec["metrics"].get(m, {}).get(k), 3 if m == "ssim" else 2) for m in metrics for k in ("B", "C")]
            rows.append([run, ", ".join(entry["defenses"]) or "none", rec["test_set"], *cells])
    report.table(header, rows, caption="B: F_A vs F_V; C: F_A vs the ground truth (sr: HR) or style set. "
                                       "A (F_V vs ground truth) is the same for every run: " +
                 "; ".join(f"{rec['test_set']} {m} {_fmt(v.get('A'), 3 if m == 'ssim' else 2)}"
                           for rec in runs[CLEAN_RUN]["quality"] for m, v in sorted(rec["metrics"].items())))
    rows = []
    for run, entry in runs.items():
        if run == CLEAN_RUN:
            continue
        cost = entry.get("answer_cost", {})
        labels = ", ".join(f"{k}: {v}" for k, v in sorted(entry["labels"].items())) or "–"
        rows.append([run, str(entry["harvest"]["pairs"]), str(cost.get("changed", "–")), _fmt(cost.get("psnr_db")),
                     _fmt(cost.get("max_abs_change"), 3), labels])
    report.table(["run", "answers", "answers changed", "PSNR vs clean answers (dB)", "max |change|", "query-log labels"],
                 rows, caption="What each defence costs honest clients, and the labels the query log recorded per answer.")

    wm_rows = []
    for run, entry in runs.items():
        wm = entry.get("watermark")
        if wm is None:
            continue
        setting = cfg.setup(run).options("watermark")
        shown = f"{setting.alteration.value}, {setting.fraction:g}"
        if not wm.get("triggers"):
            wm_rows.append([run, shown, "–", "0", "–", "–", "–", wm.get("note", "")])
            continue
        for label in ("surrogate", "negative_control"):
            v = wm[label]
            who = "surrogate F_A (watermarked answers)" if label == "surrogate" else "independent model (clean-run F_A)"
            wm_rows.append([run, shown, who, str(v["triggers"]), str(v["matched"]), f"{v['fraction']:.0%}",
                            _p(v["p_value"]), "watermark reproduced" if v["stolen"] else "not reproduced"])
    if wm_rows:
        report.heading("Watermark (DAWN-style triggers)")
        report.text("Each client's queries are made triggers at the configured fraction (paper: 0.005) by a keyed HMAC. "
                    "A trigger matches when the suspect's answer to its input is closer (MSE) to the altered answer than "
                    "to the clean one and within half the mark's own size (MSE of altered vs clean) of the altered answer "
                    f"(a blurry or weak model is not); one-sided binomial test against 1/2, alpha {cfg.alpha:g}.")
        report.table(["run", "alteration, fraction", "suspect", "triggers", "matched", "share", "p-value",
                      "verdict"], wm_rows)
        if "figure8" in results["figures"]:
            report.figure(results["figures"]["figure8"], "Figure 8: a victim answer (test image), Gaussian blur, monochrome, embedded text.")

    fp_rows = []
    for run, entry in runs.items():
        fp = entry.get("fingerprint")
        if fp is None:
            continue
        for key, label in (("api_answers", "answers of the defended API (positive control)"),
                           ("surrogate", "surrogate F_A trained on them"),
                           ("clean_surrogate", "clean-run F_A (negative control)"),
                           ("victim_unstamped", "victim without stamping (negative control)")):
            d = fp[key]
            fp_rows.append([run, label, str(d["images"]), f"{d['accuracy']:.1%}", _p(d["p_value"])])
    if fp_rows:
        report.heading("Fingerprint (steganographic, Yu et al. 2021)")
        training = results.get("fingerprint_training")
        if training:
            report.text(f"Encoder/decoder: {training['bits']} bits; on {training['images']} evaluation images the decoder reads "
                        f"{training['fingerprinted']['accuracy']:.1%} of the bits from fingerprinted images and "
                        f"{training['clean']['accuracy']:.1%} from clean ones; stamped vs clean PSNR {training['psnr_db']:.1f} dB.")
        report.table(["run", "images from", "images", "bit accuracy", "p-value (vs 50%)"], fp_rows,
                     caption="p-values treat bits as independent; read them as an indication.")
        if "fingerprint" in results["figures"]:
            report.figure(results["figures"]["fingerprint"], "A victim answer, stamped, and the difference x10.")

    pgd_rows = []
    for run, entry in runs.items():
        p = entry.get("pgd")
        if p is not None:
            pgd_rows.append([run, _fmt(p["epsilon"], 3), str(p["steps"]), _fmt(p["max_abs_change"], 3),
                             _fmt(p["discriminator_loss_clean"], 3), _fmt(p["discriminator_loss_perturbed"], 3)])
    if pgd_rows:
        report.heading("Adversarial perturbation (PGD against the victim's discriminator)")
        report.table(["run", "epsilon", "steps", "measured max |change|", "D loss, clean answers", "D loss, perturbed answers"],
                     pgd_rows, caption="PGD raises the victim discriminator's loss; whether that spoils the surrogate shows in the quality table.")
    if "transfer" in results:
        tr = results["transfer"]
        report.heading("Transfer of adversarial inputs (Figure 9)")
        report.text(f"PGD inputs (epsilon {tr['epsilon']:.3f}, {tr['steps']} steps) crafted against F_V's generator to push "
                    f"its answer away: F_V's answer PSNR vs its clean answer {tr['victim_psnr_db']:.2f} dB; the clean-run "
                    f"F_A's {tr['surrogate_psnr_db']:.2f} dB (transfer ratio of the squared errors {tr['transfer_ratio']:.2f}; "
                    "1 would be full transfer).")
        if "figure9" in results["figures"]:
            report.figure(results["figures"]["figure9"], "Rows: clean input, adversarial input. Columns: input, F_V, F_A.")

    for run, rows in results["figures"].get("previews", {}).items():
        report.gallery(["query", "victim answer", "answer with the defence", f"F_A ({run})", "F_A (clean run)"], rows,
                       title=f"run {run}: {', '.join(runs[run]['defenses'])}")
    report.table(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in results["timings"].items()], caption="Timings")
    return report
