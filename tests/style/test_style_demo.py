"""The style demo end to end with a tiny preset (32 px, one epoch each, in-process oracle)."""

from __future__ import annotations

import contextlib
import json

import pytest

from imgsteal.demo_style import StyleDemoPreset, run_style_demo
from imgsteal.report.html import Report
from imgsteal.victim.inference import load_translator
from imgsteal.victim.oracle import LocalOracle


def local_oracle(model_path):
    return contextlib.closing(LocalOracle(load_translator(model_path, "cpu")))


@pytest.mark.slow
def test_style_demo_reports_paired_scores_and_why_fid_was_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGSTEAL_INCEPTION_WEIGHTS", str(tmp_path / "no_weights_here.pth"))
    preset = StyleDemoPreset(size=32, victim_ngf=4, victim_blocks=1, victim_epochs=1, victim_repeat=1,
                             surrogate_channels=4, surrogate_epochs=1, surrogate_repeat=1, seeds=(0, 1))
    report = Report("demo")
    payload = run_style_demo(tmp_path, report, preset, progress=False, oracle_factory=local_oracle)
    json.dumps(payload)  # JSON-able, as run_demo writes it
    assert payload["harvest"]["queried"] == 59 and payload["size"] == 32
    assert payload["fid_kid"]["computed"] is False and "no_weights_here.pth" in payload["fid_kid"]["reason"]
    assert set(payload["headline"]) == {"victim test photos", "benchmark photos"}
    assert payload["test_sets"]["victim test photos"]["n_images"] == 10  # every 6th of the 62 victim photos
    assert set(payload["timings"]) == {"victim_s", "harvest_s", "surrogates_s", "evaluate_s", "total_s"}
    html = report.render()
    assert "FID and KID were skipped" in html and "style/eval/gallery/benchmark_photos_00_surrogate.png" in html
    assert (tmp_path / "style" / "eval" / "gallery" / "benchmark_photos_00_surrogate.png").exists()
    # A second run finds every stage done and only re-evaluates.
    again = run_style_demo(tmp_path, Report("again"), preset, progress=False, oracle_factory=local_oracle)
    assert again["harvest"]["queried"] == 0 and again["harvest"]["already_stored"] == 59
