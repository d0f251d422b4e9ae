"""Step-length training and the SRGAN schedule of Ledig et al. (phase switch and lr milestones in steps)."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from imgsteal.data.patches import PairedPatchSource, to_uint8_tensor
from imgsteal.models import build_model
from imgsteal.train.checkpoint import load_checkpoint
from imgsteal.train.loop import run_training
from imgsteal.train.paired import PixelRecipe
from imgsteal.train.srgan import SRGANRecipe
from imgsteal.victim.train import SRVictimConfig

META = {"task": "sr", "scale": 2}


def _source():  # 6 pairs, batch 2: 3 steps per epoch
    torch.manual_seed(123)
    xs = [to_uint8_tensor(torch.rand(3, 12, 12)) for _ in range(6)]
    ys = [to_uint8_tensor(torch.rand(3, 24, 24)) for _ in range(6)]
    return PairedPatchSource(xs, ys, scale=2, patch=8, batch_size=2, seed=0)


def _srgan(**kwargs):
    torch.manual_seed(0)
    generator = build_model("srresnet", scale=2, n_blocks=1, channels=4)
    discriminator = build_model("vgg_discriminator", base_channels=4, dense=8)
    return SRGANRecipe(generator, discriminator, torch.device("cpu"), content_loss="pixel", lr=1e-4, **kwargs)


class _Recorder:
    """on_step hook: after each step, the phase and learning rate that step ran with."""

    def __init__(self, recipe):
        self.recipe, self.rows = recipe, []

    def __call__(self, step):
        lrs = {g["lr"] for opt in self.recipe.optimizers.values() for g in opt.param_groups}
        assert len(lrs) == 1
        self.rows.append((step, self.recipe.adversarial, lrs.pop()))


class Interrupt(Exception):
    pass


def test_step_length_run_stops_exactly_mid_epoch_and_checkpoints_there(tmp_path):
    torch.manual_seed(0)
    recipe = PixelRecipe(build_model("srresnet", scale=2, n_blocks=1, channels=4), torch.device("cpu"))
    result = run_training(recipe, _source(), run_dir=tmp_path / "run", epochs=50, steps=7, meta=META,
                          checkpoint_every=0, log_every=1, progress=False)
    assert result.steps == 7 and result.epochs == 3  # 3 + 3 + 1 steps: the third epoch stops after one batch
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 8))
    last = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.safetensors")
    assert last.meta["step"] == 7 and last.meta["total_steps"] == 7
    # Resuming a finished step-length run trains nothing more.
    again = run_training(recipe, _source(), run_dir=tmp_path / "run", epochs=50, steps=7, meta=META,
                         progress=False, resume=True)
    assert again.steps == 7 and again.resumed_from_step == 7


def test_srgan_switches_phase_and_drops_the_lr_at_the_milestone_in_steps(tmp_path):
    # Ledig et al. in miniature: 4 pixel steps, then 5 adversarial steps, lr x 0.1 after 2 of them.
    recipe = _srgan(pretrain_steps=4, gan_lr_milestones=[2], lr_gamma=0.1)
    record = _Recorder(recipe)
    result = run_training(recipe, _source(), run_dir=tmp_path / "run", epochs=1, steps=9, meta=META,
                          log_every=1, progress=False, on_step=record)
    assert result.steps == 9
    assert [adv for _, adv, _ in record.rows] == [False] * 4 + [True] * 5
    assert [lr for *_, lr in record.rows] == pytest.approx([1e-4] * 6 + [1e-5] * 3)
    history = result.history
    assert "pixel" in history[0] and "adv" in history[-1]


def test_srgan_epoch_mode_milestones_count_from_the_adversarial_epoch(tmp_path):
    recipe = _srgan(pretrain_epochs=1, gan_lr_milestones=[4], lr_gamma=0.5)
    record = _Recorder(recipe)
    run_training(recipe, _source(), run_dir=tmp_path / "run", epochs=3, meta=META, progress=False, on_step=record)
    assert [adv for _, adv, _ in record.rows] == [False] * 3 + [True] * 6
    assert [lr for *_, lr in record.rows] == pytest.approx([1e-4] * 7 + [5e-5] * 2)


def test_interrupted_srgan_step_run_resumes_on_the_same_schedule_and_weights(tmp_path):
    full = run_training(_srgan(pretrain_steps=2, gan_lr_milestones=[3]), _source(), run_dir=tmp_path / "full",
                        epochs=1, steps=8, meta=META, progress=False)

    def stop_at_4(step):
        if step == 4:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_training(_srgan(pretrain_steps=2, gan_lr_milestones=[3]), _source(), run_dir=tmp_path / "cut", epochs=1,
                     steps=8, meta=META, checkpoint_every=1, progress=False, on_step=stop_at_4)
    resumed_recipe = _srgan(pretrain_steps=2, gan_lr_milestones=[3])
    record = _Recorder(resumed_recipe)
    resumed = run_training(resumed_recipe, _source(), run_dir=tmp_path / "cut", epochs=1, steps=8, meta=META,
                           progress=False, resume=True, on_step=record)
    assert resumed.resumed_from_step == 4 and resumed.steps == 8
    assert resumed_recipe.gan_start == 2  # restored, not re-anchored at the resume
    assert [lr for *_, lr in record.rows] == pytest.approx([1e-4, 1e-5, 1e-5, 1e-5])  # steps 5..8; milestone at 2 + 3
    a = load_checkpoint(full.model_path).module_state("generator")
    b = load_checkpoint(resumed.model_path).module_state("generator")
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_sr_victim_config_steps_take_precedence_and_are_validated():
    cfg = SRVictimConfig(hr=["x"], pretrain_steps=1_000_000, gan_steps=200_000, gan_lr_milestones=[100_000])
    assert cfg.total_steps() == 1_200_000
    assert SRVictimConfig(hr=["x"]).total_steps() is None  # epochs, as before
    with pytest.raises(ValidationError, match="both pretrain_steps and gan_steps"):
        SRVictimConfig(hr=["x"], pretrain_steps=10)
    with pytest.raises(ValidationError, match="inside the 5 adversarial steps"):
        SRVictimConfig(hr=["x"], pretrain_steps=10, gan_steps=5, gan_lr_milestones=[5])
    with pytest.raises(ValidationError, match="increasing"):
        SRVictimConfig(hr=["x"], gan_lr_milestones=[3, 2])


def test_victim_train_cli_takes_the_schedule_in_steps(tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from imgsteal.cli import app

    (tmp_path / "hr").mkdir()
    for i in range(2):
        Image.fromarray((torch.rand(64, 64, 3) * 255).byte().numpy()).save(tmp_path / "hr" / f"{i}.png")
    result = CliRunner().invoke(app, [
        "victim", "train", "--task", "sr", "--arch", "srgan", "--hr", str(tmp_path / "hr"), "--content-loss", "pixel",
        "--n-blocks", "1", "--channels", "4", "--patch", "8", "--batch-size", "2", "--repeat", "2",
        "--pretrain-steps", "2", "--gan-steps", "3", "--gan-lr-milestone", "2", "--device", "cpu", "--out", str(tmp_path / "v")])
    assert result.exit_code == 0, result.output
    assert "(5 steps" in result.output
    last = load_checkpoint(tmp_path / "v" / "checkpoints" / "last.safetensors")
    assert last.meta["optimizers"]["generator"]["param_groups"][0]["lr"] == pytest.approx(1e-5)  # after the milestone
    assert last.meta["extra_state"]["recipe"]["gan_start"] == 2
    config = json.loads((tmp_path / "v" / "config.json").read_text())
    assert config["gan_lr_milestones"] == [2] and config["pretrain_steps"] == 2
    bad = CliRunner().invoke(app, ["victim", "train", "--task", "sr", "--arch", "srgan", "--hr", str(tmp_path / "hr"),
                                   "--pretrain-steps", "2", "--out", str(tmp_path / "w")])
    assert bad.exit_code == 2 and "both pretrain_steps and gan_steps" in bad.output


def test_sr_victim_with_the_msrresnet_generator_trains_and_serves(tmp_path):
    """--generator msrresnet (BasicSR's SRGAN generator): the victim run exports an msrresnet that the
    inference code loads and runs; another generator name is refused."""
    from imgsteal.data.images import encode_png
    from imgsteal.victim.inference import load_translator
    from imgsteal.victim.train import train_sr_victim

    hr = tmp_path / "hr"
    hr.mkdir()
    torch.manual_seed(0)
    for i in range(3):
        (hr / f"{i}.png").write_bytes(encode_png(torch.rand(3, 64, 64)))
    cfg = SRVictimConfig(hr=[str(hr)], scale=4, generator="msrresnet", n_blocks=1, channels=8, disc_channels=4,
                         patch=8, batch_size=2, pretrain_steps=2, gan_steps=0, content_loss="pixel", device="cpu",
                         checkpoint_every=0)
    train_sr_victim(cfg, tmp_path / "victim", progress=False)
    spec = json.loads((tmp_path / "victim" / "model.json").read_text())
    assert spec["archs"]["generator"]["arch"] == "msrresnet"
    translator = load_translator(tmp_path / "victim", "cpu")
    out = translator(torch.rand(1, 3, 12, 16))
    assert out.shape == (1, 3, 48, 64)
    with pytest.raises(ValidationError):
        SRVictimConfig(hr=[str(hr)], generator="edsr")
