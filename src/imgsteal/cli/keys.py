"""`imgsteal keys create|list|revoke`: API keys of the victim's inference service."""

from __future__ import annotations

import datetime as dt
import unicodedata
from pathlib import Path

import typer

from imgsteal.cli._common import user_errors
from imgsteal.cli.serve import DEFAULT_DB

keys_app = typer.Typer(help="API keys of the inference service (stored hashed in its SQLite file).", no_args_is_help=True)

DB_OPTION = typer.Option(DEFAULT_DB, envvar="IMGSTEAL_API_DB", help="SQLite file with API keys and the query log")


def printable(text: str) -> str:
    """`text` with every control, format or separator character other than a space escaped
    (\\n, \\x1b, \\u202e ...) and backslashes doubled, so one name is always one table cell: a
    newline, a carriage return, an ANSI escape or a bidi override in a key name cannot forge a row."""
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == " " or not unicodedata.category(ch).startswith(("C", "Z")):
            out.append(ch)
        elif ch in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return "".join(out)


def _when(timestamp: float | None) -> str:
    return "-" if timestamp is None else dt.datetime.fromtimestamp(timestamp).isoformat(sep=" ", timespec="seconds")


@keys_app.command("create")
def create(name: str = typer.Option(..., help="who the key is for (unique)"),
           account: str = typer.Option(None, help="the customer account the key belongs to: `serve --monitor` "
                                                  "also watches an account's keys together"),
           db: Path = DB_OPTION) -> None:
    """Create a key and print it on stdout, once: only its salted hash is kept."""
    with user_errors():
        from imgsteal.victim.accounts import AccountsDB

        with AccountsDB(db) as accounts:
            _, key = accounts.create_key(name, account)
        typer.echo(f"created key {name!r}; it is shown only now:", err=True)
        typer.echo(key)


@keys_app.command("list")
def list_keys(db: Path = DB_OPTION) -> None:
    """Show every key: name, id, created, revoked, answered queries, and the extraction monitor's first
    alert on it (`serve --monitor`; control characters in names escaped)."""
    with user_errors():
        from imgsteal.victim.accounts import AccountsDB

        with AccountsDB(db, create=False) as accounts:
            keys = accounts.list_keys()
        if not keys:
            typer.echo(f"no keys in {db}", err=True)
            return
        typer.echo(f"{'name':<20} {'account':<12} {'id':<12} {'created':<19} {'revoked':<19} {'queries':>8}  monitor alert")
        for k in keys:
            typer.echo(f"{printable(k.name):<20} {printable(k.account or '-'):<12} {k.public_id:<12} "
                       f"{_when(k.created_at):<19} {_when(k.revoked_at):<19} {k.queries:>8}  {printable(k.alert or '-')}")


@keys_app.command("revoke")
def revoke(name: str = typer.Option(..., help="the key's name"), db: Path = DB_OPTION) -> None:
    """Revoke a key: from now on requests with it get 403 (a running server sees it at once)."""
    with user_errors():
        from imgsteal.victim.accounts import AccountsDB

        with AccountsDB(db, create=False) as accounts:
            key = accounts.revoke_key(name)
        typer.echo(f"revoked {key.name!r} ({key.queries} queries answered)")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
