"""Packed queries: several of the adversary's images tiled into one mosaic, sent as one query.

An API that prices or rate-limits per request, not per pixel, is copied as cheaply in requests as
its size limit allows. The harvest cuts the mosaic's answer back into one pair per image (the
victim's answer on each tile, in context; imgsteal.attack.harvest), so the surrogate trains on the
same images as without packing: training on whole mosaics instead, whose random crops straddle the
seams between unrelated photos, copied the demo victim 1.9 dB worse. Only the number of requests
falls; the pixels sent, and so a per-pixel price, stay the same.

Layout: shelf packing in the given order - rows filled left to right up to a width of about
sqrt(max_pixels), a new mosaic when the next row would pass max_pixels. Unused area is black.
An image larger than max_pixels on its own is sent alone (the API then decides whether to answer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from imgsteal.errors import ImgstealError


@dataclass(frozen=True)
class Placement:
    index: int  # position in the packed sequence
    x: int
    y: int


@dataclass(frozen=True)
class MosaicLayout:
    width: int
    height: int
    tiles: tuple[Placement, ...]


class ShelfPacker:
    """Streaming shelf packing: `add` each image's (width, height) in order; it returns the mosaics that
    image closed (so a caller holds one mosaic's images at a time); `finish` returns the last one."""

    def __init__(self, max_pixels: int, row_width: int | None = None):
        if max_pixels < 1:
            raise ImgstealError(f"pack_pixels must be at least 1, got {max_pixels}")
        self.max_pixels = max_pixels
        self.row_width = row_width or math.isqrt(max_pixels)
        self.count = 0
        self._reset()

    def _reset(self) -> None:
        self.tiles: list[Placement] = []
        self.x = self.y = self.row_height = self.used_width = 0

    def finish(self) -> list[MosaicLayout]:
        if not self.tiles:
            return []
        layout = MosaicLayout(self.used_width, self.y + self.row_height, tuple(self.tiles))
        self._reset()
        return [layout]

    def add(self, size: tuple[int, int]) -> list[MosaicLayout]:
        w, h = size
        index, self.count = self.count, self.count + 1
        if w * h > self.max_pixels:  # too large to share a query: alone, as it is
            return [*self.finish(), MosaicLayout(w, h, (Placement(index, 0, 0),))]
        closed: list[MosaicLayout] = []
        x, y, row_height = self.x, self.y, self.row_height
        if x > 0 and x + w > max(self.row_width, w):  # next row
            x, y, row_height = 0, y + row_height, 0
        if self.tiles and max(self.used_width, x + w) * (y + max(row_height, h)) > self.max_pixels:
            closed = self.finish()
            x, y, row_height = 0, 0, 0
        self.tiles.append(Placement(index, x, y))
        self.x, self.y, self.row_height = x + w, y, max(row_height, h)
        self.used_width = max(self.used_width, self.x)
        return closed


def shelf_pack(sizes: Sequence[tuple[int, int]], max_pixels: int) -> list[MosaicLayout]:
    """Mosaics of at most `max_pixels` pixels holding images of `sizes` ((width, height) each), in order."""
    packer = ShelfPacker(max_pixels)
    layouts = [layout for size in sizes for layout in packer.add(size)]
    return layouts + packer.finish()


def compose(layout: MosaicLayout, images: Mapping[int, torch.Tensor] | Sequence[torch.Tensor]) -> torch.Tensor:
    """The mosaic image (C x H x W in [0, 1]) of `layout`; `images[tile.index]` is each tile's image."""
    channels = images[layout.tiles[0].index].shape[0]
    mosaic = torch.zeros(channels, layout.height, layout.width)
    for tile in layout.tiles:
        image = images[tile.index]
        h, w = image.shape[-2:]
        mosaic[:, tile.y:tile.y + h, tile.x:tile.x + w] = image
    return mosaic
