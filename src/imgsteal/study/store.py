"""The ratings database (SQLite, WAL): participants, their shuffled order, demographics and ratings.

Every answer is validated and committed in one `BEGIN IMMEDIATE` transaction, so two requests
racing for the same participant cannot both pass the checks, and a refused answer leaves nothing
behind. A connection is opened per operation, which keeps the store safe to use from the web
server's worker threads.

The file holds credentials (the admin key, every participant's token): it is created owner-only
(0600), SQLite gives its -wal and -shm files the same mode, and opening a looser file tightens it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from imgsteal.errors import ImgstealError
from imgsteal.files import create_private_file, make_private

MAX_COMMENT_CHARS = 2000

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE participants (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    token TEXT NOT NULL UNIQUE,
    seed INTEGER NOT NULL,
    item_order TEXT NOT NULL,            -- JSON list of item ids, as shown
    created_at TEXT NOT NULL,
    demographics_done INTEGER NOT NULL DEFAULT 0,
    gender TEXT, age TEXT, education TEXT,
    comment TEXT,
    finished_at TEXT
);
CREATE TABLE ratings (
    participant_id INTEGER NOT NULL REFERENCES participants(id),
    item_id TEXT NOT NULL,
    position INTEGER NOT NULL,           -- 1-based place of the item in this participant's order
    rating INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    answered_at TEXT NOT NULL,
    PRIMARY KEY (participant_id, item_id)
);
"""


class StudyInputError(ImgstealError):
    """An answer that is malformed: bad rating, missing field, unknown item or choice (HTTP 422)."""

    status_code = 422


class StudyConflict(ImgstealError):
    """An answer that is well-formed but not allowed now: already given, or participant finished (409)."""

    status_code = 409


class UnknownParticipant(ImgstealError):
    """No participant has this token (HTTP 404)."""

    status_code = 404


def utc_now() -> str:
    """Current UTC time as ISO 8601 with milliseconds."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def validate_rating(value: object) -> int:
    """A Likert rating as an int in 1..5; accepts ints or decimal strings like '3'. Else StudyInputError."""
    if isinstance(value, bool):
        raise StudyInputError("rating must be a whole number from 1 to 5")
    if isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdigit()):
            raise StudyInputError(f"rating must be a whole number from 1 to 5, got {value!r}")
        value = int(text)
    if not isinstance(value, int):
        raise StudyInputError(f"rating must be a whole number from 1 to 5, got {value!r}")
    if not 1 <= value <= 5:
        raise StudyInputError(f"rating must be from 1 to 5, got {value}")
    return value


@dataclass(frozen=True)
class Participant:
    id: int
    token: str
    seed: int
    order: list[str]
    created_at: str
    demographics_done: bool
    gender: str | None
    age: str | None
    education: str | None
    comment: str | None
    finished_at: str | None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    @property
    def code(self) -> str:
        """Pseudonymous label for exports ('P0007'); the token itself is a credential and never exported."""
        return f"P{self.id:04d}"


def _participant(row: sqlite3.Row) -> Participant:
    return Participant(
        id=row["id"],
        token=row["token"],
        seed=row["seed"],
        order=json.loads(row["item_order"]),
        created_at=row["created_at"],
        demographics_done=bool(row["demographics_done"]),
        gender=row["gender"],
        age=row["age"],
        education=row["education"],
        comment=row["comment"],
        finished_at=row["finished_at"],
    )


class StudyStore:
    """Access to one study's SQLite file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise ImgstealError(f"ratings database not found: {self.path}")
        make_private(self.path)

    @classmethod
    def create(cls, path: str | Path) -> "StudyStore":
        """Create a new, empty database with a fresh admin key. Refuses to overwrite."""
        path = Path(path)
        if path.exists():
            raise ImgstealError(f"{path} already exists; refusing to overwrite a ratings database")
        create_private_file(path)  # owner-only from the first byte
        conn = sqlite3.connect(path)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            conn.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("admin_key", secrets.token_urlsafe(18)), ("created_at", utc_now())],
            )
            conn.commit()
        finally:
            conn.close()
        return cls(path)

    def close(self) -> None:
        """Nothing is held open between operations; kept so callers can treat the store as a resource."""

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=15.0, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        try:
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """Write transaction: all or nothing, taken with the write lock up front."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # -- reading ---------------------------------------------------------------------------------

    def admin_key(self) -> str:
        with self._connect() as conn:
            return conn.execute("SELECT value FROM meta WHERE key = 'admin_key'").fetchone()[0]

    def participant(self, token: str) -> Participant:
        """The participant with this token; UnknownParticipant if none."""
        with self._connect() as conn:
            return self._participant(conn, token)

    @staticmethod
    def _participant(conn: sqlite3.Connection, token: str) -> Participant:
        row = conn.execute("SELECT * FROM participants WHERE token = ?", (token,)).fetchone()
        if row is None:
            raise UnknownParticipant("this participant link is not valid; please start the study from its first page")
        return _participant(row)

    def participants(self) -> list[Participant]:
        with self._connect() as conn:
            return [_participant(r) for r in conn.execute("SELECT * FROM participants ORDER BY id")]

    def answers(self, participant_id: int) -> dict[str, int]:
        """item id -> rating given by this participant."""
        with self._connect() as conn:
            rows = conn.execute("SELECT item_id, rating FROM ratings WHERE participant_id = ?", (participant_id,))
            return {r["item_id"]: r["rating"] for r in rows}

    def rating_rows(self) -> list[sqlite3.Row]:
        """All ratings joined with their participant, ordered by participant then position."""
        with self._connect() as conn:
            return conn.execute(
                "SELECT p.id AS participant_id, p.gender, p.age, p.education, p.finished_at, "
                "r.item_id, r.position, r.rating, r.answered_at "
                "FROM ratings r JOIN participants p ON p.id = r.participant_id "
                "ORDER BY p.id, r.position"
            ).fetchall()

    # -- writing ---------------------------------------------------------------------------------

    def new_participant(self, order_for_seed: Callable[[int], list[str]]) -> Participant:
        """Create a participant with an unguessable token and a random seed; the order is recorded."""
        seed = secrets.randbits(62)
        order = order_for_seed(seed)
        token = secrets.token_urlsafe(18)
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO participants (token, seed, item_order, created_at) VALUES (?, ?, ?, ?)",
                (token, seed, json.dumps(order), utc_now()),
            )
            return self._participant(conn, token)

    def save_demographics(self, token: str, answers: dict[str, str | None]) -> None:
        """Record (possibly empty) demographics once, before the participant finishes."""
        with self._transaction() as conn:
            participant = self._participant(conn, token)
            if participant.finished:
                raise StudyConflict("you have already completed this study; your answers were recorded")
            if participant.demographics_done:
                raise StudyConflict("your background information was already recorded")
            conn.execute(
                "UPDATE participants SET demographics_done = 1, gender = ?, age = ?, education = ? WHERE id = ?",
                (answers.get("gender"), answers.get("age"), answers.get("education"), participant.id),
            )

    def record_rating(self, token: str, item_id: str, rating: object, comment: str | None = None) -> bool:
        """Store one rating (and an optional comment) atomically; returns True if this finished the study.

        Raises UnknownParticipant, StudyInputError (bad rating, item not in this participant's
        study, comment too long) or StudyConflict (item already rated, participant finished).
        """
        rating = validate_rating(rating)
        if comment is not None and len(comment) > MAX_COMMENT_CHARS:
            raise StudyInputError(f"the comment is too long ({len(comment)} characters; at most {MAX_COMMENT_CHARS})")
        with self._transaction() as conn:
            participant = self._participant(conn, token)
            if participant.finished:
                raise StudyConflict("you have already completed this study; your answers were recorded and cannot be changed")
            if item_id not in participant.order:
                raise StudyInputError("unknown item: this image pair is not part of your questionnaire")
            done = conn.execute(
                "SELECT 1 FROM ratings WHERE participant_id = ? AND item_id = ?", (participant.id, item_id)
            ).fetchone()
            if done is not None:
                raise StudyConflict("you have already rated this image pair; please continue with the next one")
            now = utc_now()
            conn.execute(
                "INSERT INTO ratings (participant_id, item_id, position, rating, answered_at) VALUES (?, ?, ?, ?, ?)",
                (participant.id, item_id, participant.order.index(item_id) + 1, rating, now),
            )
            if comment:
                conn.execute("UPDATE participants SET comment = ? WHERE id = ?", (comment, participant.id))
            count = conn.execute("SELECT COUNT(*) FROM ratings WHERE participant_id = ?", (participant.id,)).fetchone()[0]
            finished = count == len(participant.order)
            if finished:
                conn.execute("UPDATE participants SET finished_at = ? WHERE id = ?", (now, participant.id))
            return finished
