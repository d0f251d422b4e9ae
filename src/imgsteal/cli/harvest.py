"""`imgsteal harvest`: the adversary queries the victim and stores (X_A, F_V(X_A))."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from imgsteal.cli._common import UserError, user_errors

API_KEY_ENV = "IMGSTEAL_API_KEY"
ARGV_KEY_WARNING = (f"warning: --api-key puts the key in process listings and shell history;"
                    f" set {API_KEY_ENV} or use --api-key-file (mode 0600) instead")


def read_api_key_file(path: Path) -> str:
    """The key held in `path` (surrounding whitespace stripped). Refuses a file that group or others
    may read or write (POSIX): it must be owner-only, `chmod 600 FILE`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--api-key-file {path}: no such file")
    mode = path.stat().st_mode & 0o777
    if os.name == "posix" and mode & 0o077:
        raise UserError(f"--api-key-file {path} has mode {mode:04o}: others may read the key; run `chmod 600 {path}`")
    key = path.read_text(encoding="utf-8").strip()
    if not key or "\n" in key:
        raise UserError(f"--api-key-file {path} must hold the key alone, on one line")
    return key


def explicit_api_key(api_key: Optional[str], api_key_file: Optional[Path]) -> Optional[str]:
    """The key from --api-key-file, or from --api-key with a warning on stderr; None when neither is given."""
    if api_key and api_key_file:
        raise UserError("pass the key once: --api-key-file or --api-key, not both")
    if api_key_file:
        return read_api_key_file(api_key_file)
    if api_key:
        typer.secho(ARGV_KEY_WARNING, fg=typer.colors.YELLOW, err=True)
        return api_key
    return None


def harvest(
    oracle: str = typer.Option(..., help="the victim: an inference API URL (http://HOST:PORT) or a local victim checkpoint"),
    inputs: list[str] = typer.Option(..., help="adversary images: a folder or a dataset spec; repeatable"),
    out: Path = typer.Option(..., "--out", "-o", help="pair store folder (created or resumed)"),
    downscale: int = typer.Option(0, help="send a Nx bicubic-downscaled copy (4 for super-resolution from HR photos); 0 = as is"),
    resize: int = typer.Option(0, help="send a centre square crop resized to N x N px (style transfer at --size N); 0 = as is"),
    budget: Optional[int] = typer.Option(None, help="the store never holds more than this many answered queries"),
    pack_pixels: Optional[int] = typer.Option(
        None, help="tile the images into mosaics of at most N pixels (e.g. the API's limit), one query each"),
    price: Optional[float] = typer.Option(
        None, help="USD per 256x256-pixel answer (scaled by pixel count); default 0.016, or the API spec's price"),
    api_spec: Optional[Path] = typer.Option(
        None, "--api-spec", help="YAML spec of a third-party image API at --oracle (docs/api-spec.md)"),
    api_key_file: Optional[Path] = typer.Option(
        None, "--api-key-file", help=f"file holding the API key, mode 0600 (default: ${API_KEY_ENV}, or the spec's auth.env)"),
    api_key: Optional[str] = typer.Option(
        None, help=f"API key on the command line: visible in process listings, prefer ${API_KEY_ENV} or --api-key-file"),
    concurrency: Optional[int] = typer.Option(None, help="requests in flight (HTTP oracle); default 8, or the spec's"),
) -> None:
    """Query the victim with the adversary's images; re-running resumes and never re-sends an answered input."""
    with user_errors():
        from imgsteal.attack.harvest import DEFAULT_PRICE_USD
        from imgsteal.attack.harvest import harvest as run_harvest
        from imgsteal.data.images import counting_skipped
        from imgsteal.data.layouts import resolve_images
        from imgsteal.data.pairs import PairStore

        key = explicit_api_key(api_key, api_key_file)
        spec = None
        cost = None
        if api_spec is not None:
            from imgsteal.attack.api_spec import load_api_spec

            spec = load_api_spec(api_spec)
            if price is None:
                cost = spec.price.cost
        with counting_skipped() as listed:
            paths = [p for spec_ in inputs for p in resolve_images(spec_)]
        from imgsteal.pipeline.oracle import open_oracle

        # A model file is answered in process (for experiments); a URL is the black box, over HTTP.
        try:
            with open_oracle(oracle, transport="local", api_key=key, api_spec=spec,
                             concurrency=concurrency or (spec.concurrency if spec else 8)) as orc, \
                    PairStore(out) as store:
                report = run_harvest(orc, paths, store, downscale=downscale or None, resize=resize or None,
                                     budget=budget, price=DEFAULT_PRICE_USD if price is None else price, cost=cost,
                                     pack_pixels=pack_pixels)
        except KeyboardInterrupt:
            typer.echo(f"interrupted: {stored_pairs(out)} pairs stored in {out}; run the same command again to resume "
                       "(stored inputs are not sent again)", err=True)
            raise typer.Exit(130) from None
        report.not_images = len(listed.not_images)
        typer.echo(json.dumps(report.as_dict(), indent=2))


def stored_pairs(out: Path) -> int:
    """Pairs in the store at `out` (0 when there is none yet)."""
    from imgsteal.data.pairs import PairStore

    try:
        with PairStore(out, create=False) as store:
            return len(store)
    except Exception:  # no store yet, or one being made: nothing to resume from
        return 0


def register(app: typer.Typer) -> None:
    app.command("harvest")(harvest)
