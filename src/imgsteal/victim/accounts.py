"""API keys and the query log of the victim's inference service, in one SQLite file (WAL).

A key is `isk_<id>_<secret>`: the public id finds the row, the secret is never stored. The row keeps
sha256(salt || key) with a random per-key salt; a fast hash is enough because the secret is 256
random bits (nothing to brute-force), and the salt keeps equal hashes from ever matching across rows.
The database file is created owner-only (0600); SQLite gives its -wal and -shm files the same mode.

A key may belong to an account (`account`: the customer who holds it, e.g. one per contract or
payment method): the extraction monitor then also watches the account's keys together, so an
adversary who spreads its queries over the keys of one account is seen as one.

Every answered query is one `query_log` row; its `monitor` column names the extraction-monitor
alert that query raised (imgsteal.defenses.monitor), and `monitor_alerts` keeps one row per alert. `QueryLogWriter` commits rows from a background thread
in groups (one fsync for all the rows that arrived meanwhile), and hands each caller its row id only
after the commit, so the server can send an answer strictly after its log row is durable.
"""

from __future__ import annotations

import hashlib
import hmac
import queue
import secrets
import sqlite3
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from imgsteal.errors import ImgstealError
from imgsteal.files import create_private_file

KEY_PREFIX = "isk"

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL UNIQUE,
    public_id   TEXT NOT NULL UNIQUE,
    salt        TEXT NOT NULL,
    key_hash    TEXT NOT NULL,
    created_at  REAL NOT NULL,
    revoked_at  REAL,
    account     TEXT
);
CREATE TABLE IF NOT EXISTS query_log (
    query_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id        INTEGER NOT NULL REFERENCES api_keys(key_id),
    queried_at    REAL NOT NULL,
    input_sha256  TEXT NOT NULL,
    input_bytes   INTEGER NOT NULL,
    input_width   INTEGER NOT NULL,
    input_height  INTEGER NOT NULL,
    output_sha256 TEXT NOT NULL,
    latency_ms    REAL NOT NULL,
    defense       TEXT,
    monitor       TEXT
);
CREATE INDEX IF NOT EXISTS query_log_by_key ON query_log(key_id, queried_at);
CREATE TABLE IF NOT EXISTS monitor_alerts (
    alert_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id      INTEGER NOT NULL REFERENCES api_keys(key_id),
    raised_at   REAL NOT NULL,
    test        TEXT NOT NULL,
    statistic   REAL NOT NULL,
    queries     INTEGER NOT NULL,
    action      TEXT NOT NULL,
    account     TEXT
);
"""


class ApiKeyError(ImgstealError):
    """A key operation the user asked for cannot be done (duplicate name, unknown name)."""


@dataclass(frozen=True)
class ApiKey:
    key_id: int
    name: str
    public_id: str
    created_at: float
    revoked_at: float | None
    queries: int = 0
    alert: str | None = None  # the extraction monitor's first alert on this key, e.g. "distinct=20 after 22 queries (log)"
    account: str | None = None  # the customer account the key belongs to (None: a key on its own)

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


@dataclass(frozen=True)
class QueryRecord:
    """One answered query. Sizes in bytes and pixels; latency from request arrival to logged answer, ms."""

    key_id: int
    queried_at: float
    input_sha256: str
    input_bytes: int
    input_width: int
    input_height: int
    output_sha256: str
    latency_ms: float
    defense: str | None = None
    monitor: str | None = None  # the monitor alert this query raised, e.g. "alert:distinct=20"


def statistic_text(test: str, statistic: float) -> str:
    """A monitor alert's statistic as the query log and `keys list` write it (W to 3 decimals, counts whole)."""
    return f"{statistic:.3f}" if test == "normality" else f"{statistic:g}"


def _hash_key(salt: str, key: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + key.encode()).hexdigest()


def _public_id(key: str) -> str | None:
    parts = key.split("_", 2)  # the secret itself may contain "_"
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1]


def connect(path: str | Path, create: bool = True) -> sqlite3.Connection:
    """Open (creating owner-only) the service database with WAL and the schema in place.
    create=False: a database that does not exist is an ApiKeyError naming the path (nothing is made)."""
    path = Path(path)
    if not create and not path.is_file():
        raise ApiKeyError(f"no service database at {path}" + (" (it is a folder)" if path.is_dir() else "")
                          + "; check --db, or make one with `imgsteal keys create --name NAME --db PATH`")
    create_private_file(path)
    db = sqlite3.connect(path, timeout=30, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(SCHEMA)
    # Columns added since the first release: a database made before them gets them on open
    for table, column in (("query_log", "monitor"), ("api_keys", "account"), ("monitor_alerts", "account")):
        if column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}:
            try:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")
            except sqlite3.OperationalError as exc:  # another connection added it meanwhile
                if "duplicate column" not in str(exc):
                    raise
    db.commit()
    return db


class AccountsDB:
    """API keys and the query log. One instance per thread (it holds one SQLite connection)."""

    def __init__(self, path: str | Path, create: bool = True) -> None:
        """create=False (listing, revoking): a missing database is an error, never made empty."""
        self.path = Path(path)
        self.db = connect(self.path, create=create)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "AccountsDB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- keys -----------------------------------------------------------------------------------
    def create_key(self, name: str, account: str | None = None) -> tuple[ApiKey, str]:
        """Make a key named `name` (of `account`, if given); returns (its record, the key itself). The
        key is not stored: show it once."""
        name = name.strip()
        account = (account or "").strip() or None
        if not name:
            raise ApiKeyError("a key needs a non-empty --name")
        public_id = secrets.token_hex(6)
        key = f"{KEY_PREFIX}_{public_id}_{secrets.token_urlsafe(32)}"
        salt = secrets.token_hex(16)
        now = time.time()
        try:
            cur = self.db.execute(
                "INSERT INTO api_keys (name, public_id, salt, key_hash, created_at, account) VALUES (?, ?, ?, ?, ?, ?)",
                (name, public_id, salt, _hash_key(salt, key), now, account),
            )
            self.db.commit()
        except sqlite3.IntegrityError as exc:
            self.db.rollback()
            raise ApiKeyError(f"a key named {name!r} already exists (names stay taken after revocation)") from exc
        return ApiKey(cur.lastrowid, name, public_id, now, None, account=account), key

    def list_keys(self) -> list[ApiKey]:
        """All keys, oldest first, with their answered-query counts and first monitor alert."""
        rows = self.db.execute(
            "SELECT k.key_id, k.name, k.public_id, k.created_at, k.revoked_at,"
            " (SELECT COUNT(*) FROM query_log q WHERE q.key_id = k.key_id), k.account"
            " FROM api_keys k ORDER BY k.key_id"
        ).fetchall()
        alerts = self.alerts()
        return [ApiKey(*row[:6], alert=alerts.get(row[0]), account=row[6]) for row in rows]

    def alerts(self) -> dict[int, str]:
        """key id -> the first extraction-monitor alert on it, as text: "distinct=20 after 22 queries
        (throttle)" for the key's own stream, "account acme: distinct=20 after 20 queries (log)" when its
        account's keys together raised it (shown on every key of the account)."""
        keys_of: dict[str, list[int]] = {}
        for key_id, account in self.db.execute("SELECT key_id, account FROM api_keys WHERE account IS NOT NULL"):
            keys_of.setdefault(account, []).append(key_id)
        out: dict[int, str] = {}
        for key_id, test, statistic, queries, action, account in self.db.execute(
                "SELECT key_id, test, statistic, queries, action, account FROM monitor_alerts ORDER BY alert_id"):
            text = f"{test}={statistic_text(test, statistic)} after {queries} queries ({action})"
            for flagged in keys_of.get(account, []) if account else [key_id]:
                out.setdefault(flagged, f"account {account}: {text}" if account else text)
        return out

    def record_alert(self, alert) -> None:
        """Store a monitor alert (any object with key_id, raised_at, test, statistic, queries, action and
        account: None for a key's own stream, else the account whose keys raised it together); action
        'revoke' also revokes the key, or every key of the account."""
        account = getattr(alert, "account", None)
        with self.db:
            self.db.execute("INSERT INTO monitor_alerts (key_id, raised_at, test, statistic, queries, action, account)"
                            " VALUES (?,?,?,?,?,?,?)",
                            (alert.key_id, alert.raised_at, alert.test, alert.statistic, alert.queries, alert.action,
                             account))
            if alert.action == "revoke":
                where, arg = ("account = ?", account) if account else ("key_id = ?", alert.key_id)
                self.db.execute(f"UPDATE api_keys SET revoked_at = ? WHERE {where} AND revoked_at IS NULL",
                                (alert.raised_at, arg))

    def revoke_key(self, name: str) -> ApiKey:
        """Revoke the key named `name` (idempotent); later requests with it get 403."""
        self.db.execute("UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", (time.time(), name))
        self.db.commit()
        found = [k for k in self.list_keys() if k.name == name]
        if not found:
            raise ApiKeyError(f"no key named {name!r}")
        return found[0]

    def authenticate(self, key: str | None) -> ApiKey | None:
        """The key's record if `key` is a key of this service (revoked or not), else None."""
        public_id = _public_id(key or "")
        if public_id is None:
            return None
        row = self.db.execute(
            "SELECT key_id, name, public_id, created_at, revoked_at, salt, key_hash, account FROM api_keys"
            " WHERE public_id = ?", (public_id,),
        ).fetchone()
        if row is None or not hmac.compare_digest(_hash_key(row[5], key), row[6]):
            return None
        return ApiKey(*row[:5], account=row[7])

    # -- query log ------------------------------------------------------------------------------
    def log_queries(self, records: list[QueryRecord]) -> list[int]:
        """Insert and commit `records` in one transaction; returns their query ids."""
        ids = []
        with self.db:  # one transaction: commits on exit, rolls back on error
            for r in records:
                cur = self.db.execute(
                    "INSERT INTO query_log (key_id, queried_at, input_sha256, input_bytes, input_width, input_height,"
                    " output_sha256, latency_ms, defense, monitor) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (r.key_id, r.queried_at, r.input_sha256, r.input_bytes, r.input_width, r.input_height,
                     r.output_sha256, r.latency_ms, r.defense, r.monitor),
                )
                ids.append(cur.lastrowid)
        return ids

    def queries(self, key_name: str | None = None) -> list[dict]:
        """Logged queries (oldest first) as dicts with the key's name; optionally of one key only."""
        sql = ("SELECT q.query_id, k.name, q.queried_at, q.input_sha256, q.input_bytes, q.input_width, q.input_height,"
               " q.output_sha256, q.latency_ms, q.defense, q.monitor FROM query_log q JOIN api_keys k USING (key_id)")
        args: tuple = ()
        if key_name is not None:
            sql += " WHERE k.name = ?"
            args = (key_name,)
        cols = ("query_id", "key_name", "queried_at", "input_sha256", "input_bytes", "input_width", "input_height",
                "output_sha256", "latency_ms", "defense", "monitor")
        return [dict(zip(cols, row)) for row in self.db.execute(sql + " ORDER BY q.query_id", args).fetchall()]


class QueryLogWriter:
    """Commits query-log rows from one background thread, grouping rows that arrive together.

    `submit(record)` returns a Future that resolves to the row's query id once it is committed.
    """

    def __init__(self, path: str | Path, max_group: int = 256) -> None:
        self._accounts = AccountsDB(path)
        self._queue: queue.Queue = queue.Queue()
        self._max_group = max_group
        self._thread = threading.Thread(target=self._run, name="imgsteal-query-log", daemon=True)
        self._thread.start()

    def submit(self, record: QueryRecord) -> Future:
        future: Future = Future()
        self._queue.put((record, future))
        return future

    def submit_alert(self, alert) -> Future:
        """Queue a monitor alert (see AccountsDB.record_alert); the Future resolves to None once committed."""
        future: Future = Future()
        self._queue.put((alert, future))
        return future

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                break
            group = [item]
            while len(group) < self._max_group:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # stop after this group
                    break
                group.append(nxt)
            alerts = [item for item in group if not isinstance(item[0], QueryRecord)]
            group = [item for item in group if isinstance(item[0], QueryRecord)]
            for alert, future in alerts:
                try:
                    self._accounts.record_alert(alert)
                except Exception as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(None)
            if not group:
                continue
            try:
                ids = self._accounts.log_queries([record for record, _ in group])
            except Exception as exc:  # the caller answers 5xx; the writer keeps serving later rows
                for _, future in group:
                    future.set_exception(exc)
            else:
                for (_, future), query_id in zip(group, ids):
                    future.set_result(query_id)

    def close(self) -> None:
        """Commit what is queued, then stop the thread and close the connection."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._accounts.close()
