"""Expanding an experiment into cells, and the on-disk state of each cell.

A cell is one surrogate training and its evaluation: (task, fraction, augmentation, seed, defence).

    OUT/cells/<task>/f050-flip-s1[-d<defence>]/
      surrogate/        the surrogate's run folder (checkpoints/, model.safetensors, metrics.jsonl)
      gallery/          F_A's outputs on a few test images (cells shown in the report only)
      result.json       the cell's scores, one record per test set (written atomically)
      stage.json        the cell's stage record (imgsteal.pipeline.stage): its settings, and "done"
                        once result.json is complete

A done cell is never recomputed; a cell with a surrogate checkpoint resumes its training; a cell
with a trained surrogate but not done is only evaluated again; a cell made with other settings is
refused (see imgsteal.pipeline.stage).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgsteal.data.augment import Augmentation
from imgsteal.experiments.config import NO_DEFENSE, ExperimentConfig, TaskConfig, task_settings
from imgsteal.files import atomic_write_text
from imgsteal.pipeline.stage import SettingsChanged, Stage, stage_state

RESULT_FILE = "result.json"


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
    defense: str = NO_DEFENSE
    attack: str = "paper"
    budget: int | None = None  # queries trained on; None = every pair of the fraction
    arch: str | None = None  # surrogate architecture; None = the task's
    selection: str = "random"  # how the queries were chosen

    @property
    def key(self) -> str:
        """Folder name inside the task's folder: 'f050-flip-s1' for the paper's grid, with a suffix per
        other axis away from its default, e.g. 'f100-none-s0-dwatermark' or 'f100-none-s0-afew-shot-b4'."""
        key = f"f{fraction_label(self.fraction)}-{self.augmentation}-s{self.seed}"
        for tag, value, default in (("d", self.defense, NO_DEFENSE), ("a", self.attack, "paper"),
                                    ("b", self.budget, None), ("m", self.arch, None), ("q", self.selection, "random")):
            if value != default:
                key += f"-{tag}{value}"
        return key

    @property
    def id(self) -> str:
        return f"{self.task}/{self.key}"

    def folder(self, out: str | Path) -> Path:
        return Path(out) / "cells" / self.task / self.key

    def as_dict(self) -> dict[str, Any]:
        return {"task": self.task, "fraction": self.fraction, "augmentation": self.augmentation, "seed": self.seed,
                "defense": self.defense, "attack": self.attack, "budget": self.budget, "arch": self.arch,
                "selection": self.selection}


def task_cells(cfg: ExperimentConfig, task: TaskConfig) -> list[GridCell]:
    """The task's cells: every defence x selection x attack x architecture x seed x augmentation x
    fraction x budget, seed-major within each so that a partly run experiment already holds whole
    curves for its first seeds. Augmentations other than `none` run only at `augmentation_fractions`
    when the grid sets it."""
    grid = cfg.task_grid(task)
    archs = grid.surrogates or [None]
    cells = []
    for defense, selection, attack, arch in itertools.product(grid.defenses, grid.selections, grid.attacks, archs):
        arch = None if arch == task.surrogate_settings()["arch"] else arch
        for seed in grid.seed_list():
            for aug in grid.augmentations:
                for fraction in grid.fractions:
                    if aug is not Augmentation.none and grid.augmentation_fractions is not None \
                            and fraction not in grid.augmentation_fractions:
                        continue
                    for budget in grid.budget_list():
                        cells.append(GridCell(task.name, fraction, Augmentation(aug).value, seed, defense, attack,
                                              budget, arch, selection))
    return cells


def expand_grid(cfg: ExperimentConfig) -> list[GridCell]:
    """All cells of the experiment, task by task."""
    return [cell for task in cfg.tasks for cell in task_cells(cfg, task)]


# --------------------------------------------------------------------------- cell state on disk


def cell_settings(cfg: ExperimentConfig, cell: GridCell) -> dict[str, Any]:
    """What a cell's numbers depend on: the task's settings, its defences and the cell's coordinates."""
    return {**task_settings(cfg, cfg.task(cell.task)), "defense": cfg.defense_setup(cell.defense).model_dump(mode="json"),
            "cell": cell.as_dict()}


def cell_stage(cfg: ExperimentConfig, cell: GridCell, out: str | Path) -> Stage:
    """The cell's stage record (raises SettingsChanged when the folder was made with other settings)."""
    return Stage(cell.folder(out), "cell", cell_settings(cfg, cell))


def is_done(cell: GridCell, out: str | Path) -> bool:
    folder = cell.folder(out)
    return stage_state(folder) == "done" and (folder / RESULT_FILE).is_file()


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


def mark_done(cfg: ExperimentConfig, cell: GridCell, out: str | Path, result: dict[str, Any]) -> None:
    """Write the cell's result, then mark its stage done (both atomically, in that order)."""
    stage = cell_stage(cfg, cell, out)
    atomic_write_text(cell.folder(out) / RESULT_FILE, json.dumps(result, indent=2, default=float))
    stage.finish(seconds=float(result.get("train_seconds", 0)) + float(result.get("eval_seconds", 0)))


def read_result(cell: GridCell, out: str | Path) -> dict[str, Any]:
    return json.loads((cell.folder(out) / RESULT_FILE).read_text(encoding="utf-8"))


def stale_cells(cfg: ExperimentConfig, cells: list[GridCell], out: str | Path) -> list[str]:
    """Cells begun or finished with other settings than the config's: 'cell (changed: ...)'."""
    stale = []
    for cell in cells:
        try:
            cell_stage(cfg, cell, out)
        except SettingsChanged as exc:
            changed = str(exc).split("(changed: ", 1)[-1].split(")", 1)[0]
            stale.append(f"{cell.id} (changed: {changed})")
    return stale


def check_not_stale(cfg: ExperimentConfig, cells: list[GridCell], out: str | Path) -> None:
    """Refuse to mix results of different settings in one experiment folder."""
    stale = stale_cells(cfg, cells, out)
    if stale:
        shown = "; ".join(stale[:5]) + (f"; and {len(stale) - 5} more" if len(stale) > 5 else "")
        raise SettingsChanged(f"{out} holds cells computed with other settings: {shown}. "
                              "Use another --out folder for the new settings (or delete those cells).")
