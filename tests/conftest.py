"""Shared fixtures: tiny real images and tiny randomly initialised models (no downloads).

Helpers live in tests/imgsteal_testkit.py (`from imgsteal_testkit import ...`); conftest files hold
fixtures only.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from imgsteal_testkit import make_sr_model, write_images


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    write_images(tmp_path / "images", 12)
    return tmp_path / "images"


@pytest.fixture
def sr_victim(tmp_path: Path) -> Path:
    return make_sr_model(tmp_path / "victim" / "model.safetensors")
