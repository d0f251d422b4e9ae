"""Command-line flags generated from pydantic option models, so a flag's name, help and default are
declared once, in the model (`Field(description=...)`), and never restated in a command."""

from __future__ import annotations

import inspect
import types
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union, get_args, get_origin

import typer
from pydantic import BaseModel
from pydantic_core import PydanticUndefined


def _flag_type(annotation: Any) -> Any:
    """A type Typer can parse for a field (pydantic validates the value afterwards)."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return _flag_type(args[0]) if len(args) == 1 else str
    if origin is Literal or (inspect.isclass(annotation) and issubclass(annotation, Enum)):
        return str
    return annotation if annotation in (int, float, bool, str, Path) else str


def _choices(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return "".join(_choices(a) for a in get_args(annotation) if a is not type(None))
    if origin is Literal:
        return "; one of " + ", ".join(map(str, get_args(annotation)))
    if inspect.isclass(annotation) and issubclass(annotation, Enum):
        return "; one of " + ", ".join(e.value for e in annotation)
    return ""


def model_parameters(model: type[BaseModel], prefix: str, flag_prefix: str | None = None,
                     flags: dict[str, str] | None = None) -> list[inspect.Parameter]:
    """One keyword parameter `<prefix><field>` per field of `model` (default None = not given), whose
    typer.Option is `--<flag_prefix>-<field>` (flag_prefix defaults to prefix; or flags[field]) with the
    field's description, choices and default. A non-empty flag prefix also labels the help text."""
    params = []
    flag_prefix = prefix if flag_prefix is None else flag_prefix
    label = flag_prefix.rstrip("_")
    for field, info in model.model_fields.items():
        default = info.default
        if default is PydanticUndefined and info.default_factory is not None:
            default = info.default_factory()
        shown = "" if default in (None, PydanticUndefined) else f" (default {getattr(default, 'value', default)})"
        text = (info.description or field.replace("_", " ")) + _choices(info.annotation) + shown
        option_type = _flag_type(info.annotation)
        flag = (flags or {}).get(field) or f"--{flag_prefix.replace('_', '-')}{field.replace('_', '-')}"
        decls = [f"{flag}/--no-{flag[2:]}"] if option_type is bool else [flag]
        params.append(inspect.Parameter(
            f"{prefix}{field}", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[option_type],
            default=typer.Option(None, *decls, help=f"{label}: {text}" if label else text, show_default=False)))
    return params


def given(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The `<prefix><field>` values the user gave (not None), keyed by field name."""
    return {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix) and v is not None}


def with_parameters(command: Callable, extra: list[inspect.Parameter]) -> Callable:
    """`command` whose signature also has `extra` keyword parameters (Typer reads `__signature__`);
    the command receives them in its `**options`."""
    signature = inspect.signature(command)
    params = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    command.__signature__ = signature.replace(parameters=params + extra)
    return command
