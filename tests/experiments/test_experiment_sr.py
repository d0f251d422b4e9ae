"""A tiny super-resolution grid end to end through the CLI: outputs, resume, status, missing data."""

import csv
import json

import pytest
from typer.testing import CliRunner

import imgsteal.pipeline.stages as cell_module
from imgsteal.cli import app
from imgsteal.pipeline.stage import stage_state

runner = CliRunner()


@pytest.fixture
def training_spy(monkeypatch):
    """Counts surrogate trainings (run in process by the local executor); `fail_on` makes one fail."""
    calls = []
    real = cell_module.train_surrogate
    state = {"fail_on": None}

    def spy(cfg, out_dir, **kwargs):
        calls.append((cfg.fraction, cfg.augmentation.value, cfg.seed))
        if state["fail_on"] == (cfg.fraction, cfg.seed):
            raise RuntimeError("simulated crash in the middle of a cell")
        return real(cfg, out_dir, **kwargs)

    monkeypatch.setattr(cell_module, "train_surrogate", spy)
    spy.calls, spy.state = calls, state
    return spy


@pytest.mark.slow
def test_tiny_grid_outputs_resume_and_status(tiny_sr, write_config, training_spy, tmp_path):
    config = write_config(tiny_sr())
    out = tmp_path / "exp"

    # First run: the 50% cell crashes, the 100% cell finishes, outputs are written from what finished.
    training_spy.state["fail_on"] = (0.5, 0)
    result = runner.invoke(app, ["experiment", "run", str(config), "--out", str(out), "--quiet"])
    assert result.exit_code == 2 and "1 of 2 cells failed" in result.output, result.output
    assert (out / "cells" / "sr" / "f050-none-s0" / "error.txt").read_text().count("simulated crash")
    assert stage_state(out / "cells" / "sr" / "f100-none-s0") == "done"
    status = runner.invoke(app, ["experiment", "status", "--out", str(out)])
    assert status.exit_code == 0 and "1/2 cells done" in status.output and "failed last time: sr/f050-none-s0" in status.output
    assert runner.invoke(app, ["experiment", "status", str(out)]).output == status.output  # the folder alone will do

    # Second run: only the failed cell trains; the finished one is not recomputed.
    training_spy.state["fail_on"] = None
    before = len(training_spy.calls)
    result = runner.invoke(app, ["experiment", "run", str(config), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert training_spy.calls[before:] == [(0.5, "none", 0)]
    assert "1 cells run, 1 were already finished" in result.output
    assert not (out / "cells" / "sr" / "f050-none-s0" / "error.txt").exists()

    # Third run: nothing to train.
    before = len(training_spy.calls)
    assert runner.invoke(app, ["experiment", "run", str(config), "--out", str(out), "--quiet"]).exit_code == 0
    assert training_spy.calls[before:] == []

    # results.csv: one row per cell, seed and test set, with A/B/C, bicubic baselines and the cost.
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [(r["fraction"], r["seed"], r["test_set"]) for r in rows] == [("0.5", "0", "tiny test"), ("1.0", "0", "tiny test")]
    assert [int(r["queries"]) for r in rows] == [4, 8]
    assert float(rows[1]["flat_cost_usd"]) == pytest.approx(8 * 0.016)
    # answers are 48 x 48 px: each is priced at 48^2 / 256^2 of a 256 x 256 answer
    assert float(rows[1]["cost_usd"]) == pytest.approx(8 * 0.016 * 48 * 48 / 256**2)
    for key in ("psnr_A", "psnr_B", "psnr_C", "ssim_A", "ssim_B", "ssim_C", "psnr_bicubic_vs_victim"):
        assert rows[0][key] != ""
    assert 0 < float(rows[0]["ssim_C"]) <= 1
    records = json.loads((out / "results.json").read_text())["records"]
    assert len(records) == 2 and records[0]["metrics"]["psnr"]["A"] == records[1]["metrics"]["psnr"]["A"]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["tasks"]["sr"]["plateau"] in (0.5, 1.0) and summary["tasks"]["sr"]["costs"][1]["queries"] == 8
    table = (out / "table6.md").read_text()
    assert "Table 6" in table and "Tiny SR" in table and "Plateaus" in table
    for name in ("fraction_curves", "augmentations"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000
        assert (out / "plots" / f"{name}.svg").read_text().lstrip().startswith("<?xml")
    # Figure 7 carries the no-surrogate line that (B) has to beat.
    assert "tiny test baseline: bicubic vs F_V" in (out / "plots" / "fraction_curves.svg").read_text()
    html = (out / "report.html").read_text()
    # Table 5's two metrics, the victim next to bicubic upscaling, and how long each cell trained.
    assert "SSIM, mean ± std over seeds" in html and "PSNR (dB), mean ± std over seeds" in html
    assert "bicubic upscaling vs ground truth" in html
    assert "epochs over its own pairs" in html
    assert "bicubic upscaling vs ground truth" in table  # the Markdown is the same report
    assert "plots/fraction_curves.png" in html and "F_A 50%" in html and "F_A 100%" in html
    assert "tasks/sr/gallery/00_victim.png" in html and "cells/sr/f050-none-s0/gallery/00_surrogate.png" in html
    assert (out / "cells" / "sr" / "f100-none-s0" / "gallery" / "01_surrogate.png").is_file()
    # The victim's answers on the test images were computed once, in the shared stage.
    done = json.loads((out / "cells" / "sr" / "f050-none-s0" / "result.json").read_text())
    assert done["victim_cache"]["misses"] == 0 and done["victim_cache"]["hits"] >= 2

    # A finished cell whose scores are lost is re-scored, not re-trained.
    (out / "cells" / "sr" / "f100-none-s0" / "result.json").unlink()
    before = len(training_spy.calls)
    assert runner.invoke(app, ["experiment", "run", str(config), "--out", str(out), "--quiet"]).exit_code == 0
    assert training_spy.calls[before:] == []
    assert stage_state(out / "cells" / "sr" / "f100-none-s0") == "done"

    # The same folder with different training settings is refused.
    changed = tiny_sr()
    changed["tasks"][0]["surrogate"]["epochs"] = 2
    result = runner.invoke(app, ["experiment", "run", str(write_config(changed, "changed.yaml")), "--out", str(out)])
    assert result.exit_code == 2 and "other settings" in result.output


def test_missing_dataset_fails_before_any_training(tiny_sr, write_config, training_spy, tmp_path):
    config = tiny_sr()
    config["tasks"][0]["test_sets"]["SRBENCHMARK"] = "srbench:{data_root}/SR_benchmark:all"
    config["data_root"] = str(tmp_path / "datasets")
    result = runner.invoke(app, ["experiment", "run", str(write_config(config)), "--out", str(tmp_path / "exp")])
    assert result.exit_code == 2
    assert str(tmp_path / "datasets" / "SR_benchmark") in result.output and "SRBENCHMARK" in result.output
    assert training_spy.calls == []
    assert not (tmp_path / "exp").exists()
