"""Checkpoints: one safetensors file (weights, optimizer tensors, RNG) whose header also carries the JSON
metadata, plus a human-readable JSON copy beside it.

Writing is atomic (temp file + rename), so a job killed at any moment leaves the previous checkpoint
intact. Nothing is unpickled: optimizer states are flattened into tensors + JSON.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from imgsteal.errors import CheckpointError

FORMAT = "imgsteal-checkpoint/1"
META_KEY = "imgsteal"


def versions() -> dict[str, str]:
    import imgsteal

    return {"imgsteal": imgsteal.__version__, "torch": torch.__version__, "python": platform.python_version()}


def _flatten_optimizer(prefix: str, state: dict, tensors: dict[str, torch.Tensor]) -> dict:
    """Move every tensor of an optimizer state_dict into `tensors`; return the JSON-able rest."""
    rest: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for idx, param_state in state["state"].items():
        entry = {}
        for key, value in param_state.items():
            if torch.is_tensor(value):
                name = f"{prefix}.state.{idx}.{key}"
                tensors[name] = _copy(value)
                entry[key] = {"tensor": name}
            else:
                entry[key] = value
        rest["state"][str(idx)] = entry
    return rest


def _unflatten_optimizer(rest: dict, tensors: dict[str, torch.Tensor]) -> dict:
    state = {}
    for idx, entry in rest["state"].items():
        state[int(idx)] = {
            key: tensors[value["tensor"]] if isinstance(value, dict) and "tensor" in value else value
            for key, value in entry.items()
        }
    return {"state": state, "param_groups": rest["param_groups"]}


@dataclass
class Checkpoint:
    """A loaded checkpoint: `meta` (JSON dict) and all tensors by name."""

    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor] = field(repr=False)
    path: Path | None = None

    def module_state(self, name: str) -> dict[str, torch.Tensor]:
        prefix = f"module.{name}."
        state = {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}
        if not state:
            raise CheckpointError(f"{self.path}: no weights for {name!r} (has: {', '.join(self.module_names())})")
        return state

    def module_names(self) -> list[str]:
        return sorted({k.split(".")[1] for k in self.tensors if k.startswith("module.")})

    def build_module(self, name: str) -> nn.Module:
        """Rebuild the registered architecture recorded for `name` and load its weights."""
        from imgsteal.models import build_model

        spec = self.meta.get("archs", {}).get(name)
        if spec is None:
            raise CheckpointError(f"{self.path}: no architecture recorded for {name!r}")
        module = build_model(spec["arch"], **spec.get("kwargs", {}))
        module.load_state_dict(self.module_state(name))
        return module.eval()


@dataclass
class CheckpointSnapshot:
    """Everything a checkpoint file will hold, copied to the CPU: training can go on (and change
    the live weights) while it is written."""

    path: Path
    tensors: dict[str, torch.Tensor] = field(repr=False)
    header: dict[str, Any]
    meta: dict[str, Any]


def _copy(value: torch.Tensor) -> torch.Tensor:
    # Always a copy, also of CPU tensors, which .cpu() would return as they are.
    return value.detach().to("cpu", copy=True).contiguous()


def snapshot_checkpoint(
    path: str | Path,
    meta: dict[str, Any],
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
    extra_state: dict[str, Any] | None = None,
) -> CheckpointSnapshot:
    """Copy the state `save_checkpoint` writes (arguments as there); write it with `write_checkpoint`."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        for key, value in module.state_dict().items():
            tensors[f"module.{name}.{key}"] = _copy(value)
    optim_rest = {}
    for name, optimizer in (optimizers or {}).items():
        optim_rest[name] = _flatten_optimizer(f"optim.{name}", optimizer.state_dict(), tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    full_meta = {"format": FORMAT, **meta, "versions": versions(), "modules": sorted(modules)}
    header = {**full_meta, "optimizers": optim_rest, "extra_state": extra_state or {}}
    return CheckpointSnapshot(Path(path).with_suffix(".safetensors"), tensors, header, full_meta)


def write_checkpoint(snapshot: CheckpointSnapshot) -> Path:
    """Atomically write the snapshot's .safetensors file and its .json beside it."""
    path = snapshot.path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(snapshot.tensors, str(tmp), metadata={META_KEY: json.dumps(snapshot.header)})
    os.replace(tmp, path)
    json_path = path.with_suffix(".json")
    tmp_json = json_path.with_name(json_path.name + ".tmp")
    tmp_json.write_text(json.dumps(snapshot.meta, indent=2, sort_keys=True))
    os.replace(tmp_json, json_path)
    return path


def save_checkpoint(
    path: str | Path,
    meta: dict[str, Any],
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
    extra_state: dict[str, Any] | None = None,
) -> Path:
    """Atomically write `path` (.safetensors) and `path` with .json.

    meta: JSON-able dict (task, archs {name: {arch, kwargs}}, step, epoch, seed, ...); versions are added.
    extra_state: JSON-able trainer state (schedulers, counters); RNG states are saved automatically.
    """
    return write_checkpoint(snapshot_checkpoint(path, meta, modules, optimizers, extra_state))


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint` (CPU tensors). Raises CheckpointError."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / "model.safetensors", path / "checkpoints" / "last.safetensors"]
        found = next((c for c in candidates if c.exists()), None)
        if found is None:
            raise CheckpointError(f"{path}: no model.safetensors or checkpoints/last.safetensors in this folder")
        path = found
    given = path
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    if not path.exists():
        also = f", nor {path}" if path != given else ""
        raise CheckpointError(f"checkpoint not found: {given} (no such file or folder{also}; expected a run "
                              "folder or a .safetensors file)")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = json.loads((f.metadata() or {}).get(META_KEY, "null"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an imgsteal checkpoint")
    return Checkpoint(meta=header, tensors=tensors, path=path)


def restore_training_state(
    ckpt: Checkpoint,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
) -> dict[str, Any]:
    """Load module weights, optimizer states and the torch RNG into live objects; return extra_state."""
    for name, module in modules.items():
        module.load_state_dict(ckpt.module_state(name))
    for name, optimizer in optimizers.items():
        rest = ckpt.meta.get("optimizers", {}).get(name)
        if rest is None:
            raise CheckpointError(f"{ckpt.path}: no optimizer state for {name!r}")
        optimizer.load_state_dict(_unflatten_optimizer(rest, ckpt.tensors))
    if "rng.torch" in ckpt.tensors:
        torch.set_rng_state(ckpt.tensors["rng.torch"])
    return ckpt.meta.get("extra_state", {})
