"""Surrogate per-architecture reference defaults, the --arch choices, and pix2pix's test-time mode."""

from __future__ import annotations

from typing import get_args

import torch
from typer.testing import CliRunner

from imgsteal.attack.surrogate import ARCH_DEFAULTS, SurrogateConfig, train_surrogate
from imgsteal.cli import app
from imgsteal.cli.surrogate import Arch
from imgsteal.data.images import encode_png
from imgsteal.data.pairs import PairStore
from imgsteal.models import build_model
from imgsteal.train.checkpoint import load_checkpoint
from imgsteal.victim.inference import Translator, load_translator

runner = CliRunner()


def _store(root, count=4, size=64):
    gen = torch.Generator().manual_seed(0)
    with PairStore(root) as store:
        for _ in range(count):
            x = torch.rand(3, size, size, generator=gen)
            store.add(encode_png(x), encode_png(1 - x), source=None, input_size=(size, size), output_size=(size, size),
                      cost_usd=0.0)
    return root


def test_lr_and_batch_size_default_to_each_architectures_reference():
    pix2pix = SurrogateConfig(store="s", arch="pix2pix")
    assert (pix2pix.lr, pix2pix.batch_size) == (2e-4, 1)  # Isola et al.'s reference (beta1 0.5 is the recipe's)
    srresnet = SurrogateConfig(store="s")
    assert (srresnet.lr, srresnet.batch_size) == (1e-4, 16)  # Ledig et al.
    chosen = SurrogateConfig(store="s", arch="pix2pix", lr=1e-3, batch_size=None)
    assert (chosen.lr, chosen.batch_size) == (1e-3, 1)  # a given value wins; None means "the default"
    assert SurrogateConfig.model_validate_json(pix2pix.model_dump_json()) == pix2pix
    assert set(ARCH_DEFAULTS) == set(get_args(SurrogateConfig.model_fields["arch"].annotation))


def test_cli_arch_choices_are_the_configs():
    assert [a.value for a in Arch] == list(get_args(SurrogateConfig.model_fields["arch"].annotation))
    result = runner.invoke(app, ["surrogate", "train", "--help"], terminal_width=200)
    assert "srresnet|edsr|msrresnet|pix2pix|pix2pix_resnet" in result.output


def test_pix2pix_cli_uses_the_reference_recipe_and_records_the_test_mode(tmp_path):
    store = _store(tmp_path / "pairs")
    result = runner.invoke(app, ["surrogate", "train", "--store", str(store), "--arch", "pix2pix", "--size", "64",
                                 "--channels", "4", "--epochs", "1", "--test-mode", "train", "--device", "cpu",
                                 "--out", str(tmp_path / "fa")])
    assert result.exit_code == 0, result.output
    meta = load_checkpoint(tmp_path / "fa" / "model.safetensors").meta
    assert meta["config"]["lr"] == 2e-4 and meta["config"]["batch_size"] == 1 and meta["mode"] == "train"
    assert result.output.count("surrogate model:") == 1 and "(4 steps" in result.output  # 4 pairs, batch 1
    last = load_checkpoint(tmp_path / "fa" / "checkpoints" / "last.safetensors")
    assert last.meta["optimizers"]["generator"]["param_groups"][0]["betas"][0] == 0.5
    assert load_translator(tmp_path / "fa", "cpu").generator.training  # answers in train mode


def test_train_mode_answers_each_image_with_its_own_batch_statistics_and_dropout():
    torch.manual_seed(0)
    unet = build_model("unet", ngf=4, image_size=64)  # depth 6: dropout in one decoder stage
    x = torch.rand(2, 3, 64, 64)
    train = Translator(generator=unet, kind="style", size_multiple=64, mode="train")
    torch.manual_seed(1)
    batch = train(x)
    torch.manual_seed(1)
    alone = torch.cat([train(x[:1]), train(x[1:])])
    assert torch.allclose(batch, alone, atol=1e-6)  # a batch of 2 answers as two batches of 1
    assert not torch.allclose(train(x[:1]), train(x[:1]))  # dropout stays on
    running = [m.running_mean.clone() for m in unet.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.count_nonzero(r) == 0 for r in running)  # stored statistics untouched
    evaluated = Translator(generator=build_model("unet", ngf=4, image_size=64), kind="style", size_multiple=64)
    assert torch.equal(evaluated(x[:1]), evaluated(x[:1]))  # eval mode (the default) is deterministic
