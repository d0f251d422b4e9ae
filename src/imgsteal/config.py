"""Reading typed YAML configs: one loader, so every config file fails the same clear way."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from imgsteal.errors import ImgstealError

M = TypeVar("M", bound=BaseModel)


def load_yaml_config(path: str | Path, model: type[M], what: str, error: type[ImgstealError] = ImgstealError,
                     overrides: dict | None = None) -> M:
    """Read `path` as YAML and validate it as `model`; `overrides` replace top-level keys.

    Raises `error` (an ImgstealError) naming the file and, for invalid fields, each field's path.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise error(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a mapping at the top level")
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise error(f"{path} is not a valid {what}:\n" + "\n".join(lines)) from None
