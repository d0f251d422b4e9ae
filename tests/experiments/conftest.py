"""A tiny super-resolution experiment: random-init victim, 8 query images, 2 test images, 8-channel nets."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml

from imgsteal_testkit import tiny_sr_config


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    """Tiny networks gain nothing from a second thread, and on a busy machine its spin-waits cost more
    than the convolutions; subprocesses (torchrun, the process pool) get the same via OMP_NUM_THREADS."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_sr(tmp_path: Path) -> Callable[..., dict]:
    """tiny_sr(**grid) -> an experiment config dict on tiny data in tmp_path/data (grid keys override)."""
    return lambda **grid: tiny_sr_config(tmp_path / "data", **grid)


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[dict], Path]:
    """write_config(config dict) -> path of the YAML file."""
    def write(config: dict, name: str = "experiment.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path
    return write
