"""One cell of the grid, as a worker runs it: train the surrogate, score it, return the records.

`run_cell(job)` is a plain function of a picklable `CellJob`, so the same code runs in the driver
(local executor), in a process pool or as a Ray task on another machine. It writes only inside the
cell's folder (the surrogate run, F_A's gallery images) and the shared victim cache; the driver
writes the cell's result and done-marker from the returned dict.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgsteal.attack.surrogate import SurrogateConfig, train_surrogate
from imgsteal.errors import ImgstealError
from imgsteal.experiments.grid import GridCell, atomic_write_text


@dataclass
class CellJob:
    """Everything a worker needs for one cell; paths must be visible to the worker (shared storage)."""

    cell: GridCell
    kind: str  # sr | style
    out: str  # the experiment folder
    store: str  # the task's pair store
    victim_model: str
    surrogate: dict[str, Any]  # SurrogateConfig settings the grid does not own
    test_sets: dict[str, list[str]]  # display name -> image paths
    victim_cache: str
    style_set: str | None = None  # [style] dataset spec of S_X
    work_size: int = 256  # [style] the resolution the surrogate trains and is scored at
    evaluation: dict[str, Any] = field(default_factory=dict)  # EvaluationSpec as a dict
    gallery_inputs: list[str] = field(default_factory=list)  # test images whose F_A output is saved
    device: str = "auto"
    processes: int = 1  # > 1: train under torchrun (DistributedDataParallel)
    progress: bool = True

    @property
    def folder(self) -> Path:
        return self.cell.folder(self.out)

    def surrogate_config(self) -> SurrogateConfig:
        c = self.cell
        return SurrogateConfig(store=self.store, seed=c.seed, fraction=c.fraction, augmentation=c.augmentation,
                               device=self.device, **self.surrogate)


def slug(name: str) -> str:
    """A file-name-safe version of a test set name."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "test"


def selection_cost(store: str | Path, fraction: float, seed: int) -> tuple[int, float]:
    """(queries, USD) of the pairs a cell trains on: PairStore.select(fraction, seed), costs as harvested."""
    from imgsteal.data.pairs import PairStore

    with PairStore(store, create=False) as pairs:
        chosen = pairs.select(fraction, seed)
    return len(chosen), float(sum(r.cost_usd for r in chosen))


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


def _sr_records(job: CellJob, victim, surrogate) -> list[dict[str, Any]]:
    from imgsteal.evaluate.sr import SRConvention, evaluate_sr_set

    ev = job.evaluation
    crop = ev.get("crop_border")
    convention = SRConvention(crop_border=victim.scale if crop is None else crop, y_channel=bool(ev.get("y_channel")))
    records = []
    for name, paths in job.test_sets.items():
        result = evaluate_sr_set(slug(name), [Path(p) for p in paths], victim, [surrogate], victim.scale, convention,
                                 gallery_dir=None, progress=job.progress)
        records.append({
            "test_set": name, "n_images": result.n_images,
            "metrics": {m: {k: c.runs[0] for k, c in cells.items()} for m, cells in result.cells.items()},
            "image_std": {m: {k: c.image_std for k, c in cells.items()} for m, cells in result.cells.items()},
        })
    return records


def _style_records(job: CellJob, victim, surrogate) -> list[dict[str, Any]]:
    """FID/KID (when the Inception weights are available) and paired PSNR/SSIM from imgsteal.evaluate.style."""
    from imgsteal.data.layouts import resolve_images
    from imgsteal.evaluate.style import evaluate_style

    test_sets = {name: [Path(p) for p in paths] for name, paths in job.test_sets.items()}
    eval_dir = job.folder / "evaluation"
    results, _ = evaluate_style(victim, [surrogate], test_sets, resolve_images(job.style_set), eval_dir,
                                size=job.work_size, inception_weights=job.evaluation.get("inception_weights"),
                                device=job.device, gallery_count=0, progress=job.progress)
    # Every scored image was written for the FID features; at paper scale that is gigabytes per cell.
    shutil.rmtree(eval_dir / "outputs", ignore_errors=True)
    return [{
        "test_set": r.name, "n_images": r.n_images,
        "metrics": {m: {k: c.runs[0] for k, c in cells.items()} for m, cells in r.cells.items()},
        "image_std": {m: {k: c.image_std for k, c in cells.items()} for m, cells in r.cells.items()},
    } for r in results]


def gallery_input(kind: str, path: str | Path, scale: int = 4, size: int = 256):
    """(the query shown to the models, the ground truth or None) for one test image, prepared as the
    evaluation prepares it. sr: the bicubic downscale of the HR image (cropped to a multiple of
    `scale`) and the HR image; style: the photo centre-cropped and resized to size x size, no truth."""
    from imgsteal.data.images import bicubic_downscale, crop_to_multiple, load_image

    if kind == "sr":
        hr = crop_to_multiple(load_image(path), scale)
        return bicubic_downscale(hr, scale), hr
    from imgsteal.evaluate.style import prepare_photos

    return prepare_photos([Path(path)], size)[0][1], None


def write_surrogate_gallery(job: CellJob, surrogate) -> list[str]:
    """F_A's outputs on the gallery images, saved as gallery/NN_surrogate.png in the cell folder."""
    from imgsteal.data.images import save_image

    written = []
    for i, path in enumerate(job.gallery_inputs):
        query, _ = gallery_input(job.kind, path, surrogate.scale, job.work_size)
        target = job.folder / "gallery" / f"{i:02d}_surrogate.png"
        save_image(surrogate(query[None])[0], target)
        written.append(str(target.relative_to(job.out)))
    return written


def run_cell(job: CellJob) -> dict[str, Any]:
    """Train and score one cell. Returns the JSON-able result the driver stores:
    {cell, records: [{test_set, n_images, metrics: {metric: {A, B, C, ...}}, image_std}], queries,
    cost_usd, train_seconds, eval_seconds, gallery}."""
    from imgsteal.experiments.victim_cache import VictimCache
    from imgsteal.victim.inference import load_translator

    run_dir, train_seconds = train_cell(job)
    started = time.perf_counter()
    victim = VictimCache(job.victim_model, job.victim_cache, job.device)
    surrogate = load_translator(run_dir, job.device)
    records = _sr_records(job, victim, surrogate) if job.kind == "sr" else _style_records(job, victim, surrogate)
    gallery = write_surrogate_gallery(job, surrogate) if job.gallery_inputs else []
    queries, cost = selection_cost(job.store, job.cell.fraction, job.cell.seed)
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
