"""Style victims: exact resume of a killed CycleGAN run (weights, optimizers, image pools, lr schedule),
and `imgsteal victim train --task style` through the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from imgsteal.cli import app
from imgsteal.train.checkpoint import load_checkpoint
from imgsteal.victim.inference import load_translator
from imgsteal.victim.style import StyleVictimConfig, train_style_victim

from imgsteal_testkit import write_images

runner = CliRunner()


class Interrupt(Exception):
    pass


@pytest.fixture
def domains(tmp_path):
    write_images(tmp_path / "photos", 5, size=(48, 40), seed=1)
    write_images(tmp_path / "paintings", 3, size=(40, 56), seed=2)
    return str(tmp_path / "photos"), str(tmp_path / "paintings")


def _cfg(domains, **kw):
    return StyleVictimConfig(arch="cyclegan", domain_a=domains[0], domain_b=domains[1], size=32, epochs=3, batch_size=2,
                             ngf=4, ndf=4, n_blocks=1, pool_size=3, device="cpu", checkpoint_every=2, **kw)


def test_killed_cyclegan_run_resumes_exactly(tmp_path, domains):
    full = train_style_victim(_cfg(domains), tmp_path / "full", progress=False)
    assert full.steps == 9  # 5 photos (the larger domain) / batch 2 -> 3 steps per epoch

    def stop_at_5(step):
        if step == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_style_victim(_cfg(domains), tmp_path / "cut", progress=False, on_step=stop_at_5)
    last = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.safetensors")
    assert last.meta["step"] == 4 and last.meta["epoch"] == 1
    assert last.module_state("pool_b")["images"].shape == (3, 3, 32, 32)  # the pool travels with the weights
    resumed = train_style_victim(_cfg(domains), tmp_path / "cut", progress=False, resume=True)
    assert resumed.resumed_from_step == 4 and resumed.steps == 9

    a, b = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.safetensors"), load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.safetensors")
    for name in ("generator", "generator_ba", "discriminator_a", "discriminator_b", "pool_a", "pool_b"):
        for key, value in a.module_state(name).items():
            assert torch.allclose(value, b.module_state(name)[key], atol=1e-6), (name, key)
    schedule = a.meta["extra_state"]["recipe"]["schedule"]
    assert schedule == b.meta["extra_state"]["recipe"]["schedule"]
    assert schedule["epoch"] == 2 and schedule["lr_factor"] == pytest.approx(0.5)  # 3 epochs: 2 constant, 1 decaying

    model = load_checkpoint(full.model_path)
    assert model.meta["kind"] == "style" and model.meta["scale"] == 1 and model.meta["size"] == 32
    assert model.module_names() == ["generator"]
    translator = load_translator(full.model_path, "cpu")
    out = translator(torch.rand(1, 3, 37, 50))
    assert out.shape == (1, 3, 37, 50) and 0 <= out.min() and out.max() <= 1


def test_victim_train_style_cli(tmp_path, domains):
    args = ["victim", "train", "--task", "style", "--arch", "cyclegan", "--domain-a", domains[0], "--domain-b", domains[1],
            "--size", "32", "--epochs", "2", "--batch-size", "2", "--channels", "4", "--n-blocks", "1",
            "--device", "cpu", "--out", str(tmp_path / "victim")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "victim model:" in result.output
    config = json.loads((tmp_path / "victim" / "config.json").read_text())
    assert config["lr"] is None and config["ngf"] == 4  # lr None = the CycleGAN default
    meta = load_checkpoint(tmp_path / "victim" / "model.safetensors").meta
    assert meta["archs"]["generator"] == {"arch": "resnet_generator", "kwargs": {"ngf": 4, "n_blocks": 1, "norm": "instance"}}
    last = load_checkpoint(tmp_path / "victim" / "checkpoints" / "last.safetensors")
    schedule = last.meta["extra_state"]["recipe"]["schedule"]
    assert schedule["base_lr"]["generators"] == [pytest.approx(2e-4)]
    assert last.meta["optimizers"]["generators"]["param_groups"][0]["lr"] == pytest.approx(1e-4)  # 2nd of 2 epochs: halved

    ugatit = runner.invoke(app, [*args[:5], "ugatit", *args[6:-1], str(tmp_path / "ugatit")])
    assert ugatit.exit_code == 0, ugatit.output
    spec = load_checkpoint(tmp_path / "ugatit" / "model.safetensors").meta["archs"]["generator"]
    assert spec["arch"] == "ugatit" and spec["kwargs"]["light"] is False  # the full model by default, as the paper

    missing = runner.invoke(app, ["victim", "train", "--task", "style", "--arch", "cyclegan", "--domain-a", domains[0],
                                  "--out", str(tmp_path / "x")])
    assert missing.exit_code == 2 and "--domain-b" in missing.output
    wrong = runner.invoke(app, ["victim", "train", "--task", "style", "--arch", "srgan", "--domain-a", domains[0],
                                "--domain-b", domains[1], "--out", str(tmp_path / "y")])
    assert wrong.exit_code == 2 and "cyclegan or ugatit" in wrong.output
    tiny = runner.invoke(app, [*args[:-1], str(tmp_path / "z")][:-2] + ["--size", "16", "--out", str(tmp_path / "z")])
    assert tiny.exit_code == 2 and "greater than or equal to 24" in tiny.output
