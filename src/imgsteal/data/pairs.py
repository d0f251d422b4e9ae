"""The adversary's pair store: (X_A, F_V(X_A)) as PNG files plus a SQLite manifest.

    STORE/
      manifest.sqlite          one row per answered query (WAL journal)
      inputs/<sha256>.png      the exact bytes sent
      outputs/<sha256>.png     the exact bytes received

A packed query (imgsteal.attack.packing) answers several images at once: each image is stored as
its own pair, its answer cut from the mosaic's, and the pairs share the mosaic's sha256 in
`query_sha256`. Subsets and budgets are drawn over queries (`query_groups`), so a budget of k
queries keeps every image of k mosaics.

A row is committed only after both files are in place (written to a temp name and renamed), so a
harvest killed at any moment loses no answered pair and never leaves a row without its images.
Durability is against the process dying (kill, crash, Ctrl-C), which the OS page cache survives;
no fsync per pair, which would cost ~20 ms a query. A power cut may lose the last few answers.
Inputs are keyed by the sha256 of the bytes sent: a duplicate is never queried twice.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from imgsteal.data.images import decode_image, sha256_bytes
from imgsteal.errors import ImgstealError

SCHEMA = """
CREATE TABLE IF NOT EXISTS queries (
    query_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    input_sha256  TEXT NOT NULL UNIQUE,
    output_sha256 TEXT NOT NULL,
    source        TEXT,
    input_width   INTEGER, input_height INTEGER,
    output_width  INTEGER, output_height INTEGER,
    queried_at    REAL NOT NULL,
    latency_s     REAL,
    cost_usd      REAL NOT NULL,
    query_sha256  TEXT            -- the packed query this pair was cut from (NULL: the pair is its own query)
);
CREATE TABLE IF NOT EXISTS store_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class PairRecord:
    query_id: int
    input_sha256: str
    output_sha256: str
    source: str | None
    input_size: tuple[int, int]  # (width, height)
    output_size: tuple[int, int]
    queried_at: float
    cost_usd: float
    query_sha256: str | None = None

    @property
    def query(self) -> str:
        """The query this pair was answered by: its own input, or the packed mosaic it was cut from."""
        return self.query_sha256 or self.input_sha256


def query_groups(records: list[PairRecord]) -> list[list[PairRecord]]:
    """`records` grouped by the query that answered them, in order of first appearance."""
    groups: dict[str, list[PairRecord]] = {}
    for record in records:
        groups.setdefault(record.query, []).append(record)
    return list(groups.values())


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class PairStore:
    """Open (or create) a pair store folder. Safe for one writer; readers may open it concurrently.

    create=True and no store at `root` yet: nothing is written until the first pair (or info) is
    stored, so a harvest that fails before any answer (bad key, unreachable server) leaves no empty
    store behind; until then the store reads as empty.
    """

    def __init__(self, root: str | Path, create: bool = True) -> None:
        self.root = Path(root)
        db = self.root / "manifest.sqlite"
        if self.root.exists() and not self.root.is_dir():
            raise ImgstealError(f"{self.root} is a file, not a pair store folder")
        if not db.exists() and not create:
            raise ImgstealError(f"no pair store at {self.root} (expected {db}); run `imgsteal harvest` first")
        self.created = db.exists()
        if self.created:
            self.db = self._connect(db)
        else:  # an empty in-memory manifest until the first write
            self.db = sqlite3.connect(":memory:")
            self.db.executescript(SCHEMA)

    def _connect(self, db: Path) -> sqlite3.Connection:
        (self.root / "inputs").mkdir(parents=True, exist_ok=True)
        (self.root / "outputs").mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(db, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: safe against process death
        conn.executescript(SCHEMA)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(queries)")}
        if "query_sha256" not in columns:  # a store from before packed queries: every pair is its own query
            conn.execute("ALTER TABLE queries ADD COLUMN query_sha256 TEXT")
        conn.commit()
        return conn

    def _ensure_created(self) -> None:
        """Create the folder and the manifest on the first write."""
        if not self.created:
            self.db.close()
            self.db = self._connect(self.root / "manifest.sqlite")
            self.created = True

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "PairStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- metadata -------------------------------------------------------------------------------
    def set_info(self, key: str, value: str) -> None:
        self._ensure_created()
        self.db.execute("INSERT OR REPLACE INTO store_info VALUES (?, ?)", (key, value))
        self.db.commit()

    def info(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, value FROM store_info").fetchall())

    # -- writing --------------------------------------------------------------------------------
    def has(self, query_sha256: str) -> bool:
        """Whether a query with these bytes was answered: a single image, or a packed mosaic."""
        return self.db.execute("SELECT 1 FROM queries WHERE input_sha256 = ? OR query_sha256 = ?",
                               (query_sha256, query_sha256)).fetchone() is not None

    def query_count(self) -> int:
        """Answered queries (a packed mosaic counts once, whatever the pairs cut from it)."""
        return self.db.execute("SELECT COUNT(DISTINCT COALESCE(query_sha256, input_sha256)) FROM queries").fetchone()[0]

    def add(
        self,
        input_bytes: bytes,
        output_bytes: bytes,
        *,
        source: str | None,
        input_size: tuple[int, int],
        output_size: tuple[int, int],
        cost_usd: float,
        latency_s: float = 0.0,
        query_sha256: str | None = None,
    ) -> str:
        """Store one answered pair; returns the input sha256. Files first, then the committed row.
        query_sha256: the packed query it was cut from (None: the pair is its own query)."""
        self._ensure_created()
        in_sha, out_sha = sha256_bytes(input_bytes), sha256_bytes(output_bytes)
        _atomic_write(self.root / "inputs" / f"{in_sha}.png", input_bytes)
        _atomic_write(self.root / "outputs" / f"{in_sha}.png", output_bytes)
        self.db.execute(
            "INSERT OR IGNORE INTO queries (input_sha256, output_sha256, source, input_width, input_height,"
            " output_width, output_height, queried_at, latency_s, cost_usd, query_sha256)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (in_sha, out_sha, source, *input_size, *output_size, time.time(), latency_s, cost_usd, query_sha256),
        )
        self.db.commit()
        return in_sha

    # -- reading --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM queries").fetchone()[0]

    def records(self) -> list[PairRecord]:
        rows = self.db.execute(
            "SELECT query_id, input_sha256, output_sha256, source, input_width, input_height,"
            " output_width, output_height, queried_at, cost_usd, query_sha256 FROM queries ORDER BY query_id"
        ).fetchall()
        return [PairRecord(r[0], r[1], r[2], r[3], (r[4], r[5]), (r[6], r[7]), r[8], r[9], r[10]) for r in rows]

    def total_cost(self) -> float:
        return float(self.db.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM queries").fetchone()[0])

    def load_pair(self, record: PairRecord) -> tuple[torch.Tensor, torch.Tensor]:
        """(input, output) as 3 x H x W tensors in [0, 1]."""
        x = decode_image((self.root / "inputs" / f"{record.input_sha256}.png").read_bytes())
        y = decode_image((self.root / "outputs" / f"{record.input_sha256}.png").read_bytes())
        return x, y

    def select(self, fraction: float, seed: int) -> list[PairRecord]:
        """The records of a seeded random subset of round(fraction * queries) queries (at least one),
        in stable order (every pair of a chosen packed query).

        Drawn over the queries sorted by hash, not arrival order: a concurrent harvest stores answers
        in a different order each time, and the same seed must pick the same pairs. Subsets of one
        seed are nested (a 25% subset lies inside the 50% one).
        """
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        groups = query_groups(sorted(self.records(), key=lambda r: (r.query, r.input_sha256)))
        if not groups:
            raise ImgstealError(f"pair store {self.root} is empty; run `imgsteal harvest` first")
        count = max(1, round(fraction * len(groups)))
        order = torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed)).tolist()
        return [record for i in sorted(order[:count]) for record in groups[i]]
