"""Fixtures for the inference API tests: a tiny random-init SR victim, images, and servers.

Everything runs on loopback with 16-32 px images and a one-block, 8-channel SRResNet.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator

import pytest

from imgsteal_testkit import jpeg_bytes, make_tiny_victim, png_bytes, png_claiming


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    """The image makers of imgsteal_testkit, as a fixture."""
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
    with running_server(tiny_victim, work / "api.sqlite", workdir=work, rate_per_s=0, max_body_bytes=200_000,
                        max_pixels=128 * 128, max_batch=8, max_wait_ms=5) as server:
        yield server
