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


def prepare_query(path: Path, downscale: int | None, resize: int | None = None) -> tuple[bytes, tuple[int, int]]:
    """Load an adversary image, optionally centre-crop it to a square and resize it to resize x resize
    px (style transfer at a working resolution), optionally bicubic-downscale it (LR for
    super-resolution), and PNG-encode it. Returns (PNG bytes, (width, height))."""
    image = load_image(path)
    if resize:
        image = center_crop_resize(image, resize)
    if downscale and downscale > 1:
        image = bicubic_downscale(image, downscale)
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
) -> HarvestReport:
    """Query `oracle` with every image in `inputs` not yet in `store`; returns what happened.

    downscale: send a `downscale`x bicubic-downscaled copy (super-resolution queries from HR photos).
    resize: send a centre square crop resized to resize x resize px (style transfer at a working size).
    budget: the store never holds more than `budget` answered queries, counting earlier runs, so a
    resumed harvest cannot overspend.
    cost: USD of one answer from its (width, height) in pixels, replacing `price` (e.g. a flat price
    per query from an API spec).
    """
    report = HarvestReport(inputs=len(inputs))
    started = time.perf_counter()
    allowed = None if budget is None else max(0, budget - len(store))
    in_flight: dict[str, tuple[bytes, str, tuple[int, int]]] = {}
    seen: set[str] = set()

    def requests() -> Iterator[tuple[str, bytes]]:
        sent = 0
        for path in inputs:
            if allowed is not None and sent >= allowed:
                # The budget ends the run early: the bar's total becomes what it will really count.
                bar.total = bar.n + len(in_flight)
                bar.set_description("harvest (budget reached)")
                bar.refresh()
                return
            try:
                data, size = prepare_query(Path(path), downscale, resize)
            except ImageReadError as exc:
                skip_unreadable(path, exc)
                report.unreadable += 1
                bar.update(1)
                continue
            sha = sha256_bytes(data)
            if sha in seen:
                report.duplicates += 1
                bar.update(1)
                continue
            seen.add(sha)
            if store.has(sha):
                report.already_stored += 1
                bar.update(1)
                continue
            in_flight[sha] = (data, str(path), size)
            sent += 1
            yield sha, data

    with tqdm(total=len(inputs), desc="harvest", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for answer in oracle.stream(requests()):
            data, source, size = in_flight.pop(answer.key)
            bar.update(1)
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
                    store.add(data, answer.image, source=source, input_size=size,
                              output_size=(width, height), cost_usd=usd, latency_s=answer.latency_s)
                    report.queried += 1
                    report.spent_usd += usd
            elapsed = time.perf_counter() - started
            bar.set_postfix(q_per_s=f"{report.queried / max(elapsed, 1e-9):.1f}", spent=format_usd(report.spent_usd),
                            errors=report.failed)
    if budget is not None:
        report.budget_left = max(0, budget - len(store))
    report.total_usd = store.total_cost()
    report.stored_pairs = len(store)
    report.elapsed_s = time.perf_counter() - started
    return report
