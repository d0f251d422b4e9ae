"""Extraction detection in the query stream: one monitor per API key (issue 15 item 4).

A query may carry several images: a packed query (imgsteal.attack.packing) tiles dozens of photos
into one mosaic, so a monitor that counts requests sees 2 where 59 photos went through. Each query
is first cut into the images it carries (`mosaic_tiles`: recursive straight cuts along seams, lines
where nearly every pixel pair across the line differs far more than the pairs on either side; blank
margins dropped); a photo is one tile. Every image gets a cheap feature vector (`query_features`: a
6 x 6 colour thumbnail and a 12-bin gradient-orientation histogram of a 32 x 32 grey copy, both made
mirror-invariant; no network, no download, about a millisecond for a 512 x 512 photo, 10-20 ms for a
512 x 512 mosaic of 20-40 tiles). Per key, the monitor keeps the features of the last `history`
images and, for each new image, its distance d to the nearest of them. Two tests run on each key's
stream once it has sent `min_images` images:

- distinct: the number of the key's images that were *new* (d > `radius`: not a crop, a re-encode
  or a burst shot of an earlier one) reaches `distinct`, and they make at least `distinct_share` of
  its images. Extraction needs many different images; an honest client sends a few, or an album of
  similar ones.
- normality (PRADA, Juuti et al. 2019): Shapiro-Wilk W of the key's recent distances below
  `normality`. PRADA found that natural query streams give roughly normal distances and synthetic
  ones (perturbations of seeds) do not. Off by default (0): in image-to-image extraction the
  adversary sends natural photos, and honest albums are skewed too (see docs/defenses.md).

A key is flagged once (its first alert); the alert names the test, its statistic and the number of
queries (requests) seen. What it cannot see: an attacker with few images (a few-shot attack sends
1-4), one that spreads its images over many keys under the distinct count each, one whose images
all look alike to these features (e.g. crops of a few large photos), or a mosaic whose seams are
blended away (a cross-fade between tiles; the attacker then loses the answers near the seams).

Per key (and per account) the state is `history` x 228 float32 (about 230 kB at 256), and at most
`max_keys` streams are tracked (least recently seen dropped first). Each image costs O(history) distance computations
plus, with the normality test on, one Shapiro-Wilk test over at most `history` values.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import asdict, dataclass
from enum import Enum

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from imgsteal.victim.accounts import statistic_text

THUMB = 6  # thumbnail side, px
GRID = 32  # grey copy side for the gradient histogram, px
ORIENTATIONS = 12
FEATURE_DIM = 2 * 3 * THUMB * THUMB + ORIENTATIONS

# Seams between the tiles of a mosaic (`mosaic_tiles`). Chosen on the bundled images
# (benchmarks/bench_monitor.py): none of 372 photos, full size or downscaled 4x, is cut, and packed
# mosaics of the attacker's photos are cut into 84% of their tiles.
SEAM_MIN_SIDE = 16  # px: no tile thinner than this
SEAM_CONTRAST = 3.0  # a pixel pair across the line differs this many times more than the pairs beside it ...
SEAM_MIN_STEP = 0.03  # ... and by at least this much (grey, [0, 1]; JPEG block edges stay below it)
SEAM_SHARE = 0.5  # share of the line's pixel pairs that must do so
BLANK_STD = 0.004  # a tile flatter than this is a margin, not an image
MAX_TILES = 256


class MonitorPolicy(str, Enum):
    """What happens to a flagged key: only logged, slowed down, or revoked."""

    log = "log"
    throttle = "throttle"
    revoke = "revoke"


class MonitorConfig(BaseModel):
    """Settings of the extraction monitor (the server's `monitor_*` settings; see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    policy: MonitorPolicy = Field(MonitorPolicy.log, description="what to do with a flagged key: log (alert only), "
                                                                 "throttle (to throttle_rate requests/s), revoke")
    min_images: int = Field(8, ge=2, description="images of a key before any test runs")
    distinct: int = Field(20, ge=0, description="alert when a key has sent this many distinct images (0 = test off)...")
    distinct_share: float = Field(0.7, ge=0, le=1, description="... and they are at least this share of its images")
    mosaics: bool = Field(True, description="cut each query into the images it carries (packed queries: mosaics "
                                            "of many photos) and count those; off: one image a query")
    radius: float = Field(0.1, gt=0, description="feature distance above which a query counts as a new image")
    normality: float = Field(0.0, ge=0, le=1, description="PRADA: alert when the Shapiro-Wilk W of the key's "
                                                          "nearest-query distances falls below this (0 = test off)")
    history: int = Field(256, ge=8, le=4096, description="queries per key whose features are kept (the distance window)")
    max_keys: int = Field(4096, ge=1, description="keys and accounts tracked at once (least recently seen dropped first)")
    throttle_rate: float = Field(0.1, gt=0, description="requests/s of a throttled key")


# -- features ----------------------------------------------------------------------------------
def query_features(image: torch.Tensor) -> np.ndarray:
    """3 x H x W image in [0, 1] -> float32 vector of FEATURE_DIM: the 6 x 6 colour thumbnail as its
    mirror-symmetric and (absolute) antisymmetric halves, divided by sqrt(108) (so distances are RMS
    colour differences in [0, 1] units), and the gradient-orientation histogram of a 32 x 32 grey copy
    (magnitude-weighted, sums to 0.5, averaged with its mirror image). A mirrored query has the same
    features; a crop, a re-encode or a brightness change moves them little (thresholds calibrated in
    benchmarks/bench_monitor.py)."""
    x = image.detach().float()
    if x.dim() != 3:
        raise ValueError(f"expected a 3 x H x W image, got {tuple(x.shape)}")
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    x = x[None, :3]
    step = max(1, min(x.shape[-2:]) // (4 * GRID))  # plain subsampling to about 128 px first: cheap on large inputs
    if step > 1:
        x = x[..., ::step, ::step]
    with torch.no_grad():
        thumb = F.adaptive_avg_pool2d(x, (THUMB, THUMB))
        mirrored = thumb.flip(-1)
        thumb = torch.cat([(thumb + mirrored) / 2, (thumb - mirrored).abs() / 2], 1).flatten() / math.sqrt(3 * THUMB * THUMB)
        grey = F.adaptive_avg_pool2d(x.mean(1, keepdim=True), (GRID, GRID))[0, 0]
        gx = grey[1:-1, 2:] - grey[1:-1, :-2]
        gy = grey[2:, 1:-1] - grey[:-2, 1:-1]
        magnitude = torch.sqrt(gx * gx + gy * gy).flatten()
        angle = torch.remainder(torch.atan2(gy, gx).flatten(), math.pi)  # orientation, not direction
        bins = torch.clamp((angle / math.pi * ORIENTATIONS).long(), max=ORIENTATIONS - 1)
        hist = torch.zeros(ORIENTATIONS).index_add_(0, bins, magnitude)
        total = float(hist.sum())
        hist = hist / (2 * total) if total > 0 else torch.full((ORIENTATIONS,), 0.5 / ORIENTATIONS)
        hist = (hist + hist.flip(0)) / 2  # a mirror maps orientation a to pi - a
    return torch.cat([thumb, hist]).numpy().astype(np.float32)


def _seam_scores(steps: np.ndarray, start: int, stop: int, across_from: int, across_to: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate cuts k of the lines start..stop (the seam between line k - 1 and k) and, for each, the
    share of its pixel pairs (positions across_from..across_to) that step far more than the pairs on
    either side. steps[i]: absolute grey difference between line i + 1 and line i."""
    cuts = np.arange(start + SEAM_MIN_SIDE, stop - SEAM_MIN_SIDE + 1)
    if cuts.size == 0:
        return cuts, np.zeros(0)
    across = steps[cuts - 1, across_from:across_to]
    beside = np.maximum(steps[cuts - 2, across_from:across_to], steps[cuts, across_from:across_to])
    breaks = (across > SEAM_CONTRAST * beside) & (across > SEAM_MIN_STEP)
    return cuts, breaks.mean(1)


def mosaic_tiles(image: torch.Tensor) -> list[tuple[int, int, int, int]]:
    """3 x H x W query -> the (top, left, bottom, right) boxes of the images it carries: one box, the
    whole image, for a photo; one per tile for a mosaic (blank margins dropped).

    Recursive straight cuts: in each box the line where the largest share of pixel pairs across it
    differ SEAM_CONTRAST times more than the pairs beside it, if that share reaches SEAM_SHARE. A
    photo's edges are soft or short (a horizon is blurred over pixels, an object's outline does not
    run straight across the frame); the seam between two pasted photos is one pixel sharp and runs
    the whole tile. Shelf-packed and grid mosaics are cut exactly; overlapping or blended tiles are not."""
    grey = image.detach().float()[:3].mean(0).numpy()
    rows = np.abs(np.diff(grey, axis=0))  # steps between consecutive rows
    cols = np.abs(np.diff(grey, axis=1)).T  # between consecutive columns
    tiles: list[tuple[int, int, int, int]] = []
    boxes = [(0, 0, grey.shape[0], grey.shape[1])]
    while boxes:
        top, left, bottom, right = boxes.pop()
        best_share, cut = SEAM_SHARE, None
        ks, shares = _seam_scores(rows, top, bottom, left, right)
        if shares.size and shares.max() >= best_share:
            best_share, cut = float(shares.max()), ("row", int(ks[shares.argmax()]))
        ks, shares = _seam_scores(cols, left, right, top, bottom)
        if shares.size and shares.max() > best_share:
            cut = ("column", int(ks[shares.argmax()]))
        if cut is None or len(tiles) + len(boxes) >= MAX_TILES:
            if grey[top:bottom, left:right].std() > BLANK_STD:
                tiles.append((top, left, bottom, right))
            continue
        line, k = cut
        boxes += [(top, left, k, right), (k, left, bottom, right)] if line == "row" else \
                 [(top, left, bottom, k), (top, k, bottom, right)]
    return sorted(tiles) or [(0, 0, grey.shape[0], grey.shape[1])]


def query_image_features(image: torch.Tensor, mosaics: bool = True) -> np.ndarray:
    """3 x H x W query -> n x FEATURE_DIM: the features of each image it carries (`mosaic_tiles`; one
    row for a photo, or for any query when `mosaics` is off)."""
    if not mosaics:
        return query_features(image)[None]
    return np.stack([query_features(image[:, t:b, l:r]) for t, l, b, r in mosaic_tiles(image)])


# -- per-key state -----------------------------------------------------------------------------
Stream = tuple[str, int | str]  # ("key", key id) or ("account", account name): what the monitor watches


def streams_of(key_id: int, account: str | None = None) -> list[Stream]:
    """The streams a key's queries belong to: its own, and its account's if it has one."""
    return [("key", key_id)] + ([("account", account)] if account else [])


@dataclass(frozen=True)
class MonitorAlert:
    """A key's stream - or, with `account` set, the streams of that account's keys together - looked
    like an extraction. test: 'distinct' or 'normality'; statistic: the distinct image count or
    Shapiro-Wilk W; queries: the queries (requests) of the key, or of the account, seen when it fired;
    key_id / key_name: the key whose query raised it."""

    key_id: int
    key_name: str
    test: str
    statistic: float
    queries: int
    raised_at: float
    action: str
    account: str | None = None

    @property
    def stream(self) -> Stream:
        """The stream that raised it: the account's, or the key's own."""
        return ("account", self.account) if self.account else ("key", self.key_id)

    def label(self) -> str:
        """Short text for the query log, e.g. 'alert:distinct=20' (or 'alert:distinct=20 account=acme')."""
        value = statistic_text(self.test, self.statistic)
        return f"alert:{self.test}={value}" + (f" account={self.account}" if self.account else "")

    def as_dict(self) -> dict:
        return asdict(self)


class _KeyState:
    __slots__ = ("features", "stored", "distances", "queries", "images", "distinct", "alert", "lock")

    def __init__(self, history: int) -> None:
        self.features = np.zeros((history, FEATURE_DIM), dtype=np.float32)
        self.stored = 0  # queries written into the ring buffer (position = stored % history)
        self.distances: collections.deque[float] = collections.deque(maxlen=history)
        self.queries = 0
        self.images = 0
        self.distinct = 0
        self.alert: MonitorAlert | None = None
        self.lock = threading.Lock()


def shapiro_w(values) -> float:
    """Shapiro-Wilk W of `values` (1.0 for fewer than 3 values or no spread: nothing to reject)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 3 or float(v.std()) == 0.0:
        return 1.0
    from scipy.stats import shapiro

    return float(shapiro(v).statistic)


class ExtractionMonitor:
    """Per-key (and per-account) extraction detector; thread-safe (the server calls `observe` from its
    codec threads).

    observe(key_id, key_name, features, account) -> the alerts of that query: the key's the first time
    the key is flagged, its account's the first time the account is. An account's keys are watched as one stream as well as each on
    its own: an adversary who spreads a harvest over the keys of one account is seen whole.
    """

    def __init__(self, config: MonitorConfig | None = None, clock=time.time) -> None:
        self.config = config or MonitorConfig()
        self.clock = clock
        self._keys: collections.OrderedDict[Stream, _KeyState] = collections.OrderedDict()
        self._lock = threading.Lock()

    def _state(self, stream: Stream) -> _KeyState:
        with self._lock:
            state = self._keys.get(stream)
            if state is None:
                state = self._keys[stream] = _KeyState(self.config.history)
                while len(self._keys) > self.config.max_keys:
                    self._keys.popitem(last=False)
            else:
                self._keys.move_to_end(stream)
            return state

    def flagged(self, key_id: int) -> MonitorAlert | None:
        """The key's alert, if it has one (None for keys not tracked)."""
        with self._lock:
            state = self._keys.get(("key", key_id))
        return None if state is None else state.alert

    def stats(self, key_id: int | None = None, account: str | None = None) -> dict:
        """Queries, images, distinct images and current W of a tracked key, or account (for tests and benchmarks)."""
        state = self._state(("account", account) if account is not None else ("key", key_id))
        with state.lock:
            return {"queries": state.queries, "images": state.images, "distinct": state.distinct,
                    "w": shapiro_w(state.distances)}

    def observe(self, key_id: int, key_name: str, features: np.ndarray,
                account: str | None = None) -> list[MonitorAlert]:
        """Add one answered query of the key (of `account`, if it has one): the features of the images
        it carries (FEATURE_DIM, or n x FEATURE_DIM, e.g. `query_image_features`); returns the alerts
        this query raised: none, the key's, its account's, or both."""
        images = np.atleast_2d(features)
        alerts = [self._observe(stream, images, key_id, key_name) for stream in streams_of(key_id, account)]
        return [a for a in alerts if a is not None]

    def _observe(self, stream: Stream, images: np.ndarray, key_id: int, key_name: str) -> MonitorAlert | None:
        cfg = self.config
        state = self._state(stream)
        with state.lock:
            for image in images:
                n = min(state.stored, cfg.history)
                if n:
                    diff = state.features[:n] - image
                    d = float(np.sqrt(np.einsum("ij,ij->i", diff, diff).min()))
                    state.distances.append(d)
                else:
                    d = math.inf
                if d > cfg.radius:
                    state.distinct += 1
                state.features[state.stored % cfg.history] = image
                state.stored += 1
                state.images += 1
            state.queries += 1
            if state.alert is not None or state.images < cfg.min_images:
                return None
            test, statistic = None, 0.0
            if cfg.distinct and state.distinct >= cfg.distinct and state.distinct >= cfg.distinct_share * state.images:
                test, statistic = "distinct", float(state.distinct)
            elif cfg.normality > 0:
                w = shapiro_w(state.distances)
                if w < cfg.normality:
                    test, statistic = "normality", w
            if test is None:
                return None
            state.alert = MonitorAlert(key_id=key_id, key_name=key_name, test=test, statistic=statistic,
                                       queries=state.queries, raised_at=self.clock(), action=cfg.policy.value,
                                       account=stream[1] if stream[0] == "account" else None)
            return state.alert
