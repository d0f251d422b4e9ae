"""API keys (salted hashes, revocation, owner-only file) and the group-committed query log."""

from __future__ import annotations

import sqlite3
import stat
import threading
import time

import pytest
from typer.testing import CliRunner

from imgsteal.victim.accounts import AccountsDB, ApiKeyError, QueryLogWriter, QueryRecord


def record(key_id: int, i: int) -> QueryRecord:
    return QueryRecord(key_id=key_id, queried_at=time.time(), input_sha256=f"{i:064x}", input_bytes=100 + i,
                       input_width=16, input_height=16, output_sha256=f"{i + 1:064x}", latency_ms=1.5)


def test_keys_authenticate_revoke_and_are_never_stored(tmp_path):
    db = tmp_path / "api.sqlite"
    with AccountsDB(db) as accounts:
        alice, alice_key = accounts.create_key("alice")
        _, bob_key = accounts.create_key("bob")
        assert alice_key.startswith("isk_") and alice_key != bob_key
        assert accounts.authenticate(alice_key).name == "alice"
        assert accounts.authenticate(bob_key).name == "bob"
        # Right public id, wrong secret; garbage; nothing.
        assert accounts.authenticate(alice_key[:-4] + "AAAA") is None
        assert accounts.authenticate("isk_nope_nope") is None
        assert accounts.authenticate("") is None and accounts.authenticate(None) is None
        revoked = accounts.revoke_key("alice")
        assert revoked.revoked
        assert accounts.authenticate(alice_key).revoked
        assert not accounts.authenticate(bob_key).revoked
        salts = [row[0] for row in accounts.db.execute("SELECT salt FROM api_keys")]
        assert len(set(salts)) == 2
        with pytest.raises(ApiKeyError):
            accounts.create_key("alice")
        with pytest.raises(ApiKeyError):
            accounts.revoke_key("carol")
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    for key in (alice_key, bob_key):
        assert key.encode() not in stored
        assert key.split("_", 2)[2].encode() not in stored


def test_query_log_writer_commits_before_resolving(tmp_path):
    db = tmp_path / "api.sqlite"
    with AccountsDB(db) as accounts:
        key, _ = accounts.create_key("alice")
    writer = QueryLogWriter(db)
    ids: list[int] = []
    lock = threading.Lock()

    def client(start: int) -> None:
        for i in range(start, start + 25):
            query_id = writer.submit(record(key.key_id, i)).result(timeout=30)
            # A fresh connection sees the row as soon as the caller is told its id.
            seen = sqlite3.connect(db).execute("SELECT input_sha256 FROM query_log WHERE query_id = ?", (query_id,)).fetchone()
            assert seen == (f"{i:064x}",)
            with lock:
                ids.append(query_id)

    threads = [threading.Thread(target=client, args=(k * 100,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    assert len(ids) == len(set(ids)) == 100
    with AccountsDB(db) as accounts:
        rows = accounts.queries("alice")
        assert sorted(r["query_id"] for r in rows) == sorted(ids)
        assert accounts.list_keys()[0].queries == 100


def test_keys_cli(tmp_path):
    from imgsteal.cli import app

    db = str(tmp_path / "keys.sqlite")
    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "--name", "alice", "--db", db])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip().splitlines()[-1]
    with AccountsDB(db) as accounts:
        assert accounts.authenticate(key).name == "alice"
    listed = runner.invoke(app, ["keys", "list", "--db", db])
    assert listed.exit_code == 0 and "alice" in listed.stdout and key not in listed.stdout
    assert runner.invoke(app, ["keys", "revoke", "--name", "alice", "--db", db]).exit_code == 0
    with AccountsDB(db) as accounts:
        assert accounts.authenticate(key).revoked
    again = runner.invoke(app, ["keys", "create", "--name", "alice", "--db", db])
    assert again.exit_code == 2 and "already exists" in again.output
    missing = runner.invoke(app, ["keys", "revoke", "--name", "nobody", "--db", db])
    assert missing.exit_code == 2


def test_keys_list_escapes_control_characters_so_no_row_can_be_forged(tmp_path):
    from imgsteal.cli import app
    from imgsteal.cli.keys import printable

    db = str(tmp_path / "keys.sqlite")
    forged = "eve\nadmin                aaaaaaaaaaaa 2020-01-01 00:00:00  -                          0"
    names = [forged, "ansi\x1b[2K\rroot", "bidi\u202eevil", "tab\there", "back\\nslash", "plain name"]
    with AccountsDB(db) as accounts:
        for name in names:
            accounts.create_key(name)
    listed = CliRunner().invoke(app, ["keys", "list", "--db", db])
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert len(lines) == 1 + len(names)  # header + exactly one row per key
    for line, name in zip(lines[1:], names):
        assert line.startswith(printable(name))
    assert not any(ch in listed.stdout for ch in "\r\x1b\u202e\t")
    assert not any(line.startswith("admin") for line in lines)
    # escaping is unambiguous: a literal backslash-n differs from a newline
    assert printable("a\nb") == "a\\nb" and printable("a\\nb") == "a\\\\nb" and printable("é ü") == "é ü"
