"""Shared fixtures: tiny real images and tiny randomly initialised models (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imgsteal.models import build_model
from imgsteal.train.checkpoint import save_checkpoint


def write_images(folder: Path, count: int, size: tuple[int, int] = (64, 48), seed: int = 0) -> list[Path]:
    """Smooth random colour images (so bicubic and SR have structure to work with)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        coarse = rng.integers(0, 256, size=(size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize(size, Image.BICUBIC)
        path = folder / f"img_{i:03d}.png"
        img.save(path)
        paths.append(path)
    return paths


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    write_images(tmp_path / "images", 12)
    return tmp_path / "images"


def make_sr_model(path: Path, seed: int = 0, role: str = "victim", with_discriminator: bool = False) -> Path:
    """A random-init 4x SRResNet (1 block, 8 channels) saved at `path` as training would export it.

    with_discriminator: also write the training checkpoint path.parent/checkpoints/last.safetensors
    holding a tiny SRGAN discriminator beside the generator, as a victim run folder has (the PGD
    defence reads the discriminator from there)."""
    torch.manual_seed(seed)
    generator = build_model("srresnet", scale=4, n_blocks=1, channels=8)
    meta = {"role": role, "task": "sr", "scale": 4, "archs": {"generator": generator.build_spec}, "export": "generator"}
    if with_discriminator:
        discriminator = build_model("vgg_discriminator", base_channels=4, dense=16)
        full = {**meta, "archs": {**meta["archs"], "discriminator": discriminator.build_spec}}
        save_checkpoint(Path(path).parent / "checkpoints" / "last.safetensors", full,
                        {"generator": generator, "discriminator": discriminator})
        meta = full
    return save_checkpoint(path, meta, {"generator": generator})


@pytest.fixture
def sr_victim(tmp_path: Path) -> Path:
    return make_sr_model(tmp_path / "victim" / "model.safetensors")
