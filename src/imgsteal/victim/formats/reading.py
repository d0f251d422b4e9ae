"""Reading public model files without unpickling anything: what kind of file is it, and its tensors.

Torch files (zip or legacy non-zip) go through `torch.load(weights_only=True)`, with only numpy scalar
reconstruction allowed besides torch's own allowlist (training scripts store e.g. `best_psnr` as a
numpy float); a file that needs any other global is refused with an error naming it. safetensors
files are read with safetensors; ONNX and TorchScript files are recognised by their contents and
left to their runtimes. File names are never used to decide anything.
"""

from __future__ import annotations

import json
import pickle
import re
import struct
import zipfile
from pathlib import Path
from typing import Any

import torch

from imgsteal.errors import CheckpointError

TORCH, SAFETENSORS, TORCHSCRIPT, ONNX = "torch", "safetensors", "torchscript", "onnx"


def sniff(path: Path) -> str:
    """The container kind of `path` from its bytes: torch, safetensors, torchscript or onnx."""
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) < 8:
        raise CheckpointError(f"{path}: {len(head)} bytes is too short for a model file")
    if head[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return TORCHSCRIPT
        if any(n.endswith("data.pkl") for n in names):
            return TORCH
        raise CheckpointError(f"{path}: a zip archive that is neither a torch file nor a TorchScript model")
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return TORCH  # legacy (non-zip) torch serialisation starts with a pickle protocol header
    (header_len,) = struct.unpack("<Q", head[:8])
    if 2 <= header_len < 100_000_000 and head[8:9] == b"{":
        return SAFETENSORS
    if head[:1] == b"\x08":  # protobuf field 1 (ir_version, varint): how every ONNX ModelProto starts
        return ONNX
    raise CheckpointError(f"{path}: not a torch, safetensors, TorchScript or ONNX file (unknown leading bytes {head[:8]!r})")


def _numpy_safe_globals() -> list[Any]:
    """numpy scalar reconstruction (data only): `numpy.core.multiarray.scalar` and the dtype classes."""
    import numpy as np

    found: list[Any] = [np.dtype]
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            found.append(getattr(__import__(module, fromlist=["scalar"]), "scalar"))
            break
        except (ImportError, AttributeError):
            continue
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        found += [getattr(dtypes, name) for name in dir(dtypes) if name.endswith("DType")]
    return found


def load_torch_file(path: Path) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU; CheckpointError if it needs arbitrary unpickling."""
    import contextlib

    allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    try:
        with allow(_numpy_safe_globals()) if allow else contextlib.nullcontext():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f" (it stores the Python object {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path}: refused: loading it needs arbitrary unpickling{what}, which can run code. Only plain "
            "state dicts of tensors load. If you trust the file, re-save its weights in a trusted Python: "
            "torch.save(obj['state_dict'], 'weights.pth') or safetensors.torch.save_file(...)"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: not a readable torch file ({exc})") from None


def load_safetensors_file(path: Path) -> dict[str, Any]:
    """All tensors of a safetensors file; an imgsteal checkpoint's JSON header comes back under `__metadata__`."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors: dict[str, Any] = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors has its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    if "imgsteal" in meta:
        tensors["__metadata__"] = json.loads(meta["imgsteal"])
    return tensors


def read_weights(path: Path) -> tuple[str, Any]:
    """(container kind, content): the loaded object for torch/safetensors, None for ONNX/TorchScript."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}")
    kind = sniff(path)
    if kind == TORCH:
        return kind, load_torch_file(path)
    if kind == SAFETENSORS:
        return kind, load_safetensors_file(path)
    return kind, None
