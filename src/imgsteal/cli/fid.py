"""`imgsteal fid DIR1 DIR2`: FID (and optionally KID) between two image folders."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imgsteal.cli._common import user_errors


def fid_command(
    dir1: Path = typer.Argument(..., help="first image folder (searched recursively)"),
    dir2: Path = typer.Argument(..., help="second image folder"),
    inception_weights: Optional[Path] = typer.Option(
        None,
        "--inception-weights",
        envvar="IMGSTEAL_INCEPTION_WEIGHTS",
        help="FID Inception weights (pt_inception-2015-12-05-6726825d.pth); default: torch hub cache, else download",
    ),
    batch_size: int = typer.Option(50, "--batch-size", min=1, help="images per Inception forward pass"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    kid: bool = typer.Option(False, "--kid", help="also print KID (mean ± std over subsets); unbiased on small sets"),
    kid_subsets: int = typer.Option(100, "--kid-subsets", min=1, help="number of KID subsets"),
    kid_subset_size: Optional[int] = typer.Option(None, "--kid-subset-size", help="default: min(1000, smaller set)"),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="reuse cached features of unchanged folders"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", envvar="IMGSTEAL_CACHE", help="feature cache root"),
) -> None:
    """Fréchet Inception Distance between the images of DIR1 and DIR2 (lower = more alike)."""
    with user_errors():
        import warnings

        from imgsteal.metrics.features import inception_features
        from imgsteal.metrics.fid import SmallSampleWarning, fid_from_features, warn_if_small
        from imgsteal.metrics.kid import kid_from_features

        options = dict(
            weights=inception_weights, batch_size=batch_size, device=device, cache=cache, cache_dir=cache_dir
        )
        features1 = inception_features(dir1, **options)
        features2 = inception_features(dir2, **options)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", SmallSampleWarning)
            warn_if_small(len(features1), str(dir1))
            warn_if_small(len(features2), str(dir2))
        for warning in caught:
            typer.secho(f"warning: {warning.message}", fg=typer.colors.YELLOW, err=True)
        typer.echo(f"FID: {fid_from_features(features1, features2):.4f}")
        if kid:
            result = kid_from_features(features1, features2, subset_size=kid_subset_size, n_subsets=kid_subsets)
            subsets = f"{result.n_subsets} subsets of {result.subset_size}"
            typer.echo(f"KID: {result.mean:.6f} ± {result.std:.6f} ({subsets})")


def register(app: typer.Typer) -> None:
    app.command("fid")(fid_command)
