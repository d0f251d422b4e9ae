"""Messages a newcomer meets: they name what the user gave and say what to do."""

import json
import re

import pytest
import torch
from typer.testing import CliRunner

from imgsteal.cli import app
from imgsteal_testkit import write_images

runner = CliRunner()


def fails(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    return result.output


@pytest.mark.parametrize("kind", ["pickled object", "not a torch file"])
def test_a_bad_inception_weights_file_gets_imgsteals_message(tmp_path, kind):
    write_images(tmp_path / "a", 2, size=(16, 16))
    write_images(tmp_path / "b", 2, size=(16, 16), seed=1)
    bad = tmp_path / "weights.pth"
    if kind == "pickled object":
        torch.save({"model": object()}, bad)
    else:
        bad.write_bytes(b"this is not a weights file")
    out = fails("fid", tmp_path / "a", tmp_path / "b", "--inception-weights", bad, "--no-cache")
    assert str(bad) in out and "--inception-weights" in out
    assert "weights_only" not in out and "WeightsUnpickler" not in out


def test_fingerprint_training_announces_and_runs_exactly_its_steps(tmp_path):
    """5 images, batches of 3: an epoch is 8 steps, yet --steps 7 runs (and shows) 7."""
    write_images(tmp_path / "img", 5, size=(40, 40))
    out = tmp_path / "fp"
    result = runner.invoke(app, ["fingerprint", "train", "--images", str(tmp_path / "img"), "--out", str(out),
                                 "--bits", "8", "--size", "32", "--steps", "7", "--batch-size", "3", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    totals = set(re.findall(r"fingerprint:.*?\d+/(\d+) ", result.stderr))
    assert totals == {"7"}, result.stderr[-500:]
    assert "7/7" in result.stderr
    assert json.loads((out / "metrics.json").read_text())["steps"] == 7


def test_a_missing_victim_is_named_as_the_user_gave_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_images(tmp_path / "test", 1, size=(16, 16))
    out = fails("evaluate", "--task", "sr", "--victim", "runs/nosuch", "--surrogate", "runs/fa",
                "--test", "T=test", "--out", "ev")
    assert "checkpoint not found: runs/nosuch (no such file or folder" in out
    assert not (tmp_path / "ev").exists()



def test_test_set_without_a_name_explains_the_name_form(tmp_path):
    write_images(tmp_path / "test", 1, size=(16, 16))
    out = fails("evaluate", "--task", "sr", "--victim", "v", "--surrogate", "s", "--test", tmp_path / "test")
    assert "NAME=DIR" in out and f"--test mine={tmp_path / 'test'}" in out
