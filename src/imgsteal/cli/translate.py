"""`imgsteal translate`: run any victim or surrogate (run folder or model file) on a folder of images."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from imgsteal.cli._common import UserError, user_errors


def translate(
    model: Path = typer.Option(..., help="run folder, model.safetensors, or a public model file (imported on the fly)"),
    inputs: Path = typer.Option(..., help="folder of input images (searched recursively)"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder: one PNG per input, named by the input's stem"),
    device: str = typer.Option("auto", help="auto (cuda if present), cpu, cuda, cuda:1 ..."),
    tile: Optional[int] = typer.Option(None, help="[sr] tile side in input px (0: never tile; default 512)"),
    tile_overlap: Optional[int] = typer.Option(None, help="[sr] context px around each tile (default 16)"),
    tile_above: Optional[int] = typer.Option(None, help="[sr] tile only inputs above this many pixels (default 1048576)"),
    tile_memory_mb: Optional[float] = typer.Option(None, help="[sr] memory bound in MiB: the tile side is chosen to fit it"),
    overwrite: bool = typer.Option(False, help="redo outputs that already exist (default: skip them, so a stopped run resumes)"),
) -> None:
    """Translate every image in --inputs with --model; resumable (existing outputs are skipped)."""
    with user_errors():
        from tqdm import tqdm

        from imgsteal.data.images import list_images, load_image, save_image
        from imgsteal.victim.inference import load_translator
        from imgsteal.victim.tiling import TilingConfig

        files = list_images(inputs)
        if not files:
            raise UserError(f"no images in {inputs}")
        by_stem: dict[str, Path] = {}
        for f in files:
            if f.stem in by_stem:
                raise UserError(f"two inputs would both write {f.stem}.png: {by_stem[f.stem]} and {f}; rename one")
            by_stem[f.stem] = f
        tiling = None
        if any(v is not None for v in (tile, tile_overlap, tile_above, tile_memory_mb)):
            given = dict(tile=tile, overlap=tile_overlap, above_pixels=tile_above, memory_mb=tile_memory_mb)
            tiling = TilingConfig(**{k: v for k, v in given.items() if v is not None})
        translator = load_translator(model, device, tiling=tiling)
        out.mkdir(parents=True, exist_ok=True)
        todo = [f for f in files if overwrite or not (out / f"{f.stem}.png").exists()]
        skipped = len(files) - len(todo)
        for f in tqdm(todo, desc="translate", unit="img", disable=None):
            target = out / f"{f.stem}.png"
            tmp = target.with_name(f".{target.stem}.tmp.png")
            save_image(translator.translate(load_image(f)), tmp)
            tmp.replace(target)
        typer.echo(f"{len(todo)} images translated into {out}" + (f" ({skipped} already there, skipped)" if skipped else ""))


def register(app: typer.Typer) -> None:
    app.command("translate")(translate)
