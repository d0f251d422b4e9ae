"""The victim's trained model as a service would run it: images in, images out.

`Translator` is the only thing the server and the local oracle need from a checkpoint. It knows the
kind (`sr` or `style`), the scale, and the size rule of its network, and pads inputs to fit it.
Large super-resolution inputs run in overlapping tiles (imgsteal.victim.tiling) within a memory bound.

`load_translator` reads imgsteal checkpoints and run folders, run folders written by
`imgsteal victim import` (also ONNX and TorchScript ones), and public model files directly
(imported in memory, see imgsteal.victim.formats).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from imgsteal.device import pick_device
from imgsteal.errors import CheckpointError
from imgsteal.train.checkpoint import Checkpoint, load_checkpoint
from imgsteal.victim.tiling import TilingConfig, estimate_bytes_per_pixel, tile_for_memory, tiled_forward

_IDENTITY = {"input_range": [0.0, 1.0], "output_range": [0.0, 1.0], "channel_order": "rgb"}


@dataclass
class Translator:
    """Wraps a generator: `translate(3 x H x W in [0,1]) -> 3 x sH x sW in [0,1]`.

    input_size: the network takes only input_size x input_size images (resized to it and back);
    mode: eval (running statistics, no dropout) or train (batch statistics and dropout, as the
    reference test scripts without --eval; running statistics are left unchanged);
    tiling: when and how super-resolution inputs are cut into overlapping tiles (None: never).
    """

    generator: nn.Module
    kind: str  # sr | style (imgsteal.pipeline.kinds)
    scale: int = 1
    size_multiple: int = 1  # inputs are reflect-padded to this multiple, outputs cropped back
    device: torch.device = torch.device("cpu")
    input_size: Optional[int] = None
    mode: str = "eval"
    tiling: Optional[TilingConfig] = None
    _tile_side: Optional[int] = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.generator = self.generator.to(self.device).eval()
        if self.mode == "train":
            self.generator.train()
            for m in self.generator.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.track_running_stats = False  # batch statistics for the answer; stored ones untouched
        elif self.mode != "eval":
            raise ValueError(f"mode must be eval or train, got {self.mode!r}")

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """One forward pass on N x 3 x h x w (any device) -> N x 3 x sh x sw on self.device, clamped to [0, 1]."""
        h, w = x.shape[-2:]
        x = x.to(self.device, torch.float32)
        if self.input_size is not None:
            s = self.input_size
            y = self.generator(_resize(x, (s, s)))
            return _resize(y, (h * self.scale, w * self.scale)).clamp(0, 1)
        m = self.size_multiple
        pad_h, pad_w = (-h) % m, (-w) % m
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        y = self.generator(x)
        return y[..., : h * self.scale, : w * self.scale].clamp(0, 1)

    def tile_side(self) -> int:
        """Core tile side in input px under the tiling config (derived once from memory_mb if set)."""
        assert self.tiling is not None
        if self.tiling.memory_mb is None:
            return self.tiling.tile
        if self._tile_side is None:
            per_px = estimate_bytes_per_pixel(self.generator, self._run, self.device,
                                              probe=max(48, self.size_multiple))
            side = tile_for_memory(per_px, self.tiling.memory_mb, self.tiling.overlap)
            m = self.size_multiple
            self._tile_side = max(m, side // m * m)
        return self._tile_side

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """N x 3 x H x W in [0, 1] -> N x 3 x (scale H) x (scale W) in [0, 1]."""
        if batch.dim() != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected N x 3 x H x W, got {tuple(batch.shape)}")
        h, w = batch.shape[-2:]
        if self.kind == "sr" and self.input_size is None and self.tiling is not None and self.tiling.applies(h, w):
            return tiled_forward(self._run, batch.cpu(), self.scale, self.tile_side(), self.tiling.overlap)
        if self.mode == "train" and len(batch) > 1:  # batch statistics of each image alone, as the reference's batch of 1
            return torch.cat([self._run(image[None]).cpu() for image in batch])
        return self._run(batch).cpu()

    def translate(self, image: torch.Tensor) -> torch.Tensor:
        return self(image.unsqueeze(0))[0]

    def info(self) -> dict:
        return {"kind": self.kind, "scale": self.scale}


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)


def _wrap_contract(module: nn.Module, contract: Optional[dict]) -> nn.Module:
    if not contract or all(contract.get(k) == v for k, v in _IDENTITY.items()):
        return module
    from imgsteal.victim.formats.runtime import ContractModule

    return ContractModule(module, contract["input_range"], contract["output_range"], contract["channel_order"])


def _default_tiling(kind: str, meta: dict, tiling: Optional[TilingConfig]) -> Optional[TilingConfig]:
    if tiling is not None:
        return tiling
    if kind != "sr":
        return None
    return TilingConfig(**meta["tiling"]) if isinstance(meta.get("tiling"), dict) else TilingConfig()


def translator_from_checkpoint(ckpt: Checkpoint, device: torch.device, tiling: Optional[TilingConfig] = None,
                               mode: Optional[str] = None) -> Translator:
    meta = ckpt.meta
    name = meta.get("export", "generator")
    kind = meta.get("kind", meta.get("task"))  # "task" in runs written before the rename
    if kind is None:
        raise CheckpointError(f"{ckpt.path}: checkpoint does not record its kind (sr or style); is it a victim or "
                              "surrogate model?")
    return Translator(
        generator=_wrap_contract(ckpt.build_module(name), meta.get("contract")),
        kind=kind,
        scale=int(meta.get("scale", 1)),
        size_multiple=int(meta.get("size_multiple", 1)),
        device=device,
        input_size=meta.get("input_size"),
        mode=mode or meta.get("mode", "eval"),
        tiling=_default_tiling(kind, meta, tiling),
    )


def _translator_from_import(run_dir: Path, device: torch.device, tiling: Optional[TilingConfig],
                            mode: Optional[str]) -> Translator:
    from imgsteal.victim.formats import read_import_json
    from imgsteal.victim.formats.runtime import load_runtime

    info = read_import_json(run_dir)
    if info.get("runtime") == "torch":
        return translator_from_checkpoint(load_checkpoint(run_dir / info["model_file"]), device, tiling, mode)
    module = load_runtime(info["runtime"], run_dir / info["model_file"], device)
    return _translator_from_imported(info, module, device, tiling, mode)


def _translator_from_imported(info: dict[str, Any], module: nn.Module, device: torch.device,
                              tiling: Optional[TilingConfig], mode: Optional[str]) -> Translator:
    return Translator(generator=_wrap_contract(module, info.get("contract")), kind=info.get("kind", info.get("task")),
                      scale=int(info["scale"]), size_multiple=int(info.get("size_multiple") or 1), device=device,
                      input_size=info.get("input_size"), mode=mode or info.get("mode", "eval"),
                      tiling=_default_tiling(info.get("kind", info.get("task")), info, tiling))


def _translator_from_foreign(path: Path, device: torch.device, tiling: Optional[TilingConfig],
                             mode: Optional[str]) -> Translator:
    from imgsteal.victim.formats import load_foreign

    imported, _ = load_foreign(path)
    info = {"kind": imported.kind, "scale": imported.scale, "size_multiple": imported.size_multiple,
            "input_size": imported.input_size, "contract": imported.contract}
    if imported.format == "onnx":  # rebuilt for the device (the import probe ran on the CPU provider)
        from imgsteal.victim.formats.runtime import load_runtime

        imported.module = load_runtime("onnx", path, device)
    return _translator_from_imported(info, imported.module, device, tiling, mode)


def load_translator(path: str | Path, device: str | torch.device | None = None, tiling: Optional[TilingConfig] = None,
                    mode: Optional[str] = None) -> Translator:
    """Load a model as a Translator: model.safetensors, a run folder (trained or imported), a training
    checkpoint, or a public model file (imported in memory with format auto-detection).

    tiling: overrides the run's tiling settings (super-resolution only; default: TilingConfig());
    mode: eval or train, overriding the run's (default eval).
    """
    device = device if isinstance(device, torch.device) else pick_device(device)
    path = Path(path)
    if path.is_dir():
        has_ckpt = (path / "model.safetensors").exists() or (path / "checkpoints" / "last.safetensors").exists()
        if not has_ckpt and (path / "import.json").exists():
            return _translator_from_import(path, device, tiling, mode)
        return translator_from_checkpoint(load_checkpoint(path), device, tiling, mode)
    if path.is_file() and path.suffix != ".safetensors":
        return _translator_from_foreign(path, device, tiling, mode)
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError:
        if path.is_file():  # a plain safetensors state dict (e.g. a BasicSR re-save)
            return _translator_from_foreign(path, device, tiling, mode)
        raise
    return translator_from_checkpoint(ckpt, device, tiling, mode)
