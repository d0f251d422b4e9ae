"""The experiment's HTML report: tables, plots, costs and, per task, a gallery across fractions."""

from __future__ import annotations

from pathlib import Path

from imgsteal.experiments.aggregate import (
    Key, Stat, TaskSummary, base_augmentation, cost_table, metric_info, pct, table6, task_table, victim_lines,
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
        from imgsteal.experiments.runner import base_values

        cell = GridCell(summary.name, fraction, aug, seed, **base_values(cfg, task))
        images = read_result(cell, out).get("gallery") if is_done(cell, out) else None
        if images:
            shown.append((fraction, images))
    if not shown:
        return [], [], []
    n = min(len(images) for _, images in shown)
    truth = task.kind_spec.has_truth
    columns = [task.kind_spec.input_label, "victim F_V"]
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


def training_length(task) -> str:
    """How long each cell's surrogate trains, and whether that depends on its share of the data."""
    steps = task.surrogate.get("steps")
    if steps:
        return (f"every cell trains its surrogate for the same {steps} optimisation steps, whatever its share of the "
                "data (compute-matched: the curves measure data, not compute)")
    epochs = task.surrogate.get("epochs", "the default number of")
    return (f"every cell trains its surrogate for {epochs} epochs over its own pairs, so a cell with a quarter of the "
            "data also gets a quarter of the optimisation steps (the curves mix data and compute; set "
            "`surrogate.steps` for a fixed number of steps)")


def defense_table(cfg: ExperimentConfig, records: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Per task, defence entry and test set: (B) PSNR and SSIM of the surrogates trained on that entry's
    answers (mean ± std over seeds, at the largest fraction without augmentation)."""
    from imgsteal.experiments.aggregate import Stat

    header = ["Task", "Defences", "Test set", "Fraction", "(B) PSNR (dB)", "(B) SSIM", "Surrogates"]
    rows = []
    for task in cfg.tasks:
        grid = cfg.task_grid(task)
        mine = [r for r in records if r["task"] == task.name and r["augmentation"] == "none" and r.get("attack", "paper")
                == grid.attacks[0] and r.get("budget") is None and r.get("arch") is None]
        if not mine:
            continue
        fraction = max(r["fraction"] for r in mine)
        for defense in grid.defenses:
            label = cfg.defense_setup(defense).label
            for test_set in task.test_sets:
                chosen = [r for r in mine if r["defense"] == defense and r["fraction"] == fraction and r["test_set"] == test_set]
                if not chosen:
                    continue
                psnr = Stat.of(r["metrics"].get("psnr", {}).get("B", float("nan")) for r in chosen)
                ssim = Stat.of(r["metrics"].get("ssim", {}).get("B", float("nan")) for r in chosen)
                rows.append([task.display_title, f"{defense} ({label})" if label != defense else defense, test_set,
                             pct(fraction), psnr.text(2), ssim.text(3), str(len(chosen))])
    return header, rows


def budget_panels(cfg: ExperimentConfig, records: list[dict]) -> list:
    """(title, lines, baseline, metric) per task with a budgets axis, for its first test set: PSNR for
    super-resolution (the attacks' own yardstick), the main metric otherwise. Tasks that attack the
    same victim, scored on the same test set (e.g. the same task with packed queries), share one
    panel: the later task's lines are labelled with its name."""
    from imgsteal.experiments.budgets import baseline_value, budget_lines

    panels: dict[tuple, tuple] = {}
    for task in cfg.tasks:
        grid = cfg.task_grid(task)
        if not grid.budgets:
            continue
        metric = "psnr" if task.kind_spec.has_truth else ("ssim" if task.main_metric == "fid" else task.main_metric)
        test_set = next(iter(task.test_sets))
        lines = budget_lines(records, task.name, test_set, metric, grid.defenses[0])
        if not lines:
            continue
        key = (task.victim.model_dump_json(), task.test_sets[test_set], metric)
        if key in panels:
            for line in lines:
                line.label = f"{line.label} [{task.name}]"
            panels[key][1].extend(lines)
        else:
            panels[key] = (f"{task.display_title}: {test_set}", lines,
                           baseline_value(records, task.name, test_set, metric), metric)
    return list(panels.values())


def budget_section(report: Report, cfg: ExperimentConfig, out: Path, records: list[dict], figure: Path | None) -> None:
    """What a copy costs: fidelity vs queries (figure), queries and dollars to reach given fidelities,
    and the copies at each budget."""
    from imgsteal.experiments.budgets import default_targets, reach_table

    report.heading("What a copy costs: fidelity against queries")
    report.text("Each line is one way to steal (attack method, surrogate architecture, query selection): the copy's "
                "(B) score against the victim at each query budget, mean ± std over seeds; every cell trains the "
                "same number of steps, so the lines measure queries, not compute. The dotted line is doing nothing "
                "(bicubic upscaling or the unstyled input against the victim).")
    if figure is not None:
        report.figure(figure.relative_to(out).as_posix(), "Fidelity of the copy against the number of queries (bottom) "
                                                          f"and their price at ${cfg.price_usd:g} per query (top).")
    for title, lines, baseline, metric in budget_panels(cfg, records):
        header, rows = reach_table(lines, default_targets(lines, baseline), metric, cfg.price_usd)
        if len(header) > 1:
            report.table(header, rows, caption=f"{title}: queries (and dollars) each attack needs to reach a fidelity")
    for task in cfg.tasks:
        grid = cfg.task_grid(task)
        if not grid.budgets:
            continue
        for attack in grid.attacks:
            cells = [GridCell(task.name, 1.0, "none", grid.seed_list()[0], grid.defenses[0], attack, b, None,
                             grid.selections[0]) for b in grid.budget_list()]
            shown = [(c, read_result(c, out).get("gallery")) for c in cells if is_done(c, out)]
            shown = [(c, g) for c, g in shown if g]
            if not shown:
                continue
            n = min(len(g) for _, g in shown)
            columns = [task.kind_spec.input_label, "victim F_V"] + [
                f"F_A, {'all' if not c.budget else c.budget} {'query' if c.budget == 1 else 'queries'}" for c, _ in shown]
            rows = []
            for i in range(n):
                row = [f"tasks/{task.name}/gallery/{i:02d}_input.png", f"tasks/{task.name}/gallery/{i:02d}_victim.png"]
                row += [g[i] for _, g in shown]
                if all((out / p).is_file() for p in row):
                    rows.append(row)
            if rows:
                report.gallery(columns, rows, title=f"{task.display_title}: copies made by {attack} at each budget")


def build_report(cfg: ExperimentConfig, out: Path, summaries: list[TaskSummary], stats: dict[Key, Stat],
                 progress: dict[str, tuple[int, int]], figures: dict[str, Path], records: list[dict] | None = None) -> Report:
    """progress: task -> (finished cells, cells); figures: name -> PNG path inside `out`; records: every
    finished cell's records, of every defence entry (for the defence table)."""
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
                     ", ".join(a.value for a in grid.augmentations), str(len(grid.seed_list())), ", ".join(grid.defenses),
                     f"{progress[task.name][0]} / {progress[task.name][1]}"])
    report.table(["Task", "Kind", "Fractions", "Augmentations", "Seeds", "Defences", "Cells done"], rows, caption="Grid")
    for task in cfg.tasks:
        report.text(f"{task.display_title}: {training_length(task)}.")
    if any(len(cfg.task_grid(t).defenses) > 1 for t in cfg.tasks) and records:
        header, rows = defense_table(cfg, records)
        if rows:
            report.heading("Defences: how well surrogates copy the victim through each defended API")
            report.table(header, rows, caption="Surrogates trained on the answers of the API with those defences on, "
                                               "scored against the undefended victim; mean ± std over seeds")

    if any(cfg.task_grid(t).budgets for t in cfg.tasks) and records:
        budget_section(report, cfg, out, records, figures.get("budget_curves"))

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
        for line in victim_lines(s, stats):
            report.text(line)
        report.table(*cost_table(s, cfg.price_usd),
                     caption=f"Queries and cost per fraction (${cfg.price_usd:g} per query, the paper's estimate; "
                             "the harvest prices each answer by its pixels relative to 256 x 256)")
        # Super-resolution shows Table 5's two metrics (5a SSIM, 5b PSNR); style its main metric and the paired SSIM.
        for metric in dict.fromkeys([s.metric, *(["ssim", "psnr"] if cfg.task(s.name).kind_spec.has_truth else ["ssim"])]):
            header, rows = task_table(s, stats, metric)
            if rows:
                report.table(header, rows, caption=f"{metric_info(metric).label}, mean ± std over seeds "
                                                   "(each seed's value is the mean over the test images)")
        columns, images, captions = gallery_rows(cfg, s, out)
        if images:
            report.gallery(columns, images, captions, title=f"{s.title}: outputs at each fraction")
    report.heading("Files")
    report.text("results.csv / results.json: one row per cell, seed and test set; summary.csv / summary.json: "
                "mean ± std per cell, plateaus and costs; table6.md: this report in Markdown; "
                "plots/: the figures as PNG and SVG; config.yaml: the resolved configuration.")
    return report
