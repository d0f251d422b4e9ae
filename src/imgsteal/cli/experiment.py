"""`imgsteal experiment run|status|report`: the paper's grids (data fraction x augmentation x seed)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imgsteal.cli._common import UserError, user_errors

experiment_app = typer.Typer(help="Grids of surrogate trainings over data fractions, augmentations and seeds (paper, section 6).",
                             no_args_is_help=True)

DEFAULT_OUT_ROOT = Path("runs/experiments")


def _load(config: Path, data_root: Optional[str]):
    from imgsteal.experiments.config import load_config

    return load_config(config, data_root)


def _out(cfg, out: Optional[Path]) -> Path:
    return out if out is not None else DEFAULT_OUT_ROOT / cfg.name


@experiment_app.command("run")
def run(
    config: Path = typer.Argument(..., help="experiment YAML (see configs/paper and configs/demo)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="experiment folder (default: runs/experiments/<name>)"),
    executor: str = typer.Option("local", help="local (this machine) or ray (a Ray cluster)"),
    workers: int = typer.Option(1, help="local: cells run by N processes at once; ray without --ray-address: CPUs of the local Ray instance"),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster address (auto, HOST:PORT, ray://HOST:10001); default: a local Ray instance"),
    data_root: Optional[str] = typer.Option(None, envvar="IMGSTEAL_DATA_ROOT", help="replaces {data_root} in the config's dataset paths"),
    quiet: bool = typer.Option(False, help="no progress bars"),
) -> None:
    """Run (or continue) an experiment: shared stages, then every unfinished cell, then tables, plots and report."""
    with user_errors():
        from imgsteal.experiments.runner import run_experiment

        cfg = _load(config, data_root)
        result = run_experiment(cfg, _out(cfg, out), executor=executor, workers=workers, ray_address=ray_address,
                                progress=not quiet)
        typer.echo(f"{len(result.finished)} cells run, {result.already_done} were already finished; "
                   f"report: {result.outputs['report']}")


@experiment_app.command("status")
def status(
    config: Optional[Path] = typer.Argument(None, help="experiment YAML, or the experiment folder itself (default: OUT/config.yaml)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="experiment folder"),
    data_root: Optional[str] = typer.Option(None, envvar="IMGSTEAL_DATA_ROOT"),
) -> None:
    """Show the grid's progress: shared stages, and finished seeds per augmentation and fraction."""
    with user_errors():
        from imgsteal.experiments.runner import experiment_status

        if config is not None and config.is_dir() and out is None:
            config, out = None, config  # `imgsteal experiment status runs/experiments/x`
        if config is None and out is None:
            raise UserError("give the experiment YAML, --out FOLDER, or both")
        cfg = _load(config if config is not None else out / "config.yaml", data_root)
        typer.echo(experiment_status(cfg, _out(cfg, out)))


@experiment_app.command("report")
def report(
    out: Path = typer.Argument(..., help="experiment folder"),
) -> None:
    """Rebuild results, tables, plots and report.html from the finished cells (e.g. while a run goes on)."""
    with user_errors():
        from imgsteal.experiments.config import load_config
        from imgsteal.experiments.runner import write_outputs

        if not (out / "config.yaml").is_file():
            raise UserError(f"{out} is not an experiment folder (no config.yaml)")
        outputs = write_outputs(load_config(out / "config.yaml"), out)
        typer.echo(f"report: {outputs['report']}")


def register(app: typer.Typer) -> None:
    app.add_typer(experiment_app, name="experiment")
