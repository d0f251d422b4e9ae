"""Fixtures for the inference API tests: a tiny random-init SR victim, images, and servers.

Everything runs on loopback with 16-32 px images and a one-block, 8-channel SRResNet.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator

import numpy as np

import pytest
from PIL import Image

from conftest import make_sr_model


def png_bytes(height: int = 16, width: int = 16, seed: int = 0, mode: str = "RGB") -> bytes:
    """A random image of `mode` encoded as PNG."""
    rng = np.random.default_rng(seed)
    if mode == "RGB":
        img = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    elif mode == "RGBA":
        img = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA")
    elif mode == "L":
        img = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8), "L")
    elif mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    else:
        raise ValueError(mode)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(height: int = 16, width: int = 24, seed: int = 0, orientation: int | None = None) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    buf = io.BytesIO()
    if orientation is None:
        img.save(buf, format="JPEG", quality=90)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        img.save(buf, format="JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))


def make_tiny_victim(path: Path, seed: int = 0) -> Path:
    """A random-init 4x SRResNet saved as path/model.safetensors (the shared builder in tests/conftest.py)."""
    return make_sr_model(path / "model.safetensors", seed)


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    """The image makers above, for test modules (conftest helpers cannot be imported reliably)."""
    return SimpleNamespace(png_bytes=png_bytes, jpeg_bytes=jpeg_bytes, png_claiming=png_claiming,
                           make_tiny_victim=make_tiny_victim)


@pytest.fixture(scope="session")
def tiny_victim(tmp_path_factory) -> Path:
    return make_tiny_victim(tmp_path_factory.mktemp("victim"))


@pytest.fixture(scope="session")
def tiny_translator(tiny_victim):
    from imgsteal.victim.inference import load_translator

    return load_translator(tiny_victim, "cpu")


@pytest.fixture
def api_client(tiny_translator, tmp_path) -> Callable:
    """make(settings=None, defenses=(), translator=None) -> (TestClient, db path), closed after the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # starlette's notice about httpx in its TestClient
        from fastapi.testclient import TestClient

    from imgsteal.victim.server import create_app

    opened = []

    def make(settings=None, defenses=(), translator=None):
        db = tmp_path / f"api{len(opened)}.sqlite"
        client = TestClient(create_app(translator or tiny_translator, db, settings, defenses))
        client.__enter__()
        opened.append(client)
        return client, db

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture(scope="session")
def live_server(tiny_victim, tmp_path_factory) -> Iterator:
    """One served tiny victim for the whole session: no rate limit, small body and pixel limits."""
    from imgsteal.victim.launch import running_server

    work = tmp_path_factory.mktemp("live-server")
    with running_server(tiny_victim, work / "api.sqlite", workdir=work, rate=0, max_body_bytes=200_000,
                        max_pixels=128 * 128, max_batch=8, max_wait_ms=5) as server:
        yield server
