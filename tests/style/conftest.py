"""Fixtures for the style-transfer tests: one intra-op thread, tiny random-init style models."""

from __future__ import annotations


import pytest
import torch

from imgsteal_testkit import make_style_model as _make_style_model


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks gain nothing from a second thread, and on a busy machine the threads' spin-waits
    cost more than the convolutions themselves."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def make_style_model():
    """Factory: make_style_model(path, arch, role, seed=0, size=32) -> model path (imgsteal_testkit.make_style_model)."""
    return _make_style_model
