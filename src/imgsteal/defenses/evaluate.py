"""`imgsteal defense evaluate CONFIG.yaml`: does each output defence survive the extraction attack?

For one task (the same `task:` block as an experiment config), this trains or loads the victim, then
for a clean run and for each defended run harvests the adversary's queries through the victim's API
with those defences on, trains a surrogate on the answers and scores it (A/B/C), and measures what
each defence was meant to achieve:

    watermark    verdict on the surrogate, and on the clean run's surrogate (negative control)
    fingerprint  bit accuracy on the answers the API gave (positive control), on the surrogate's
                 outputs, and on the clean surrogate's and the unstamped victim's (negative controls)
    pgd          the victim discriminator's loss on clean vs perturbed answers, the perturbation's size
    transfer     Figure 9: adversarial inputs crafted on F_V, given to F_V and to the clean F_A
    every run    the surrogate's quality with and without it, and what it costs honest clients
                 (PSNR of the defended answers against the clean ones)

    OUT/victim/                      the victim's run (when the config trains it)
    OUT/fingerprint/                 the fingerprint encoder/decoder and the secret fingerprint (0600)
    OUT/runs/<run>/pairs/            the adversary's pair store for that run
    OUT/runs/<run>/owner/            the watermark database (HMAC secret, trigger sets; 0600)
    OUT/runs/<run>/api-session-N.sqlite, server/   the API's keys (hashed) and query log, server log
    OUT/cells/<run>/f100-none-s<seed>/  the run's surrogate (and its evaluation)
    OUT/figures/                     image panels (Figures 8 and 9, previews)
    OUT/results.json, OUT/report.html

Secrets (HMAC secret, trigger sets, fingerprint bits, API keys) stay in their owner-only files: the
report and results hold counts, accuracies and p-values only; the previews show the defences applied
to test images, never a trigger. Every stage resumes after an interruption.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from imgsteal.defenses.watermark import Alteration
from imgsteal.config import load_yaml_config
from imgsteal.errors import ImgstealError
from imgsteal.experiments.config import TaskConfig

CLEAN_RUN = "none"
Log = Callable[[str], None]


def _print(message: str) -> None:
    print(f"[defense] {message}", flush=True)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WatermarkSection(_Strict):
    """Watermark settings of the defended runs (the trigger database is made per run)."""

    fraction: float = Field(0.005, gt=0, le=1, description="share of the client's queries made triggers (paper: 0.5%)")
    alteration: Alteration = Alteration.blur
    blur_sigma: float = Field(3.0, gt=0)
    text: str = "imgsteal"


class FingerprintSection(_Strict):
    """Either `model` (a trained fingerprint run folder) or `train` (FingerprintTrainConfig settings)."""

    model: str | None = None
    train: dict[str, Any] = Field(default_factory=dict)


class PGDSection(_Strict):
    discriminator: str | None = Field(None, description="victim training checkpoint or run folder (default: the victim's run)")
    module: str | None = None
    epsilon: float = Field(0.25, ge=0, le=1)
    steps: int = Field(10, ge=0)
    step_size: float | None = Field(None, gt=0)
    target: str = "fake"


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
    """A defence evaluation: one task, the defences' settings, and the defended runs to compare."""

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
    watermark: WatermarkSection = Field(default_factory=WatermarkSection)
    fingerprint: FingerprintSection = Field(default_factory=FingerprintSection)
    pgd: PGDSection = Field(default_factory=PGDSection)
    transfer: TransferSection = Field(default_factory=TransferSection)
    alpha: float = Field(0.01, gt=0, lt=1, description="significance level of the watermark verdict")
    detect_images: int = Field(16, ge=1, description="test images whose outputs are checked for the fingerprint")
    gallery_images: int = Field(2, ge=0, description="test images shown in the preview panels")
    notes: list[str] = Field(default_factory=list, description="shown at the top of the report")

    @field_validator("runs", mode="before")
    @classmethod
    def _runs(cls, value: Any) -> Any:
        from imgsteal.defenses.registry import DEFENSES

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
        for run in self.runs:  # the per-run settings must be valid too
            try:
                self.run_watermark(run), self.run_pgd(run)
            except ValidationError as exc:
                raise ValueError(f"run {run!r}: {exc}") from None
        return self

    def uses(self, defense: str) -> bool:
        return any(defense in spec.defenses for spec in self.runs.values())

    def run_watermark(self, run: str) -> WatermarkSection:
        """The watermark settings of `run` (the top-level section with the run's overrides)."""
        extra = self.runs[run].watermark if run in self.runs else {}
        return WatermarkSection.model_validate({**self.watermark.model_dump(), **extra})

    def run_pgd(self, run: str) -> PGDSection:
        extra = self.runs[run].pgd if run in self.runs else {}
        return PGDSection.model_validate({**self.pgd.model_dump(), **extra})

    def expand(self, text: str) -> str:
        return text.replace("{data_root}", self.data_root)

    def experiment(self):
        """The task as a one-cell experiment config, to reuse the experiment stages (victim, datasets)."""
        from imgsteal.experiments.config import ExperimentConfig, GridConfig

        return ExperimentConfig(name=self.name, data_root=self.data_root, price_usd=self.price_usd,
                                grid=GridConfig(fractions=[1.0], augmentations=["none"], seeds=[self.seed]),
                                tasks=[self.task])


def load_defense_config(path: str | Path, data_root: str | None = None) -> DefenseEvalConfig:
    """Read and validate a defence-evaluation YAML; ImgstealError naming the field for anything malformed."""
    return load_yaml_config(path, DefenseEvalConfig, "defence evaluation config", overrides={"data_root": data_root})


# -- stages ------------------------------------------------------------------------------------
@dataclass
class Context:
    """Paths and loaded things shared by the stages."""

    cfg: DefenseEvalConfig
    out: Path
    resolved: dict[str, list[Path]]
    victim_model: Path
    fingerprint_dir: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    progress: bool = True
    log: Log = _print

    def run_dir(self, run: str) -> Path:
        return self.out / "runs" / run

    def watermark_db(self, run: str) -> Path:
        return self.run_dir(run) / "owner" / "watermark.sqlite"

    def defenses(self, run: str) -> list[str]:
        return [] if run == CLEAN_RUN else self.cfg.runs[run].defenses

    def discriminator_path(self, run: str | None = None) -> Path:
        pgd = self.cfg.run_pgd(run) if run else self.cfg.pgd
        if pgd.discriminator:
            return Path(self.cfg.expand(pgd.discriminator))
        return self.victim_model.parent  # the victim's run folder: checkpoints/last.safetensors

    def test_queries(self, count: int) -> list[tuple[Path, torch.Tensor]]:
        """(path, the query the evaluation sends) for the first `count` images of the first test set."""
        from imgsteal.experiments.cell import gallery_input
        from imgsteal.experiments.stages import work_size

        first = next(iter(self.cfg.task.test_sets))
        paths = self.resolved[f"test:{first}"][:count]
        return [(p, gallery_input(self.cfg.task.kind, p, self.scale, work_size(self.cfg.task))[0]) for p in paths]

    @property
    def scale(self) -> int:
        return self.cfg.task.harvest.downscale or 1


def server_flags(ctx: Context, run: str) -> dict[str, Any]:
    """The `imgsteal serve` defence flags of a run (names of imgsteal.defenses.registry.SERVE_FLAGS)."""
    cfg, names = ctx.cfg, ctx.defenses(run)
    flags: dict[str, Any] = {}
    if "watermark" in names:
        wm = cfg.run_watermark(run)
        flags.update(watermark_db=str(ctx.watermark_db(run)), watermark_fraction=wm.fraction,
                     watermark_alteration=wm.alteration.value, watermark_blur_sigma=wm.blur_sigma, watermark_text=wm.text)
    if "fingerprint" in names:
        flags["fingerprint_model"] = str(ctx.fingerprint_dir)
    if "pgd" in names:
        p = cfg.run_pgd(run)
        flags.update(pgd_discriminator=str(ctx.discriminator_path(run)), pgd_module=p.module, pgd_epsilon=p.epsilon,
                     pgd_steps=p.steps, pgd_step_size=p.step_size, pgd_target=p.target)
    return flags


@contextlib.contextmanager
def defended_oracle(ctx: Context, run: str) -> Iterator[Any]:
    """The victim as the adversary sees it in `run`: over HTTP (a server with `--defense ...`, a fresh
    API key named after the client) or in process (LocalOracle with the same Defense objects)."""
    task, names, flags = ctx.cfg.task, ctx.defenses(run), server_flags(ctx, run)
    run_dir = ctx.run_dir(run)
    run_dir.mkdir(parents=True, exist_ok=True)
    ctx.watermark_db(run).parent.mkdir(mode=0o700, exist_ok=True)  # the owner's secrets: owner-only folder
    if task.harvest.oracle == "http":
        from imgsteal.victim.launch import served_oracle

        # A new key database per session: key names cannot be reused, and the watermark's client
        # is the key's name, so a resumed harvest must come back under the same name.
        session = len(list(run_dir.glob("api-session-*.sqlite"))) + 1
        with served_oracle(ctx.victim_model, concurrency=task.harvest.concurrency, key_name=ctx.cfg.client,
                           device=task.device, db_path=run_dir / f"api-session-{session}.sqlite",
                           workdir=run_dir / "server", rate=0, defense=names, **flags) as oracle:
            yield oracle
        return
    from imgsteal.defenses.registry import build_defenses
    from imgsteal.victim.inference import load_translator
    from imgsteal.victim.oracle import LocalOracle

    defenses = build_defenses(names, flags, {"pgd_device": task.device, "fingerprint_device": task.device})
    oracle = LocalOracle(load_translator(ctx.victim_model, task.device), defenses=defenses, key_name=ctx.cfg.client)
    try:
        yield oracle
    finally:
        _add_local_labels(run_dir, oracle.defense_labels)
        for defense in defenses:
            if hasattr(defense, "close"):
                defense.close()


def _add_local_labels(run_dir: Path, labels: Counter) -> None:
    path = run_dir / "local-labels.json"
    total = Counter(json.loads(path.read_text())) if path.exists() else Counter()
    total.update(labels)
    path.write_text(json.dumps(dict(total)))


def logged_labels(run_dir: Path) -> dict[str, int]:
    """How many answers each defence label marked, from the API's query logs (or the local oracle's counts)."""
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


def ensure_fingerprint(ctx: Context) -> Path | None:
    """The fingerprint run folder: the configured one, or one trained (or resumed) into OUT/fingerprint."""
    from imgsteal.defenses.fingerprint import MODEL_FILE, FingerprintTrainConfig, train_fingerprint

    cfg = ctx.cfg
    if not cfg.uses("fingerprint"):
        return None
    if cfg.fingerprint.model is not None:
        return Path(cfg.expand(cfg.fingerprint.model))
    folder = ctx.out / "fingerprint"
    if (folder / MODEL_FILE).exists():
        return folder
    settings = dict(cfg.fingerprint.train)
    settings["images"] = [cfg.expand(s) for s in settings["images"]]
    if settings.get("eval_images"):
        settings["eval_images"] = [cfg.expand(s) for s in settings["eval_images"]]
    settings.setdefault("device", cfg.task.device)
    try:
        train_cfg = FingerprintTrainConfig(**settings)
    except ValidationError as exc:
        raise ImgstealError(f"fingerprint.train: {exc}") from None
    ctx.log(f"training the fingerprint encoder/decoder ({train_cfg.bits} bits at {train_cfg.size} px, {train_cfg.steps} steps)")
    train_fingerprint(train_cfg, folder, resume=(folder / "checkpoints" / "last.safetensors").exists(), progress=ctx.progress)
    return folder


def harvest_run(ctx: Context, run: str) -> dict:
    """Harvest the adversary's queries for `run` through its defended oracle (resumable)."""
    from imgsteal.attack.harvest import harvest
    from imgsteal.data.pairs import PairStore
    from imgsteal.experiments.stages import harvest_options

    inputs = ctx.resolved["harvest"]
    store_dir = ctx.run_dir(run) / "pairs"
    with PairStore(store_dir) as store:
        missing = len(store) < len(inputs)
    if missing:
        shown = ", ".join(ctx.defenses(run)) or "no defence"
        ctx.log(f"run {run}: harvesting {len(inputs)} queries through the {ctx.cfg.task.harvest.oracle} oracle ({shown})")
        with defended_oracle(ctx, run) as oracle, PairStore(store_dir) as store:
            report = harvest(oracle, inputs, store, progress=ctx.progress, **harvest_options(ctx.cfg.task, ctx.cfg.price_usd))
        if report.failed:
            raise ImgstealError(f"run {run}: {report.failed} queries failed; run the evaluation again to retry them")
    with PairStore(store_dir, create=False) as store:
        return {"pairs": len(store), "cost_usd": store.total_cost()}


def train_and_score(ctx: Context, run: str) -> tuple[Path, list[dict]]:
    """Train (or resume) the run's surrogate and score it (A/B/C) with the experiment cell code."""
    from imgsteal.experiments.cell import CellJob, run_cell
    from imgsteal.experiments.grid import GridCell
    from imgsteal.experiments.stages import work_size

    task = ctx.cfg.task
    job = CellJob(cell=GridCell(run, 1.0, "none", ctx.cfg.seed), kind=task.kind, out=str(ctx.out),
                  store=str(ctx.run_dir(run) / "pairs"), victim_model=str(ctx.victim_model),
                  surrogate=task.surrogate_settings(),
                  test_sets={name: [str(p) for p in ctx.resolved[f"test:{name}"]] for name in task.test_sets},
                  victim_cache=str(ctx.out / "victim_cache"),
                  style_set=ctx.cfg.expand(task.style_set) if task.style_set else None, work_size=work_size(task),
                  evaluation=task.evaluation.model_dump(), device=task.device, progress=ctx.progress)
    result_path = job.folder / "result.json"
    if result_path.exists() and (job.folder / "surrogate" / "model.safetensors").exists():
        return job.folder / "surrogate", json.loads(result_path.read_text())["records"]
    ctx.log(f"run {run}: training and scoring the surrogate")
    result = run_cell(job)
    result_path.write_text(json.dumps(result, indent=2))
    return job.folder / "surrogate", result["records"]


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
    pairs = matched_answers(ctx.run_dir(run) / "pairs", ctx.run_dir(CLEAN_RUN) / "pairs")
    if not pairs:
        return {"answers": 0}
    mses = [float(F.mse_loss(d, c)) for d, c in pairs]
    changed = sum(1 for m in mses if m > 0)
    linf = max(float((d - c).abs().max()) for d, c in pairs)
    return {"answers": len(pairs), "changed": changed, "psnr_db": _psnr_of_mse(sum(mses) / len(mses)),
            "max_abs_change": linf}


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
        return {"triggers": 0, "note": f"no query was selected at fraction {ctx.cfg.run_watermark(run).fraction:g}"}
    wm = ctx.cfg.run_watermark(run)
    out = {"triggers": count, "fraction": wm.fraction, "alteration": wm.alteration.value}
    for label, folder in (("surrogate", surrogate_dir), ("negative_control", clean_dir)):
        verdict = verify_watermark(db, ctx.cfg.client, checkpoint_suspect(folder, ctx.cfg.task.device),
                                   suspect_name=label, alpha=ctx.cfg.alpha)
        out[label] = verdict.as_dict()
    return out


def fingerprint_results(ctx: Context, run: str, surrogate, clean_surrogate, victim, queries: list[torch.Tensor]) -> dict:
    """Bit accuracy of the owner's fingerprint in the API's answers and in each model's outputs."""
    from imgsteal.data.pairs import PairStore
    from imgsteal.defenses.fingerprint import FingerprintModel, detect_fingerprint

    fp = FingerprintModel.load(ctx.fingerprint_dir, "cpu")
    with PairStore(ctx.run_dir(run) / "pairs", create=False) as store:
        answers = [store.load_pair(r)[1] for r in store.records()]
    outputs = {
        "api_answers": answers,  # positive control: what the defended API returned
        "surrogate": [surrogate.translate(q) for q in queries],
        "clean_surrogate": [clean_surrogate.translate(q) for q in queries],  # negative control
        "victim_unstamped": [victim.translate(q) for q in queries],  # negative control
    }
    return {name: detect_fingerprint(fp, images).as_dict() for name, images in outputs.items()}


def pgd_results(ctx: Context, run: str) -> dict:
    """The victim discriminator's loss on the clean vs the perturbed answers (PGD raises it) and the
    measured perturbation size (bounded by epsilon, plus 8-bit rounding)."""
    from imgsteal.defenses.perturbation import DISCRIMINATOR_LOSSES, discriminator_loss, load_discriminator_named

    p = ctx.cfg.run_pgd(run)
    disc, name = load_discriminator_named(ctx.discriminator_path(run), p.module)
    loss = DISCRIMINATOR_LOSSES.get(name, "bce")
    pairs = matched_answers(ctx.run_dir(run) / "pairs", ctx.run_dir(CLEAN_RUN) / "pairs")
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
    from imgsteal.defenses.watermark import WatermarkOptions, alter

    out = answer
    for name in ctx.defenses(run):
        if name == "watermark":
            wm = ctx.cfg.run_watermark(run)
            out = alter(out, WatermarkOptions(fraction=wm.fraction, alteration=wm.alteration, blur_sigma=wm.blur_sigma,
                                              text=wm.text))
        elif name == "fingerprint":
            if "fingerprint" not in cache:
                from imgsteal.defenses.fingerprint import FingerprintModel

                cache["fingerprint"] = FingerprintModel.load(ctx.fingerprint_dir, "cpu")
            out = cache["fingerprint"].stamp(out)
        elif name == "pgd":
            if f"pgd:{run}" not in cache:
                from imgsteal.defenses.perturbation import PGDDefense, PGDOptions

                p = ctx.cfg.run_pgd(run)
                cache[f"pgd:{run}"] = PGDDefense(PGDOptions(discriminator=ctx.discriminator_path(run), module=p.module,
                                                            epsilon=p.epsilon, steps=p.steps, step_size=p.step_size,
                                                            target=p.target))
            out = cache[f"pgd:{run}"].perturb(out, seed=0)
    return quantize(out)


# -- the whole evaluation ----------------------------------------------------------------------
def run_defense_evaluation(cfg: DefenseEvalConfig, out: str | Path, progress: bool = True, log: Log = _print) -> dict:
    """Run the evaluation described in the module docstring; writes OUT/results.json and OUT/report.html."""
    from imgsteal.experiments.config import check_datasets
    from imgsteal.experiments.stages import ensure_victim
    from imgsteal.victim.inference import load_translator

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
    exp = cfg.experiment()
    task = exp.tasks[0]
    resolved = check_datasets(exp)[task.name]
    timings: dict[str, float] = {}

    t = time.perf_counter()
    victim_model = ensure_victim(exp, task, out, progress, log)
    ctx = Context(cfg=cfg, out=out, resolved=resolved, victim_model=Path(victim_model), progress=progress, log=log)
    for run in cfg.runs:
        if "pgd" in ctx.defenses(run):
            from imgsteal.defenses.perturbation import load_discriminator

            load_discriminator(ctx.discriminator_path(run), cfg.run_pgd(run).module)  # fail now, not after the harvests
    timings["victim_s"] = time.perf_counter() - t

    t = time.perf_counter()
    ctx.fingerprint_dir = ensure_fingerprint(ctx)
    timings["fingerprint_training_s"] = time.perf_counter() - t

    runs = [CLEAN_RUN, *cfg.runs]
    results: dict[str, Any] = {"name": cfg.name, "task": {"name": task.name, "kind": task.kind}, "client": cfg.client,
                               "oracle": task.harvest.oracle, "runs": {}}
    surrogate_dirs: dict[str, Path] = {}
    for run in runs:
        t = time.perf_counter()
        harvest = harvest_run(ctx, run)
        timings[f"{run}_harvest_s"] = time.perf_counter() - t
        t = time.perf_counter()
        surrogate_dirs[run], records = train_and_score(ctx, run)
        timings[f"{run}_surrogate_s"] = time.perf_counter() - t
        results["runs"][run] = {"defenses": ctx.defenses(run), "harvest": harvest, "quality": records,
                                "labels": logged_labels(ctx.run_dir(run))}

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
    timings["total_s"] = time.perf_counter() - started
    results["timings"] = timings
    results["figures"] = figures
    (out / "results.json").write_text(json.dumps(results, indent=2, default=_json_default))
    write_report(ctx, results).write(out / "report.html")
    log(f"report: {out / 'report.html'}  results: {out / 'results.json'}")
    return results


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

    wm = ctx.cfg.watermark
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
            found = s["p_value"] < cfg.alpha and s["accuracy"] > 0.5
            parts.append(f"fingerprint {'FOUND' if found else 'not found'} in F_A's outputs ({s['accuracy']:.1%} of bits, "
                         f"p = {_p(s['p_value'])}; in the API's answers: {fp['api_answers']['accuracy']:.1%})")
        quality = _headline_quality(entry)
        if quality is not None and clean is not None:
            parts.append(f"F_A vs F_V {quality[0]} {_fmt(quality[1], 3)} (without defences: {_fmt(clean[1], 3)})")
        rows.append([run, ", ".join(entry["defenses"]), "; ".join(parts)])
    return rows


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
        setting = cfg.run_watermark(run)
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
                    "A trigger counts when the suspect's answer to its input is closer (MSE) to the altered answer than "
                    f"to the clean one; one-sided binomial test against 1/2, alpha {cfg.alpha:g}.")
        report.table(["run", "alteration, fraction", "suspect", "triggers", "closer to altered", "share", "p-value",
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
