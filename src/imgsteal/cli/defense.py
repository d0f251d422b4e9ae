"""`imgsteal defense evaluate CONFIG.yaml`: run the attack against the defended API, one run per defence."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imgsteal.cli._common import user_errors

defense_app = typer.Typer(help="Output defences against extraction (watermark, fingerprint, pgd) and whether they survive it.",
                          no_args_is_help=True)


@defense_app.command("evaluate")
def evaluate(
    config: Path = typer.Argument(..., help="defence evaluation YAML (see configs/defense/)"),
    out: Path = typer.Option(Path("runs/defense"), "--out", "-o", help="where runs, figures, results.json and report.html go"),
    data_root: Optional[str] = typer.Option(None, envvar="IMGSTEAL_DATA_ROOT", help="replaces {data_root} in the config"),
    quiet: bool = typer.Option(False, help="no progress bars"),
) -> None:
    """Attack the victim through its API with each defence on; report verdicts, bit accuracies and quality
    (and, with a `scorecard:` section, every defence against adaptive attacks: report.html / report.md)."""
    with user_errors():
        from imgsteal.defenses.evaluate import load_defense_config, run_defense_evaluation

        cfg = load_defense_config(config, data_root)
        run_defense_evaluation(cfg, out, progress=not quiet)


@defense_app.command("list")
def list_defenses() -> None:
    """The output defences `imgsteal serve --defense NAME` knows."""
    from imgsteal.defenses.registry import DEFENSES

    for name, spec in DEFENSES.items():
        typer.echo(f"{name}\t{spec.summary}")


def register(app: typer.Typer) -> None:
    app.add_typer(defense_app, name="defense")
