"""DAWN-style watermarking of the victim's answers (Szyller et al. 2020, adapted as in the paper's 7.1).

For each client (API key), a keyed HMAC of the query selects a fraction of its queries, with a secret
drawn once per deployment. For a selected query the answer is visibly altered (Gaussian blur,
monochrome, or embedded text: Figure 8) and the trigger (input, altered output, clean output) is
committed to the client's trigger set in SQLite before the answer leaves. Selection depends only on
(secret, client, query bytes), so a client that sends the same image twice gets the same answer.

The trigger database holds the HMAC secret and the trigger sets: it is created owner-only (0600) and
nothing in it is ever returned by the API, logged or reported.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Optional

import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from pydantic import BaseModel, ConfigDict, Field

from imgsteal.data.images import decode_image, encode_png, to_uint8
from imgsteal.files import create_private_file, make_private
from imgsteal.errors import ImgstealError

SCHEMA = """
CREATE TABLE IF NOT EXISTS deployment (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS triggers (
    trigger_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    client       TEXT NOT NULL,
    input_sha256 TEXT NOT NULL,
    alteration   TEXT NOT NULL,
    created_at   REAL NOT NULL,
    input_png    BLOB NOT NULL,
    altered_png  BLOB NOT NULL,
    clean_png    BLOB NOT NULL,
    UNIQUE (client, input_sha256)
);
"""


class Alteration(str, Enum):
    """How a trigger answer is changed (the paper's Figure 8)."""

    blur = "blur"
    monochrome = "monochrome"
    text = "text"


class WatermarkOptions(BaseModel):
    """Settings of the watermark defence. `db` holds the secret and the trigger sets (0600)."""

    model_config = ConfigDict(extra="forbid")

    db: Optional[Path] = Field(None, description="SQLite file with the HMAC secret and trigger sets, 0600 "
                                                 "(default: <API database>-watermark.sqlite beside the API database)")
    fraction: float = Field(0.005, gt=0, le=1, description="share of each client's queries that become triggers")
    alteration: Alteration = Alteration.blur
    blur_sigma: float = Field(3.0, gt=0, description="Gaussian blur radius, output pixels")
    text: str = Field("imgsteal", min_length=1, max_length=64, description="text drawn on trigger answers")
    text_size: float = Field(0.18, gt=0, le=1, description="font height as a share of the answer's shorter side")


# -- alterations -------------------------------------------------------------------------------
def _pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray(to_uint8(image))


def _tensor(img: Image.Image) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255)


def blur(image: torch.Tensor, sigma: float = 3.0) -> torch.Tensor:
    """Gaussian blur of a 3 x H x W image in [0, 1]; sigma in pixels."""
    return _tensor(_pil(image).filter(ImageFilter.GaussianBlur(radius=sigma)))


def monochrome(image: torch.Tensor) -> torch.Tensor:
    """Grey-scale (ITU-R 601 luma) copy of a 3 x H x W image, still 3 channels."""
    return _tensor(_pil(image).convert("L"))


def embed_text(image: torch.Tensor, text: str = "imgsteal", size: float = 0.18) -> torch.Tensor:
    """Draw `text` across the middle of the image, white with a black outline (Pillow's default font).

    size: font height as a share of the image's shorter side (at least 8 px).
    """
    img = _pil(image)
    px = max(8, round(size * min(img.size)))
    try:
        font = ImageFont.load_default(size=px)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        font = ImageFont.load_default()
    draw = ImageDraw.Draw(img)
    stroke = max(1, px // 12)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font, stroke_width=stroke)
    x = (img.width - (right - left)) // 2 - left
    y = (img.height - (bottom - top)) // 2 - top
    draw.text((x, y), text, font=font, fill=(255, 255, 255), stroke_width=stroke, stroke_fill=(0, 0, 0))
    return _tensor(img)


def alter(image: torch.Tensor, options: WatermarkOptions) -> torch.Tensor:
    """Apply the configured alteration to a 3 x H x W answer in [0, 1]."""
    if options.alteration is Alteration.blur:
        return blur(image, options.blur_sigma)
    if options.alteration is Alteration.monochrome:
        return monochrome(image)
    return embed_text(image, options.text, options.text_size)


# -- selection ---------------------------------------------------------------------------------
def trigger_score(secret: bytes, client: str, input_sha256: str) -> float:
    """HMAC-SHA256(secret, client, query sha256) mapped to [0, 1): uniform and unpredictable without the secret."""
    digest = hmac.new(secret, f"{client}\x00{input_sha256}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def is_trigger(secret: bytes, client: str, input_sha256: str, fraction: float) -> bool:
    """Whether this client's query becomes a trigger (a `fraction` of queries, deterministically)."""
    return trigger_score(secret, client, input_sha256) < fraction


# -- the trigger store -------------------------------------------------------------------------
@dataclass(frozen=True)
class Trigger:
    """One stored trigger: images 3 x H x W in [0, 1] (decoded from the stored PNGs)."""

    trigger_id: int
    client: str
    input_sha256: str
    alteration: str
    input: torch.Tensor
    altered: torch.Tensor
    clean: torch.Tensor


class TriggerStore:
    """The deployment's HMAC secret and every client's trigger set, in one owner-only SQLite file.

    Thread-safe: the server applies defences from several codec threads at once.
    """

    def __init__(self, path: str | Path, create: bool = True) -> None:

        self.path = Path(path)
        if not self.path.exists():
            if not create:
                raise ImgstealError(f"no watermark trigger database at {self.path}")
            create_private_file(self.path)
        else:
            make_private(self.path)
        self._lock = threading.Lock()
        self.db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self.db.commit()

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def __enter__(self) -> "TriggerStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def secret(self) -> bytes:
        """The deployment's 256-bit HMAC secret, drawn on first use."""
        with self._lock:
            row = self.db.execute("SELECT value FROM deployment WHERE name = 'hmac_secret'").fetchone()
            if row is None:
                self.db.execute("INSERT OR IGNORE INTO deployment (name, value) VALUES ('hmac_secret', ?)",
                                (secrets.token_bytes(32),))
                self.db.commit()
                row = self.db.execute("SELECT value FROM deployment WHERE name = 'hmac_secret'").fetchone()
            return bytes(row[0])

    def add(self, client: str, input_sha256: str, alteration: str, input_image: torch.Tensor,
            altered: torch.Tensor, clean: torch.Tensor) -> None:
        """Commit a trigger (idempotent per client and query); returns once it is durable."""
        row = (client, input_sha256, alteration, time.time(), encode_png(input_image), encode_png(altered), encode_png(clean))
        with self._lock, self.db:
            self.db.execute(
                "INSERT OR IGNORE INTO triggers (client, input_sha256, alteration, created_at, input_png, altered_png,"
                " clean_png) VALUES (?,?,?,?,?,?,?)", row)

    def has(self, client: str, input_sha256: str) -> bool:
        with self._lock:
            return self.db.execute("SELECT 1 FROM triggers WHERE client = ? AND input_sha256 = ?",
                                   (client, input_sha256)).fetchone() is not None

    def count(self, client: str | None = None) -> int:
        """Stored triggers, of one client or of all."""
        with self._lock:
            if client is None:
                return self.db.execute("SELECT COUNT(*) FROM triggers").fetchone()[0]
            return self.db.execute("SELECT COUNT(*) FROM triggers WHERE client = ?", (client,)).fetchone()[0]

    def clients(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self.db.execute("SELECT DISTINCT client FROM triggers ORDER BY client")]

    def triggers(self, client: str) -> list[Trigger]:
        """The client's trigger set, oldest first."""
        with self._lock:
            rows = self.db.execute(
                "SELECT trigger_id, client, input_sha256, alteration, input_png, altered_png, clean_png FROM triggers"
                " WHERE client = ? ORDER BY trigger_id", (client,)).fetchall()
        return [Trigger(r[0], r[1], r[2], r[3], decode_image(r[4]), decode_image(r[5]), decode_image(r[6])) for r in rows]


# -- the defence -------------------------------------------------------------------------------
class WatermarkDefense:
    """Output defence: alters a keyed-HMAC-selected fraction of each client's answers and records them.

    apply(...) -> (altered answer, "watermark:<alteration>") for a trigger, (answer, None) otherwise.
    """

    name = "watermark"

    def __init__(self, options: WatermarkOptions | None = None, store: TriggerStore | None = None) -> None:
        self.options = options or WatermarkOptions()
        if store is None and self.options.db is None:
            raise ImgstealError("the watermark defence needs a database path (WatermarkOptions.db)")
        self.store = store or TriggerStore(self.options.db)
        self._secret = self.store.secret()

    def selects(self, client: str, input_sha256: str) -> bool:
        return is_trigger(self._secret, client, input_sha256, self.options.fraction)

    def apply(self, key_name: str, input_image: torch.Tensor, output_image: torch.Tensor,
              input_sha256: str) -> tuple[torch.Tensor, str | None]:
        if not self.selects(key_name, input_sha256):
            return output_image, None
        altered = alter(output_image, self.options)
        # Committed before returning: the answer cannot leave without its trigger on disk.
        self.store.add(key_name, input_sha256, self.options.alteration.value, input_image, altered, output_image)
        return altered, f"{self.name}:{self.options.alteration.value}"

    def close(self) -> None:
        self.store.close()
