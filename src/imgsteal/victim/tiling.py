"""Super-resolution in overlapping tiles (as Real-ESRGAN), so large photos fit a memory bound.

The input is cut into `tile` x `tile` px cores; each core is run with `overlap` px of real image
context on every side (less at the image border), and only the core's part of the output is kept.
With `overlap` at least the network's receptive-field radius the result is exactly the untiled one;
with less, differences stay near the seams (tests check 1/255 away from them).

Memory: peak memory grows with the tile's area, not the image's. `memory_mb` picks the largest tile
whose estimated activation memory fits: the largest layer output seen on a probe forward, times
ACTIVATION_FACTOR (a layer's input and output and temporaries alive at once), per input pixel.
The assembled output image (12 bytes per output pixel) is not part of the bound. It is an estimate:
on the CPU the process's peak RSS can exceed it (glibc keeps freed blocks; docs/victims.md has
measurements), so leave headroom.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from imgsteal.errors import ImgstealError

ACTIVATION_FACTOR = 6


class TilingConfig(BaseModel):
    """When and how to tile super-resolution inputs.

    tile: core side in input px (0: never tile); overlap: context px on each side of a core;
    above_pixels: only inputs with more than this many pixels (H x W) are tiled;
    memory_mb: if set, the tile side is derived from this activation-memory bound (MiB) instead.
    """

    model_config = ConfigDict(extra="forbid")

    tile: int = Field(512, ge=0)
    overlap: int = Field(16, ge=0)
    above_pixels: int = Field(1024 * 1024, ge=0)
    memory_mb: Optional[float] = Field(None, gt=0)

    def applies(self, height: int, width: int) -> bool:
        return (self.tile > 0 or self.memory_mb is not None) and height * width > self.above_pixels


def tile_starts(length: int, tile: int) -> list[int]:
    """Starts of the cores covering [0, length) with cores of at most `tile` px."""
    return list(range(0, length, tile)) if tile > 0 else [0]


@torch.inference_mode()
def tiled_forward(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, scale: int, tile: int,
                  overlap: int) -> torch.Tensor:
    """`run` (N x C x h x w -> N x C x sh x sw) applied tile by tile to `x`; result N x C x sH x sW on x's device.

    Each core of `tile` x `tile` input px is run with `overlap` px of context on each side; the
    output is assembled on the input's device (the CPU for the server), so only one tile's
    activations live on the accelerator at a time.
    """
    n, c, h, w = x.shape
    out: Optional[torch.Tensor] = None
    for y0 in tile_starts(h, tile):
        for x0 in tile_starts(w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            py0, px0 = max(y0 - overlap, 0), max(x0 - overlap, 0)
            py1, px1 = min(y1 + overlap, h), min(x1 + overlap, w)
            piece = run(x[..., py0:py1, px0:px1])
            if out is None:
                out = torch.empty(n, piece.shape[1], h * scale, w * scale, dtype=piece.dtype, device=x.device)
            oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
            out[..., y0 * scale: y1 * scale, x0 * scale: x1 * scale] = \
                piece[..., oy: oy + (y1 - y0) * scale, ox: ox + (x1 - x0) * scale].to(x.device)
    assert out is not None
    return out


def estimate_bytes_per_pixel(module: nn.Module, run: Callable[[torch.Tensor], torch.Tensor], device: torch.device,
                             probe: int = 48) -> float:
    """Estimated peak activation bytes per input pixel: ACTIVATION_FACTOR x the largest layer output on a probe image.

    Networks without visible layers (ONNX, TorchScript) count their output tensor times 16."""
    largest = [0]

    def hook(_module, _inputs, output) -> None:
        if torch.is_tensor(output):
            largest[0] = max(largest[0], output.numel() * output.element_size())

    handles = [m.register_forward_hook(hook) for m in module.modules() if not isinstance(m, torch.jit.ScriptModule)]
    try:
        with torch.inference_mode():
            y = run(torch.rand(1, 3, probe, probe, device=device))
    finally:
        for h in handles:
            h.remove()
    out_bytes = y.numel() * y.element_size()
    peak = ACTIVATION_FACTOR * largest[0] if largest[0] > out_bytes else 16 * out_bytes
    return peak / (probe * probe)


def tile_for_memory(bytes_per_pixel: float, memory_mb: float, overlap: int, minimum: int = 16) -> int:
    """Largest core side whose padded tile ((tile + 2 overlap)^2 px) fits `memory_mb` MiB."""
    side = int(math.sqrt(memory_mb * 2**20 / bytes_per_pixel)) - 2 * overlap
    if side < minimum:
        need = (minimum + 2 * overlap) ** 2 * bytes_per_pixel / 2**20
        raise ImgstealError(f"a memory bound of {memory_mb:g} MiB leaves tiles under {minimum} px for this network "
                            f"(~{bytes_per_pixel / 1024:.0f} KiB per input pixel); allow at least {need:.0f} MiB "
                            "or lower --tile-overlap")
    return side
