"""Name -> network class, so a checkpoint's JSON (`arch`, `arch_kwargs`) can rebuild its network."""

from __future__ import annotations

import importlib
from typing import Any, Callable, TypeVar

from torch import nn

_REGISTRY: dict[str, type[nn.Module]] = {}
# Modules that hold registered architectures; imported on first lookup so the registry is complete.
_ARCH_MODULES = (
    "imgsteal.models.srresnet",
    "imgsteal.models.discriminators",
    "imgsteal.models.unet",
    "imgsteal.models.patchgan",
    "imgsteal.models.resnet_generator",
    "imgsteal.models.ugatit",
    "imgsteal.models.edsr",
    "imgsteal.models.rrdbnet",
    "imgsteal.models.msrresnet",
)

T = TypeVar("T", bound=type[nn.Module])


def register_model(name: str) -> Callable[[T], T]:
    """Class decorator: make `name` buildable by `build_model`."""

    def decorate(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"architecture {name!r} registered twice")
        _REGISTRY[name] = cls
        return cls

    return decorate


def _load_all() -> None:
    for module in _ARCH_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:  # a real import error inside an existing module
                raise


def registered_models() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate a registered architecture by name with keyword arguments."""
    _load_all()
    if name not in _REGISTRY:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    module = _REGISTRY[name](**kwargs)
    # Recorded so a checkpoint can rebuild exactly this network (see train.checkpoint).
    module.build_spec = {"arch": name, "kwargs": dict(kwargs)}
    return module
