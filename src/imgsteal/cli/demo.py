"""`imgsteal demo`: the whole attack on the bundled images, on CPU, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imgsteal.cli._common import UserError, user_errors


def demo(
    task: Optional[str] = typer.Option(None, help="sr or style; default: every setting"),
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="where the runs, report.html and results.json go"),
) -> None:
    """Train a victim, steal it through its black-box interface, and report how close the copy is."""
    with user_errors():
        from imgsteal.demo import DEMO_TASKS, run_demo

        if task is not None and task not in DEMO_TASKS:
            raise UserError(f"--task must be one of {', '.join(DEMO_TASKS)}")
        run_demo(out, tasks=(task,) if task else DEMO_TASKS)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
