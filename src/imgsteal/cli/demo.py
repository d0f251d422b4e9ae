"""`imgsteal demo`: the whole attack on the bundled images, on CPU, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imgsteal.cli._common import user_errors


def demo(
    task: Optional[str] = typer.Option(None, help="sr or style; default: both"),
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="where the experiment, report.html and results.json go"),
    quiet: bool = typer.Option(False, help="no progress bars"),
    train_victim: bool = typer.Option(False, "--train-victim", help="train the victims from scratch instead of "
                                      "using the shipped super-resolution victim (a few minutes more)"),
) -> None:
    """Train a victim, steal it through its black-box interface, and report how close the copy is.

    The demo is the experiment preset `preset:demo` (see `imgsteal experiment run preset:demo`).
    """
    with user_errors():
        from imgsteal.demo import run_demo

        run_demo(out, tasks=(task,) if task else None, progress=not quiet, train_victim=train_victim)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
