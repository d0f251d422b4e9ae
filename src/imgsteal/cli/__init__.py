"""The `imgsteal` command: a thin Typer shell over the library.

Each module in this package owns one stage's commands and exposes `register(app)`; this file only
collects them, so adding a stage never touches another stage's file. Commands import the library
lazily, which keeps `imgsteal --help` fast.
"""

from __future__ import annotations

import importlib
import pkgutil

import typer

app = typer.Typer(
    name="imgsteal",
    help="Run, measure and defend against model-extraction attacks on image-to-image translation models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    # Plain click help: help strings are text, not Rich markup, so "[sr]", "[style]" or "[paper: 20]"
    # print as written (Rich ate them), and flags show no "<bool>" type. Applies to every sub-command.
    rich_markup_mode=None,
    context_settings={"max_content_width": 120},  # click's default wraps help at 80 columns even on wide terminals
)


def _register_all() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(app)


_register_all()


def main() -> None:
    app()
