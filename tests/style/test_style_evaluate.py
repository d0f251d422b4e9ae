"""`imgsteal evaluate --task style`: Tables 3/4 with FID/KID when Inception weights are given (random
weights in the FID layout here), and the paired (B) scores with FID/KID skipped, and why, without them."""

from __future__ import annotations

import json
import urllib.error

import pytest
import torch
from typer.testing import CliRunner

from imgsteal.cli import app
from imgsteal.metrics.inception import random_fid_inception_state_dict

from imgsteal_testkit import write_images

runner = CliRunner()


@pytest.fixture
def setup(tmp_path, make_style_model, monkeypatch):
    monkeypatch.setenv("IMGSTEAL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("IMGSTEAL_INCEPTION_WEIGHTS", raising=False)
    write_images(tmp_path / "test_v", 3, size=(40, 48), seed=1)
    write_images(tmp_path / "bench", 4, size=(56, 40), seed=2)
    write_images(tmp_path / "style", 3, size=(48, 48), seed=3)
    victim = make_style_model(tmp_path / "victim" / "model.safetensors", "resnet_generator", "victim")
    surrogates = [make_style_model(tmp_path / f"fa{s}" / "model.safetensors", "unet", "surrogate", seed=s) for s in (0, 1)]
    args = ["evaluate", "--task", "style", "--victim", str(victim), "--surrogate", str(surrogates[0]),
            "--surrogate", str(surrogates[1]), "--test", f"victim_test={tmp_path / 'test_v'}",
            "--test", f"benchmark={tmp_path / 'bench'}", "--style-set", str(tmp_path / "style"), "--device", "cpu"]
    return tmp_path, args


def _offline(monkeypatch, tmp_path):
    """Empty torch hub cache and a download that fails as it does without network."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "empty_hub"))

    def no_network(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)


def test_without_inception_weights_fid_is_skipped_and_paired_scores_remain(setup, monkeypatch):
    tmp_path, args = setup
    _offline(monkeypatch, tmp_path)
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert payload["kind"] == "style" and payload["size"] == 32  # the size the surrogates were built for
    assert payload["fid_kid"]["computed"] is False and "Inception weights unavailable" in payload["fid_kid"]["reason"]
    for name, n in (("victim_test", 3), ("benchmark", 4)):
        cells = payload["test_sets"][name]
        assert cells["n_images"] == n and "fid" not in cells and "kid" not in cells
        assert len(cells["psnr"]["B"]["runs"]) == 2 and len(cells["ssim"]["input_vs_victim"]["runs"]) == 1
        assert 0 < cells["ssim"]["B"]["mean"] < 1
    table = (tmp_path / "eval" / "table.md").read_text()
    assert "FID and KID were skipped" in table and "PSNR F_A vs F_V" in table
    report = (tmp_path / "eval" / "report.html").read_text()
    assert "FID and KID were skipped" in report and "surrogate F_A" in report
    assert len(list((tmp_path / "eval" / "gallery").glob("benchmark_*_victim.png"))) == 4
    assert len(list((tmp_path / "eval" / "outputs" / "benchmark" / "surrogate1").glob("*.png"))) == 4


@pytest.mark.slow  # about 10 s or more on the busy 2-core box: a full-size Inception on CPU
def test_with_inception_weights_tables_3_and_4_hold_fid_and_kid(setup, monkeypatch):
    tmp_path, args = setup
    _offline(monkeypatch, tmp_path)
    weights = tmp_path / "fid_inception.pth"
    torch.save(random_fid_inception_state_dict(seed=0), weights)
    result = runner.invoke(app, [*args, "--inception-weights", str(weights), "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert payload["fid_kid"]["computed"] is True and payload["fid_kid"]["weights"] == str(weights)
    for name in ("victim_test", "benchmark"):
        cells = payload["test_sets"][name]
        assert len(cells["fid"]["A"]["runs"]) == 1 and len(cells["fid"]["B"]["runs"]) == 2 and len(cells["kid"]["C"]["runs"]) == 2
        assert all(cells["fid"][k]["mean"] > 0 for k in "ABC")
        assert cells["fid"]["B"]["std"] > 0  # two different surrogates
    table = (tmp_path / "eval" / "table.md").read_text()
    assert "**FID (lower = closer)" in table and "**KID (lower = closer)" in table and "(A)" in table and "(C)" in table and "vs style set" in table
    assert "FID/KID skipped" not in table

    missing = runner.invoke(app, [*args[:-4], "--device", "cpu", "--out", str(tmp_path / "e2")])  # no --style-set
    assert missing.exit_code == 2 and "--style-set" in missing.output
