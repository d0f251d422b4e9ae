"""`imgsteal serve`: the victim owner serves F_V as an inference API (images in, PNG out)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imgsteal.cli._common import user_errors

DEFAULT_DB = Path("imgsteal-api.sqlite")


def serve(
    model: Path = typer.Option(..., help="victim checkpoint: model.safetensors or its run folder (sr or style)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (no TLS: keep it on loopback or behind a proxy)"),
    port: int = typer.Option(8000, help="TCP port; 0 picks a free one"),
    db: Path = typer.Option(DEFAULT_DB, envvar="IMGSTEAL_API_DB", help="SQLite file with API keys and the query log"),
    device: str = typer.Option("auto", help="auto (cuda if present), cpu, cuda, cuda:1 ..."),
    max_body_bytes: int = typer.Option(8 * 1024 * 1024, help="request body limit in bytes (413 above)"),
    max_pixels: int = typer.Option(512 * 512, help="input image limit, width x height (413 above)"),
    rate: float = typer.Option(20.0, help="requests per second per key (token bucket refill); 0 = unlimited"),
    burst: int = typer.Option(40, help="token bucket size per key"),
    max_batch: int = typer.Option(8, help="same-size requests run as one batch, at most this many"),
    max_wait_ms: float = typer.Option(5.0, help="how long a request waits for its batch to fill, ms"),
    max_queue: int = typer.Option(256, help="requests waiting for the model at most (503 above)"),
    port_file: Optional[Path] = typer.Option(None, help="write the bound port to this file once listening"),
    log_level: str = typer.Option("warning", help="uvicorn log level (info shows every request)"),
) -> None:
    """Serve a victim model: POST /v1/translate, GET /v1/info, GET /healthz (see docs/api.md)."""
    with user_errors():
        from imgsteal.victim.accounts import AccountsDB
        from imgsteal.victim.server import ServerSettings, serve as run_server

        settings = ServerSettings(max_body_bytes=max_body_bytes, max_pixels=max_pixels, rate_per_s=rate, burst=burst,
                                  max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue)
        with AccountsDB(db) as accounts:
            if not any(not k.revoked for k in accounts.list_keys()):
                typer.echo(f"note: no active API key yet; create one with: imgsteal keys create --db {db} --name NAME", err=True)

        def ready(url: str) -> None:
            typer.echo(f"serving {model} at {url} (keys and query log: {db})", err=True)

        run_server(model, db, settings, host=host, port=port, device=device, port_file=port_file,
                   log_level=log_level, on_ready=ready)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
