"""Extraction detection in the query stream: one monitor per API key (issue 15 item 4).

Every answered query's input gets a cheap feature vector (`query_features`: a 6 x 6 colour
thumbnail and a 12-bin gradient-orientation histogram of a 32 x 32 grey copy, both made
mirror-invariant; no network, no download, under a millisecond for a 512 x 512 image). Per key, the monitor keeps the features of
the last `history` queries and, for each new query, its distance d to the nearest of them. Two
tests run on each key's stream once it has `min_queries` queries:

- distinct: the number of the key's queries that were *new images* (d > `radius`: not a crop, a
  re-encode or a burst shot of an earlier query) reaches `distinct`, and they make at least
  `distinct_share` of its queries. Extraction needs many different images; an honest client sends
  a few, or an album of similar ones.
- normality (PRADA, Juuti et al. 2019): Shapiro-Wilk W of the key's recent distances below
  `normality`. PRADA found that natural query streams give roughly normal distances and synthetic
  ones (perturbations of seeds) do not. Off by default (0): in image-to-image extraction the
  adversary sends natural photos, and honest albums are skewed too (see docs/defenses.md).

A key is flagged once (its first alert); the alert names the test, its statistic and the number of
queries seen. What it cannot see: an attacker with few queries (a few-shot attack sends 1-4, and
packed queries put dozens of images in each), one that spreads its queries over many keys under the
distinct count each, or one whose images all look alike to these features (e.g. crops of a few
large photos).

Per key the state is `history` x 228 float32 (about 230 kB at 256), and at most `max_keys` keys are
tracked (least recently seen dropped first). Each query costs O(history) distance computations
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

THUMB = 6  # thumbnail side, px
GRID = 32  # grey copy side for the gradient histogram, px
ORIENTATIONS = 12
FEATURE_DIM = 2 * 3 * THUMB * THUMB + ORIENTATIONS


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
    min_queries: int = Field(8, ge=2, description="queries of a key before any test runs")
    distinct: int = Field(20, ge=0, description="alert when a key has sent this many distinct images (0 = test off)...")
    distinct_share: float = Field(0.7, ge=0, le=1, description="... and they are at least this share of its queries")
    radius: float = Field(0.1, gt=0, description="feature distance above which a query counts as a new image")
    normality: float = Field(0.0, ge=0, le=1, description="PRADA: alert when the Shapiro-Wilk W of the key's "
                                                          "nearest-query distances falls below this (0 = test off)")
    history: int = Field(256, ge=8, le=4096, description="queries per key whose features are kept (the distance window)")
    max_keys: int = Field(4096, ge=1, description="keys tracked at once (least recently seen dropped first)")
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


# -- per-key state -----------------------------------------------------------------------------
@dataclass(frozen=True)
class MonitorAlert:
    """A key's stream looked like an extraction. test: 'distinct' or 'normality'; statistic: the
    distinct count or Shapiro-Wilk W; queries: the key's queries seen when it fired."""

    key_id: int
    key_name: str
    test: str
    statistic: float
    queries: int
    raised_at: float
    action: str

    def label(self) -> str:
        """Short text for the query log, e.g. 'alert:distinct=20'."""
        value = f"{self.statistic:.3f}" if self.test == "normality" else f"{self.statistic:g}"
        return f"alert:{self.test}={value}"

    def as_dict(self) -> dict:
        return asdict(self)


class _KeyState:
    __slots__ = ("features", "stored", "distances", "queries", "distinct", "alert", "lock")

    def __init__(self, history: int) -> None:
        self.features = np.zeros((history, FEATURE_DIM), dtype=np.float32)
        self.stored = 0  # queries written into the ring buffer (position = stored % history)
        self.distances: collections.deque[float] = collections.deque(maxlen=history)
        self.queries = 0
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
    """Per-key extraction detector; thread-safe (the server calls `observe` from its codec threads).

    observe(key_id, key_name, features) -> a MonitorAlert the first time the key is flagged, else None.
    """

    def __init__(self, config: MonitorConfig | None = None, clock=time.time) -> None:
        self.config = config or MonitorConfig()
        self.clock = clock
        self._keys: collections.OrderedDict[int, _KeyState] = collections.OrderedDict()
        self._lock = threading.Lock()

    def _state(self, key_id: int) -> _KeyState:
        with self._lock:
            state = self._keys.get(key_id)
            if state is None:
                state = self._keys[key_id] = _KeyState(self.config.history)
                while len(self._keys) > self.config.max_keys:
                    self._keys.popitem(last=False)
            else:
                self._keys.move_to_end(key_id)
            return state

    def flagged(self, key_id: int) -> MonitorAlert | None:
        """The key's alert, if it has one (None for keys not tracked)."""
        with self._lock:
            state = self._keys.get(key_id)
        return None if state is None else state.alert

    def stats(self, key_id: int) -> dict:
        """Queries, distinct images and current W of a tracked key (for tests and benchmarks)."""
        state = self._state(key_id)
        with state.lock:
            return {"queries": state.queries, "distinct": state.distinct, "w": shapiro_w(state.distances)}

    def observe(self, key_id: int, key_name: str, features: np.ndarray) -> MonitorAlert | None:
        """Add one answered query of the key; returns the alert when this query flags the key."""
        cfg = self.config
        state = self._state(key_id)
        with state.lock:
            n = min(state.stored, cfg.history)
            if n:
                diff = state.features[:n] - features
                d = float(np.sqrt(np.einsum("ij,ij->i", diff, diff).min()))
                state.distances.append(d)
            else:
                d = math.inf
            if d > cfg.radius:
                state.distinct += 1
            state.features[state.stored % cfg.history] = features
            state.stored += 1
            state.queries += 1
            if state.alert is not None or state.queries < cfg.min_queries:
                return None
            test, statistic = None, 0.0
            if cfg.distinct and state.distinct >= cfg.distinct and state.distinct >= cfg.distinct_share * state.queries:
                test, statistic = "distinct", float(state.distinct)
            elif cfg.normality > 0:
                w = shapiro_w(state.distances)
                if w < cfg.normality:
                    test, statistic = "normality", w
            if test is None:
                return None
            state.alert = MonitorAlert(key_id=key_id, key_name=key_name, test=test, statistic=statistic,
                                       queries=state.queries, raised_at=self.clock(), action=cfg.policy.value)
            return state.alert
