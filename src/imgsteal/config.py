"""Reading typed YAML configs: one loader, so every config file fails the same clear way.

A config may start from another one: `base: preset:NAME` (a preset shipped in imgsteal/presets) or
`base: other.yaml` (relative to the config's folder). The file's own keys are merged over the base's:
mappings merge key by key, other values replace, and `key: null` removes the base's value. A `tasks` mapping (task name -> changes) picks those
tasks from the base's `tasks` list, in that order, and merges the changes into each; `from: OTHER` in a
task's changes starts a new task of that name from the base's task OTHER (e.g. the same task harvested
another way).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from imgsteal.errors import ImgstealError

M = TypeVar("M", bound=BaseModel)
PRESET_PREFIX = "preset:"


def preset_names() -> list[str]:
    """The presets shipped with imgsteal (usable as `base: preset:NAME` or `imgsteal experiment run preset:NAME`)."""
    folder = resources.files("imgsteal") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read(path: str | Path, what: str, error: type[ImgstealError], seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The raw mapping of a config file, with its `base` chain merged in."""
    if str(path).startswith(PRESET_PREFIX):
        name = str(path)[len(PRESET_PREFIX):]
        if name not in preset_names():
            raise error(f"unknown preset {name!r}; known: {', '.join(preset_names())}")
        path = Path(str(resources.files("imgsteal") / "presets" / f"{name}.yaml"))
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} not found: {path}")
    if path.resolve() in seen:
        raise error(f"{path}: `base` refers back to itself")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise error(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: expected a mapping at the top level")
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise error(f"{path}: `base` names one config (preset:NAME or a path)")
    if not base.startswith(PRESET_PREFIX) and not Path(base).is_absolute():
        base = str(path.parent / base)
    return merge_config(_read(base, f"base of {path}", error, seen + (path.resolve(),)), raw, error)


def merge_config(base: dict[str, Any], changes: dict[str, Any], error: type[ImgstealError] = ImgstealError) -> dict[str, Any]:
    """`changes` merged over `base` (see the module docstring)."""
    merged = dict(base)
    for key, value in changes.items():
        if value is None:  # `key: null` removes the base's value (the field's default applies)
            merged.pop(key, None)
        elif key == "tasks" and isinstance(value, dict) and isinstance(base.get("tasks"), list):
            by_name = {t.get("name"): t for t in base["tasks"] if isinstance(t, dict)}
            origin = {n: (v or {}).get("from", n) if isinstance(v, dict) or v is None else n for n, v in value.items()}
            missing = [f"{n}" if o == n else f"{o} (the `from` of {n})" for n, o in origin.items() if o not in by_name]
            if missing:
                raise error(f"tasks {', '.join(map(str, missing))} are not in the base config "
                            f"(it has {', '.join(map(str, by_name))})")
            merged["tasks"] = [merge_config({**by_name[origin[n]], "name": n},
                                            {k: x for k, x in (v or {}).items() if k != "from"}, error)
                               for n, v in value.items()]
        elif isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = merge_config(base[key], value, error)
        else:
            merged[key] = value
    return merged


def validate_config(raw: dict[str, Any], model: type[M], what: str, source: str,
                    error: type[ImgstealError] = ImgstealError) -> M:
    """Validate a raw mapping as `model`; `error` naming `source` and each invalid field's path."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise error(f"{source} is not a valid {what}:\n" + "\n".join(lines)) from None


def load_yaml_config(path: str | Path, model: type[M], what: str, error: type[ImgstealError] = ImgstealError,
                     overrides: dict | None = None) -> M:
    """Read `path` (a file or preset:NAME) as YAML and validate it as `model`; `overrides` replace
    top-level keys (None values are ignored).

    Raises `error` (an ImgstealError) naming the file and, for invalid fields, each field's path.
    """
    raw = _read(path, what, error)
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return validate_config(raw, model, what, str(path), error)


def read_raw_config(path: str | Path, what: str = "config", error: type[ImgstealError] = ImgstealError) -> dict[str, Any]:
    """The raw mapping of a config file or preset, its `base` chain merged in (not validated)."""
    return _read(path, what, error)
