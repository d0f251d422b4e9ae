"""Public model files -> imgsteal run folders: `import_model` (and `load_foreign` for in-memory use).

Formats, told apart by their contents (never their file names):
  cyclegan       pytorch-CycleGAN-and-pix2pix generator state dicts (resnet_9/6blocks, unet_256/128)
  ugatit         UGATIT-pytorch checkpoints {genA2B, genB2A, dis*} (light or full; --direction)
  basicsr        BasicSR `params_ema`/`params`: MSRResNet (SRResNet/SRGAN), RRDBNet (ESRGAN, Real-ESRGAN)
  esrgan-old     xinntao/ESRGAN's older RRDB key schemes
  srgan-pytorch  SRGAN-PyTorch `.pth.tar` {"state_dict": ...}
  onnx           any image-to-image ONNX model (onnxruntime), contract declared on import
  torchscript    any image-to-image TorchScript model, contract declared on import

A run folder holds `import.json` (source file, SHA-256, what was detected, the contract) and the
network: `model.safetensors` (an imgsteal checkpoint, rebuilt from a registered architecture) for
torch formats, `model.onnx` / `model.torchscript` for the others.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from imgsteal.errors import CheckpointError
from imgsteal.victim.formats import basicsr, cyclegan, reading, srgan_pytorch, ugatit
from imgsteal.victim.formats.base import (FORMATS, DiscriminatorFileError, FormatMismatch, Imported, ImportOptions)
from imgsteal.victim.formats.runtime import contract_of, load_runtime, probe_scale

IMPORT_FORMAT = "imgsteal-import/1"
RUNTIME_FILES = {"onnx": "model.onnx", "torchscript": "model.torchscript"}

# Converters for weight files, in the order auto-detection tries them.
CONVERTERS: dict[str, Callable[[Any, ImportOptions], Imported]] = {
    "cyclegan": cyclegan.convert,
    "ugatit": ugatit.convert,
    "basicsr": basicsr.convert_basicsr,
    "esrgan-old": basicsr.convert_esrgan_old,
    "srgan-pytorch": srgan_pytorch.convert,
}

__all__ = ["FORMATS", "ImportOptions", "Imported", "ImportResult", "DiscriminatorFileError", "import_model",
           "load_foreign", "read_import_json"]


def _convert_weights(path: Path, obj: Any, options: ImportOptions) -> Imported:
    if isinstance(obj, dict) and isinstance(obj.get("__metadata__"), dict):
        raise CheckpointError(f"{path}: already an imgsteal checkpoint; use it directly (no import needed)")
    names = list(CONVERTERS) if options.format == "auto" else [options.format]
    misses = []
    for name in names:
        try:
            imported = CONVERTERS[name](obj, options)
        except FormatMismatch as exc:
            misses.append(str(exc))
            continue
        return _apply_overrides(imported, options)
    if options.format != "auto":
        raise CheckpointError(f"{path}: not a {options.format} file: {misses[0]}")
    raise CheckpointError(f"{path}: no known format matched. " + " | ".join(misses))


def _apply_overrides(imported: Imported, options: ImportOptions) -> Imported:
    if options.scale is not None and options.scale != imported.scale:
        raise CheckpointError(f"--scale {options.scale}, but the {imported.format} weights upscale by {imported.scale}")
    if options.kind is not None and options.kind != imported.kind:
        raise CheckpointError(f"--kind {options.kind}, but a {imported.format} {imported.arch} network is a {imported.kind} model")
    if options.input_size is not None:
        raise CheckpointError("--input-size is for ONNX/TorchScript models; torch formats record their own size rule")
    if options.input_range or options.output_range or options.channel_order:
        if "reference_range" in imported.contract:
            raise CheckpointError(f"{imported.format}: the value range is fixed by the reference code "
                                  f"({imported.contract['reference_range']} with tanh, mapped from [0, 1] internally)")
        imported.contract = contract_of(options)
    if options.size_multiple:
        imported.size_multiple = max(imported.size_multiple, options.size_multiple)
    return imported


def _runtime(path: Path, kind: str, options: ImportOptions) -> Imported:
    if options.format not in ("auto", kind):
        raise CheckpointError(f"{path}: --format {options.format}, but the file is a {kind} model")
    if kind == "onnx":
        _refuse_external_data(path)
    module = load_runtime(kind, path)
    fixed = None
    if options.input_size is not None:
        fixed = (options.input_size, options.input_size)
    elif kind == "onnx" and module.fixed_size() is not None:
        fixed = module.fixed_size()
        if fixed[0] != fixed[1]:
            raise CheckpointError(f"{path}: the ONNX model takes only {fixed[0]} x {fixed[1]} inputs; non-square sizes are not supported")
    from imgsteal.victim.formats.runtime import ContractModule

    contract = contract_of(options)
    scale = options.scale or probe_scale(ContractModule(module, contract["input_range"], contract["output_range"],
                                                        contract["channel_order"]), fixed)
    translation = options.kind or ("sr" if scale > 1 else "style")
    return Imported(module, kind, translation, scale, options.size_multiple or 1, None, {}, contract=contract,
                    input_size=fixed[0] if fixed else None, details={"runtime": kind})


def _refuse_external_data(path: Path) -> None:
    """The run folder keeps the .onnx file alone: weights in external-data files would be left behind."""
    try:
        import onnx
    except ImportError:
        return
    model = onnx.load(str(path), load_external_data=False)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise CheckpointError(f"{path}: the ONNX model keeps its weights in external-data files; merge them into one "
                              "file first: onnx.save(onnx.load(PATH), OUT, save_as_external_data=False)")


def load_foreign(path: str | Path, options: ImportOptions | None = None) -> tuple[Imported, str]:
    """Read a public model file: (Imported, container kind). Raises CheckpointError with a clear reason."""
    options = options or ImportOptions()
    if options.format not in ("auto", *FORMATS):
        raise CheckpointError(f"--format {options.format!r}: choose auto or one of {', '.join(FORMATS)}")
    path = Path(path)
    kind, obj = reading.read_weights(path)
    if kind in RUNTIME_FILES:
        return _runtime(path, kind, options), kind
    if options.format in RUNTIME_FILES:
        raise CheckpointError(f"{path}: --format {options.format}, but the file is a {kind} weights file")
    imported = _convert_weights(path, obj, options)
    return imported, kind


@dataclass
class ImportResult:
    run_dir: Path
    imported: Imported
    seconds: float
    info: dict


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def import_model(path: str | Path, out: str | Path, options: ImportOptions | None = None,
                 overwrite: bool = False, tiling: dict | None = None) -> ImportResult:
    """Import `path` into the run folder `out` (created; an existing import is replaced only with overwrite).

    tiling: TilingConfig fields recorded for the run (super-resolution: used by serve, translate, experiments).
    """
    from imgsteal.train.checkpoint import save_checkpoint

    options = options or ImportOptions()
    path, out = Path(path), Path(out)
    if (out / "import.json").exists() or (out / "model.safetensors").exists():
        if not overwrite:
            raise FileExistsError(f"{out} already holds a model; choose another --out or pass --overwrite")
    started = time.perf_counter()
    imported, kind = load_foreign(path, options)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("model.safetensors", "model.json", *RUNTIME_FILES.values()):
        (out / stale).unlink(missing_ok=True)
    source = {"path": str(path.resolve()), "sha256": _sha256(path), "bytes": path.stat().st_size, "container": kind}
    runtime = kind if kind in RUNTIME_FILES else "torch"
    info = {
        "format": IMPORT_FORMAT, "source": source, "detected": {"format": imported.format, "arch": imported.arch,
                                                                "kwargs": imported.kwargs, **imported.details},
        "runtime": runtime, "role": "victim", "kind": imported.kind, "scale": imported.scale,
        "size_multiple": imported.size_multiple, "input_size": imported.input_size, "contract": imported.contract,
        "mode": "train" if options.train_mode else "eval",
    }
    if tiling:
        from imgsteal.victim.tiling import TilingConfig

        info["tiling"] = TilingConfig(**tiling).model_dump()
    if runtime == "torch":
        info["model_file"] = "model.safetensors"
        meta = {"role": "victim", "kind": imported.kind, "scale": imported.scale,
                "size_multiple": imported.size_multiple, "export": "generator",
                "archs": {"generator": {"arch": imported.arch, "kwargs": imported.kwargs}},
                "contract": imported.contract, "input_size": imported.input_size, "mode": info["mode"],
                **({"tiling": info["tiling"]} if "tiling" in info else {}),
                "imported": {"format": imported.format, "sha256": source["sha256"], "source": source["path"]}}
        save_checkpoint(out / "model.safetensors", meta, {"generator": imported.module})
    else:
        info["model_file"] = RUNTIME_FILES[runtime]
        tmp = out / (RUNTIME_FILES[runtime] + ".tmp")
        shutil.copyfile(path, tmp)
        os.replace(tmp, out / RUNTIME_FILES[runtime])
    seconds = time.perf_counter() - started
    info["import_seconds"] = round(seconds, 4)
    tmp = out / "import.json.tmp"
    tmp.write_text(json.dumps(info, indent=2, sort_keys=True))
    os.replace(tmp, out / "import.json")
    return ImportResult(out, imported, seconds, info)


def read_import_json(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "import.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable import record ({exc})") from None
    if info.get("format") != IMPORT_FORMAT:
        raise CheckpointError(f"{path}: not an imgsteal import record")
    return info
