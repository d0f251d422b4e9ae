"""`imgsteal victim train`: the model owner trains F_V; `imgsteal victim import`: or brings a public model file."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from imgsteal.cli._common import UserError, user_errors

victim_app = typer.Typer(help="The victim's side: train F_V, or import a public model file.", no_args_is_help=True)


class Task(str, Enum):
    sr = "sr"
    style = "style"


class VictimArch(str, Enum):
    srgan = "srgan"
    cyclegan = "cyclegan"
    ugatit = "ugatit"


class Upsample(str, Enum):
    transpose = "transpose"
    resize = "resize"


class SRGenerator(str, Enum):
    srresnet = "srresnet"
    msrresnet = "msrresnet"


class ContentLoss(str, Enum):
    vgg = "vgg"
    pixel = "pixel"


@victim_app.command("train")
def train(
    task: Task = typer.Option(..., "--kind", "--task", help="the kind of translation: sr (super-resolution) or style "
                                                            "(unpaired style transfer); --task is the old name"),
    arch: VictimArch = typer.Option(..., help="sr: srgan; style: cyclegan (Monet-to-Photo) or ugatit (Selfie-to-Anime)"),
    out: Path = typer.Option(..., "--out", "-o", help="run folder (checkpoints, model.safetensors, metrics)"),
    hr: list[str] = typer.Option([], help="[sr] HR training images: a folder or a dataset spec (e.g. div2k:PATH:train); repeatable"),
    scale: int = typer.Option(4, help="[sr] upscaling factor"),
    generator: SRGenerator = typer.Option(SRGenerator.srresnet, help="[sr] srresnet (Ledig et al.) or msrresnet (BasicSR's "
                                          "SRGAN generator: + the bilinearly upscaled input)"),
    n_blocks: Optional[int] = typer.Option(None, help="residual blocks (sr: 16; style: cyclegan 9 at >= 256 px else 6, ugatit 4)"),
    channels: int = typer.Option(64, help="feature channels of the generator (style: and of the discriminators)"),
    patch: int = typer.Option(24, help="[sr] LR training patch size (HR patch = patch x scale)"),
    batch_size: Optional[int] = typer.Option(None, help="default 16 (sr), 1 (style, as CycleGAN and U-GAT-IT)"),
    repeat: int = typer.Option(1, help="passes over the images per epoch"),
    pretrain_epochs: int = typer.Option(10, help="[sr] pixel-loss (MSE) pre-training epochs (demo scale; the paper's "
                                        "SRGAN: --pretrain-steps 1000000)"),
    gan_epochs: int = typer.Option(10, help="[sr] adversarial epochs (demo scale; SRGAN: --gan-steps 200000)"),
    pretrain_steps: Optional[int] = typer.Option(None, help="[sr] pre-training length in steps; with --gan-steps replaces the epochs"),
    gan_steps: Optional[int] = typer.Option(None, help="[sr] adversarial length in steps; with --pretrain-steps replaces the epochs"),
    gan_lr_milestone: list[int] = typer.Option([], help="[sr] steps into the adversarial phase at which the lr is multiplied "
                                               "by --lr-gamma; repeatable (SRGAN: 100000)"),
    lr_gamma: float = typer.Option(0.1, help="[sr] learning-rate factor at each milestone"),
    lr: Optional[float] = typer.Option(None, help="default 1e-4 (srgan, ugatit), 2e-4 (cyclegan)"),
    content_loss: ContentLoss = typer.Option(ContentLoss.vgg, help="[sr] vgg (VGG19 relu5_4, needs ImageNet weights) or pixel (offline)"),
    vgg_weights: Optional[Path] = typer.Option(None, help="[sr] VGG19 weights file (a torchvision vgg19 state dict, whole or features.* only) instead of the torch hub cache"),
    domain_a: Optional[str] = typer.Option(None, help="[style] domain A images (photos): folder or dataset spec"),
    domain_b: Optional[str] = typer.Option(None, help="[style] domain B images (the secret style set)"),
    size: int = typer.Option(256, help="[style] working resolution"),
    epochs: int = typer.Option(200, help="[style] epochs (constant lr, then linear decay over --decay-epochs)"),
    decay_epochs: Optional[int] = typer.Option(None, help="[style] epochs of linear lr decay at the end (default: half of --epochs)"),
    upsample: Upsample = typer.Option(Upsample.transpose, help="[style] cyclegan generator's up-sampling: transpose "
                                      "(the reference) or resize (nearest 2x + 3x3 conv: no checkerboard pattern)"),
    light: bool = typer.Option(False, "--ugatit-light/--ugatit-full",
                               help="[style] U-GAT-IT light, or full (the default: the paper's Selfie2Anime victim)"),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="auto (cuda if present), cpu, cuda, cuda:1 ..."),
    resume: bool = typer.Option(False, help="continue a killed run from its last checkpoint"),
    checkpoint_every: int = typer.Option(200, help="steps between checkpoints"),
) -> None:
    """Train a victim model F_V."""
    with user_errors():
        if task is Task.sr:
            if arch is not VictimArch.srgan:
                raise UserError(f"--task sr trains --arch srgan, not {arch.value!r}")
            if not hr:
                raise UserError("--task sr needs --hr DIR (high-resolution training images)")
            from imgsteal.victim.train import SRVictimConfig, train_sr_victim

            cfg = SRVictimConfig(hr=hr, scale=scale, generator=generator.value, n_blocks=16 if n_blocks is None else n_blocks, channels=channels,
                                 patch=patch, batch_size=batch_size or 16, repeat=repeat, pretrain_epochs=pretrain_epochs,
                                 gan_epochs=gan_epochs, pretrain_steps=pretrain_steps, gan_steps=gan_steps,
                                 gan_lr_milestones=gan_lr_milestone, lr_gamma=lr_gamma, lr=lr or 1e-4,
                                 content_loss=content_loss.value,
                                 vgg_weights=str(vgg_weights) if vgg_weights else None, seed=seed, device=device,
                                 checkpoint_every=checkpoint_every)
            result = train_sr_victim(cfg, out, resume=resume)
        else:
            if arch not in (VictimArch.cyclegan, VictimArch.ugatit):
                raise UserError(f"--task style trains --arch cyclegan or ugatit, not {arch.value!r}")
            if not domain_a or not domain_b:
                raise UserError("--task style needs --domain-a DIR and --domain-b DIR")
            from imgsteal.victim.style import StyleVictimConfig, train_style_victim

            cfg = StyleVictimConfig(arch=arch.value, domain_a=domain_a, domain_b=domain_b, size=size, epochs=epochs,
                                    decay_epochs=decay_epochs, batch_size=batch_size or 1, repeat=repeat, lr=lr,
                                    ngf=channels, ndf=channels, n_blocks=n_blocks, light=light, upsample=upsample.value,
                                    seed=seed, device=device,
                                    checkpoint_every=checkpoint_every)
            result = train_style_victim(cfg, out, resume=resume)
        typer.echo(f"victim model: {result.model_path} ({result.steps} steps, {result.images_per_second:.1f} img/s)")


def _range(text: Optional[str], flag: str) -> Optional[tuple[float, float]]:
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise UserError(f"{flag} {text!r}: give LO,HI, e.g. 0,1 or -1,1") from None
    return lo, hi


@victim_app.command("import")
def import_(
    file: Path = typer.Argument(..., help="public model file: .pth/.pt/.pth.tar, .safetensors, .onnx or TorchScript"),
    out: Path = typer.Option(..., "--out", "-o", help="run folder to write (import.json + the network)"),
    format: str = typer.Option("auto", "--format", help="auto, cyclegan, ugatit, basicsr, esrgan-old, srgan-pytorch, onnx or torchscript (auto: told from the keys and shapes)"),
    direction: str = typer.Option("a2b", help="[ugatit] which generator: a2b (genA2B) or b2a (genB2A)"),
    scale: Optional[int] = typer.Option(None, help="upscaling factor (torch formats: checked against the weights; ONNX/TorchScript: probed if omitted)"),
    input_range: Optional[str] = typer.Option(None, help="value range the raw network reads, LO,HI (default: the format's convention; ONNX/TorchScript: 0,1)"),
    output_range: Optional[str] = typer.Option(None, help="value range it writes, LO,HI (default: as --input-range)"),
    channel_order: Optional[str] = typer.Option(None, help="rgb (default) or bgr"),
    task: Optional[str] = typer.Option(None, "--kind", "--task", help="sr or style (ONNX/TorchScript: default sr if "
                                                                      "the scale is above 1); --task is the old name"),
    input_size: Optional[int] = typer.Option(None, help="[onnx/torchscript] square side the network needs; inputs are resized to it and back"),
    size_multiple: Optional[int] = typer.Option(None, help="pad inputs to a multiple of this (reflect), output cropped back"),
    train_mode: bool = typer.Option(False, "--train-mode", help="answer with batch statistics and dropout (the reference test scripts without --eval); default: eval mode"),
    tile: Optional[int] = typer.Option(None, help="[sr] tile side in input px for large inputs (0: never tile; default 512)"),
    tile_overlap: Optional[int] = typer.Option(None, help="[sr] context px around each tile (default 16)"),
    tile_above: Optional[int] = typer.Option(None, help="[sr] tile only inputs above this many pixels (default 1048576)"),
    tile_memory_mb: Optional[float] = typer.Option(None, help="[sr] activation memory bound in MiB; the tile side is chosen to fit it"),
    overwrite: bool = typer.Option(False, help="replace a model already in --out"),
) -> None:
    """Import a public checkpoint (CycleGAN, U-GAT-IT, BasicSR, ESRGAN, SRGAN-PyTorch, ONNX, TorchScript) as a victim run folder."""
    with user_errors():
        from pydantic import ValidationError

        from imgsteal.victim.formats import ImportOptions, import_model

        try:
            options = ImportOptions(format=format, direction=direction, scale=scale, kind=task,
                                    input_range=_range(input_range, "--input-range"),
                                    output_range=_range(output_range, "--output-range"), channel_order=channel_order,
                                    input_size=input_size, size_multiple=size_multiple, train_mode=train_mode)
        except ValidationError as exc:
            raise UserError("; ".join(f"--{'-'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors())) from None
        given = dict(tile=tile, overlap=tile_overlap, above_pixels=tile_above, memory_mb=tile_memory_mb)
        tiling = {k: v for k, v in given.items() if v is not None} or None
        result = import_model(file, out, options, overwrite=overwrite, tiling=tiling)
        d = result.info["detected"]
        variant = d.get("variant") or d.get("arch") or d["format"]
        typer.echo(f"imported {file} as {d['format']} {variant} ({result.info['kind']}, x{result.info['scale']}) "
                   f"into {out} in {result.seconds:.2f} s")


def register(app: typer.Typer) -> None:
    app.add_typer(victim_app, name="victim")
