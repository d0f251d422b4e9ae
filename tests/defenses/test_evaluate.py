"""`imgsteal defense evaluate` end to end on tiny networks and images, and its config checks."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from imgsteal.cli import app
from imgsteal.defenses.evaluate import load_defense_config, run_defense_evaluation
from imgsteal.defenses.watermark import TriggerStore
from imgsteal.errors import ImgstealError


def _images(folder: Path, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        coarse = rng.integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((64, 48), Image.BICUBIC).save(folder / f"img_{i:02d}.png")


def tiny_config(root: Path, oracle: str = "local", runs: dict | None = None) -> dict:
    """Tiny SRGAN victim (1 block, 8 channels), 8 adversary queries of 16 x 12 px, 3 test images."""
    _images(root / "victim", 6, 0)
    _images(root / "attacker", 8, 1)
    _images(root / "test", 3, 2)
    return {
        "name": "tiny", "data_root": str(root),
        "task": {"name": "sr", "kind": "sr", "device": "cpu",
                 "victim": {"train": {"arch": "srgan", "hr": ["{data_root}/victim"], "n_blocks": 1, "channels": 8,
                                      "disc_channels": 4, "patch": 8, "batch_size": 4, "pretrain_epochs": 1,
                                      "gan_epochs": 1, "content_loss": "pixel"}},
                 "harvest": {"inputs": ["{data_root}/attacker"], "downscale": 4, "oracle": oracle},
                 "surrogate": {"n_blocks": 1, "channels": 8, "patch": 8, "batch_size": 4, "epochs": 1},
                 "test_sets": {"tiny test": "{data_root}/test"}, "evaluation": {"gallery_images": 0}},
        "watermark": {"fraction": 0.9},  # 8 queries: at least one trigger but for a 1e-8 chance
        "fingerprint": {"train": {"images": ["{data_root}/victim"], "bits": 24, "size": 32, "channels": 4,
                                  "steps": 10, "batch_size": 4}},
        "pgd": {"epsilon": 0.1, "steps": 2},
        "transfer": {"images": 2, "steps": 2},
        "detect_images": 3, "gallery_images": 1,
        "runs": runs or {"watermark": ["watermark"], "fingerprint": ["fingerprint"], "pgd": ["pgd"],
                         "all": {"defenses": ["watermark", "fingerprint", "pgd"], "watermark": {"alteration": "monochrome"}}},
        "notes": ["tiny test configuration"],
    }


TASK = "experiment/tasks/sr"  # where the evaluation's experiment keeps the task's stages


def _write(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "defense.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _secrets(out: Path) -> list[str]:
    """The HMAC secrets of every watermark database and the fingerprint bits, as text."""
    found = [(out / TASK / "fingerprint" / "fingerprint.secret").read_text()]
    for db in out.glob(f"{TASK}/defended/*/service/watermark.sqlite"):
        with TriggerStore(db, create=False) as store:
            found.append(store.secret().hex())
    return found


@pytest.mark.slow
def test_evaluate_end_to_end_in_process(tmp_path):
    out = tmp_path / "out"
    cfg = load_defense_config(_write(tmp_path, tiny_config(tmp_path / "data")))
    results = run_defense_evaluation(cfg, out, progress=False)

    runs = results["runs"]
    assert set(runs) == {"none", "watermark", "fingerprint", "pgd", "all"}
    for entry in runs.values():
        assert entry["harvest"]["pairs"] == 8
        (record,) = entry["quality"]
        assert {"A", "B", "C"} <= set(record["metrics"]["psnr"]) and record["n_images"] == 3
    assert runs["fingerprint"]["labels"] == {"fingerprint": 8} and runs["pgd"]["labels"] == {"pgd": 8}
    assert runs["all"]["labels"]["fingerprint"] == 8 and runs["all"]["labels"]["watermark:monochrome"] > 0

    wm = runs["watermark"]["watermark"]
    assert wm["triggers"] == runs["watermark"]["labels"]["watermark:blur"] > 0
    for suspect in ("surrogate", "negative_control"):
        assert wm[suspect]["triggers"] == wm["triggers"] and 0 <= wm[suspect]["p_value"] <= 1
    assert runs["watermark"]["answer_cost"]["changed"] == wm["triggers"]

    fp = runs["fingerprint"]["fingerprint"]
    assert set(fp) == {"api_answers", "surrogate", "clean_surrogate", "victim_unstamped"}
    assert fp["api_answers"]["images"] == 8 and fp["surrogate"]["images"] == 3

    pgd = runs["pgd"]["pgd"]
    assert pgd["max_abs_change"] <= 0.1 + 1 / 255 + 1e-6
    assert pgd["discriminator_loss_perturbed"] > pgd["discriminator_loss_clean"]
    assert results["transfer"]["images"] == 2

    for name in ("figure8", "fingerprint", "figure9"):
        assert (out / results["figures"][name]).is_file()
    assert (out / results["figures"]["previews"]["pgd"][0][2]).is_file()
    html = (out / "report.html").read_text()
    assert "Watermark" in html and "Fingerprint" in html and "Figure 9" in html and "tiny test configuration" in html
    assert "Does each defence survive the attack?" in html
    assert "not reproduced by F_A" in html or "REPRODUCED" in html

    # Secrets: owner-only files, and never in the report, the results or the config copy.
    dbs = list(out.glob(f"{TASK}/defended/*/service/watermark.sqlite"))
    assert len(dbs) == 2  # the runs `watermark` and `all`
    for db in dbs:
        assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(db.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(out / TASK / "fingerprint" / "fingerprint.secret").st_mode) == 0o600
    texts = [(out / name).read_text() for name in ("report.html", "results.json", "config.yaml")]
    for secret in _secrets(out):
        assert all(secret not in text for text in texts)

    # Running again resumes: nothing is trained or harvested twice.
    model = out / "experiment" / "cells" / "sr" / "f100-none-s0-dpgd" / "surrogate" / "model.safetensors"
    before = model.stat().st_mtime_ns
    again = run_defense_evaluation(cfg, out, progress=False)
    assert model.stat().st_mtime_ns == before
    assert again["runs"]["watermark"]["watermark"]["triggers"] == wm["triggers"]


@pytest.mark.slow
def test_evaluate_through_the_http_api(tmp_path):
    """The same stages with the victim served by `imgsteal serve --defense watermark` subprocesses."""
    out = tmp_path / "out"
    cfg_dict = tiny_config(tmp_path / "data", oracle="http", runs={"watermark": ["watermark"]})
    cfg_dict["transfer"] = {"enabled": False}
    result = CliRunner().invoke(app, ["defense", "evaluate", str(_write(tmp_path, cfg_dict)), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    wm = results["runs"]["watermark"]
    assert wm["labels"]["watermark:blur"] == wm["watermark"]["triggers"] > 0
    assert wm["labels"]["watermark:blur"] + wm["labels"].get("(none)", 0) == 8
    logs = [p.read_text() for p in out.glob("experiment/tasks/sr/**/server/server.log")]
    assert len(logs) == 2  # the clean run's server and the watermarked one's
    texts = logs + [(out / "report.html").read_text(), result.output]
    for db in out.glob(f"{TASK}/defended/*/service/watermark.sqlite"):
        with TriggerStore(db, create=False) as store:
            assert all(store.secret().hex() not in text for text in texts)


def test_config_errors_name_the_problem(tmp_path):
    base = tiny_config(tmp_path / "data")
    for change, message in (
        ({"runs": {"x": ["nope"]}}, "unknown defence"),
        ({"runs": {"none": ["pgd"]}}, "run name"),
        ({"fingerprint": {}}, "fingerprint"),
        ({"watermark": {"fraction": 2}}, "watermark.fraction"),
        ({"runs": {"x": {"defenses": ["watermark"], "watermark": {"fraction": 5}}}}, "run 'x'"),
        ({"runs": {"x": {"defenses": []}}}, "no defence"),
    ):
        with pytest.raises(ImgstealError, match=message):
            load_defense_config(_write(tmp_path, {**base, **change}))
    result = CliRunner().invoke(app, ["defense", "evaluate", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "not found" in result.output


def test_bundled_configs_are_valid():
    root = Path(__file__).resolve().parents[2] / "configs" / "defense"
    configs = sorted(root.glob("*.yaml"))
    assert configs, root
    kinds = {path.name: load_defense_config(path).task.kind for path in configs}
    assert kinds["demo-sr.yaml"] == "sr" and kinds["demo-style.yaml"] == "style"
    # Figure 9 as the paper ran it: a CycleGAN victim, a pix2pix surrogate, PGD and its transfer.
    figure9 = load_defense_config(root / "paper-figure9.yaml")
    assert figure9.task.victim.train["arch"] == "cyclegan" and figure9.task.surrogate_settings()["arch"] == "pix2pix"
    assert figure9.transfer.enabled and figure9.runs["pgd"].defenses == ["pgd"]


@pytest.mark.slow
def test_evaluate_a_style_victim(tmp_path):
    """CycleGAN victim, pix2pix surrogate: PGD finds the domain-B discriminator (LSGAN loss) on its own."""
    root = tmp_path / "data"
    for name, count, seed in (("a", 4, 0), ("b", 4, 1), ("attacker", 6, 2), ("test", 3, 3)):
        _images(root / name, count, seed)
    cfg = {
        "name": "style-tiny", "data_root": str(root),
        "task": {"name": "st", "kind": "style", "device": "cpu",
                 "victim": {"train": {"arch": "cyclegan", "domain_a": "{data_root}/a", "domain_b": "{data_root}/b",
                                      "size": 32, "load_size": 40, "epochs": 1, "ngf": 4, "ndf": 4, "n_blocks": 1}},
                 "harvest": {"inputs": ["{data_root}/attacker"], "resize": 32, "oracle": "local"},
                 "surrogate": {"arch": "pix2pix", "size": 32, "channels": 4, "batch_size": 2, "epochs": 1},
                 "test_sets": {"t": "{data_root}/test"}, "style_set": "{data_root}/b", "evaluation": {"gallery_images": 0}},
        "watermark": {"fraction": 0.9, "alteration": "monochrome"},
        "pgd": {"epsilon": 0.1, "steps": 1}, "transfer": {"images": 1, "steps": 1},
        "detect_images": 2, "gallery_images": 1,
        "runs": {"watermark": ["watermark"], "pgd": ["pgd"]},
    }
    results = run_defense_evaluation(load_defense_config(_write(tmp_path, cfg)), tmp_path / "out", progress=False)
    runs = results["runs"]
    assert runs["watermark"]["watermark"]["triggers"] == runs["watermark"]["labels"]["watermark:monochrome"] > 0
    pgd = runs["pgd"]["pgd"]
    assert pgd["discriminator_loss_perturbed"] > pgd["discriminator_loss_clean"]
    assert pgd["max_abs_change"] <= 0.1 + 1 / 255 + 1e-6
    assert runs["pgd"]["quality"][0]["n_images"] == 3
