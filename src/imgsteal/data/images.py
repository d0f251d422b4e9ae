"""Reading and writing images under the package's one convention: float RGB tensors in [0, 1].

Every decoder quirk is settled here, once: EXIF orientation, grayscale, RGBA/LA (composited on
white), palette, 16-bit. Broken files raise `ImageReadError`; `load_images` skips them with one
line on stderr each, and `list_images` reports the files it leaves out for their extension; a
stage counts both with `counting_skipped()`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class ImageReadError(ValueError):
    """A file that is not a readable image (not an image, truncated, unsupported)."""


# -- skipped files: one plain line each, and counts for the stage's summary ------------------------


@dataclass
class SkippedFiles:
    """Input files a stage left out: unreadable ones (path -> reason) and ones whose extension is
    not an image's (see IMAGE_SUFFIXES)."""

    unreadable: dict[str, str] = field(default_factory=dict)
    not_images: set[Path] = field(default_factory=set)

    def counts(self) -> dict[str, int]:
        return {"unreadable": len(self.unreadable), "not_images": len(self.not_images)}


_active: list[SkippedFiles] = []
_lock = threading.Lock()


@contextlib.contextmanager
def counting_skipped() -> Iterator[SkippedFiles]:
    """Collect the files skipped inside the block, in this and any other thread (nests)."""
    skipped = SkippedFiles()
    with _lock:
        _active.append(skipped)
    try:
        yield skipped
    finally:
        with _lock:
            _active.remove(skipped)


def notice(message: str) -> None:
    """One plain line on stderr: no warning category, no source line; a progress bar on screen is
    cleared first and redrawn below it."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)
    sys.stderr.flush()


def skip_unreadable(path: str | Path, error: ImageReadError) -> None:
    """Say that the file `path` is skipped (one line naming it and why; `error` names it too) and
    count it in the active tallies."""
    notice(f"skipped {error}")
    with _lock:
        for skipped in _active:
            skipped.unreadable[str(path)] = str(error)


def _reason(exc: Exception) -> str:
    """The decoder's complaint without object reprs such as <_io.BytesIO object at 0x7f...>."""
    if isinstance(exc, UnidentifiedImageError):
        return "unknown format or not an image"
    text = re.sub(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>", "", str(exc)).strip(" :")
    return text or type(exc).__name__


def pil_to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any PIL image -> H x W x 3 float32 array in [0, 1], EXIF-rotated, alpha composited on white."""
    file_format = img.format  # lost by exif_transpose's copy
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: scale by the bit depth, not by 255. Some Pillow versions open 16-bit
        # PNGs as mode "I", so a PNG in mode "I" is 16-bit too.
        arr = np.asarray(img, dtype=np.float32)
        sixteen = mode.startswith("I;16") or file_format == "PNG" or arr.max(initial=0) > 255
        arr = np.clip(arr / (65535.0 if sixteen else 255.0), 0.0, 1.0)
        return np.repeat(arr[..., None], 3, axis=2)
    if mode == "F":
        arr = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
        return np.repeat(arr[..., None], 3, axis=2)
    if mode in ("P", "L", "RGB") and "transparency" in img.info:
        img = img.convert("RGBA")  # palette or colour-key transparency: composite like alpha
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    img = img.convert("RGB")
    return np.asarray(img, dtype=np.float32) / 255.0


def decode_image(data: bytes, name: str = "<bytes>") -> torch.Tensor:
    """Encoded image bytes -> 3 x H x W float tensor in [0, 1]. Raises ImageReadError."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            arr = pil_to_rgb_array(img)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{name}: not a readable image ({_reason(exc)})") from exc
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()


def load_image(path: str | Path) -> torch.Tensor:
    """Image file -> 3 x H x W float tensor in [0, 1]. Raises ImageReadError for broken files."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read ({exc})") from exc
    return decode_image(data, str(path))


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """3 x H x W float tensor in [0, 1] -> H x W x 3 uint8 array (rounded, clipped)."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a 3 x H x W tensor, got shape {tuple(image.shape)}")
    arr = image.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return arr.permute(1, 2, 0).cpu().numpy()


def encode_png(image: torch.Tensor) -> bytes:
    """3 x H x W float tensor in [0, 1] -> PNG bytes (8-bit RGB)."""
    buf = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def save_image(image: torch.Tensor, path: str | Path) -> None:
    """Write a 3 x H x W tensor as an image file; format from the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(image)).save(path)


def quantize(image: torch.Tensor) -> torch.Tensor:
    """Round to the 8-bit grid, as any image API (PNG out) does."""
    return image.clamp(0, 1).mul(255).round().div(255)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_reported_listings: set[tuple[Path, int]] = set()


def list_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Sorted image files under `folder` (by suffix). Raises FileNotFoundError naming the folder.

    Other files are left out, counted in active `counting_skipped()` tallies and reported in one
    line per folder (once per process), never silently."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    pattern = "**/*" if recursive else "*"
    files, others = [], []
    for p in folder.glob(pattern):
        if p.is_file():
            (files if p.suffix.lower() in IMAGE_SUFFIXES else others).append(p)
    if others:
        others.sort()
        with _lock:
            for skipped in _active:
                skipped.not_images.update(others)
            first = (folder, len(others)) not in _reported_listings
            _reported_listings.add((folder, len(others)))
        if first:
            shown = ", ".join(p.relative_to(folder).as_posix() for p in others[:3])
            more = f" and {len(others) - 3} more" if len(others) > 3 else ""
            notice(f"left out {len(others)} file(s) under {folder} that are not images by extension"
                   f" ({', '.join(IMAGE_SUFFIXES)}): {shown}{more}")
    return sorted(files)


def load_images(paths: Iterable[Path]) -> list[tuple[Path, torch.Tensor]]:
    """Load each path; a broken file is skipped with one line on stderr naming it (see skip_unreadable)."""
    loaded = []
    for path in paths:
        try:
            loaded.append((path, load_image(path)))
        except ImageReadError as exc:
            skip_unreadable(path, exc)
    return loaded


def bicubic_downscale(image: torch.Tensor, scale: int) -> torch.Tensor:
    """N x C x H x W (or C x H x W) -> downscaled by `scale` with antialiased bicubic, in [0, 1].

    H and W are first cropped to multiples of `scale`, as the SR benchmarks do.
    """
    squeeze = image.dim() == 3
    x = image.unsqueeze(0) if squeeze else image
    h, w = (x.shape[-2] // scale) * scale, (x.shape[-1] // scale) * scale
    if h == 0 or w == 0:
        raise ValueError(f"image of {tuple(x.shape[-2:])} is smaller than the scale factor {scale}")
    x = x[..., :h, :w]
    y = F.interpolate(x, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False)
    y = y.clamp(0, 1)
    return y.squeeze(0) if squeeze else y


def bicubic_upscale(image: torch.Tensor, scale: int) -> torch.Tensor:
    """The bicubic baseline for super-resolution: N x C x H x W -> N x C x sH x sW, clamped to [0, 1]."""
    squeeze = image.dim() == 3
    x = image.unsqueeze(0) if squeeze else image
    y = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)
    return y.squeeze(0) if squeeze else y


def crop_to_multiple(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """Crop H and W (bottom/right) down to multiples of `multiple`."""
    h, w = image.shape[-2], image.shape[-1]
    return image[..., : h - h % multiple, : w - w % multiple]
