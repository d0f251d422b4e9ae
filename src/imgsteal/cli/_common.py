"""Helpers shared by the command modules: turning library errors into clean CLI exits."""

from __future__ import annotations

import contextlib
from typing import Iterator

import typer


class UserError(Exception):
    """An error caused by the user's input or environment; shown as a one-line message, no traceback."""


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Show expected failures (bad paths, bad images, missing weights) as `error: ...` and exit 2."""
    from imgsteal.data.images import ImageReadError
    from imgsteal.errors import ImgstealError

    try:
        yield
    except (UserError, ImgstealError, ImageReadError, FileNotFoundError, FileExistsError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from None
