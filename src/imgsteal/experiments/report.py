"""The experiment's HTML report: tables, plots, costs and, per task, a gallery across fractions."""

from __future__ import annotations

from pathlib import Path

from imgsteal.experiments.aggregate import (
    Key, Stat, TaskSummary, base_augmentation, cost_table, metric_info, pct, table6, task_table, victim_row,
)
from imgsteal.experiments.config import ExperimentConfig
from imgsteal.experiments.grid import GridCell, is_done, read_result
from imgsteal.report.html import Report


def gallery_rows(cfg: ExperimentConfig, summary: TaskSummary, out: Path) -> tuple[list[str], list[list[str]], list[str]]:
    """(columns, rows, captions): input | F_V | F_A at each finished fraction | ground truth, for the
    plain runs of the first seed. Paths are relative to the experiment folder."""
    task = cfg.task(summary.name)
    stages = out / "tasks" / summary.name / "gallery"
    if not stages.is_dir():
        return [], [], []
    seed = cfg.task_grid(task).seed_list()[0]
    aug = base_augmentation(summary.augmentations)
    shown = []
    for fraction in summary.fractions:
        cell = GridCell(summary.name, fraction, aug, seed)
        images = read_result(cell, out).get("gallery") if is_done(cell, out) else None
        if images:
            shown.append((fraction, images))
    if not shown:
        return [], [], []
    n = min(len(images) for _, images in shown)
    truth = task.kind == "sr"
    columns = ["input" if task.kind == "style" else "LR input", "victim F_V"]
    columns += [f"F_A {pct(f)}" for f, _ in shown] + (["HR (truth)"] if truth else [])
    rows, captions = [], []
    for i in range(n):
        row = [f"tasks/{summary.name}/gallery/{i:02d}_input.png", f"tasks/{summary.name}/gallery/{i:02d}_victim.png"]
        row += [images[i] for _, images in shown]
        if truth:
            row.append(f"tasks/{summary.name}/gallery/{i:02d}_truth.png")
        if all((out / p).is_file() for p in row):
            rows.append(row)
            captions.append(f"test image {i + 1} of {summary.test_sets[0]}, seed {seed}, augmentation {aug}")
    return columns, rows, captions


def build_report(cfg: ExperimentConfig, out: Path, summaries: list[TaskSummary], stats: dict[Key, Stat],
                 progress: dict[str, tuple[int, int]], figures: dict[str, Path]) -> Report:
    """progress: task -> (finished cells, cells); figures: name -> PNG path inside `out`."""
    report = Report(f"imgsteal experiment: {cfg.name}")
    if cfg.description:
        report.text(cfg.description)
    done = sum(d for d, _ in progress.values())
    total = sum(t for _, t in progress.values())
    report.text(f"{done} of {total} cells finished. Each cell trains one surrogate F_A on a seeded random fraction "
                "of the harvested pairs, with one paired augmentation, and scores (A) F_V vs ground truth, "
                "(B) F_A vs F_V and (C) F_A vs ground truth; cells are aggregated as mean ± std over seeds.")
    rows = []
    for task in cfg.tasks:
        grid = cfg.task_grid(task)
        rows.append([task.display_title, task.kind, ", ".join(pct(f) for f in grid.fractions),
                     ", ".join(a.value for a in grid.augmentations), str(len(grid.seed_list())),
                     f"{progress[task.name][0]} / {progress[task.name][1]}"])
    report.table(["Task", "Kind", "Fractions", "Augmentations", "Seeds", "Cells done"], rows, caption="Grid")

    report.heading("Plateaus (section 6.1)")
    for s in summaries:
        report.text(s.statement())
    if "fraction_curves" in figures:
        report.figure(figures["fraction_curves"].relative_to(out).as_posix(),
                      "Figure 7: the main metric vs the fraction of data (no augmentation), mean ± std over seeds; "
                      "solid (B) F_A vs F_V, dashed (C) F_A vs ground truth, dotted (A) the victim vs ground truth, "
                      "sparse dots the baseline that (B) has to beat (bicubic or the unstyled input vs F_V).")

    header, t6 = table6(summaries, stats)
    report.heading("Augmentations before the plateau (section 6.2, Table 6)")
    if t6:
        report.table(header, t6, caption="Experiment (C) (or (B) where (C) was not scored), mean ± std over seeds")
    if "augmentations" in figures:
        report.figure(figures["augmentations"].relative_to(out).as_posix(),
                      "Experiment (C) (or (B) where (C) was not scored) vs fraction for each augmentation, "
                      "on each task's first test set.")

    for s in summaries:
        report.heading(s.title)
        line = victim_row(s, stats)
        if line:
            report.text(line)
        report.table(*cost_table(s, cfg.price_usd),
                     caption=f"Queries and cost per fraction (${cfg.price_usd:g} per query, the paper's estimate; "
                             "the harvest prices each answer by its pixels relative to 256 x 256)")
        header, rows = task_table(s, stats)
        if rows:
            report.table(header, rows, caption=f"{metric_info(s.metric).label}, mean ± std over seeds")
        columns, images, captions = gallery_rows(cfg, s, out)
        if images:
            report.gallery(columns, images, captions, title=f"{s.title}: outputs at each fraction")
    report.heading("Files")
    report.text("results.csv / results.json: one row per cell, seed and test set; summary.csv / summary.json: "
                "mean ± std per cell, plateaus and costs; table6.md: the tables above in Markdown; "
                "plots/: the figures as PNG and SVG; config.yaml: the resolved configuration.")
    return report
