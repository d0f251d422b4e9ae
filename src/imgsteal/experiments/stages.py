"""The stages a task runs once, on the driver, before its cells: victim, harvest, victim answers.

    OUT/tasks/<task>/
      victim/           the victim's run folder, when the config says how to train it
      pairs/            the pair store (X_A, F_V(X_A)) every cell draws its fraction from
      victim_cache/     F_V's answers on the test images (see victim_cache.py)
      gallery/          the report's gallery: NN_input.png, NN_victim.png, NN_truth.png
      stages.json       which stages finished, with the fingerprint of their settings

Every stage resumes: a killed victim training continues from its checkpoint, a killed harvest
never re-sends an answered query. A finished stage is skipped; a finished stage whose settings
changed is refused rather than silently mixed with the new settings.
"""

from __future__ import annotations

import contextlib
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from imgsteal.errors import ImgstealError
from imgsteal.experiments.config import ExperimentConfig, TaskConfig, task_fingerprints, victim_training_config
from imgsteal.experiments.grid import atomic_write_text

Log = Callable[[str], None]


@dataclass
class TaskAssets:
    """What the cells of a task share: the victim model, the pair store, the cache and the gallery."""

    folder: Path
    victim_model: Path
    store: Path
    victim_cache: Path
    pairs: int
    harvest: dict = field(default_factory=dict)
    gallery: list[dict[str, str | None]] = field(default_factory=list)  # paths relative to the experiment folder
    gallery_inputs: list[str] = field(default_factory=list)  # the test images behind the gallery


def work_size(task: TaskConfig) -> int:
    """[style] The resolution surrogates train and are scored at (SurrogateConfig.size)."""
    from imgsteal.attack.surrogate import SurrogateConfig

    return int(task.surrogate.get("size", SurrogateConfig.model_fields["size"].default))


def task_folder(out: Path, task: TaskConfig) -> Path:
    return Path(out) / "tasks" / task.name


def _read_stages(folder: Path) -> dict:
    path = folder / "stages.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _record_stage(folder: Path, stage: str, fingerprint: str, **facts) -> None:
    stages = _read_stages(folder)
    stages[stage] = {"fingerprint": fingerprint, **facts}
    atomic_write_text(folder / "stages.json", json.dumps(stages, indent=2))


def _check_stage(folder: Path, stage: str, fingerprint: str, what: str) -> bool:
    """True when `stage` already finished with these settings; raises if it finished with others."""
    done = _read_stages(folder).get(stage)
    if done is None:
        return False
    if done["fingerprint"] != fingerprint:
        raise ImgstealError(f"{folder} holds a {what} made with other settings; use another --out folder for the new settings")
    return True


def ensure_victim(cfg: ExperimentConfig, task: TaskConfig, folder: Path, progress: bool, log: Log) -> Path:
    """The victim model path: the configured one, or one trained (or resumed) into folder/victim."""
    if task.victim.model is not None:
        return Path(cfg.expand(task.victim.model))
    fingerprint = task_fingerprints(cfg, task)["victim"]
    run_dir = folder / "victim"
    if _check_stage(folder, "victim", fingerprint, "victim") and (run_dir / "model.safetensors").is_file():
        return run_dir / "model.safetensors"
    vcfg = victim_training_config(cfg, task)
    log(f"{task.name}: training the victim F_V ({task.victim.train['arch']})")
    if task.kind == "sr":
        from imgsteal.victim.train import train_sr_victim

        train_sr_victim(vcfg, run_dir, resume=True, progress=progress)
    else:
        from imgsteal.victim.style import train_style_victim

        train_style_victim(vcfg, run_dir, resume=True, progress=progress)
    _record_stage(folder, "victim", fingerprint)
    return run_dir / "model.safetensors"


def harvest_options(task: TaskConfig, price: float) -> dict:
    """Keyword options for attack.harvest.harvest from the task's harvest block."""
    from imgsteal.attack.harvest import harvest

    options = {"downscale": task.harvest.downscale, "resize": task.harvest.resize, "budget": task.harvest.budget,
               "price": price}
    accepted = inspect.signature(harvest).parameters
    if task.harvest.resize and "resize" not in accepted:
        raise ImgstealError("harvest.resize needs an imgsteal whose harvest() accepts resize")
    return {k: v for k, v in options.items() if k in accepted}


def open_oracle(task: TaskConfig, victim_model: Path):
    """The victim as the adversary sees it: served over HTTP on loopback (default) or in process."""
    if task.harvest.oracle == "http":
        from imgsteal.victim.launch import served_oracle

        return served_oracle(victim_model, concurrency=task.harvest.concurrency, device=task.device)
    from imgsteal.victim.inference import load_translator
    from imgsteal.victim.oracle import LocalOracle

    return contextlib.closing(LocalOracle(load_translator(victim_model, task.device)))


def ensure_harvest(cfg: ExperimentConfig, task: TaskConfig, folder: Path, victim_model: Path, inputs: list[Path],
                   progress: bool, log: Log) -> tuple[Path, int, dict]:
    """Harvest the task's queries into folder/pairs (resumable). Returns (store, pairs, report dict).

    Raises ImgstealError when queries failed: the cells must not train on a store that a re-run
    would still add to (that would change every PairStore.select subset).
    """
    from imgsteal.attack.harvest import harvest
    from imgsteal.data.pairs import PairStore

    store_dir = folder / "pairs"
    fingerprint = task_fingerprints(cfg, task)["harvest"] + "/" + task_fingerprints(cfg, task)["victim"]
    if _check_stage(folder, "harvest", fingerprint, "pair store"):
        facts = _read_stages(folder)["harvest"]
        return store_dir, facts["pairs"], facts.get("report", {})
    log(f"{task.name}: harvesting {len(inputs)} queries through the {task.harvest.oracle} oracle")
    with open_oracle(task, victim_model) as oracle, PairStore(store_dir) as store:
        report = harvest(oracle, inputs, store, progress=progress, **harvest_options(task, cfg.price_usd))
        pairs = len(store)
    if report.failed:
        raise ImgstealError(f"task {task.name}: {report.failed} queries failed during the harvest; "
                            "run the experiment again to retry them (answered queries are kept)")
    if pairs == 0:
        raise ImgstealError(f"task {task.name}: the harvest stored no pairs")
    _record_stage(folder, "harvest", fingerprint, pairs=pairs, report=report.as_dict())
    return store_dir, pairs, report.as_dict()


def warm_victim_cache(task: TaskConfig, victim, test_sets: dict[str, list[Path]], progress: bool) -> None:
    """Compute F_V's answers on every SR test image once (the cells then read them from the cache).

    The queries are made exactly as evaluate_sr_set makes them; the cache is keyed by content, so
    a difference would only cost a recomputation, never a wrong score.
    """
    from tqdm.auto import tqdm

    from imgsteal.data.images import bicubic_downscale, crop_to_multiple, load_images

    if task.kind != "sr":
        return  # the style evaluation runs the victim itself (its features are cached by imgsteal.metrics)
    for name, paths in test_sets.items():
        for _, hr in tqdm(load_images(paths), desc=f"victim on {name}", disable=not progress, unit="img"):
            hr = crop_to_multiple(hr, victim.scale)
            victim(bicubic_downscale(hr, victim.scale)[None])


def write_task_gallery(task: TaskConfig, folder: Path, out: Path, victim, paths: list[Path]) -> list[dict[str, str | None]]:
    """The gallery's fixed columns (input, F_V, ground truth) for the first test images."""
    from imgsteal.data.images import save_image
    from imgsteal.experiments.cell import gallery_input

    rows = []
    for i, path in enumerate(paths):
        query, truth = gallery_input(task.kind, path, victim.scale, work_size(task))
        entry: dict[str, str | None] = {"name": path.name}
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


def prepare_task(cfg: ExperimentConfig, task: TaskConfig, resolved: dict[str, list[Path]], out: Path,
                 progress: bool, log: Log) -> TaskAssets:
    """Run the task's shared stages; returns what its cells need."""
    from imgsteal.experiments.victim_cache import VictimCache

    folder = task_folder(out, task)
    folder.mkdir(parents=True, exist_ok=True)
    victim_model = ensure_victim(cfg, task, folder, progress, log)
    store, pairs, report = ensure_harvest(cfg, task, folder, victim_model, resolved["harvest"], progress, log)
    victim = VictimCache(victim_model, folder / "victim_cache", task.device)
    test_sets = {name: resolved[f"test:{name}"] for name in task.test_sets}
    warm_victim_cache(task, victim, test_sets, progress)
    first = next(iter(test_sets.values()))
    gallery_paths = first[: task.evaluation.gallery_images]
    gallery = write_task_gallery(task, folder, out, victim, gallery_paths)
    return TaskAssets(folder=folder, victim_model=victim_model, store=store, victim_cache=folder / "victim_cache",
                      pairs=pairs, harvest=report, gallery=gallery, gallery_inputs=[str(p) for p in gallery_paths])
