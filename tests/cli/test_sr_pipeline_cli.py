"""The super-resolution attack end to end through the CLI, on tiny real images and tiny networks."""

import json

import pytest
from typer.testing import CliRunner

from imgsteal.cli import app
from imgsteal.train.checkpoint import load_checkpoint

from imgsteal_testkit import write_images

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.slow
def test_victim_harvest_surrogate_evaluate(tmp_path):
    write_images(tmp_path / "hr", 6, size=(64, 64), seed=1)
    write_images(tmp_path / "adv", 8, size=(64, 64), seed=2)
    write_images(tmp_path / "test", 3, size=(48, 48), seed=3)
    small = ["--n-blocks", 1, "--channels", 8, "--patch", 8, "--batch-size", 4]
    invoke("victim", "train", "--task", "sr", "--arch", "srgan", "--hr", tmp_path / "hr", "--out", tmp_path / "victim",
           "--pretrain-epochs", 1, "--gan-epochs", 1, "--content-loss", "pixel", *small)
    meta = load_checkpoint(tmp_path / "victim" / "model.safetensors").meta
    assert meta["kind"] == "sr" and meta["scale"] == 4 and meta["epoch"] == 2

    out = invoke("harvest", "--oracle", tmp_path / "victim", "--inputs", tmp_path / "adv", "--out", tmp_path / "pairs",
                 "--downscale", 4).output
    assert json.loads(out[out.index("{"):])["queried"] == 8

    for seed in (0, 1):
        invoke("surrogate", "train", "--store", tmp_path / "pairs", "--arch", "srresnet", "--seed", seed, "--fraction", 0.5,
               "--epochs", 1, "--out", tmp_path / f"fa{seed}", *small)
    assert load_checkpoint(tmp_path / "fa0" / "model.safetensors").meta["pairs"] == 4
    # The stronger attacks from the command line: few-shot on a budget of 2 queries for exactly 3 steps.
    invoke("surrogate", "train", "--store", tmp_path / "pairs", "--attack", "few-shot", "--budget", 2, "--steps", 3,
           "--out", tmp_path / "few", *small)
    few = load_checkpoint(tmp_path / "few" / "model.safetensors").meta
    assert few["pairs"] == 2 and few["step"] == 3 and few["config"]["attack"] == "few-shot"

    invoke("evaluate", "--task", "sr", "--victim", tmp_path / "victim", "--surrogate", tmp_path / "fa0",
           "--surrogate", tmp_path / "fa1", "--test", f"tiny={tmp_path / 'test'}", "--out", tmp_path / "eval")
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    cells = results["test_sets"]["tiny"]
    assert results["convention"] == {"color": "RGB", "crop_border": 4}
    assert len(cells["psnr"]["B"]["runs"]) == 2 and len(cells["psnr"]["A"]["runs"]) == 1
    assert 0 < cells["ssim"]["C"]["mean"] <= 1
    table = (tmp_path / "eval" / "table.md").read_text()
    assert "(A)" in table and "(B)" in table and "(C)" in table
    assert (tmp_path / "eval" / "report.html").exists()


def test_clear_errors_for_bad_input(tmp_path):
    result = runner.invoke(app, ["surrogate", "train", "--store", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "no pair store" in result.output
    result = runner.invoke(app, ["victim", "train", "--task", "sr", "--arch", "cyclegan", "--hr", str(tmp_path), "--out", str(tmp_path / "v")])
    assert result.exit_code == 2 and "srgan" in result.output
    result = runner.invoke(app, ["evaluate", "--task", "sr", "--victim", str(tmp_path / "missing"), "--surrogate", str(tmp_path),
                                 "--test", "broken-spec", "--out", str(tmp_path / "e")])
    assert result.exit_code == 2 and "NAME=DIR" in result.output
