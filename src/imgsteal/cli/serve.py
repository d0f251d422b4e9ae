"""`imgsteal serve`: the victim owner serves F_V as an inference API (images in, PNG out)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

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
    defense: Optional[List[str]] = typer.Option(None, "--defense", help="output defence: watermark, fingerprint or pgd; repeat to combine (applied in order; docs/defenses.md)"),
    watermark_db: Optional[Path] = typer.Option(None, help="watermark: SQLite file of the HMAC secret and trigger sets, 0600 (default: next to --db)"),
    watermark_fraction: Optional[float] = typer.Option(None, help="watermark: share of each key's queries made triggers (default 0.005)"),
    watermark_alteration: Optional[str] = typer.Option(None, help="watermark: blur, monochrome or text (default blur)"),
    watermark_blur_sigma: Optional[float] = typer.Option(None, help="watermark: blur radius in pixels (default 3)"),
    watermark_text: Optional[str] = typer.Option(None, help="watermark: text drawn on trigger answers (default imgsteal)"),
    fingerprint_model: Optional[Path] = typer.Option(None, help="fingerprint: run folder of `imgsteal fingerprint train`"),
    pgd_discriminator: Optional[Path] = typer.Option(None, help="pgd: the victim's training checkpoint or run folder (holds its discriminator)"),
    pgd_module: Optional[str] = typer.Option(None, help="pgd: discriminator module name in that checkpoint (default: found by name)"),
    pgd_epsilon: Optional[float] = typer.Option(None, help="pgd: L-infinity bound, [0, 1] pixel units (default 0.25)"),
    pgd_steps: Optional[int] = typer.Option(None, help="pgd: gradient steps (default 10)"),
    pgd_step_size: Optional[float] = typer.Option(None, help="pgd: step size (default 2.5 * epsilon / steps)"),
    pgd_target: Optional[str] = typer.Option(None, help="pgd: fake or real, the label whose discriminator loss is raised (default fake)"),
) -> None:
    """Serve a victim model: POST /v1/translate, GET /v1/info, GET /healthz (see docs/api.md)."""
    with user_errors():
        from imgsteal.defenses.registry import build_defenses
        from imgsteal.victim.accounts import AccountsDB
        from imgsteal.victim.server import ServerSettings, serve as run_server

        settings = ServerSettings(max_body_bytes=max_body_bytes, max_pixels=max_pixels, rate_per_s=rate, burst=burst,
                                  max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue)
        with AccountsDB(db) as accounts:
            if not any(not k.revoked for k in accounts.list_keys()):
                typer.echo(f"note: no active API key yet; create one with: imgsteal keys create --db {db} --name NAME", err=True)

        flags = dict(watermark_db=watermark_db, watermark_fraction=watermark_fraction,
                     watermark_alteration=watermark_alteration, watermark_blur_sigma=watermark_blur_sigma,
                     watermark_text=watermark_text, fingerprint_model=fingerprint_model,
                     pgd_discriminator=pgd_discriminator, pgd_module=pgd_module, pgd_epsilon=pgd_epsilon,
                     pgd_steps=pgd_steps, pgd_step_size=pgd_step_size, pgd_target=pgd_target)
        defaults = {"watermark_db": db.with_name(db.stem + "-watermark.sqlite"), "pgd_device": device,
                    "fingerprint_device": device}
        defenses = build_defenses(defense or [], flags, defaults)

        def ready(url: str) -> None:
            shown = f", defences: {', '.join(defense)}" if defense else ""
            typer.echo(f"serving {model} at {url} (keys and query log: {db}{shown})", err=True)

        run_server(model, db, settings, host=host, port=port, device=device, port_file=port_file,
                   log_level=log_level, on_ready=ready, defenses=defenses)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
