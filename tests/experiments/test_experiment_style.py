"""A tiny style-transfer grid: random-init CycleGAN-style victim, pix2pix surrogates, FID with random
Inception weights (the FID layout, so no download), harvest through the local oracle."""

import csv
import json

import pytest
import torch

from imgsteal.experiments.config import ExperimentConfig
from imgsteal.experiments.runner import run_experiment
from imgsteal.metrics.inception import random_fid_inception_state_dict
from imgsteal.models import build_model
from imgsteal.train.checkpoint import save_checkpoint

from imgsteal_testkit import write_images


@pytest.mark.slow
def test_tiny_style_grid_scores_fid_and_paired_metrics(tmp_path, monkeypatch):
    from imgsteal.metrics import features

    monkeypatch.setenv("IMGSTEAL_CACHE", str(tmp_path / "cache"))
    computed = []  # images that went through Inception, one entry per computation
    real_run = features._run

    def counting_run(model, batches, device):
        result = real_run(model, batches, device)
        computed.append(len(result))
        return result

    monkeypatch.setattr(features, "_run", counting_run)
    torch.manual_seed(0)
    generator = build_model("resnet_generator", ngf=4, n_blocks=1)
    victim = save_checkpoint(tmp_path / "victim" / "model.safetensors",
                             {"role": "victim", "task": "style", "scale": 1, "size_multiple": 1,  # "task": a run from before "kind"
                              "archs": {"generator": generator.build_spec}, "export": "generator"}, {"generator": generator})
    write_images(tmp_path / "adv", 6, size=(40, 48), seed=1)
    write_images(tmp_path / "test", 3, size=(48, 40), seed=2)
    write_images(tmp_path / "style", 3, size=(48, 48), seed=3)
    weights = tmp_path / "fid_inception.pth"
    torch.save(random_fid_inception_state_dict(seed=0), weights)
    cfg = ExperimentConfig.model_validate({
        "name": "tiny-style",
        "grid": {"fractions": [1.0], "augmentations": ["none"], "seeds": 2},
        "tasks": [{
            "name": "style", "kind": "style", "device": "cpu",
            "victim": {"model": str(victim)},
            "harvest": {"inputs": [str(tmp_path / "adv")], "resize": 32, "oracle": "local"},
            "surrogate": {"arch": "pix2pix", "size": 32, "channels": 4, "batch_size": 2, "epochs": 1},
            "test_sets": {"photos": str(tmp_path / "test")},
            "style_set": str(tmp_path / "style"),
            "evaluation": {"inception_weights": str(weights), "gallery_images": 1},
        }],
    })
    out = tmp_path / "exp"
    run = run_experiment(cfg, out, progress=False, log=lambda m: None)
    assert run.finished == ["style/f100-none-s0", "style/f100-none-s1"] and not run.failed
    # Inception ran on the style set and on F_V's answers once, and on each cell's F_A outputs:
    # the second cell found the first two in the content-keyed feature cache.
    assert computed == [3, 3, 3, 3]
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [int(r["queries"]) for r in rows] == [6, 6]
    row = rows[0]
    assert float(row["fid_A"]) > 0 and float(row["fid_B"]) > 0 and float(row["fid_C"]) > 0
    assert float(row["kid_C"]) == float(row["kid_C"])  # present, not NaN
    assert 0 < float(row["ssim_B"]) < 1 and row["psnr_input_vs_victim"] != ""
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tasks"]["style"]["metric"] == "fid" and summary["tasks"]["style"]["plateau"] == 1.0
    assert "(C) FID" in (out / "table6.md").read_text()
    # Scored images are removed (gigabytes at paper scale), except in the gallery cell, for `study create`.
    assert not (out / "cells" / "style" / "f100-none-s1" / "evaluation" / "outputs").exists()
    assert (out / "cells" / "style" / "f100-none-s0" / "evaluation" / "outputs").exists()
    html = (out / "report.html").read_text()
    assert "tasks/style/gallery/00_input.png" in html and "F_A 100%" in html and "HR (truth)" not in html
    assert (out / "plots" / "fraction_curves.png").is_file()
