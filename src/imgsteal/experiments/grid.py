"""Expanding an experiment into cells, and the on-disk state of each cell.

A cell is one surrogate training and its evaluation: (task, fraction, augmentation, seed).

    OUT/cells/<task>/f050-flip-s1/
      surrogate/        the surrogate's run folder (checkpoints/, model.safetensors, metrics.jsonl)
      gallery/          F_A's outputs on a few test images (cells shown in the report only)
      result.json       the cell's scores, one record per test set (written atomically)
      DONE              the done-marker, written atomically after result.json

A cell with DONE is finished and is never recomputed; a cell with a surrogate checkpoint resumes
its training; a cell with a trained surrogate but no DONE is only evaluated again.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgsteal.data.augment import Augmentation
from imgsteal.errors import ImgstealError
from imgsteal.experiments.config import ExperimentConfig, TaskConfig

RESULT_FILE = "result.json"
DONE_FILE = "DONE"


def fraction_label(fraction: float) -> str:
    """0.25 -> '025', 0.125 -> '012.5' (percent, zero-padded so folders sort by fraction)."""
    pct = round(fraction * 100, 6)
    whole = int(pct)
    rest = f"{pct - whole:.6f}".rstrip("0").rstrip(".")[1:]  # ".5" or ""
    return f"{whole:03d}{rest}"


@dataclass(frozen=True)
class GridCell:
    """One point of the grid."""

    task: str
    fraction: float
    augmentation: str
    seed: int

    @property
    def key(self) -> str:
        """Folder name inside the task's folder, e.g. 'f050-flip-s1'."""
        return f"f{fraction_label(self.fraction)}-{self.augmentation}-s{self.seed}"

    @property
    def id(self) -> str:
        return f"{self.task}/{self.key}"

    def folder(self, out: str | Path) -> Path:
        return Path(out) / "cells" / self.task / self.key

    def as_dict(self) -> dict[str, Any]:
        return {"task": self.task, "fraction": self.fraction, "augmentation": self.augmentation, "seed": self.seed}


def task_cells(cfg: ExperimentConfig, task: TaskConfig) -> list[GridCell]:
    """The task's cells: every seed x augmentation x fraction, seed-major so that a partly run
    experiment already holds whole curves for its first seeds. Augmentations other than `none`
    run only at `augmentation_fractions` when the grid sets it."""
    grid = cfg.task_grid(task)
    cells = []
    for seed in grid.seed_list():
        for aug in grid.augmentations:
            for fraction in grid.fractions:
                if aug is not Augmentation.none and grid.augmentation_fractions is not None \
                        and fraction not in grid.augmentation_fractions:
                    continue
                cells.append(GridCell(task.name, fraction, Augmentation(aug).value, seed))
    return cells


def expand_grid(cfg: ExperimentConfig) -> list[GridCell]:
    """All cells of the experiment, task by task."""
    return [cell for task in cfg.tasks for cell in task_cells(cfg, task)]


# --------------------------------------------------------------------------- cell state on disk


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` via a temp file, fsync and rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def is_done(cell: GridCell, out: str | Path) -> bool:
    folder = cell.folder(out)
    return (folder / DONE_FILE).is_file() and (folder / RESULT_FILE).is_file()


def cell_state(cell: GridCell, out: str | Path) -> str:
    """done | evaluating (trained, not scored) | training (has a checkpoint) | pending."""
    folder = cell.folder(out)
    if is_done(cell, out):
        return "done"
    if (folder / "surrogate" / "model.safetensors").is_file():
        return "evaluating"
    if (folder / "surrogate" / "checkpoints" / "last.safetensors").is_file():
        return "training"
    return "pending"


def mark_done(cell: GridCell, out: str | Path, result: dict[str, Any], fingerprints: dict[str, str]) -> None:
    """Write the cell's result, then its done-marker (both atomically, in that order)."""
    folder = cell.folder(out)
    atomic_write_text(folder / RESULT_FILE, json.dumps(result, indent=2, default=float))
    atomic_write_text(folder / DONE_FILE, json.dumps({"cell": cell.id, "fingerprints": fingerprints,
                                                      "finished_at": time.time()}, indent=2))


def read_result(cell: GridCell, out: str | Path) -> dict[str, Any]:
    return json.loads((cell.folder(out) / RESULT_FILE).read_text(encoding="utf-8"))


def stale_cells(cells: list[GridCell], out: str | Path, fingerprints: dict[str, dict[str, str]]) -> list[str]:
    """Finished cells whose settings differ from the config's: 'cell (changed: surrogate, ...)'."""
    stale = []
    for cell in cells:
        if not is_done(cell, out):
            continue
        marker = json.loads((cell.folder(out) / DONE_FILE).read_text(encoding="utf-8"))
        recorded, current = marker.get("fingerprints", {}), fingerprints[cell.task]
        changed = [k for k in current if recorded.get(k) != current[k]]
        if changed:
            stale.append(f"{cell.id} (changed: {', '.join(changed)})")
    return stale


def check_not_stale(cells: list[GridCell], out: str | Path, fingerprints: dict[str, dict[str, str]]) -> None:
    """Refuse to mix results of different settings in one experiment folder."""
    stale = stale_cells(cells, out, fingerprints)
    if stale:
        shown = "; ".join(stale[:5]) + (f"; and {len(stale) - 5} more" if len(stale) > 5 else "")
        raise ImgstealError(f"{out} holds finished cells computed with other settings: {shown}. "
                            "Use another --out folder for the new settings (or delete those cells).")
