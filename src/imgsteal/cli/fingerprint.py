"""`imgsteal fingerprint train|detect`: the owner's steganographic fingerprint (Yu et al. 2021)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from imgsteal.cli._common import user_errors

fingerprint_app = typer.Typer(help="Fingerprint encoder/decoder: stamp answers (`serve --defense fingerprint`), detect it later.",
                              no_args_is_help=True)


@fingerprint_app.command("train")
def train(
    images: List[str] = typer.Option(..., help="folder or dataset spec of images like the answers to stamp (repeatable)"),
    out: Path = typer.Option(..., "--out", "-o", help="run folder (networks, metrics, and the secret fingerprint, 0600)"),
    eval_images: Optional[List[str]] = typer.Option(None, help="images for the final bit accuracy (default: --images)"),
    bits: int = typer.Option(100, help="fingerprint length"),
    size: int = typer.Option(128, help="training resolution, px (a multiple of 4)"),
    steps: int = typer.Option(3000),
    batch_size: int = typer.Option(16),
    lr: float = typer.Option(1e-3),
    image_weight: float = typer.Option(100.0, help="weight of the L2 image loss against the BCE bit loss"),
    channels: int = typer.Option(16),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    resume: bool = typer.Option(False, help="continue a killed run from its last checkpoint"),
) -> None:
    """Train the encoder/decoder pair, draw the owner's fingerprint, report bit accuracy (stamped vs clean)."""
    with user_errors():
        from imgsteal.defenses.fingerprint import FingerprintTrainConfig, train_fingerprint

        cfg = FingerprintTrainConfig(images=images, eval_images=eval_images, bits=bits, size=size, steps=steps,
                                     batch_size=batch_size, lr=lr, image_weight=image_weight, channels=channels,
                                     seed=seed, device=device)
        from imgsteal.data.images import counting_skipped

        with counting_skipped() as skipped:
            result = train_fingerprint(cfg, out, resume=resume)
        counts = skipped.counts()
        typer.echo(f"skipped files: {counts['unreadable']} unreadable, {counts['not_images']} not images by extension")
        typer.echo(f"fingerprinted images: {result.fingerprinted.summary()}")
        typer.echo(f"clean images:         {result.clean.summary()}")
        typer.echo(f"stamped vs clean PSNR {result.psnr_db:.2f} dB; model and secret fingerprint in {out}")


@fingerprint_app.command("detect")
def detect(
    images: Path = typer.Option(..., help="folder of images to examine (e.g. a suspect model's outputs)"),
    model: Path = typer.Option(..., help="run folder of `imgsteal fingerprint train`"),
    reference: Optional[List[Path]] = typer.Option(
        None, help="folder of UNSTAMPED images of the same kind (an independent model's outputs, the victim without "
                   "stamping); repeatable. The verdict needs the suspect's accuracy significantly above theirs"),
    alpha: float = typer.Option(0.01, help="significance level of the verdict (Welch t-test over images)"),
    margin: float = typer.Option(0.05, help="share of bits the suspect's accuracy must exceed the references' by"),
    device: str = typer.Option("auto", help="auto (cuda if present), cpu, cuda, cuda:1 ..."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the result as JSON (per-image accuracies)"),
) -> None:
    """Bitwise accuracy of the owner's fingerprint in the images, against unstamped reference images (or 50%)."""
    with user_errors():
        from imgsteal.data.images import list_images, load_images
        from imgsteal.defenses.fingerprint import FingerprintModel, detect_fingerprint, fingerprint_verdict

        fp = FingerprintModel.load(model, device)
        loaded = [img for _, img in load_images(list_images(images))]
        result = detect_fingerprint(fp, loaded)
        references = [detect_fingerprint(fp, [img for _, img in load_images(list_images(folder))]) for folder in reference or []]
        verdict = fingerprint_verdict(result, references, alpha=alpha, margin=margin)
        typer.echo(result.summary())
        typer.echo(verdict.summary())
        if json_out is not None:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            out = result.as_dict(with_per_image=True)
            out["verdict"] = verdict.as_dict()
            json_out.write_text(json.dumps(out, indent=2))


def register(app: typer.Typer) -> None:
    app.add_typer(fingerprint_app, name="fingerprint")
