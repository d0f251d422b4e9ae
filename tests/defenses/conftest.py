"""Fixtures for the defence tests: a tiny victim run (generator + discriminator), images, an API client.

Every test here runs torch on one thread: the CI box has 2 cores shared by several jobs, and two
torch threads fighting over a busy core are many times slower than one.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_sr_model


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def png_bytes(height: int = 12, width: int = 16, seed: int = 0) -> bytes:
    """A smooth random RGB image as PNG bytes."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(coarse).resize((width, height), Image.BICUBIC).save(buf, format="PNG")
    return buf.getvalue()


def make_victim_run(folder: Path, seed: int = 0) -> Path:
    """A random-init tiny SRGAN victim run folder: model.safetensors (generator) and a training
    checkpoint checkpoints/last.safetensors with the generator and the discriminator."""
    make_sr_model(folder / "model.safetensors", seed, with_discriminator=True)
    return folder


@pytest.fixture(scope="session")
def victim_run(tmp_path_factory) -> Path:
    return make_victim_run(tmp_path_factory.mktemp("victim-run"))


@pytest.fixture(scope="session")
def victim(victim_run):
    from imgsteal.victim.inference import load_translator

    return load_translator(victim_run, "cpu")


@pytest.fixture
def kit():
    return SimpleNamespace(png_bytes=png_bytes, make_victim_run=make_victim_run)


@pytest.fixture
def api(tmp_path):
    """make(translator, defenses) -> (TestClient, db path, headers of a key named 'mallory')."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from imgsteal.victim.accounts import AccountsDB
    from imgsteal.victim.server import ServerSettings, create_app

    opened = []

    def make(translator, defenses=(), key_name="mallory"):
        db = tmp_path / f"api{len(opened)}.sqlite"
        client = TestClient(create_app(translator, db, ServerSettings(rate_per_s=0), defenses))
        client.__enter__()
        opened.append(client)
        with AccountsDB(db) as accounts:
            key = accounts.create_key(key_name)[1]
        return client, db, {"Authorization": f"Bearer {key}", "Content-Type": "image/png"}

    yield make
    for client in opened:
        client.__exit__(None, None, None)
