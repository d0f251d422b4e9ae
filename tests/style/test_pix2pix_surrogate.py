"""pix2pix surrogates on a tiny pair store: training, the exported model, and clear size errors."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from imgsteal.attack.harvest import harvest
from imgsteal.attack.surrogate import SurrogateConfig, train_surrogate
from imgsteal.cli import app
from imgsteal.data.images import encode_png
from imgsteal.data.pairs import PairStore
from imgsteal.errors import ImgstealError
from imgsteal.train.checkpoint import load_checkpoint
from imgsteal.victim.inference import load_translator
from imgsteal.victim.oracle import LocalOracle

from imgsteal_testkit import write_images

runner = CliRunner()


def _store(root, count=6, size=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with PairStore(root) as store:
        for _ in range(count):
            x = torch.rand(3, size, size, generator=gen)
            y = (1 - x) * 0.8  # a fixed, learnable 'style'
            store.add(encode_png(x), encode_png(y), source=None, input_size=(size, size), output_size=(size, size), cost_usd=0.0)
    return root


def test_pix2pix_surrogate_trains_and_exports_a_servable_unet(tmp_path):
    store = _store(tmp_path / "pairs")
    cfg = SurrogateConfig(store=str(store), arch="pix2pix", size=32, channels=4, epochs=2, batch_size=2, lr=2e-4, device="cpu")
    result = train_surrogate(cfg, tmp_path / "fa", progress=False)
    assert result.steps == 6 and all(set(row) >= {"g_adv", "l1", "d"} for row in result.history)
    meta = load_checkpoint(result.model_path).meta
    assert meta["kind"] == "style" and meta["scale"] == 1 and meta["size"] == 32 and meta["size_multiple"] == 32
    assert meta["archs"]["generator"]["arch"] == "unet" and meta["archs"]["generator"]["kwargs"]["image_size"] == 32
    translator = load_translator(result.model_path, "cpu")
    out = translator(torch.rand(2, 3, 40, 27))  # padded to multiples of 32 inside, cropped back
    assert out.shape == (2, 3, 40, 27) and 0 <= out.min() and out.max() <= 1


def test_sizes_that_do_not_fit_get_clear_errors(tmp_path):
    store = _store(tmp_path / "pairs")
    result = runner.invoke(app, ["surrogate", "train", "--store", str(store), "--arch", "pix2pix", "--size", "48",
                                 "--channels", "4", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "fa48")])
    assert result.exit_code == 2, result.output
    assert "--size 48 does not fit a pix2pix UNet" in result.output and "32 or 64" in result.output
    result = runner.invoke(app, ["surrogate", "train", "--store", str(store), "--arch", "pix2pix", "--size", "64",
                                 "--channels", "4", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "fa64")])
    assert result.exit_code == 2 and "--resize 64" in result.output  # 32 px pairs cannot give 64 px crops
    with PairStore(tmp_path / "sr") as sr_store:
        x = torch.rand(3, 8, 8)
        sr_store.add(encode_png(x), encode_png(torch.rand(3, 32, 32)), source=None, input_size=(8, 8), output_size=(32, 32), cost_usd=0.0)
    with pytest.raises(ImgstealError, match="srresnet"):
        train_surrogate(SurrogateConfig(store=str(tmp_path / "sr"), arch="pix2pix", size=32, device="cpu"), tmp_path / "bad")


def test_harvest_resize_sends_square_working_size_queries(tmp_path, make_style_model):
    write_images(tmp_path / "adv", 3, size=(80, 50), seed=4)
    victim = load_translator(make_style_model(tmp_path / "victim" / "model.safetensors", "resnet_generator", "victim"), "cpu")
    with PairStore(tmp_path / "pairs") as store:
        report = harvest(LocalOracle(victim), sorted((tmp_path / "adv").iterdir()), store, resize=32, progress=False)
        assert report.queried == 3
        x, y = store.load_pair(store.select(1.0, 0)[0])
    assert x.shape == y.shape == (3, 32, 32)
    result = runner.invoke(app, ["harvest", "--oracle", str(tmp_path / "victim"), "--inputs", str(tmp_path / "adv"),
                                 "--out", str(tmp_path / "pairs2"), "--resize", "40"])
    assert result.exit_code == 0, result.output
    with PairStore(tmp_path / "pairs2", create=False) as store:
        assert {tuple(store.load_pair(r)[0].shape) for r in store.select(1.0, 0)} == {(3, 40, 40)}
