"""configs/real: the paper's experiments against imported public victims (never trained, never random)."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgsteal.experiments.config import load_config

REPO = Path(__file__).resolve().parents[2]
PRESETS = sorted((REPO / "configs" / "real").glob("*.yaml"))


def test_there_is_a_preset_per_paper_setting():
    assert {p.stem for p in PRESETS} >= {"monet2photo", "selfie2anime", "super_resolution"}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_takes_an_imported_victim_and_documents_it(path: Path):
    cfg = load_config(path, data_root="/data")
    docs = (REPO / "docs" / "victims.md").read_text()
    for task in cfg.tasks:
        assert task.victim.train is None and task.victim.model
        folder = Path(cfg.expand(task.victim.model))
        assert folder.parent == Path("/data/victims")
        assert f"/victims/{folder.name}" in docs  # the import command that creates it is documented
        assert "imgsteal victim import" in path.read_text()
