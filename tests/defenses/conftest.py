"""Fixtures for the defence tests: a tiny victim run (generator + discriminator), images, an API client.

Every test here runs torch on one thread: the CI box has 2 cores shared by several jobs, and two
torch threads fighting over a busy core are many times slower than one.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from imgsteal_testkit import make_victim_run, smooth_png_bytes


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def victim_run(tmp_path_factory) -> Path:
    return make_victim_run(tmp_path_factory.mktemp("victim-run"))


@pytest.fixture(scope="session")
def victim(victim_run):
    from imgsteal.victim.inference import load_translator

    return load_translator(victim_run, "cpu")


@pytest.fixture
def kit():
    return SimpleNamespace(png_bytes=smooth_png_bytes, make_victim_run=make_victim_run)


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
