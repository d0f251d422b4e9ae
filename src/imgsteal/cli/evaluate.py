"""`imgsteal evaluate`: experiments A/B/C, written as Markdown, CSV, JSON and an HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imgsteal.cli._common import UserError, user_errors


def parse_test_sets(specs: list[str]) -> dict[str, list[Path]]:
    """NAME=DIR_OR_SPEC items -> {name: image paths}."""
    from imgsteal.data.layouts import resolve_images

    sets = {}
    for item in specs:
        name, sep, spec = item.partition("=")
        if not sep or not name or not spec:
            example = f"--test mine={item}" if item and not sep else "--test DIV2K=div2k:/data/DIV2K:valid"
            raise UserError(f"--test takes NAME=DIR (or NAME=DATASET_SPEC): the name labels the test set in the "
                            f"tables, e.g. {example}; got {item!r}")
        sets[name] = resolve_images(spec)
    return sets


def evaluate(
    task: str = typer.Option(..., "--kind", "--task", help="the kind of translation: sr or style (--task: the old name)"),
    victim: Path = typer.Option(..., help="victim model (run folder or .safetensors)"),
    surrogate: list[Path] = typer.Option(..., help="surrogate models, one per seed; repeatable"),
    test: list[str] = typer.Option(..., help="NAME=DIR test sets of HR images (sr) or photos (style); repeatable"),
    out: Path = typer.Option(Path("runs/evaluate"), "--out", "-o"),
    crop_border: Optional[int] = typer.Option(None, min=0, help="[sr] pixels cropped from each border before scoring "
                                              "(default: the scale factor)"),
    y_channel: bool = typer.Option(False, help="[sr] score the BT.601 luma channel instead of RGB"),
    style_set: str = typer.Option("", help="[style] the style images S_X (folder or dataset spec)"),
    inception_weights: str = typer.Option("", envvar="IMGSTEAL_INCEPTION_WEIGHTS", help="[style] FID Inception weights file"),
    size: int = typer.Option(0, help="[style] working resolution (0: the size the surrogates were trained at)"),
    device: str = typer.Option("auto", help="auto (cuda if present), cpu, cuda, cuda:1 ..."),
) -> None:
    """Compare victim and surrogates: (A) F_V vs truth, (B) F_A vs F_V, (C) F_A vs truth."""
    with user_errors():
        from imgsteal.data.images import counting_skipped

        with counting_skipped() as skipped:
            _evaluate(task, victim, surrogate, test, out, crop_border, y_channel, style_set, inception_weights, size,
                      device)
        counts = skipped.counts()
        if any(counts.values()):
            typer.echo(f"input files skipped: {counts['unreadable']} unreadable, {counts['not_images']} not images "
                       "by extension (each named above)")


def _evaluate(task, victim, surrogate, test, out, crop_border, y_channel, style_set, inception_weights, size,
              device) -> None:
    """The evaluation itself (see `evaluate`), with the command's options."""
    from imgsteal.report.html import Report
    from imgsteal.victim.inference import load_translator

    if task not in ("sr", "style"):
        raise UserError(f"--task must be sr or style, not {task!r}")
    test_sets = parse_test_sets(test)
    fv = load_translator(victim, device)
    fas = [load_translator(s, device) for s in surrogate]
    report = Report(f"imgsteal evaluation ({task})")
    if task == "sr":
        from imgsteal.evaluate.sr import SRConvention, evaluate_sr, sr_report_blocks, sr_tables

        convention = SRConvention(crop_border=fv.scale if crop_border is None else crop_border, y_channel=y_channel)
        results, _ = evaluate_sr(fv, fas, test_sets, out, scale=fv.scale, convention=convention)
        sr_report_blocks(report, results)
        typer.echo(sr_tables(results).markdown(title=False))
    elif task == "style":
        from imgsteal.evaluate.style import evaluate_style_cli

        evaluate_style_cli(fv, fas, test_sets, style_set, out, report, inception_weights or None, size=size or None,
                           device=device)
    else:
        raise UserError(f"--task must be sr or style, not {task!r}")
    report.write(out / "report.html")
    typer.echo(f"written: {out}/table.md, results.csv, results.json, report.html")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
