"""A weights file the user names must work: missing, unreadable or wrong is an error naming it, before
any work (FID/KID are skipped only when no file is named and none can be had)."""

from __future__ import annotations

import os

import pytest
import torch
from typer.testing import CliRunner

from imgsteal.cli import app
from imgsteal_testkit import make_style_model, write_images

runner = CliRunner()


@pytest.fixture
def style_args(tmp_path, monkeypatch):
    monkeypatch.setenv("IMGSTEAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("IMGSTEAL_INCEPTION_WEIGHTS", raising=False)
    write_images(tmp_path / "test", 2, size=(40, 40), seed=1)
    write_images(tmp_path / "style", 2, size=(40, 40), seed=2)
    victim = make_style_model(tmp_path / "victim" / "model.safetensors", "resnet_generator", "victim")
    surrogate = make_style_model(tmp_path / "fa" / "model.safetensors", "unet", "surrogate")
    return ["evaluate", "--task", "style", "--victim", str(victim), "--surrogate", str(surrogate),
            "--test", f"t={tmp_path / 'test'}", "--style-set", str(tmp_path / "style"), "--device", "cpu",
            "--out", str(tmp_path / "eval")]


def _fails_naming(result, path, out):
    assert result.exit_code == 2, result.output
    assert str(path) in result.output and "Traceback" not in result.output
    assert "weights_only" not in result.output
    assert not out.exists()  # nothing was evaluated or written


def test_a_missing_named_file_is_an_error_not_a_skip(tmp_path, style_args):
    missing = tmp_path / "typo" / "pt_inception.pth"
    result = runner.invoke(app, [*style_args, "--inception-weights", str(missing)])
    _fails_naming(result, missing, tmp_path / "eval")
    assert "does not exist" in result.output


def test_a_missing_file_named_in_the_environment_is_an_error(tmp_path, style_args, monkeypatch):
    missing = tmp_path / "nope.pth"
    monkeypatch.setenv("IMGSTEAL_INCEPTION_WEIGHTS", str(missing))
    _fails_naming(runner.invoke(app, style_args), missing, tmp_path / "eval")


def test_a_wrong_named_file_is_an_error(tmp_path, style_args):
    wrong = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(2, 3, 3, 3)}, wrong)
    result = runner.invoke(app, [*style_args, "--inception-weights", str(wrong)])
    _fails_naming(result, wrong, tmp_path / "eval")
    assert "not an FID Inception-v3 state dict" in result.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_named_file_is_an_error(tmp_path, style_args):
    locked = tmp_path / "locked.pth"
    locked.write_bytes(b"x")
    locked.chmod(0)
    result = runner.invoke(app, [*style_args, "--inception-weights", str(locked)])
    _fails_naming(result, locked, tmp_path / "eval")
    assert "cannot be read" in result.output


def test_fid_command_names_the_missing_file(tmp_path):
    write_images(tmp_path / "a", 2)
    write_images(tmp_path / "b", 2, seed=1)
    missing = tmp_path / "missing.pth"
    result = runner.invoke(app, ["fid", str(tmp_path / "a"), str(tmp_path / "b"), "--inception-weights", str(missing),
                                 "--no-cache", "--device", "cpu"])
    assert result.exit_code == 2 and f"{missing} does not exist" in result.output
