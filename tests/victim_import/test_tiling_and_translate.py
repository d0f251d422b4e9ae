"""Tiled super-resolution equals untiled away from seams; `imgsteal translate` and `imgsteal victim import` CLIs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

from imgsteal.cli import app
from imgsteal.models import build_model
from imgsteal.victim.inference import Translator, load_translator
from imgsteal.victim.tiling import TilingConfig, tiled_forward
from victim_import import reference_nets as ref

runner = CliRunner()


def _smooth(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, h // 8 + 1, w // 8 + 1, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


def _rrdb_translator(tiling: TilingConfig | None) -> Translator:
    torch.manual_seed(0)
    net = build_model("rrdbnet", channels=8, n_blocks=2, growth=4)
    return Translator(net, "sr", scale=4, tiling=tiling)


def test_tiled_equals_untiled_away_from_seams():
    x = _smooth(70, 90)
    untiled = _rrdb_translator(None)(x)
    tile, overlap = 32, 8
    tiled = _rrdb_translator(TilingConfig(tile=tile, overlap=overlap, above_pixels=0))(x)
    assert tiled.shape == untiled.shape == (1, 3, 280, 360)
    diff = (tiled - untiled).abs()[0].amax(0)
    near_seam = torch.zeros_like(diff, dtype=torch.bool)
    margin = 4 * 4  # output px within 4 input px of a seam
    for seam in range(tile, 70, tile):
        near_seam[max(seam * 4 - margin, 0): seam * 4 + margin, :] = True
    for seam in range(tile, 90, tile):
        near_seam[:, max(seam * 4 - margin, 0): seam * 4 + margin] = True
    assert diff[~near_seam].max() <= 1 / 255
    assert diff.max() < 0.05  # even at the seams the overlap keeps it close


def test_overlap_covering_the_receptive_field_is_exact():
    torch.manual_seed(0)
    net = build_model("msrresnet", channels=8, n_blocks=1).eval()  # receptive radius: 4 input px
    x = torch.rand(1, 3, 30, 41)
    with torch.no_grad():
        full = net(x)
        tiled = tiled_forward(net, x, 4, tile=16, overlap=6)
    assert (tiled - full).abs().max() < 1e-5


def test_memory_bound_sets_the_tile_side():
    translator = _rrdb_translator(TilingConfig(memory_mb=8, overlap=4, above_pixels=0))
    side = translator.tile_side()
    small = _rrdb_translator(TilingConfig(memory_mb=2, overlap=4, above_pixels=0)).tile_side()
    assert 16 <= small < side
    x = _smooth(40, 40)
    assert translator(x).shape == (1, 3, 160, 160)


def test_large_inputs_are_tiled_by_default_small_ones_are_not():
    translator = _rrdb_translator(None)
    assert translator.tiling is None
    default = TilingConfig()
    assert not default.applies(510, 339) and default.applies(1356, 2040)


def test_tiling_recorded_on_import_reaches_the_translator(tmp_path: Path):
    torch.save({"params_ema": ref.msrresnet_state(nf=8, nb=1)}, tmp_path / "net_g.pth")
    result = runner.invoke(app, ["victim", "import", str(tmp_path / "net_g.pth"), "--out", str(tmp_path / "run"),
                                 "--tile", "64", "--tile-above", "4096"])
    assert result.exit_code == 0, result.output
    translator = load_translator(tmp_path / "run", "cpu")
    assert translator.tiling == TilingConfig(tile=64, above_pixels=4096)
    assert translator.tiling.applies(65, 64) and not translator.tiling.applies(64, 64)


def test_translate_cli_is_resumable_and_names_outputs_by_stem(tmp_path: Path):
    torch.save({"params_ema": ref.msrresnet_state(nf=8, nb=1)}, tmp_path / "SRGAN_x4.pth")
    result = runner.invoke(app, ["victim", "import", str(tmp_path / "SRGAN_x4.pth"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "basicsr MSRResNet (sr, x4)" in result.output
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, suffix in enumerate((".png", ".jpg", ".png")):
        arr = (np.random.default_rng(i).random((12, 10, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(inputs / f"photo_{i}{suffix}")
    out = tmp_path / "out"
    result = runner.invoke(app, ["translate", "--model", str(tmp_path / "run"), "--inputs", str(inputs), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["photo_0.png", "photo_1.png", "photo_2.png"]
    assert Image.open(out / "photo_1.png").size == (40, 48)
    stamp = (out / "photo_0.png").stat().st_mtime_ns
    (out / "photo_2.png").unlink()  # as if the run had been stopped before it
    result = runner.invoke(app, ["translate", "--model", str(tmp_path / "run"), "--inputs", str(inputs), "--out", str(out)])
    assert result.exit_code == 0 and "1 images translated" in result.output and "2 already there" in result.output
    assert (out / "photo_0.png").stat().st_mtime_ns == stamp and (out / "photo_2.png").exists()
    # the same answers as the run folder's translator
    expected = load_translator(tmp_path / "run", "cpu").translate(
        torch.from_numpy(np.array(Image.open(inputs / "photo_0.png"))).permute(2, 0, 1).float() / 255)
    got = torch.from_numpy(np.array(Image.open(out / "photo_0.png"))).permute(2, 0, 1).float() / 255
    assert (got - expected).abs().max() <= 1 / 255 + 1e-6


def test_import_cli_errors_are_one_line(tmp_path: Path):
    torch.save(ref.patchgan_state(), tmp_path / "latest_net_D_A.pth")
    result = runner.invoke(app, ["victim", "import", str(tmp_path / "latest_net_D_A.pth"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "discriminator" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["victim", "import", str(tmp_path / "x.pth"), "--out", str(tmp_path / "run"), "--input-range", "0-1"])
    assert result.exit_code == 2 and "--input-range" in result.output


def test_imported_style_victim_answers_through_local_oracle(tmp_path: Path):
    """An imported run folder is what harvest and experiments load: the LocalOracle answers with it."""
    from imgsteal.data.images import decode_image, encode_png
    from imgsteal.victim.oracle import LocalOracle

    state = ref.cyclegan_resnet_state(ngf=4, n_blocks=1)
    torch.save(state, tmp_path / "latest_net_G.pth")
    result = runner.invoke(app, ["victim", "import", str(tmp_path / "latest_net_G.pth"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    image = _smooth(16, 24)[0]
    answers = list(LocalOracle(load_translator(tmp_path / "run", "cpu")).stream([("q", encode_png(image))]))
    query = decode_image(encode_png(image))[None]
    expected = ((ref.cyclegan_resnet_forward(state, query * 2 - 1, 1, "instance") + 1) / 2).clamp(0, 1)[0]
    assert (decode_image(answers[0].image) - expected).abs().max() <= 1 / 255 + 1e-6


def test_server_answers_large_inputs_of_an_imported_victim_in_tiles(tmp_path: Path):
    """The HTTP API serves an imported SR run; inputs above the run's tiling threshold go through tiles."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    from imgsteal.data.images import decode_image, encode_png
    from imgsteal.victim.accounts import AccountsDB
    from imgsteal.victim.server import ServerSettings, create_app

    state = ref.rrdbnet_state(nf=8, nb=1, gc=4)
    torch.save({"params_ema": state}, tmp_path / "net_g.pth")
    result = runner.invoke(app, ["victim", "import", str(tmp_path / "net_g.pth"), "--out", str(tmp_path / "run"),
                                 "--tile", "24", "--tile-overlap", "12", "--tile-above", "1024"])
    assert result.exit_code == 0, result.output
    translator = load_translator(tmp_path / "run", "cpu")
    calls = []
    run = translator._run
    translator._run = lambda x: calls.append(tuple(x.shape[-2:])) or run(x)
    image = _smooth(40, 56)[0]
    with AccountsDB(tmp_path / "api.sqlite") as accounts:
        key = accounts.create_key("owner")[1]
    with TestClient(create_app(translator, tmp_path / "api.sqlite", ServerSettings(rate_per_s=0))) as client:
        calls.clear()  # the server's start-up memory probes also run the model
        r = client.post("/v1/translate", content=encode_png(image), headers={"Authorization": f"Bearer {key}",
                                                                               "Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    answer = decode_image(r.content)
    assert answer.shape == (3, 160, 224) and len(calls) == 6 and max(calls) <= (48, 48)  # 2 x 3 tiles with context
    query = decode_image(encode_png(image))[None]
    expected = ref.rrdbnet_forward(state, query, 1).clamp(0, 1)[0]
    assert (answer - expected).abs().max() <= 1 / 255 + 1e-6
