"""Fixtures for the style-transfer tests: one intra-op thread, tiny random-init style models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from imgsteal.models import build_model
from imgsteal.train.checkpoint import save_checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks gain nothing from a second thread, and on a busy machine the threads' spin-waits
    cost more than the convolutions themselves."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _make_style_model(path: Path, arch: str, role: str, seed: int = 0, size: int = 32) -> Path:
    """A random-init style generator saved as training would export it: a CycleGAN victim
    (arch 'resnet_generator') or a pix2pix surrogate (arch 'unet', built for `size` px)."""
    torch.manual_seed(seed)
    if arch == "unet":
        generator = build_model("unet", ngf=4, image_size=size)
        extra = {"size_multiple": 2**generator.depth, "size": size}
    else:
        generator = build_model("resnet_generator", ngf=4, n_blocks=1)
        extra = {"size_multiple": 1, "size": size}
    meta = {"role": role, "task": "style", "scale": 1, **extra, "archs": {"generator": generator.build_spec}, "export": "generator"}
    return save_checkpoint(path, meta, {"generator": generator})


@pytest.fixture
def make_style_model():
    """Factory: make_style_model(path, arch, role, seed=0, size=32) -> model path (see _make_style_model)."""
    return _make_style_model
