"""The style demo end to end on tiny networks (32 px, one epoch each, in-process oracle)."""

from __future__ import annotations

import json

import pytest

from imgsteal.demo import run_demo

TINY_STYLE = {"tasks": {"style": {
    "victim": {"train": {"size": 32, "ngf": 4, "ndf": 4, "n_blocks": 1, "epochs": 1, "decay_epochs": 0,
                         "repeat": 1}},
    "harvest": {"resize": 32, "oracle": "local"},
    "surrogate": {"size": 32, "channels": 4, "steps": 8, "repeat": 1},
}}}


def _offline(*args, **kwargs):
    raise OSError("offline (test)")


@pytest.mark.slow
def test_style_demo_reports_paired_scores_and_why_fid_was_skipped(tmp_path, monkeypatch):
    monkeypatch.delenv("IMGSTEAL_INCEPTION_WEIGHTS", raising=False)  # none named: FID is skipped, said why
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    monkeypatch.setattr("torch.hub.download_url_to_file", _offline)
    out = tmp_path / "demo"
    # A tiny victim trained from scratch (the --train-victim path; the shipped one is tested in test_demo_quick).
    payload = run_demo(out, tasks=("style",), progress=False, overrides=TINY_STYLE, train_victim=True)["style"]
    json.dumps(payload)  # JSON-able, as run_demo writes it
    assert payload["harvest"]["queried"] == 59
    assert set(payload["headline"]) == {"victim test photos", "benchmark photos"}
    assert payload["test_sets"]["victim test photos"]["n_images"] == 10  # every 6th of the 62 victim photos
    assert set(payload["timings"]) == {"victim_s", "harvest_s", "surrogates_s", "evaluate_s"}
    assert "fid" not in payload["test_sets"]["benchmark photos"]  # skipped without the Inception weights
    html = (out / "report.html").read_text()
    assert "PSNR(input, F_V)" in html and "experiment/cells/style/f100-flip-s0/gallery/00_surrogate.png" in html
    assert (out / "experiment" / "cells" / "style" / "f100-flip-s0" / "gallery" / "00_surrogate.png").exists()
    # The gallery cell keeps what it scored, named by each input's stem (for `imgsteal study create`).
    scored = out / "experiment" / "cells" / "style" / "f100-flip-s0" / "evaluation" / "outputs" / "benchmark_photos"
    names = sorted(p.name for p in (scored / "input").iterdir())
    assert names and names == sorted(p.name for p in (scored / "victim").iterdir()) \
        == sorted(p.name for p in (scored / "surrogate0").iterdir())
    assert {n[:-4] for n in names} <= {line.split(",")[0][:-4] for line in (scored / "manifest.csv").read_text().splitlines()[1:]}
    assert not (out / "experiment" / "cells" / "style" / "f100-flip-s1" / "evaluation" / "outputs").exists()
    cell = json.loads((out / "experiment" / "cells" / "style" / "f100-flip-s0" / "result.json").read_text())
    assert cell["records"][0]["metrics"]["ssim"]["B"] > 0
    # The user study takes the pipeline's outputs directly.
    from typer.testing import CliRunner

    from imgsteal.cli import app

    result = CliRunner().invoke(app, ["study", "create", "--experiment", str(out), "--out", str(tmp_path / "study"),
                                      "--pairs", "4", "--no-demographics"])
    assert result.exit_code == 0, result.output
    assert "F_V +" in result.output and "warning" not in result.output  # inputs and outputs match in size
    # A second run finds every stage done and only rebuilds the report.
    again = run_demo(out, tasks=("style",), progress=False, overrides=TINY_STYLE, train_victim=True)["style"]
    assert again["harvest"] == payload["harvest"] and again["headline"] == payload["headline"]
