"""`imgsteal surrogate train`: the adversary trains F_A on harvested pairs."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from imgsteal.attack.methods import ATTACK_METHODS, SR_ARCHS, STYLE_ARCHS
from imgsteal.cli._common import user_errors

surrogate_app = typer.Typer(help="The adversary's surrogate F_A.", no_args_is_help=True)


# SurrogateConfig.arch's choices, from the one list of them (imgsteal.attack.methods)
Arch = Enum("Arch", {arch: arch for arch in SR_ARCHS + STYLE_ARCHS}, type=str)


# SurrogateConfig.attack's choices, from the one list (docs/attacks.md; the adaptive ones: docs/defenses.md)
Attack = Enum("Attack", {name.replace("-", "_"): name for name in ATTACK_METHODS}, type=str)


class TestMode(str, Enum):
    eval = "eval"
    train = "train"


@surrogate_app.command("train")
def train(
    store: Path = typer.Option(..., help="pair store written by `imgsteal harvest`"),
    out: Path = typer.Option(..., "--out", "-o", help="run folder"),
    arch: Arch = typer.Option(Arch.srresnet, help="super-resolution: srresnet (the paper's), edsr, msrresnet; style transfer: "
                              "pix2pix (the paper's, UNet), pix2pix_resnet (ResNet generator)"),
    seed: int = typer.Option(0, help="seeds the data subset, the initialisation and the batches"),
    fraction: float = typer.Option(1.0, help="share of the stored pairs to train on (0.25, 0.5, 0.75, 1.0)"),
    augmentation: str = typer.Option("none", help="paired augmentation: none, flip, rotation, cutout or contrast"),
    epochs: int = typer.Option(20, help="passes over the pairs (pix2pix's reference: 100 + 100 epochs, but on sets of "
                               "400-3,000 pairs; a harvest holds far more)"),
    steps: Optional[int] = typer.Option(None, min=1, help="optimisation steps whatever the number of pairs (overrides "
                                        "--epochs; compute-matched runs)"),
    attack: Attack = typer.Option(Attack.paper, help="training method: paper, domain-shift (Mi et al. 2024), "
                                  "few-shot (Spingarn-Eliezer and Michaeli 2024) (docs/attacks.md), or an adaptive "
                                  "attack on a defence: jpeg, resize, noise, overmark, finetune (docs/defenses.md)"),
    budget: Optional[int] = typer.Option(None, min=1, help="train on this many pairs of the seeded subset (nested: "
                                         "budget k's pairs are among budget k+1's)"),
    batch_size: Optional[int] = typer.Option(None, help="default: the architecture's reference, 16 (srresnet, edsr), 1 (pix2pix)"),
    patch: Optional[int] = typer.Option(24, help="input-side crop size (srresnet); pix2pix trains on --size crops"),
    repeat: int = typer.Option(1, help="passes over the pairs per epoch"),
    lr: Optional[float] = typer.Option(None, help="Adam learning rate; default: the architecture's reference, 1e-4 "
                                       "(srresnet, edsr), 2e-4 with beta1 0.5 (pix2pix)"),
    n_blocks: int = typer.Option(16, help="[srresnet] residual blocks"),
    channels: int = typer.Option(64, help="feature channels (srresnet, edsr; pix2pix: ngf and ndf)"),
    size: int = typer.Option(256, help="[pix2pix] training resolution"),
    test_mode: TestMode = typer.Option(TestMode.eval, help="how the model answers: eval (running statistics, no dropout; "
                                       "deterministic) or train (batch statistics and dropout, as pix2pix's reference test)"),
    device: str = typer.Option("auto", help="auto (cuda if present), cpu, cuda, cuda:1 ..."),
    resume: bool = typer.Option(False, help="continue a killed run from its last checkpoint"),
    checkpoint_every: int = typer.Option(200, help="steps between checkpoints"),
) -> None:
    """Train a surrogate on a seeded random fraction of the pairs."""
    with user_errors():
        from imgsteal.attack.surrogate import SurrogateConfig, train_surrogate

        cfg = SurrogateConfig(store=str(store), arch=arch.value, seed=seed, fraction=fraction, augmentation=augmentation,
                              epochs=epochs, steps=steps, attack=attack.value, budget=budget, batch_size=batch_size, patch=patch, repeat=repeat, lr=lr,
                              n_blocks=n_blocks, channels=channels, size=size, test_mode=test_mode.value, device=device,
                              checkpoint_every=checkpoint_every)
        result = train_surrogate(cfg, out, resume=resume)
        typer.echo(f"surrogate model: {result.model_path} ({training_summary(result)})")


def training_summary(result) -> str:
    """What a (resumed) run did, for humans: a run that was already complete trained nothing."""
    trained = result.steps - result.resumed_from_step
    if trained <= 0:
        return f"the run was already complete at {result.steps} steps; nothing was trained"
    resumed = f", resumed from step {result.resumed_from_step}" if result.resumed_from_step else ""
    return f"{result.steps} steps{resumed}, {result.images_per_second:.1f} img/s"


def register(app: typer.Typer) -> None:
    app.add_typer(surrogate_app, name="surrogate")
