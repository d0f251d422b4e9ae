"""From the cells' scores to the paper's numbers: mean +- std over seeds, the plateau, Table 6, costs.

A record is one (cell, test set): task, fraction, augmentation, seed, test_set, queries, cost_usd
and metrics {metric: {experiment: value}} where the experiments are A (F_V vs truth), B (F_A vs
F_V), C (F_A vs truth) and, for super-resolution, the bicubic baselines.

The plateau of a curve (main metric vs fraction, augmentation none) is the smallest fraction whose
mean is within one standard deviation (over seeds, of the best fraction) of the best mean. The
fraction "before the plateau" - where the paper's Table 6 compares augmentations - is the largest
fraction of the grid below the task's plateau (the plateau itself when it is the smallest).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from imgsteal.experiments.config import ExperimentConfig, TaskConfig

EXPERIMENTS = ("A", "B", "C")


@dataclass(frozen=True)
class MetricInfo:
    label: str
    higher_is_better: bool
    digits: int


METRICS = {
    "psnr": MetricInfo("PSNR (dB)", True, 2),
    "ssim": MetricInfo("SSIM", True, 3),
    "fid": MetricInfo("FID", False, 2),
    "kid": MetricInfo("KID", False, 4),
}


def metric_info(name: str) -> MetricInfo:
    return METRICS.get(name, MetricInfo(name, True, 3))


def pct(fraction: float) -> str:
    """0.25 -> '25%'."""
    return f"{fraction * 100:g}%"


@dataclass
class Stat:
    """Mean and sample standard deviation over seeds (std 0 for a single seed)."""

    mean: float
    std: float
    n: int
    values: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, values: Iterable[float]) -> "Stat":
        vals = [float(v) for v in values]
        finite = [v for v in vals if math.isfinite(v)]
        if not finite:
            return cls(float("nan"), float("nan"), len(vals), vals)
        std = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
        return cls(float(np.mean(finite)), std, len(vals), vals)

    def text(self, digits: int = 2) -> str:
        if not math.isfinite(self.mean):
            return "n/a"
        if self.n == 1:
            return f"{self.mean:.{digits}f} (1 seed)"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


# --------------------------------------------------------------------------- records


def records_from_results(results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cell results (as run_cell returns them) -> one record per (cell, test set)."""
    records = []
    for result in results:
        cell = result["cell"]
        for rec in result["records"]:
            records.append({
                "task": cell["task"], "fraction": cell["fraction"], "augmentation": cell["augmentation"],
                "seed": cell["seed"], "defense": cell.get("defense", "none"), "attack": cell.get("attack", "paper"),
                "budget": cell.get("budget"), "arch": cell.get("arch"), "selection": cell.get("selection", "random"),
                "cell": cell["id"], "test_set": rec["test_set"], "n_images": rec["n_images"],
                "queries": result["queries"], "cost_usd": result["cost_usd"],
                "train_seconds": result.get("train_seconds"), "eval_seconds": result.get("eval_seconds"),
                "metrics": rec["metrics"], "image_std": rec.get("image_std", {}),
            })
    return records


def csv_rows(records: list[dict[str, Any]], price: float) -> list[dict[str, Any]]:
    """Wide rows for results.csv: coordinates, cost, then one column per metric_experiment."""
    rows = []
    for rec in records:
        row = {k: rec.get(k) for k in ("task", "fraction", "augmentation", "seed", "defense", "attack", "budget", "arch",
                                       "selection", "test_set", "n_images", "queries")}
        row["cost_usd"] = round(rec["cost_usd"], 6)
        row["flat_cost_usd"] = round(rec["queries"] * price, 6)
        for metric, per in rec["metrics"].items():
            for experiment, value in per.items():
                row[f"{metric}_{experiment}"] = value
        row["train_seconds"], row["eval_seconds"] = rec["train_seconds"], rec["eval_seconds"]
        rows.append(row)
    return rows


def write_records(records: list[dict[str, Any]], out: Path, price: float) -> tuple[Path, Path]:
    """results.csv (wide, one row per cell, seed and test set) and results.json (the records)."""
    rows = csv_rows(records, price)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    csv_path, json_path = out / "results.csv", out / "results.json"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    json_path.write_text(json.dumps({"price_usd": price, "records": records}, indent=2, default=float), encoding="utf-8")
    return csv_path, json_path


# --------------------------------------------------------------------------- aggregation

Key = tuple[str, float, str, str, str, str]  # task, fraction, augmentation, test_set, metric, experiment


def aggregate(records: list[dict[str, Any]]) -> dict[Key, Stat]:
    """Mean +- std over seeds for every (task, fraction, augmentation, test set, metric, experiment)."""
    groups: dict[Key, list[float]] = {}
    for rec in records:
        for metric, per in rec["metrics"].items():
            for experiment, value in per.items():
                key = (rec["task"], rec["fraction"], rec["augmentation"], rec["test_set"], metric, experiment)
                groups.setdefault(key, []).append(value)
    return {key: Stat.of(values) for key, values in sorted(groups.items())}


def summary_rows(stats: dict[Key, Stat]) -> list[dict[str, Any]]:
    return [{"task": k[0], "fraction": k[1], "augmentation": k[2], "test_set": k[3], "metric": k[4], "experiment": k[5],
             "mean": s.mean, "std": s.std, "seeds": s.n} for k, s in stats.items()]


def base_augmentation(augmentations: list[str]) -> str:
    """The augmentation of the plain runs (Figure 7): none when the grid has it."""
    return "none" if "none" in augmentations else augmentations[0]


def find_plateau(curve: dict[float, Stat], higher_is_better: bool) -> tuple[float, float]:
    """(plateau fraction, best fraction) of a metric-vs-fraction curve; see the module docstring."""
    usable = {f: s for f, s in curve.items() if math.isfinite(s.mean)}
    if not usable:
        raise ValueError("no finite values on the curve")
    pick = max if higher_is_better else min
    best = pick(usable, key=lambda f: usable[f].mean)
    tolerance = usable[best].std if math.isfinite(usable[best].std) else 0.0
    within = [f for f, s in usable.items() if abs(s.mean - usable[best].mean) <= tolerance + 1e-12]
    return min(within), best


def fraction_before(plateau: float, fractions: list[float]) -> float:
    """The largest grid fraction below the plateau, or the plateau when none is below it."""
    below = [f for f in fractions if f < plateau]
    return max(below) if below else plateau


@dataclass
class Plateau:
    test_set: str
    experiment: str
    metric: str
    fraction: float
    best_fraction: float
    curve: dict[float, Stat]


@dataclass
class TaskSummary:
    """What the report says about one task."""

    name: str
    title: str
    metric: str
    fractions: list[float]
    augmentations: list[str]
    test_sets: list[str]
    plateaus: list[Plateau]
    plateau: float | None  # the task's plateau: the largest (C) plateau over its test sets
    before_plateau: float | None
    costs: list[dict[str, Any]]

    def statement(self) -> str:
        """One sentence per task stating where its (B) and (C) curves plateau."""
        info = metric_info(self.metric)
        if not self.plateaus:
            return f"{self.title}: no finished cells yet."
        if len(self.fractions) == 1:
            return f"{self.title}: a single fraction ({pct(self.fractions[0])}), so no curve and no plateau to find."
        parts = []
        for p in self.plateaus:
            best = p.curve[p.best_fraction]
            at = p.curve[p.fraction]
            if p.fraction == max(self.fractions):
                verdict = f"still improving at {pct(p.fraction)}"
            else:
                verdict = f"plateau at {pct(p.fraction)} ({at.text(info.digits)}, within one std of the best, {best.text(info.digits)} at {pct(p.best_fraction)})"
            parts.append(f"({p.experiment}) {info.label} on {p.test_set}: {verdict}")
        tail = ""
        if self.plateau is not None:
            tail = (f" Task plateau (largest over the test sets and experiments (C), else (B)): {pct(self.plateau)}; "
                    f"augmentations are compared at {pct(self.before_plateau)}, before the plateau.")
        return f"{self.title}: " + "; ".join(parts) + "." + tail


def cost_by_fraction(records: list[dict[str, Any]], task: str, price: float) -> list[dict[str, Any]]:
    """Per fraction: queries used, the flat estimate (queries x price, the paper's way) and the cost
    the harvest recorded (price scaled by answer pixels / 256^2), averaged over the seeds' subsets."""
    per: dict[float, dict[tuple, tuple[int, float]]] = {}
    for rec in records:
        if rec["task"] == task:
            per.setdefault(rec["fraction"], {})[(rec["seed"], rec["augmentation"])] = (rec["queries"], rec["cost_usd"])
    rows = []
    for fraction in sorted(per):
        subsets = list(per[fraction].values())
        queries = round(float(np.mean([q for q, _ in subsets])))
        rows.append({"fraction": fraction, "queries": queries, "flat_cost_usd": queries * price,
                     "harvest_cost_usd": float(np.mean([c for _, c in subsets]))})
    return rows


def summarize_task(cfg: ExperimentConfig, task: TaskConfig, stats: dict[Key, Stat], records: list[dict[str, Any]]) -> TaskSummary:
    grid = cfg.task_grid(task)
    augmentations = [a.value for a in grid.augmentations]
    base = base_augmentation(augmentations)
    metric = task.main_metric
    info = metric_info(metric)
    plateaus = []
    for test_set in task.test_sets:
        for experiment in ("B", "C"):
            curve = {f: stats[k] for f in grid.fractions
                     if (k := (task.name, f, base, test_set, metric, experiment)) in stats}
            if not curve or not any(math.isfinite(s.mean) for s in curve.values()):
                continue
            fraction, best = find_plateau(curve, info.higher_is_better)
            plateaus.append(Plateau(test_set, experiment, metric, fraction, best, curve))
    # (C) decides, as in the paper; without (C) scores (FID skipped: no Inception weights), (B) does.
    deciding = [p.fraction for p in plateaus if p.experiment == "C"] or [p.fraction for p in plateaus]
    plateau = max(deciding) if deciding else None
    before = fraction_before(plateau, grid.fractions) if plateau is not None else None
    return TaskSummary(task.name, task.display_title, metric, list(grid.fractions), augmentations,
                       list(task.test_sets), plateaus, plateau, before, cost_by_fraction(records, task.name, cfg.price_usd))


# --------------------------------------------------------------------------- tables

AUGMENTATION_TITLES = {"none": "None", "flip": "Flip", "rotation": "Rotation", "cutout": "Cutout", "contrast": "Contrast"}


def has_experiment(stats: dict[Key, Stat], task: str, metric: str, experiment: str) -> bool:
    return any(k[0] == task and k[4] == metric and k[5] == experiment for k in stats)


def table6(summaries: list[TaskSummary], stats: dict[Key, Stat]) -> tuple[list[str], list[list[str]]]:
    """Table 6: per task and test set, the main metric of (C) - or (B) when (C) was not scored - at
    the fraction before the plateau, for the plain runs (baseline) and each augmentation ('-' where
    the grid did not run it)."""
    augs = [a for a in AUGMENTATION_TITLES if a != "none" and any(a in s.augmentations for s in summaries)]
    header = ["Task", "Test set", "Metric", "Baseline (before plateau)"] + [AUGMENTATION_TITLES[a] for a in augs]
    rows = []
    for s in summaries:
        if s.before_plateau is None:
            continue
        info, base = metric_info(s.metric), base_augmentation(s.augmentations)
        experiment = "C" if has_experiment(stats, s.name, s.metric, "C") else "B"
        for test_set in s.test_sets:
            cells = []
            for aug in [base] + augs:
                stat = stats.get((s.name, s.before_plateau, aug, test_set, s.metric, experiment))
                cells.append(stat.text(info.digits) if stat else "-")
            rows.append([s.title, test_set, f"({experiment}) {info.label} at {pct(s.before_plateau)}", *cells])
    return header, rows


def task_table(summary: TaskSummary, stats: dict[Key, Stat], metric: str | None = None) -> tuple[list[str], list[list[str]]]:
    """Every (augmentation, fraction) of a task: queries, cost, and (B) / (C) of `metric` (default: the
    task's main metric) per test set."""
    metric = metric or summary.metric
    info = metric_info(metric)
    header = ["Augmentation", "Fraction", "Queries", "Cost (flat)"]
    for test_set in summary.test_sets:
        header += [f"{test_set} (B)", f"{test_set} (C)"]
    costs = {c["fraction"]: c for c in summary.costs}
    rows = []
    for aug in summary.augmentations:
        for fraction in summary.fractions:
            cells = []
            for test_set in summary.test_sets:
                for experiment in ("B", "C"):
                    stat = stats.get((summary.name, fraction, aug, test_set, metric, experiment))
                    cells.append(stat.text(info.digits) if stat else "-")
            if all(c == "-" for c in cells):
                continue
            cost = costs.get(fraction)
            rows.append([AUGMENTATION_TITLES.get(aug, aug), pct(fraction), str(cost["queries"]) if cost else "-",
                         f"${cost['flat_cost_usd']:,.2f}" if cost else "-", *cells])
    return header, rows


def _first(stats: dict[Key, Stat], task: str, test_set: str, metric: str, experiment: str) -> Stat | None:
    return next((s for k, s in stats.items() if k[0] == task and k[3] == test_set and k[4] == metric and k[5] == experiment), None)


def victim_lines(summary: TaskSummary, stats: dict[Key, Stat]) -> list[str]:
    """(A): the victim against the ground truth per test set (the same in every cell), next to the
    do-nothing baseline (bicubic upscaling vs the truth, for super-resolution), with a plain warning when
    the victim is worse than the baseline: then the attack copies a model that is worse than doing nothing."""
    lines = []
    for metric in dict.fromkeys([summary.metric, "psnr", "ssim"]):
        info = metric_info(metric)
        for test_set in summary.test_sets:
            a = _first(stats, summary.name, test_set, metric, "A")
            if a is None:
                continue
            base = _first(stats, summary.name, test_set, metric, "bicubic_vs_hr")
            line = f"(A) victim F_V vs ground truth on {test_set}, {info.label}: {a.mean:.{info.digits}f}"
            if base is not None:
                line += f"; bicubic upscaling vs ground truth: {base.mean:.{info.digits}f}"
                worse = a.mean < base.mean if info.higher_is_better else a.mean > base.mean
                if worse:
                    line += (". Warning: the victim is worse than bicubic upscaling, so this measures the theft of a "
                             "model that is worse than doing nothing")
            lines.append(line + ".")
    return lines


def cost_table(summary: TaskSummary, price: float) -> tuple[list[str], list[list[str]]]:
    header = ["Fraction", "Queries", f"Cost at ${price:g} per query", "Cost as harvested (per 256x256 px)"]
    rows = [[pct(c["fraction"]), f"{c['queries']:,}", f"${c['flat_cost_usd']:,.2f}", f"${c['harvest_cost_usd']:,.2f}"]
            for c in summary.costs]
    return header, rows


def write_summary(cfg: ExperimentConfig, summaries: list[TaskSummary], stats: dict[Key, Stat], out: Path) -> dict[str, Path]:
    """summary.csv / summary.json (aggregated cells, plateaus, costs)."""
    rows = summary_rows(stats)
    csv_path = out / "summary.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["task", "fraction", "augmentation", "test_set", "metric", "experiment",
                                               "mean", "std", "seeds"])
        writer.writeheader()
        writer.writerows(rows)
    payload = {
        "name": cfg.name, "price_usd": cfg.price_usd, "cells": rows,
        "tasks": {s.name: {"title": s.title, "metric": s.metric, "plateau": s.plateau, "before_plateau": s.before_plateau,
                           "statement": s.statement(), "costs": s.costs,
                           "plateaus": [{**{k: v for k, v in asdict(p).items() if k != "curve"},
                                         "curve": {str(f): asdict(st) for f, st in p.curve.items()}} for p in s.plateaus]}
                  for s in summaries},
    }
    json_path = out / "summary.json"
    json_path.write_text(json.dumps(payload, indent=2, default=float), encoding="utf-8")
    return {"summary_csv": csv_path, "summary_json": json_path}
