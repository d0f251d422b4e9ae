"""`imgsteal audit`: what a copy of your model costs, in queries and dollars, against the strongest attacks."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from imgsteal.cli._common import UserError, user_errors


def audit(
    oracle: str = typer.Option(..., help="the victim: a model (run folder, .safetensors or imported file) or the "
                                         "URL of its API (each harvest query and each test image is a query)"),
    api_spec: Optional[str] = typer.Option(None, "--api-spec", help="URL of a third-party API: its spec (docs/api-spec.md)"),
    scale: Optional[int] = typer.Option(None, help="URL: the API's upscaling factor, 1 for style transfer "
                                                   "(default: asked from an imgsteal API)"),
    inputs: List[str] = typer.Option(..., help="the adversary's image pool: a folder or dataset spec; repeatable"),
    budget: int = typer.Option(..., help="the largest number of queries tried (budgets 1, 2, 4, ... up to it)"),
    test: List[str] = typer.Option(..., help="held-out test images as NAME=DIR (or NAME=DATASET_SPEC); repeatable"),
    attack: List[str] = typer.Option(["paper", "few-shot", "domain-shift"], help="attack methods to try; repeatable"),
    seeds: int = typer.Option(2, help="copies per attack and budget (the figure's ± band)"),
    steps: Optional[int] = typer.Option(None, help="training steps of every copy (default: 400 sr, 600 style)"),
    selection: str = typer.Option("random", help="query selection: random, diverse or adaptive"),
    price: float = typer.Option(0.016, help="USD per query (the paper's estimate for a 256 x 256 answer)"),
    pack_pixels: Optional[int] = typer.Option(
        None, help="send the pool packed: mosaics of at most N pixels (the API's size limit), one query each"),
    style_set: Optional[str] = typer.Option(None, help="style victims: the style images (folder or dataset spec)"),
    size: int = typer.Option(64, help="style victims: working resolution of the copies, px"),
    surrogate: List[str] = typer.Option([], help="surrogate setting as KEY=VALUE (e.g. n_blocks=4, channels=32, "
                                                 "arch=edsr; see `imgsteal surrogate train --help`); repeatable"),
    out: Path = typer.Option(Path("runs/audit"), "--out", "-o", help="where the copies, report.html and results go"),
    device: str = typer.Option("auto", help="auto (cuda if present), cpu, cuda, cuda:1 ..."),
    quiet: bool = typer.Option(False, help="no progress bars"),
) -> None:
    """Steal your own model at increasing query budgets and report the fidelity each costs."""
    with user_errors():
        from imgsteal.audit import AuditConfig, run_audit
        from imgsteal.cli.evaluate import parse_test_sets

        if budget < 1:
            raise UserError(f"--budget must be at least 1 query, got {budget}")
        parse_test_sets(test)  # NAME=DIR form and existing folders, checked before anything runs
        settings = {}
        for item in surrogate:
            key, sep, value = item.partition("=")
            if not sep:
                raise UserError(f"--surrogate takes KEY=VALUE, e.g. --surrogate channels=32; got {item!r}")
            import yaml

            settings[key.strip().replace("-", "_")] = yaml.safe_load(value)
        cfg = AuditConfig(victim=oracle, api_spec=api_spec, scale=scale, inputs=inputs, test_sets=dict(t.split("=", 1) for t in test), budget=budget,
                          attacks=attack, seeds=seeds, steps=steps, selection=selection, price_usd=price, pack_pixels=pack_pixels,
                          style_set=style_set, size=size, surrogate=settings, device=device)
        run = run_audit(cfg, out, progress=not quiet)
        typer.echo(f"report: {run.outputs['report']}")


def register(app: typer.Typer) -> None:
    app.command("audit")(audit)
