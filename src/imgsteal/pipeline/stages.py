"""The attack's stages, each resumable under the one rule of imgsteal.pipeline.stage:

    victim       train F_V once (or take a given model)
    fingerprint  train the owner's fingerprint encoder/decoder (only when a defence setup needs it)
    harvest      query the victim through its oracle with X_A, per defence setup, into a pair store
    cell         train one surrogate F_A on a subset of the pairs and score it: (A), (B), (C)

A task's shared stages live in OUT/tasks/<task>/:

    victim/                 the victim's run folder (when the config trains it)
    fingerprint/            the fingerprint networks and secret (owner-only), when a setup uses them
    pairs/                  the undefended harvest; defended/<setup>/pairs/ for each defended one
    service/                the served victim's key databases and server log (0700); defended/<setup>/service/
                            for each defended one, with the owner's secrets (watermark database)
    victim_cache/           F_V's answers on the test images (see imgsteal.pipeline.victim_cache)
    gallery/                NN_input.png, NN_victim.png, NN_truth.png for the report

`run_cell(job)` is a plain function of a picklable `CellJob`, so the same code runs in the driver,
in a process pool or as a Ray task; it writes only inside the cell's folder and the shared cache.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from imgsteal.attack.surrogate import SurrogateConfig, train_surrogate
from imgsteal.errors import ImgstealError
from imgsteal.files import atomic_write_text
from imgsteal.pipeline.kinds import kind_of
from imgsteal.pipeline.stage import Stage

Log = Callable[[str], None]


# -- victim --------------------------------------------------------------------------------------
def ensure_victim(folder: Path, kind: str, settings: dict[str, Any], config, progress: bool, log: Log) -> Path:
    """Train (or resume, or reuse) the victim into folder/victim; returns its model path.

    settings: what the victim depends on (fingerprinted); config: its typed training config.
    """
    run_dir = folder / "victim"
    stage = Stage(run_dir, "victim", settings)
    if stage.done and (run_dir / "model.safetensors").is_file():
        return run_dir / "model.safetensors"
    log(f"training the victim F_V ({settings.get('arch', kind)}){' (resuming)' if stage.started else ''}")
    with stage.running():
        kind_of(kind).train_victim(config, run_dir, progress=progress)
    return run_dir / "model.safetensors"


# -- fingerprint ---------------------------------------------------------------------------------
def ensure_fingerprint(folder: Path, settings: dict[str, Any], progress: bool, log: Log) -> Path:
    """Train (or resume, or reuse) the owner's fingerprint into folder/fingerprint; returns the folder."""
    from pydantic import ValidationError

    from imgsteal.defenses.fingerprint import FingerprintTrainConfig, train_fingerprint

    run_dir = folder / "fingerprint"
    stage = Stage(run_dir, "fingerprint", settings)
    if stage.done:
        return run_dir
    try:
        config = FingerprintTrainConfig(**settings)
    except ValidationError as exc:
        raise ImgstealError(f"fingerprint_training: {exc}") from None
    log(f"training the fingerprint encoder/decoder ({config.bits} bits at {config.size} px, {config.steps} steps)")
    with stage.running():
        train_fingerprint(config, run_dir, resume=(run_dir / "checkpoints" / "last.safetensors").exists(),
                          progress=progress)
    return run_dir


# -- harvest -------------------------------------------------------------------------------------
@dataclass
class HarvestPlan:
    """One harvest: which images, prepared how, through which oracle and defences, into which store."""

    store: Path
    inputs: list[Path]
    victim_model: Path | str  # a model file, or the URL of the victim's API
    transport: str = "http"
    defenses: Any = None  # DefenseSetup
    service_dir: Path | None = None  # where a served victim keeps its databases and owner secrets
    client: str = "adversary"
    downscale: int | None = None
    resize: int | None = None
    budget: int | None = None
    pack_pixels: int | None = None  # mosaics of at most this many pixels, one query each
    api_spec: str | None = None  # a URL victim's API spec (a third-party API); its price replaces `price`
    price: float = 0.016
    concurrency: int = 8
    device: str = "cpu"
    selection: str = "random"  # random: every input, in order; diverse | adaptive: select_queries up to `budget`


def ensure_harvest(plan: HarvestPlan, settings: dict[str, Any], progress: bool, log: Log) -> dict:
    """Harvest `plan` into its pair store (resumable; never re-sends an answered query). Returns the
    harvest report as a dict, with `pairs` (the store's size) and `seconds` (of the run that made it).

    Raises ImgstealError when queries failed: cells must not train on a store that a re-run would
    still add to (that would change every PairStore.select subset).
    """
    from imgsteal.attack.harvest import harvest
    from imgsteal.data.pairs import PairStore
    from imgsteal.pipeline.oracle import open_oracle

    stage = Stage(plan.store, "harvest", settings)
    if stage.done:
        return {**stage.facts, "seconds": stage.seconds}
    shown = plan.defenses.label if plan.defenses is not None else "none"
    how = f"{plan.budget} queries chosen {plan.selection}ly from {len(plan.inputs)}" if plan.selection != "random" \
        else f"{len(plan.inputs)} images packed into mosaics of at most {plan.pack_pixels} px" if plan.pack_pixels \
        else f"{len(plan.inputs)} queries"
    log(f"harvesting {how} through the {plan.transport} oracle (defences: {shown})")
    spec = None
    if plan.api_spec is not None:
        from imgsteal.attack.api_spec import load_api_spec

        spec = load_api_spec(plan.api_spec)
    with stage.running() as facts:
        with open_oracle(plan.victim_model, transport=plan.transport, defenses=plan.defenses, client=plan.client,
                         device=plan.device, concurrency=plan.concurrency, workdir=plan.service_dir,
                         api_spec=spec) as oracle, \
                PairStore(plan.store) as store:
            if plan.selection == "random":
                report = harvest(oracle, plan.inputs, store, downscale=plan.downscale, resize=plan.resize,
                                 budget=plan.budget, price=plan.price, progress=progress, pack_pixels=plan.pack_pixels,
                                 cost=spec.price.cost if spec is not None else None)
            else:
                report = _harvest_selected(plan, oracle, store)
            pairs = len(store)
        if report.failed:
            raise ImgstealError(f"{report.failed} queries failed during the harvest into {plan.store}; run again to "
                                "retry them (answered queries are kept)")
        if pairs == 0:
            raise ImgstealError(f"the harvest into {plan.store} stored no pairs")
        facts.update(report.as_dict(), pairs=pairs)
    return {**stage.facts, "seconds": stage.seconds}


def _harvest_selected(plan: HarvestPlan, oracle, store):
    """Query `plan.budget` of the inputs chosen by plan.selection (imgsteal.attack.selection); the store
    keeps the query order, which budget-limited cells follow (budget_order: queried)."""
    from imgsteal.attack.harvest import HarvestReport
    from imgsteal.attack.selection import harvest_io, select_queries

    before = len(store)
    prepare, query = harvest_io(oracle, store, downscale=plan.downscale, resize=plan.resize, price=plan.price)
    result = select_queries(plan.inputs, plan.budget, plan.selection, query, prepare=prepare, seed=0)
    return HarvestReport(inputs=len(plan.inputs), unreadable=len(result.unreadable), duplicates=result.duplicates,
                         already_stored=before, queried=len(store) - before, failed=len(result.failed),
                         stored_pairs=len(store), total_usd=store.total_cost())


# -- the report's gallery ------------------------------------------------------------------------
def write_task_gallery(kind: str, folder: Path, out: Path, victim, paths: list[Path], size: int) -> list[dict]:
    """The gallery's fixed columns (input, F_V, ground truth) for the first test images; paths relative to `out`."""
    from imgsteal.data.images import save_image

    rows = []
    for i, path in enumerate(paths):
        query, truth = kind_of(kind).test_query(path, victim.scale, size)
        entry: dict[str, str | None] = {"name": Path(path).name}
        for label, image in (("input", query), ("victim", None), ("truth", truth)):
            target = folder / "gallery" / f"{i:02d}_{label}.png"
            if label == "truth" and image is None:
                entry[label] = None
                continue
            if not target.is_file():
                save_image(victim(query[None])[0] if label == "victim" else image, target)
            entry[label] = str(target.relative_to(out))
        rows.append(entry)
    return rows


# -- one cell: train a surrogate, score it -------------------------------------------------------
@dataclass
class CellJob:
    """Everything a worker needs for one cell; paths must be visible to the worker (shared storage)."""

    cell: Any  # imgsteal.experiments.grid.GridCell
    kind: str  # sr | style
    out: str  # the experiment folder
    store: str  # the pair store of the cell's defence setup
    victim_model: str  # a model file, or the URL of the victim's API
    surrogate: dict[str, Any]  # SurrogateConfig settings the grid does not own
    test_sets: dict[str, list[str]]  # display name -> image paths
    victim_cache: str
    style_set: list[str] | None = None  # [style] the style images S_X
    work_size: int = 256  # [style] the resolution the surrogate trains and is scored at
    evaluation: dict[str, Any] = field(default_factory=dict)  # EvaluationSpec as a dict
    gallery_inputs: list[str] = field(default_factory=list)  # test images whose F_A output is saved
    victim_scale: int | None = None  # [URL victim] its upscaling factor
    victim_api_spec: str | None = None  # [URL victim] its API spec, for a third-party API
    device: str = "auto"
    processes: int = 1  # > 1: train under torchrun (DistributedDataParallel)
    progress: bool = True

    @property
    def folder(self) -> Path:
        return self.cell.folder(self.out)

    def surrogate_config(self) -> SurrogateConfig:
        c = self.cell
        settings = {**self.surrogate, **({"arch": c.arch} if c.arch else {})}
        return SurrogateConfig(store=self.store, seed=c.seed, fraction=c.fraction, augmentation=c.augmentation,
                               attack=c.attack, budget=c.budget,
                               budget_order="seeded" if c.selection == "random" else "queried",
                               device=self.device, **settings)


def selection_cost(cfg: SurrogateConfig) -> tuple[int, float]:
    """(queries, USD) of the pairs a cell trains on (its fraction and budget), costs as harvested."""
    from imgsteal.attack.surrogate import select_budget
    from imgsteal.data.pairs import PairStore

    with PairStore(cfg.store, create=False) as pairs:
        chosen = select_budget(pairs.select(cfg.fraction, cfg.seed), cfg.budget, cfg.seed, cfg.budget_order)
    return len({r.query for r in chosen}), float(sum(r.cost_usd for r in chosen))


def train_distributed(cfg: SurrogateConfig, run_dir: Path, processes: int, log_path: Path) -> None:
    """Train one surrogate with `processes` DDP processes: torchrun on this machine, one per GPU
    (gloo on CPU). Rank 0 writes the run folder; a failure raises with the log's tail."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir.parent / "surrogate_config.json"
    atomic_write_text(config_path, cfg.model_dump_json(indent=2))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
           "-m", "imgsteal.experiments.train_cell", str(config_path), str(run_dir)]
    with open(log_path, "ab") as log:
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if code != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise ImgstealError(f"distributed training of {run_dir} failed (exit code {code}); log {log_path}:\n{tail}")


def train_cell(job: CellJob) -> tuple[Path, float]:
    """Train (or resume, or skip when already trained) the cell's surrogate; returns (run dir, seconds)."""
    run_dir = job.folder / "surrogate"
    started = time.perf_counter()
    if not (run_dir / "model.safetensors").is_file():
        cfg = job.surrogate_config()
        if job.processes > 1:
            train_distributed(cfg, run_dir, job.processes, job.folder / "torchrun.log")
        else:
            # resume=True: continue from the last checkpoint of a killed run, or start afresh without one.
            train_surrogate(cfg, run_dir, resume=True, progress=job.progress)
    return run_dir, time.perf_counter() - started


def write_surrogate_gallery(job: CellJob, surrogate) -> list[str]:
    """F_A's outputs on the gallery images, saved as gallery/NN_surrogate.png in the cell folder."""
    from imgsteal.data.images import save_image

    written = []
    for i, path in enumerate(job.gallery_inputs):
        query, _ = kind_of(job.kind).test_query(path, surrogate.scale, job.work_size)
        target = job.folder / "gallery" / f"{i:02d}_surrogate.png"
        save_image(surrogate(query[None])[0], target)
        written.append(str(target.relative_to(job.out)))
    return written


def run_cell(job: CellJob) -> dict[str, Any]:
    """Train and score one cell. Returns the JSON-able result the driver stores:
    {cell, kind, records: [{test_set, n_images, metrics: {metric: {A, B, C, ...}}, image_std}], queries,
    cost_usd, train_seconds, eval_seconds, gallery}."""
    from imgsteal.pipeline.victim_cache import VictimCache
    from imgsteal.victim.inference import load_translator

    run_dir, train_seconds = train_cell(job)
    started = time.perf_counter()
    victim = VictimCache(job.victim_model, job.victim_cache, job.device, scale=job.victim_scale,
                         api_spec=job.victim_api_spec)
    surrogate = load_translator(run_dir, job.device)
    test_sets = {name: [Path(p) for p in paths] for name, paths in job.test_sets.items()}
    records = kind_of(job.kind).score(victim, surrogate, test_sets, folder=job.folder, evaluation=job.evaluation,
                                      style_set=[Path(p) for p in job.style_set or []], size=job.work_size,
                                      device=job.device, progress=job.progress, keep_outputs=bool(job.gallery_inputs))
    gallery = write_surrogate_gallery(job, surrogate) if job.gallery_inputs else []
    queries, cost = selection_cost(job.surrogate_config())
    return {
        "cell": {**job.cell.as_dict(), "id": job.cell.id},
        "kind": job.kind,
        "records": records,
        "queries": queries,
        "cost_usd": cost,
        "train_seconds": round(train_seconds, 3),
        "eval_seconds": round(time.perf_counter() - started, 3),
        "victim_cache": {"hits": victim.hits, "misses": victim.misses},
        "gallery": gallery,
    }
