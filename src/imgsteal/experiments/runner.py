"""Running an experiment: check the data, run each task's shared stages, run the cells, aggregate.

    OUT/config.yaml            the resolved config this folder was run with
    OUT/tasks/<task>/          shared stages (victim, pair store, victim cache, gallery)
    OUT/cells/<task>/<cell>/   one surrogate and its scores per cell (DONE when finished)
    OUT/results.csv|json       one row per cell, seed and test set
    OUT/summary.csv|json       mean ± std per cell, plateaus, costs
    OUT/table6.md              Table 6 and the per-task tables in Markdown
    OUT/plots/                 Figure 7 and the augmentation curves (PNG and SVG)
    OUT/report.html            everything above, with galleries

Running again continues: finished cells are never recomputed, a half-trained cell resumes from its
checkpoint, and the outputs are rebuilt from every finished cell.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from imgsteal.errors import ImgstealError
from imgsteal.experiments.config import (
    NO_DEFENSE, ExperimentConfig, TaskConfig, check_datasets, task_settings, victim_training_config,
)
from imgsteal.experiments.grid import (
    GridCell, cell_stage, cell_state, check_not_stale, expand_grid, is_done, mark_done, read_result, task_cells,
)

Log = Callable[[str], None]


def _print(message: str) -> None:
    print(f"[experiment] {message}", flush=True)


class ExperimentFailed(ImgstealError):
    """Some cells failed; the others finished and the outputs were written from them."""


@dataclass
class ExperimentRun:
    out: Path
    cells: int
    already_done: int
    finished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    stage_seconds: float = 0.0
    assets: dict[str, TaskAssets] = field(default_factory=dict)


@dataclass
class TaskAssets:
    """What the cells of a task share: the victim model, one pair store per defence setup, the cache
    of F_V's answers and the gallery."""

    folder: Path
    victim_model: Path | str  # a model file, or the URL of the victim's API
    stores: dict[tuple[str, str], Path]  # (defence entry, query selection) -> pair store
    victim_cache: Path
    harvests: dict[str, dict] = field(default_factory=dict)  # defence entry -> harvest report
    gallery: list[dict] = field(default_factory=list)  # paths relative to the experiment folder
    gallery_inputs: list[str] = field(default_factory=list)  # the test images behind the gallery
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> seconds of the run that computed it


def base_values(cfg: ExperimentConfig, task: TaskConfig) -> dict:
    """The values of the axes beyond the paper's grid that its figures and tables are drawn at."""
    grid = cfg.task_grid(task)
    budgets = grid.budget_list()
    return {"defense": grid.defenses[0], "attack": grid.attacks[0], "arch": None, "selection": grid.selections[0],
            "budget": None if None in budgets else max(budgets)}


def is_base_record(cfg: ExperimentConfig, record: dict) -> bool:
    base = base_values(cfg, cfg.task(record["task"]))
    return all(record.get(k, {"attack": "paper", "selection": "random"}.get(k)) == v for k, v in base.items())


def work_size(task: TaskConfig) -> int:
    """[style] The resolution surrogates train and are scored at (SurrogateConfig.size)."""
    from imgsteal.attack.surrogate import SurrogateConfig

    return int(task.surrogate.get("size", SurrogateConfig.model_fields["size"].default))


def defended_folder(folder: Path, defense: str, selection: str = "random") -> Path:
    """Where a harvest lives: the task folder itself when undefended with every input queried;
    defended/<entry>/ for a defended API; selected/<strategy>/ below either for chosen queries."""
    where = folder if defense == NO_DEFENSE else folder / "defended" / defense
    return where if selection == "random" else where / "selected" / selection


def prepare_task(cfg: ExperimentConfig, task: TaskConfig, resolved: dict[str, list[Path]], out: Path,
                 harvests_needed: list[tuple[str, str]], progress: bool, log: Log) -> TaskAssets:
    """Run the task's shared stages (victim, fingerprint, one harvest per (defence entry, query
    selection) in `harvests_needed`, F_V's answers, the gallery); returns what its cells need."""
    from imgsteal.pipeline.stages import HarvestPlan, ensure_fingerprint, ensure_harvest, ensure_victim, write_task_gallery
    from imgsteal.pipeline.victim_cache import VictimCache

    folder = Path(out) / "tasks" / task.name
    folder.mkdir(parents=True, exist_ok=True)
    settings = task_settings(cfg, task)
    tell = lambda msg: log(f"{task.name}: {msg}")  # noqa: E731
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    url_victim = {"scale": task.victim.scale, "api_spec": cfg.victim_api_spec(task)}
    if task.victim.url is not None:
        victim_model: Path | str = task.victim.url
    elif task.victim.model is not None:
        victim_model = Path(cfg.expand(task.victim.model))
    else:
        victim_model = ensure_victim(folder, task.kind, settings["victim"], victim_training_config(cfg, task), progress, tell)
    seconds["victim"] = time.perf_counter() - started
    stores, harvests = {}, {}
    for defense, selection in harvests_needed:
        setup = cfg.defense_setup(defense)
        if "fingerprint" in setup.defenses and setup.options("fingerprint").model is None:
            fp_settings = {k: (cfg.expand(v) if isinstance(v, str) else [cfg.expand(x) for x in v] if isinstance(v, list) else v)
                           for k, v in (cfg.fingerprint_training or {}).items()}
            fp_settings.setdefault("device", task.device)
            setup = setup.merged({"fingerprint": {"model": str(ensure_fingerprint(folder, fp_settings, progress, tell))}})
        where = defended_folder(folder, defense, selection)
        chosen = selection != "random"
        inputs = resolved["harvest"]
        if task.harvest.budget is not None and not chosen:
            # fewer queries than images: a seeded random sample of the pool, not its first files by name
            import torch

            order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(0)).tolist()
            inputs = [inputs[i] for i in order]
        plan = HarvestPlan(store=where / "pairs", inputs=inputs, victim_model=victim_model,
                           transport=task.harvest.oracle, defenses=setup,
                           service_dir=where / "service", client=cfg.client,
                           downscale=task.harvest.downscale, resize=task.harvest.resize,
                           budget=cfg.task_grid(task).max_budget() if chosen else task.harvest.budget,
                           pack_pixels=task.harvest.pack_pixels, api_spec=url_victim["api_spec"],
                           price=cfg.price_usd, concurrency=task.harvest.concurrency, device=task.device,
                           selection=selection)
        harvest_settings = {"victim": settings["victim"], "harvest": settings["harvest"],
                            "defense": cfg.defense_setup(defense).model_dump(mode="json"), "client": cfg.client,
                            **({"selection": selection, "budget": plan.budget} if chosen else {})}
        label = "/".join(x for x in (defense if defense != NO_DEFENSE else "", selection if chosen else "") if x)
        key = (defense, selection)
        harvests[key] = ensure_harvest(plan, harvest_settings, progress,
                                       lambda msg, lab=label: tell(f"[{lab}] {msg}" if lab else msg))
        stores[key] = plan.store
        seconds[f"harvest:{label or 'none'}"] = harvests[key].get("seconds", 0.0)
    victim = VictimCache(victim_model, folder / "victim_cache", task.device, **url_victim)
    test_sets = {name: resolved[f"test:{name}"] for name in task.test_sets}
    task.kind_spec.warm_victim(victim, test_sets, work_size(task), progress)
    gallery_paths = next(iter(test_sets.values()))[: task.evaluation.gallery_images]
    gallery = write_task_gallery(task.kind, folder, Path(out), victim, gallery_paths, work_size(task))
    return TaskAssets(folder=folder, victim_model=victim_model, stores=stores, victim_cache=folder / "victim_cache",
                      harvests=harvests, gallery=gallery, gallery_inputs=[str(p) for p in gallery_paths], seconds=seconds)


def make_jobs(cfg: ExperimentConfig, out: Path, resolved: dict, assets: dict, cells: list[GridCell], progress: bool) -> list:
    """One CellJob per cell to run, with absolute paths (workers may start elsewhere)."""
    from imgsteal.experiments.aggregate import base_augmentation
    from imgsteal.pipeline.stages import CellJob

    jobs = []
    for cell in cells:
        task = cfg.task(cell.task)
        a = assets[cell.task]
        grid = cfg.task_grid(task)
        # The report's galleries: the first seed of the base grid, and of every attack and budget there.
        base = base_values(cfg, task)
        shown = cell.defense == base["defense"] and cell.arch == base["arch"] and cell.selection == base["selection"] \
            and cell.seed == grid.seed_list()[0] and \
            cell.augmentation == base_augmentation([a.value for a in grid.augmentations])
        jobs.append(CellJob(
            cell=cell, kind=task.kind, out=str(out), store=str(a.stores[(cell.defense, cell.selection)].resolve()),
            victim_model=a.victim_model if isinstance(a.victim_model, str) else str(Path(a.victim_model).resolve()),
            victim_scale=task.victim.scale, victim_api_spec=cfg.victim_api_spec(task),
            surrogate=task.surrogate_settings(),
            test_sets={name: [str(p.resolve()) for p in resolved[task.name][f"test:{name}"]] for name in task.test_sets},
            victim_cache=str(a.victim_cache.resolve()),
            style_set=[str(p.resolve()) for p in resolved[task.name].get("style", [])] or None,
            work_size=work_size(task),
            evaluation={**task.evaluation.model_dump(mode="json"), "inception_weights":
                        cfg.expand(task.evaluation.inception_weights) if task.evaluation.inception_weights else None},
            gallery_inputs=[str(Path(p).resolve()) for p in a.gallery_inputs] if shown else [],
            device=task.device, processes=task.processes_per_cell, progress=progress,
        ))
    return jobs


def time_left(elapsed: float, done: int, total: int) -> str:
    """', about N min left' from the pace so far (cells of larger fractions take longer, so a rough
    guide); '' once every cell is done."""
    if done >= total or done <= 0:
        return ""
    seconds = elapsed / done * (total - done)
    return f", about {seconds:.0f} s left" if seconds < 90 else f", about {seconds / 60:.0f} min left"


def run_experiment(cfg: ExperimentConfig, out: str | Path, *, executor: str = "local", workers: int = 1,
                   ray_address: str | None = None, progress: bool = True, log: Log = _print) -> ExperimentRun:
    """Run (or continue) the experiment into `out`; returns what happened.

    Raises ConfigError before any training when a dataset or model path is missing, ImgstealError
    when `out` holds results of other settings, and ExperimentFailed (after writing the outputs of
    the finished cells) when some cells failed.
    """
    from imgsteal.experiments.executors import make_executor
    from imgsteal.pipeline.stages import run_cell

    started = time.perf_counter()
    out = Path(out).resolve()
    resolved = check_datasets(cfg)  # every path, before any training
    cells = expand_grid(cfg)
    check_not_stale(cfg, cells, out)
    pool = make_executor(executor, workers, ray_address)  # fails now if Ray is missing, not after the victim
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(cfg.dump_yaml(), encoding="utf-8")
    pending = [c for c in cells if not is_done(c, out)]
    run = ExperimentRun(out=out, cells=len(cells), already_done=len(cells) - len(pending))
    log(f"{cfg.name}: {len(cells)} cells, {run.already_done} already finished, {len(pending)} to run "
        f"({pool.name} executor{f', {workers} workers' if workers > 1 else ''})")
    try:
        assets = {}
        for task in cfg.tasks:
            if any(c.task == task.name for c in pending) or not (out / "tasks" / task.name / "gallery").is_dir():
                needed = list(dict.fromkeys((c.defense, c.selection) for c in pending if c.task == task.name))
                assets[task.name] = prepare_task(cfg, task, resolved[task.name], out, needed or [(NO_DEFENSE, "random")],
                                                 progress, log)
        run.assets = assets
        run.stage_seconds = time.perf_counter() - started
        jobs = make_jobs(cfg, out, resolved, assets, pending, progress and not getattr(pool, "parallel", False))
        for job in jobs:  # recorded before training, so a half-trained cell is never resumed with other settings
            cell_stage(cfg, job.cell, out).begin()
        cells_started = time.perf_counter()
        for i, (job, result, error) in enumerate(pool.run(run_cell, jobs), start=1):
            cell = job.cell
            left = time_left(time.perf_counter() - cells_started, i, len(jobs))
            if error is not None:
                run.failed[cell.id] = error
                cell.folder(out).mkdir(parents=True, exist_ok=True)
                (cell.folder(out) / "error.txt").write_text(error + "\n", encoding="utf-8")
                log(f"[{i}/{len(jobs)}] {cell.id} FAILED: {error.splitlines()[-1] if error else ''}{left}")
                continue
            mark_done(cfg, cell, out, result)
            (cell.folder(out) / "error.txt").unlink(missing_ok=True)
            run.finished.append(cell.id)
            log(f"[{i}/{len(jobs)}] {cell.id} done: train {result['train_seconds']:.0f} s, "
                f"evaluate {result['eval_seconds']:.0f} s, {result['queries']} queries{left}")
    finally:
        pool.close()
    run.outputs = write_outputs(cfg, out)
    run.seconds = time.perf_counter() - started
    log(f"outputs in {out}: report.html, results.csv, table6.md, plots/ ({run.seconds:.0f} s)")
    if run.failed:
        shown = "; ".join(f"{k} (see {out / 'cells' / k / 'error.txt'})" for k in list(run.failed)[:3])
        raise ExperimentFailed(f"{len(run.failed)} of {len(jobs)} cells failed: {shown}. "
                               "The others are finished; run the experiment again to retry the failed cells.")
    return run


def write_outputs(cfg: ExperimentConfig, out: str | Path) -> dict[str, Path]:
    """Aggregate every finished cell into results, summary, tables, plots and report.html."""
    from imgsteal.experiments.aggregate import aggregate, records_from_results, summarize_task, write_records, write_summary
    from imgsteal.experiments.plots import plot_augmentations, plot_fraction_curves
    from imgsteal.experiments.report import build_report

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    progress, results = {}, []
    for task in cfg.tasks:
        cells = task_cells(cfg, task)
        done = [c for c in cells if is_done(c, out)]
        progress[task.name] = (len(done), len(cells))
        results += [read_result(c, out) for c in done]
    all_records = records_from_results(results)
    outputs: dict[str, Path] = {}
    outputs["results_csv"], outputs["results_json"] = write_records(all_records, out, cfg.price_usd)
    # The curves, plateaus and Table 6 are of each task's base cells (first defence entry, attack,
    # architecture and selection; all queries); the other axes have their own tables and figures.
    records = [r for r in all_records if is_base_record(cfg, r)]
    stats = aggregate(records)
    summaries = [summarize_task(cfg, task, stats, records) for task in cfg.tasks]
    outputs.update(write_summary(cfg, summaries, stats, out))
    figures: dict[str, Path] = {}
    if records:
        figures["fraction_curves"] = plot_fraction_curves(summaries, stats, out / "plots")[0]
        figures["augmentations"] = plot_augmentations(summaries, stats, out / "plots")[0]
    outputs.update(figures)
    if any(cfg.task_grid(t).budgets for t in cfg.tasks) and all_records:
        from imgsteal.experiments.report import budget_panels
        from imgsteal.experiments.budgets import plot_budget_curves

        panels = budget_panels(cfg, all_records)
        if panels:
            figures["budget_curves"] = plot_budget_curves(panels, cfg.price_usd, out / "plots")[0]
    report = build_report(cfg, out, summaries, stats, progress, figures, all_records)
    outputs["report"] = report.write(out / "report.html")
    outputs["table6"] = out / "table6.md"  # the same report in Markdown: every table is laid out once
    outputs["table6"].write_text(report.markdown(), encoding="utf-8")
    return outputs


def experiment_status(cfg: ExperimentConfig, out: str | Path) -> str:
    """A text overview: shared stages and, per task, cells done / training / pending by augmentation and fraction."""
    from imgsteal.experiments.aggregate import pct
    from imgsteal.pipeline.stage import stage_facts, stage_state

    out = Path(out)
    lines = [f"experiment {cfg.name} in {out}"]
    for task in cfg.tasks:
        cells = task_cells(cfg, task)
        states = {c: cell_state(c, out) for c in cells}
        counts = {s: sum(1 for v in states.values() if v == s) for s in ("done", "evaluating", "training", "pending")}
        folder = out / "tasks" / task.name
        victim = "given" if task.victim.model else {"done": "trained", "running": "training"}.get(
            stage_state(folder / "victim"), "not trained")
        pairs = stage_facts(folder / "pairs").get("pairs")
        lines.append(f"\n{task.display_title} [{task.name}]: {counts['done']}/{len(cells)} cells done, "
                     f"{counts['training'] + counts['evaluating']} in progress, {counts['pending']} pending; "
                     f"victim {victim}; pairs {'harvested: ' + str(pairs) if pairs else 'not harvested'}")
        grid = cfg.task_grid(task)
        seeds = len(grid.seed_list())
        header = f"  {'augmentation':<13}" + "".join(f"{pct(f):>10}" for f in grid.fractions)
        lines.append(header)
        for aug in grid.augmentations:
            row = f"  {aug.value:<13}"
            for fraction in grid.fractions:
                mine = [c for c in cells if c.augmentation == aug.value and c.fraction == fraction]
                if not mine:
                    row += f"{'-':>10}"
                    continue
                done = sum(1 for c in mine if states[c] == "done")
                busy = sum(1 for c in mine if states[c] in ("training", "evaluating"))
                row += f"{f'{done}/{seeds}' + ('*' if busy else ''):>10}"
            lines.append(row)
        failed = [c.id for c in cells if states[c] != "done" and (c.folder(out) / "error.txt").is_file()]
        if failed:
            lines.append(f"  failed last time: {', '.join(failed)}")
    lines.append("\n(seeds done per cell; * = a seed is part-way through)")
    return "\n".join(lines)
