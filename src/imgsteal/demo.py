"""`imgsteal demo`: the whole attack on the bundled images, on CPU, offline.

The demo is the experiment preset `preset:demo` (src/imgsteal/presets/demo.yaml) run by the same
pipeline as any experiment (victim -> harvest through the victim's HTTP API -> surrogates -> A/B/C),
into OUT/experiment; this module only reads the finished cells back and writes the demo's own
summary: OUT/report.html and OUT/results.json, with a headline per kind that says whether the stolen
copy beats doing nothing. Every stage resumes: re-running the demo continues where it stopped.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from imgsteal.report.html import Report

DEMO_PRESET = "preset:demo"
TRAIN_VICTIMS_PRESET = "preset:demo-train-victims"  # --train-victim: no shipped weights
EXPERIMENT_FOLDER = "experiment"
Log = Callable[[str], None]


def _print(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def demo_config(tasks: tuple[str, ...] | None = None, overrides: dict | None = None, train_victim: bool = False):
    """The demo's experiment config, restricted to `tasks` (default: all), with `overrides` merged in
    (same rules as a config's `base`, e.g. {"tasks": {"sr": {"surrogate": {"epochs": 1}}}});
    train_victim: train every victim from scratch instead of using the shipped one."""
    from imgsteal.config import merge_config, read_raw_config, validate_config
    from imgsteal.errors import ImgstealError
    from imgsteal.experiments.config import ConfigError, ExperimentConfig

    preset = TRAIN_VICTIMS_PRESET if train_victim else DEMO_PRESET
    raw = read_raw_config(preset, "demo preset", ConfigError)
    names = [t["name"] for t in raw["tasks"]]
    unknown = [t for t in tasks or () if t not in names]
    if unknown:
        raise ImgstealError(f"unknown demo setting {', '.join(unknown)}; choose from {', '.join(names)}")
    selection = {"tasks": {name: {} for name in (tasks or names)}}
    raw = merge_config(merge_config(raw, selection, ConfigError), overrides or {}, ConfigError)
    return validate_config(raw, ExperimentConfig, "experiment config", preset, ConfigError)


def _mean_std(values: list[float]) -> dict[str, float]:
    finite = [v for v in values if math.isfinite(v)]
    mean = float(np.mean(finite)) if finite else float("nan")
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
    return {"mean": mean, "std": std, "runs": values}


def task_results(cfg, task, out: Path) -> dict[str, Any]:
    """The demo's results for one task, read from the experiment's finished cells and stages."""
    from imgsteal.experiments.grid import is_done, read_result, task_cells
    from imgsteal.pipeline.stage import stage_facts

    folder = out / "tasks" / task.name
    results = [read_result(c, out) for c in task_cells(cfg, task) if is_done(c, out)]
    test_sets: dict[str, Any] = {}
    for name in task.test_sets:
        recs = [r for res in results for r in res["records"] if r["test_set"] == name]
        if not recs:
            continue
        metrics = {m: {k: {**_mean_std([r["metrics"][m][k] for r in recs]),
                           "image_std": float(np.mean([r.get("image_std", {}).get(m, {}).get(k, float("nan")) for r in recs]))}
                       for k in recs[0]["metrics"][m]}
                   for m in recs[0]["metrics"]}
        test_sets[name] = {"n_images": recs[0]["n_images"], **metrics}
    harvest = stage_facts(folder / "pairs")
    timings = {"victim_s": _stage_seconds(folder / "victim"), "harvest_s": _stage_seconds(folder / "pairs"),
               "surrogates_s": sum(float(r.get("train_seconds", 0)) for r in results),
               "evaluate_s": sum(float(r.get("eval_seconds", 0)) for r in results)}
    return {"kind": task.kind, "title": task.display_title, "seeds": [r["cell"]["seed"] for r in results],
            "test_sets": test_sets, "harvest": harvest, "timings": timings,
            "headline": headline(task.kind_spec, test_sets)}


def _stage_seconds(folder: Path) -> float:
    """Seconds of the run that computed a stage (kept when a later run reuses it)."""
    path = folder / "stage.json"
    return float(json.loads(path.read_text()).get("seconds", 0.0)) if path.is_file() else 0.0


def headline(kind, test_sets: dict[str, Any]) -> dict[str, Any]:
    """Per test set: PSNR/SSIM of the surrogate vs the victim next to the do-nothing baseline (bicubic
    upscaling, or the unstyled input), and whether the copy beats it; for super-resolution also the
    victim vs the truth next to bicubic vs the truth."""
    baseline = "bicubic_vs_victim" if kind.baseline == "bicubic" else "input_vs_victim"
    rows = {}
    for name, cells in test_sets.items():
        row = {
            "psnr_surrogate_vs_victim": cells["psnr"]["B"]["mean"],
            f"psnr_{kind.baseline}_vs_victim": cells["psnr"][baseline]["mean"],
            "ssim_surrogate_vs_victim": cells["ssim"]["B"]["mean"],
            f"ssim_{kind.baseline}_vs_victim": cells["ssim"][baseline]["mean"],
            f"surrogate_beats_{kind.baseline}": cells["psnr"]["B"]["mean"] > cells["psnr"][baseline]["mean"],
        }
        if "bicubic_vs_hr" in cells["psnr"]:
            row.update(psnr_victim_vs_truth=cells["psnr"]["A"]["mean"], psnr_bicubic_vs_truth=cells["psnr"]["bicubic_vs_hr"]["mean"],
                       victim_beats_bicubic=cells["psnr"]["A"]["mean"] >= cells["psnr"]["bicubic_vs_hr"]["mean"])
        rows[name] = row
    return rows


def _headline_text(kind, name: str, row: dict[str, Any]) -> list[str]:
    base = kind.baseline
    verdict = ("closer to the victim than" if row[f"surrogate_beats_{base}"] else "NOT closer to the victim than")
    what = "bicubic upscaling" if base == "bicubic" else "the unstyled input"
    lines = [f"{name}: PSNR(F_A, F_V) = {row['psnr_surrogate_vs_victim']:.2f} dB vs PSNR({base}, F_V) = "
             f"{row[f'psnr_{base}_vs_victim']:.2f} dB; SSIM {row['ssim_surrogate_vs_victim']:.3f} vs "
             f"{row[f'ssim_{base}_vs_victim']:.3f}: the surrogate is {verdict} {what}."]
    if "victim_beats_bicubic" in row:
        if row["victim_beats_bicubic"]:
            lines.append(f"{name}: the victim itself scores {row['psnr_victim_vs_truth']:.2f} dB against the truth, "
                         f"bicubic upscaling {row['psnr_bicubic_vs_truth']:.2f} dB.")
        else:
            lines.append(f"{name}: warning: the victim scores {row['psnr_victim_vs_truth']:.2f} dB against the truth, "
                         f"worse than bicubic upscaling ({row['psnr_bicubic_vs_truth']:.2f} dB): the demo copies a "
                         "model that is worse than doing nothing.")
    return lines


def _add_task(report: Report, cfg, task, payload: dict[str, Any], out: Path) -> None:
    from imgsteal.experiments.aggregate import aggregate, records_from_results, summarize_task
    from imgsteal.experiments.grid import is_done, read_result, task_cells
    from imgsteal.experiments.report import gallery_rows

    kind = task.kind_spec
    victim = task.victim.train["arch"] if task.victim.train else "shipped"
    report.heading(f"{task.display_title}: {victim} victim, {task.surrogate_settings()['arch']} surrogate")
    for name, row in payload["headline"].items():
        for line in _headline_text(kind, name, row):
            report.text(line)
    h = payload["harvest"]
    if h:
        report.text(f"Harvest: {h.get('stored_pairs')} pairs in the store, {h.get('queried')} queried by the run that "
                    f"made it, cost ${h.get('total_usd', 0):.3f} at ${cfg.price_usd:g} per 256x256 answer.")
    # F_A's cells vary over seeds; F_V's and the baseline's do not (one model), so theirs show the spread
    # over the test images instead.
    base = "bicubic" if kind.baseline == "bicubic" else "input"
    header = ["Test set", "Images", "(A) F_V vs truth", f"{base} vs truth", "(B) F_A vs F_V", f"{base} vs F_V",
              "(C) F_A vs truth"]
    for metric, label, digits in (("psnr", "PSNR (dB)", 2), ("ssim", "SSIM", 3)):
        rows = []
        for name, cells in payload["test_sets"].items():
            per = cells[metric]

            def fmt(key: str, over_images: bool = False) -> str:
                c = per.get(key)
                if c is None:
                    return "-"
                spread = c["image_std"] if over_images else c["std"]
                return f"{c['mean']:.{digits}f} ± {spread:.{digits}f}"

            rows.append([name, str(cells["n_images"]), fmt("A", True), fmt(f"{base}_vs_hr", True), fmt("B"),
                         fmt(f"{base}_vs_victim", True), fmt("C")])
        report.table(header, rows, caption=f"{label}: F_A columns mean ± std over {len(payload['seeds'])} surrogate "
                                           "seeds (each seed's value is the mean over the test images); F_V and "
                                           "baseline columns mean ± std over the test images")
    records = records_from_results(read_result(c, out) for c in task_cells(cfg, task) if is_done(c, out))
    columns, images, captions = gallery_rows(cfg, summarize_task(cfg, task, aggregate(records), records), out)
    if images:
        prefix = f"{EXPERIMENT_FOLDER}/"
        report.gallery(columns, [[prefix + p for p in row] for row in images], captions, title=f"{task.display_title}: outputs")
    t = payload["timings"]
    report.text("Time per stage (of the run that computed it): " + ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in t.items()) + ".")


def run_demo(out: str | Path = "runs/demo", tasks: tuple[str, ...] | None = None, progress: bool = True,
             overrides: dict | None = None, log: Log = _print, train_victim: bool = False) -> dict:
    """Run the demo for `tasks` (sr, style; default both) into `out`; writes out/report.html and
    out/results.json and returns the results. Re-running resumes and reuses every finished stage.
    train_victim: train the victims from scratch (preset demo-train-victims) instead of using the
    shipped super-resolution victim."""
    from imgsteal.experiments.runner import run_experiment

    out = Path(out)
    cfg = demo_config(tasks, overrides, train_victim)
    experiment = out / EXPERIMENT_FOLDER
    before = {t.name: _stage_seconds(experiment / "tasks" / t.name / "victim") > 0 for t in cfg.tasks}
    run = run_experiment(cfg, experiment, progress=progress, log=log)
    report = Report("imgsteal demo: model extraction of image-to-image translation")
    report.text("Everything below ran on the bundled images (see imgsteal/demo_data/MANIFEST.csv for sources and "
                "licenses). The victim is reachable only as a black box: images in, images out. The full experiment "
                f"report, with every table, is {EXPERIMENT_FOLDER}/report.html.")
    results: dict[str, Any] = {}
    for task in cfg.tasks:
        results[task.name] = task_results(cfg, task, experiment)
        _add_task(report, cfg, task, results[task.name], experiment)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    report.write(out / "report.html")
    reused = [t for t, was in before.items() if was]
    if reused or run.already_done:
        log(f"reused: the victims of {', '.join(reused) or 'none'} and {run.already_done} finished surrogate cell(s); "
            "their timings are those of the run that computed them")
    for name, payload in results.items():
        for test_set, row in payload["headline"].items():
            log(f"{name} / {test_set}: " + _headline_text(cfg.task(name).kind_spec, test_set, row)[0].split(": ", 1)[1])
    log(f"report: {out / 'report.html'}  results: {out / 'results.json'}")
    return results
