"""`imgsteal watermark verify|clients`: the owner checks a suspect model against a client's trigger set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from imgsteal.cli._common import user_errors
from imgsteal.cli.serve import DEFAULT_DB

watermark_app = typer.Typer(help="DAWN-style watermark: trigger sets recorded by `imgsteal serve --defense watermark`.",
                            no_args_is_help=True)

DEFAULT_TRIGGERS = DEFAULT_DB.with_name(DEFAULT_DB.stem + "-watermark.sqlite")  # what `imgsteal serve` uses next to --db
TRIGGERS_OPTION = typer.Option(DEFAULT_TRIGGERS, envvar="IMGSTEAL_WATERMARK_DB",
                               help="the watermark database of the service (HMAC secret and trigger sets)")


@watermark_app.command("verify")
def verify(
    suspect: str = typer.Option(..., help="the suspect model: a checkpoint or run folder, or the http(s):// URL of its API"),
    client: str = typer.Option(..., help="API key name of the client whose trigger set is checked"),
    triggers: Path = TRIGGERS_OPTION,
    api_key: Optional[str] = typer.Option(None, envvar="IMGSTEAL_SUSPECT_API_KEY", help="API key for a suspect URL"),
    alpha: float = typer.Option(0.01, help="significance level of the one-sided binomial test"),
    reference: Optional[List[str]] = typer.Option(
        None, help="an independent model (checkpoint, run folder or URL) the suspect must beat on each trigger (URLs are queried without a key); repeatable. "
                   "With k references the null match rate is 1/(k+1)"),
    closeness: float = typer.Option(0.5, help="a trigger matches only if the suspect's MSE to the altered answer is at most "
                                              "this multiple of the altered answer's MSE to the clean one"),
    device: str = typer.Option("auto", help="where a suspect checkpoint runs: auto (cuda if present), cpu, cuda, cuda:1 ..."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the verdict as JSON (counts and distances, no images)"),
) -> None:
    """Send the client's trigger inputs to the suspect: does it reproduce the altered answers, beyond what
    a blurry or weak independent model (and every --reference model) does?"""
    with user_errors():
        from imgsteal.defenses.verify import open_suspect, verify_watermark

        references = [open_suspect(spec, None, device) for spec in reference or []]  # never send the suspect's key elsewhere
        verdict = verify_watermark(triggers, client, open_suspect(suspect, api_key, device), suspect_name=suspect, alpha=alpha,
                                   references=references, closeness=closeness)
        typer.echo(verdict.summary())
        if verdict.resized:
            typer.echo(f"note: {verdict.resized} answers had another size than the stored ones and were resized", err=True)
        if json_out is not None:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(verdict.as_dict(with_distances=True), indent=2))


@watermark_app.command("clients")
def clients(triggers: Path = TRIGGERS_OPTION) -> None:
    """How many triggers each client has (counts only)."""
    with user_errors():
        from imgsteal.defenses.watermark import TriggerStore
        from imgsteal.errors import ImgstealError

        if not triggers.exists():
            raise ImgstealError(f"no watermark trigger database at {triggers}")
        with TriggerStore(triggers, create=False) as store:
            names = store.clients()
            if not names:
                typer.echo("no triggers recorded yet")
            for name in names:
                typer.echo(f"{name}\t{store.count(name)} triggers")


def register(app: typer.Typer) -> None:
    app.add_typer(watermark_app, name="watermark")
