"""Watermark verification: the verdict on suspects that do and do not reproduce the alterations."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from imgsteal.cli import app
from imgsteal.data.images import bicubic_upscale, decode_image, encode_png, sha256_bytes
from imgsteal.defenses.verify import binomial_p_value, compare_answers, verify_watermark
from imgsteal.defenses.watermark import Alteration, WatermarkDefense, WatermarkOptions, alter
from imgsteal.errors import ImgstealError

OPTIONS = dict(fraction=1.0, alteration=Alteration.blur, blur_sigma=2.0)


def victim(x: torch.Tensor) -> torch.Tensor:
    return bicubic_upscale(x, 2)


@pytest.fixture
def triggers(tmp_path, kit):
    """12 triggers of client 'mallory' recorded by the watermark defence in front of `victim`."""
    db = tmp_path / "wm.sqlite"
    defense = WatermarkDefense(WatermarkOptions(db=db, **OPTIONS))
    for seed in range(12):
        data = kit.png_bytes(seed=seed)
        x = decode_image(data)
        defense.apply("mallory", x, victim(x), sha256_bytes(data))
    defense.close()
    return db


def test_binomial_p_value():
    assert binomial_p_value(10, 10) == pytest.approx(0.5 ** 10)
    assert binomial_p_value(0, 10) == pytest.approx(1.0)
    assert binomial_p_value(5, 10) == pytest.approx(0.623046875)
    assert binomial_p_value(0, 0) == 1.0


def test_a_suspect_that_reproduces_the_alteration_is_caught(triggers):
    copy = lambda images: [alter(victim(x), WatermarkOptions(**OPTIONS)) for x in images]  # noqa: E731
    verdict = verify_watermark(triggers, "mallory", copy, "copy")
    assert verdict.triggers == 12 and verdict.matched == 12 and verdict.stolen
    assert verdict.p_value == pytest.approx(0.5 ** 12)
    assert "REPRODUCES" in verdict.summary()


def test_a_clean_model_is_not_accused(triggers):
    verdict = verify_watermark(triggers, "mallory", lambda images: [victim(x) for x in images], "clean")
    assert verdict.matched == 0 and not verdict.stolen and verdict.p_value == 1.0
    # A model that learnt the task only roughly (noisy copy of the victim) is not accused either.
    torch.manual_seed(0)
    noisy = lambda images: [(victim(x) + 0.02 * torch.randn_like(victim(x))).clamp(0, 1) for x in images]  # noqa: E731
    assert not verify_watermark(triggers, "mallory", noisy, "noisy").stolen


def test_answers_of_another_size_are_resized(triggers):
    half = lambda images: [x for x in images]  # noqa: E731  (answers at the query's size, half the trigger's)
    verdict = verify_watermark(triggers, "mallory", half, "identity")
    assert verdict.resized == 12
    with pytest.raises(ImgstealError, match="answered"):
        compare_answers([torch.rand(1, 4, 4)], [torch.rand(3, 8, 8)], [torch.rand(3, 8, 8)])


def test_unknown_client_and_missing_database(triggers, tmp_path):
    with pytest.raises(ImgstealError, match="mallory"):
        verify_watermark(triggers, "nobody", lambda images: images)
    with pytest.raises(ImgstealError, match="no watermark trigger database"):
        verify_watermark(tmp_path / "missing.sqlite", "mallory", lambda images: images)


def test_verify_command_on_a_checkpoint(tmp_path, kit, victim_run, victim):
    """Triggers recorded in front of the tiny SR victim; the victim checkpoint itself is the (clean) suspect."""
    db = tmp_path / "wm.sqlite"
    defense = WatermarkDefense(WatermarkOptions(db=db, fraction=1.0, alteration=Alteration.monochrome))
    for seed in range(6):
        data = kit.png_bytes(seed=seed)
        x = decode_image(data)
        defense.apply("mallory", x, victim.translate(x), sha256_bytes(data))
    secret = defense.store.secret()
    defense.close()
    out_json = tmp_path / "verdict.json"
    result = CliRunner().invoke(app, ["watermark", "verify", "--suspect", str(victim_run), "--client", "mallory",
                                      "--triggers", str(db), "--json", str(out_json)])
    assert result.exit_code == 0, result.output
    assert "0/6 triggers" in result.output and "no evidence" in result.output
    verdict = json.loads(out_json.read_text())
    assert verdict["matched"] == 0 and len(verdict["distances"]) == 6 and verdict["stolen"] is False
    assert secret.hex() not in result.output + out_json.read_text()
    listing = CliRunner().invoke(app, ["watermark", "clients", "--triggers", str(db)])
    assert "mallory\t6 triggers" in listing.output
    missing = CliRunner().invoke(app, ["watermark", "verify", "--suspect", str(tmp_path / "nope"), "--client", "mallory",
                                       "--triggers", str(db)])
    assert missing.exit_code == 2 and "suspect not found" in missing.output


def test_png_round_trip_keeps_the_verdict(triggers):
    """Suspects answer 8-bit PNGs: quantised copies of the altered answers still match."""
    copy = lambda images: [decode_image(encode_png(alter(victim(x), WatermarkOptions(**OPTIONS)))) for x in images]  # noqa: E731
    assert verify_watermark(triggers, "mallory", copy).matched == 12
