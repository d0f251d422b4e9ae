"""`imgsteal serve`: the victim owner serves F_V as an inference API (images in, PNG out).

The server's limits are the fields of `ServerSettings` and each defence's options the fields of its
options model: their flags are generated from those models (imgsteal.cli._options), so a default or
a help text is written once. `--config FILE` gives the same settings as a file (a ServiceConfig:
`settings:` and `defenses:`), which is how experiments start their servers.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from imgsteal.cli._common import UserError, user_errors

DEFAULT_DB = Path("imgsteal-api.sqlite")
# Flags whose names predate the generated ones (kept so existing scripts keep working), or read better.
SETTING_FLAGS = {"rate_per_s": "--rate", "max_memory_mb": "--max-memory"}


def serve(
    model: Path = typer.Option(..., help="victim checkpoint: model.safetensors or its run folder (sr or style)"),
    host: str = typer.Option("127.0.0.1", help="address to listen on (no TLS: keep it on loopback or behind a proxy)"),
    port: int = typer.Option(8000, help="TCP port; 0 picks a free one"),
    db: Path = typer.Option(DEFAULT_DB, envvar="IMGSTEAL_API_DB", help="SQLite file with API keys and the query log"),
    device: str = typer.Option("auto", help="auto (cuda if present), cpu, cuda, cuda:1 ..."),
    config: Optional[Path] = typer.Option(None, help="service config file (YAML or JSON: settings and defenses); "
                                                     "flags given as well override its settings"),
    port_file: Optional[Path] = typer.Option(None, help="write the bound port to this file once listening"),
    log_level: str = typer.Option("warning", help="uvicorn log level (info shows every request)"),
    defense: Optional[List[str]] = typer.Option(None, "--defense", help="output defence (`imgsteal defense list` names "
                                                                        "them: watermark, fingerprint, pgd, boxfree); repeat "
                                                                        "to combine (applied in order; docs/defenses.md)"),
    **options,
) -> None:
    """Serve a victim model: POST /v1/translate, GET /v1/info, GET /healthz (see docs/api.md)."""
    with user_errors():
        from imgsteal.cli._options import given
        from imgsteal.defenses.registry import DEFENSES, DefenseContext, build_defenses, setup_from_options
        from imgsteal.victim.accounts import AccountsDB
        from imgsteal.victim.inference import load_translator
        from imgsteal.victim.launch import ServiceConfig, load_service_config
        from imgsteal.victim.server import ServerSettings, listen, serve as run_server

        # Validate everything before creating anything: a wrong --model or option leaves no database behind.
        service = load_service_config(config) if config is not None else ServiceConfig()
        settings = ServerSettings.model_validate({**service.settings.model_dump(), **given(options, "setting_")})
        sections = {name: given(options, f"{name}_") for name in DEFENSES}
        if defense or any(sections.values()):
            if service.defenses.defenses:
                raise UserError("give the defences either in --config or as --defense flags, not both")
            setup = setup_from_options(defense, sections)
        else:
            setup = service.defenses
        translator = load_translator(model, device)
        # Bind the port before any file is made: a port in use leaves no database behind.
        sock = listen(host, port)
        try:
            defenses = build_defenses(setup, DefenseContext(api_db=db, victim_model=model, device=device))
            with AccountsDB(db) as accounts:
                if not any(not k.revoked for k in accounts.list_keys()):
                    typer.echo(f"note: no active API key yet; create one with: imgsteal keys create --db {db} --name NAME",
                               err=True)
        except BaseException:
            sock.close()
            raise

        def ready(url: str) -> None:
            shown = f", defences: {', '.join(setup.defenses)}" if setup.defenses else ""
            typer.echo(f"serving {model} at {url} (keys and query log: {db}{shown})", err=True)

        try:
            run_server(translator, db, settings, host=host, port=port, device=device, port_file=port_file,
                       log_level=log_level, on_ready=ready, defenses=defenses, sock=sock)
        finally:
            close_defenses(defenses)
        typer.echo("stopped", err=True)
        exit_now_if_a_model_call_runs()


def close_defenses(defenses) -> None:
    """Close each defence's files (the watermark's trigger database: a clean close removes -wal/-shm)."""
    for d in defenses:
        close = getattr(d, "close", None)
        if close is not None:
            close()


def exit_now_if_a_model_call_runs() -> None:
    """Exit at once when an abandoned model call is still running in a worker thread: Python would
    otherwise wait for it at exit (minutes for a large image). Everything is closed by now."""
    import os
    import sys
    import threading

    if any(t.is_alive() and t.name.startswith("imgsteal-model") for t in threading.enumerate()):
        typer.echo("abandoned a model call still running", err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def register(app: typer.Typer) -> None:
    from imgsteal.cli._options import model_parameters, with_parameters
    from imgsteal.defenses.registry import DEFENSES
    from imgsteal.victim.server import ServerSettings

    generated = [*model_parameters(ServerSettings, "setting_", flag_prefix="", flags=SETTING_FLAGS)]
    for name, spec in DEFENSES.items():
        generated += model_parameters(spec.options_model(), f"{name}_")
    app.command("serve")(with_parameters(serve, generated))
