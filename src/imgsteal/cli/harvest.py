"""`imgsteal harvest`: the adversary queries the victim and stores (X_A, F_V(X_A))."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Optional

import typer

from imgsteal.cli._common import user_errors


def open_oracle(target: str, api_key: Optional[str], concurrency: int) -> contextlib.AbstractContextManager:
    """An http(s):// URL -> the HTTP oracle; anything else -> a local victim checkpoint (for experiments)."""
    if target.startswith(("http://", "https://")):
        from imgsteal.attack.http_oracle import HttpOracle

        return contextlib.closing(HttpOracle(target, api_key=api_key, concurrency=concurrency))
    # The CLI, not the attack package, wires a local checkpoint in: attack/ never loads victim weights.
    from imgsteal.victim.inference import load_translator
    from imgsteal.victim.oracle import LocalOracle

    return contextlib.closing(LocalOracle(load_translator(target)))


def harvest(
    oracle: str = typer.Option(..., help="the victim: an inference API URL (http://HOST:PORT) or a local victim checkpoint"),
    inputs: list[str] = typer.Option(..., help="adversary images: a folder or a dataset spec; repeatable"),
    out: Path = typer.Option(..., "--out", "-o", help="pair store folder (created or resumed)"),
    downscale: int = typer.Option(0, help="send a Nx bicubic-downscaled copy (4 for super-resolution from HR photos); 0 = as is"),
    resize: int = typer.Option(0, help="send a centre square crop resized to N x N px (style transfer at --size N); 0 = as is"),
    budget: Optional[int] = typer.Option(None, help="the store never holds more than this many answered queries"),
    price: float = typer.Option(0.016, help="USD per 256x256-pixel answer (scaled by pixel count)"),
    api_key: Optional[str] = typer.Option(None, envvar="IMGSTEAL_API_KEY", help="API key for an HTTP oracle"),
    concurrency: int = typer.Option(8, help="requests in flight (HTTP oracle)"),
) -> None:
    """Query the victim with the adversary's images; re-running resumes and never re-sends an answered input."""
    with user_errors():
        from imgsteal.attack.harvest import harvest as run_harvest
        from imgsteal.data.layouts import resolve_images
        from imgsteal.data.pairs import PairStore

        paths = [p for spec in inputs for p in resolve_images(spec)]
        with open_oracle(oracle, api_key, concurrency) as orc, PairStore(out) as store:
            report = run_harvest(orc, paths, store, downscale=downscale or None, resize=resize or None, budget=budget, price=price)
        typer.echo(json.dumps(report.as_dict(), indent=2))


def register(app: typer.Typer) -> None:
    app.command("harvest")(harvest)
