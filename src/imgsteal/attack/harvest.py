"""Harvesting: send the adversary's images X_A to the oracle and keep (X_A, F_V(X_A)) in a PairStore.

Resumable by construction: an input whose sha256 is already in the store is never sent again, and
each answer is committed as it arrives.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from tqdm.auto import tqdm

from imgsteal.attack.oracle import Oracle
from imgsteal.attack.packing import ShelfPacker, compose, shelf_pack
from imgsteal.data.images import (ImageReadError, bicubic_downscale, decode_image, encode_png, load_image,
                                  sha256_bytes, skip_unreadable)
from imgsteal.data.layouts import center_crop_resize
from imgsteal.data.pairs import PairStore

# The paper's estimate: $0.016 per query at 256 x 256 pixels (section 8); scaled by answer pixels.
DEFAULT_PRICE_USD = 0.016
PRICE_REFERENCE_PIXELS = 256 * 256


def query_cost(width: int, height: int, price: float = DEFAULT_PRICE_USD) -> float:
    """Cost in USD of one answer of width x height pixels at `price` per 256 x 256 image."""
    return price * (width * height) / PRICE_REFERENCE_PIXELS


@dataclass
class HarvestReport:
    inputs: int = 0  # image files offered
    unreadable: int = 0  # skipped, one line on stderr each
    not_images: int = 0  # files left out when the inputs were listed (not images by extension; set by the caller)
    duplicates: int = 0  # same bytes as another input of this run
    already_stored: int = 0  # answered by an earlier run
    queried: int = 0  # answered and stored in this run
    images_queried: int = 0  # adversary images inside those queries (more than `queried` when packed)
    failed: int = 0  # oracle errors (left for a later run)
    budget_left: int | None = None
    spent_usd: float = 0.0  # this run
    total_usd: float = 0.0  # whole store
    stored_pairs: int = 0
    elapsed_s: float = 0.0

    def as_dict(self) -> dict:
        """The report for people and JSON: money rounded to 6 significant digits (no float noise such as
        0.0008437500000000001), seconds to milliseconds."""
        d = asdict(self)
        d["spent_usd"], d["total_usd"] = round_usd(self.spent_usd), round_usd(self.total_usd)
        d["elapsed_s"] = round(self.elapsed_s, 3)
        return d


def round_usd(usd: float) -> float:
    """An amount of US dollars rounded to 6 significant digits (per-query prices are fractions of a cent)."""
    return float(f"{usd:.6g}")


def format_usd(usd: float) -> str:
    """'$0.00084375', '$12.5': US dollars to 6 significant digits, as the harvest reports them."""
    return f"${round_usd(usd):g}"


def prepare_image(path: Path, downscale: int | None, resize: int | None = None):
    """Load an adversary image, optionally centre-crop it to a square and resize it to resize x resize
    px (style transfer at a working resolution), optionally bicubic-downscale it (LR for
    super-resolution). Returns the C x H x W tensor in [0, 1]."""
    image = load_image(path)
    if resize:
        image = center_crop_resize(image, resize)
    if downscale and downscale > 1:
        image = bicubic_downscale(image, downscale)
    return image


def prepared_size(path: Path, downscale: int | None, resize: int | None = None) -> tuple[int, int]:
    """(width, height) of `prepare_image(path, ...)` from the file's header alone; ImageReadError if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            width, height = img.size
    except (OSError, UnidentifiedImageError) as exc:
        raise ImageReadError(f"{path}: {exc}") from None
    if resize:
        width = height = resize
    if downscale and downscale > 1:
        width, height = width // downscale, height // downscale
    return width, height


def packed_query_count(paths: Sequence[Path], pack_pixels: int, downscale: int | None = None,
                       resize: int | None = None) -> int:
    """How many queries `harvest(..., pack_pixels=...)` sends for `paths` (readable files only; duplicates
    counted as distinct, so this is an upper bound), without decoding any image."""
    sizes = []
    for path in paths:
        try:
            sizes.append(prepared_size(Path(path), downscale, resize))
        except ImageReadError:
            continue
    return len(shelf_pack(sizes, pack_pixels))


def prepare_query(path: Path, downscale: int | None, resize: int | None = None) -> tuple[bytes, tuple[int, int]]:
    """`prepare_image`, PNG-encoded. Returns (PNG bytes, (width, height))."""
    image = prepare_image(path, downscale, resize)
    return encode_png(image), (image.shape[-1], image.shape[-2])


def harvest(
    oracle: Oracle,
    inputs: Sequence[Path],
    store: PairStore,
    *,
    downscale: int | None = None,
    resize: int | None = None,
    budget: int | None = None,
    price: float = DEFAULT_PRICE_USD,
    progress: bool = True,
    cost: Callable[[int, int], float] | None = None,
    pack_pixels: int | None = None,
) -> HarvestReport:
    """Query `oracle` with every image in `inputs` not yet in `store`; returns what happened.

    downscale: send a `downscale`x bicubic-downscaled copy (super-resolution queries from HR photos).
    resize: send a centre square crop resized to resize x resize px (style transfer at a working size).
    budget: the store never holds more than `budget` answered queries, counting earlier runs, so a
    resumed harvest cannot overspend.
    cost: USD of one answer from its (width, height) in pixels, replacing `price` (e.g. a flat price
    per query from an API spec).
    pack_pixels: tile the prepared images, in order, into mosaics of at most this many pixels and send
    each mosaic as one query (imgsteal.attack.packing); the budget then counts mosaics.
    """
    report = HarvestReport(inputs=len(inputs))
    started = time.perf_counter()
    allowed = None if budget is None else max(0, budget - store.query_count())
    in_flight: dict[str, tuple[bytes, str, tuple[int, int], list | None]] = {}
    seen: set[str] = set()

    def images_in(tiles: list | None) -> int:
        return 1 if tiles is None else len(tiles)

    def prepared() -> Iterator[tuple[Path, object, bytes]]:
        """Each readable, distinct input as (path, image tensor, PNG bytes)."""
        for path in inputs:
            try:
                image = prepare_image(Path(path), downscale, resize)
            except ImageReadError as exc:
                skip_unreadable(path, exc)
                report.unreadable += 1
                bar.update(1)
                continue
            data = encode_png(image)
            sha = sha256_bytes(data)
            if sha in seen:
                report.duplicates += 1
                bar.update(1)
                continue
            seen.add(sha)
            yield Path(path), image, data

    def queries() -> Iterator[tuple[bytes, str, tuple[int, int], list | None]]:
        """What is sent: (PNG bytes, source, (width, height), tiles) per query; tiles: None for a single
        image, else (path, PNG bytes, placement, (width, height)) of each image packed in the mosaic."""
        if not pack_pixels:
            for path, image, data in prepared():
                yield data, str(path), (image.shape[-1], image.shape[-2]), None
            return
        packer = ShelfPacker(pack_pixels)
        held: dict[int, tuple[Path, object, bytes]] = {}

        def mosaics(layouts):
            for layout in layouts:
                members = [held.pop(tile.index) for tile in layout.tiles]
                images = {tile.index: image for tile, (_, image, _) in zip(layout.tiles, members)}
                tiles = [(path, data, tile, (image.shape[-1], image.shape[-2]))
                         for tile, (path, image, data) in zip(layout.tiles, members)]
                yield encode_png(compose(layout, images)), "packed", (layout.width, layout.height), tiles

        for path, image, data in prepared():
            held[packer.count] = (path, image, data)
            yield from mosaics(packer.add((image.shape[-1], image.shape[-2])))
        yield from mosaics(packer.finish())

    def store_tiles(mosaic: bytes, out, size: tuple[int, int], tiles: list, usd: float, latency_s: float) -> bool:
        """Cut a packed query's answer into one pair per image, each tagged with the mosaic's sha256 and
        the query's cost shared by area; False if the answer is not a whole multiple of the mosaic."""
        scale = out.shape[-1] // size[0]
        if scale < 1 or out.shape[-1] != scale * size[0] or out.shape[-2] != scale * size[1]:
            return False
        mosaic_sha, area = sha256_bytes(mosaic), sum(w * h for *_, (w, h) in tiles)
        for path, data, tile, (w, h) in tiles:
            crop = out[:, scale * tile.y:scale * (tile.y + h), scale * tile.x:scale * (tile.x + w)]
            store.add(data, encode_png(crop), source=str(path), input_size=(w, h), output_size=(scale * w, scale * h),
                      cost_usd=usd * w * h / area, latency_s=latency_s, query_sha256=mosaic_sha)
        return True

    def requests() -> Iterator[tuple[str, bytes]]:
        sent = 0
        for data, source, size, tiles in queries():
            if allowed is not None and sent >= allowed:
                # The budget ends the run early: the bar's total becomes what it will really count.
                bar.total = bar.n + sum(images_in(t) for *_, t in in_flight.values())
                bar.set_description("harvest (budget reached)")
                bar.refresh()
                return
            sha = sha256_bytes(data)
            if store.has(sha):
                report.already_stored += 1
                bar.update(images_in(tiles))
                continue
            in_flight[sha] = (data, source, size, tiles)
            sent += 1
            yield sha, data

    with tqdm(total=len(inputs), desc="harvest", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for answer in oracle.stream(requests()):
            data, source, size, tiles = in_flight.pop(answer.key)
            bar.update(images_in(tiles))
            if answer.image is None:
                report.failed += 1
            else:
                try:
                    out = decode_image(answer.image, "oracle answer")
                except ImageReadError:
                    report.failed += 1
                else:
                    width, height = out.shape[-1], out.shape[-2]
                    usd = cost(width, height) if cost else query_cost(width, height, price)
                    if tiles is None:
                        store.add(data, answer.image, source=source, input_size=size,
                                  output_size=(width, height), cost_usd=usd, latency_s=answer.latency_s)
                    elif not store_tiles(data, out, size, tiles, usd, answer.latency_s):
                        report.failed += 1
                        continue
                    report.queried += 1
                    report.images_queried += images_in(tiles)
                    report.spent_usd += usd
            elapsed = time.perf_counter() - started
            bar.set_postfix(q_per_s=f"{report.queried / max(elapsed, 1e-9):.1f}", spent=format_usd(report.spent_usd),
                            errors=report.failed)
    if budget is not None:
        report.budget_left = max(0, budget - store.query_count())
    report.total_usd = store.total_cost()
    report.stored_pairs = len(store)
    report.elapsed_s = time.perf_counter() - started
    return report
