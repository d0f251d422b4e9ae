"""Watermark verification: the verdict on suspects that do and do not reproduce the alterations."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from imgsteal.cli import app
from imgsteal.data.images import bicubic_upscale, decode_image, encode_png, sha256_bytes
from imgsteal.defenses.verify import binomial_p_value, compare_answers, verify_watermark
from imgsteal.defenses.watermark import Alteration, WatermarkDefense, WatermarkOptions, alter, blur
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
    with_reference = CliRunner().invoke(app, ["watermark", "verify", "--suspect", str(victim_run), "--client", "mallory",
                                              "--triggers", str(db), "--reference", str(victim_run), "--closeness", "0.3"])
    assert with_reference.exit_code == 0, with_reference.output
    assert "0/6 triggers matched" in with_reference.output and "1 reference model" in with_reference.output
    listing = CliRunner().invoke(app, ["watermark", "clients", "--triggers", str(db)])
    assert "mallory\t6 triggers" in listing.output
    missing = CliRunner().invoke(app, ["watermark", "verify", "--suspect", str(tmp_path / "nope"), "--client", "mallory",
                                       "--triggers", str(db)])
    assert missing.exit_code == 2 and "suspect not found" in missing.output


def test_png_round_trip_keeps_the_verdict(triggers):
    """Suspects answer 8-bit PNGs: quantised copies of the altered answers still match."""
    copy = lambda images: [decode_image(encode_png(alter(victim(x), WatermarkOptions(**OPTIONS)))) for x in images]  # noqa: E731
    assert verify_watermark(triggers, "mallory", copy).matched == 12


# -- no false accusations (issue 15 item 2) ------------------------------------------------------
def _blurry(sigma):
    return lambda images: [blur(victim(x), sigma) for x in images]  # noqa: E731


def weak(images):
    """A model that learnt almost nothing (about 7 dB from the victim): dim, washed-out and very smooth."""
    return [0.1 + 0.4 * blur(victim(x), 4.0) for x in images]


def test_blurry_and_weak_independent_models_are_not_accused(triggers):
    """Smooth models sit closer to the blurred answer than to the clean one on every trigger; that alone
    used to give "12/12, p = 2.4e-4, REPRODUCES". Far from the altered answer in absolute terms, they are not matched."""
    for name, model in (("blurry", _blurry(5.0)), ("weak", weak)):
        verdict = verify_watermark(triggers, "mallory", model, name)
        assert verdict.closer == 12, name  # the old criterion alone would accuse it
        assert verdict.matched == 0 and not verdict.stolen and verdict.p_value == 1.0, name
        assert verdict.median_closeness > 1.0 and "no evidence" in verdict.summary()
        assert verdict.reproduced < 0, name  # the scorecard's continuous statistic: nothing reproduced


def test_the_share_reproduced_grows_with_how_much_of_the_alteration_a_copy_learnt(triggers):
    """The scorecard's statistic: 0 for the clean answers, 1 for the altered ones, and in between for
    a copy that learnt part of each alteration (MSE: a blend t of the way has (1 - t)^2 of the distance)."""
    options = WatermarkOptions(**OPTIONS)

    def blend(t):
        return lambda images: [(1 - t) * victim(x) + t * alter(victim(x), options) for x in images]  # noqa: E731

    scores = [verify_watermark(triggers, "mallory", blend(t)).reproduced for t in (0.0, 0.25, 0.5, 1.0)]
    # (the stored answers are 8-bit: a float blend is within a rounding step of them)
    assert scores[0] == pytest.approx(0.0, abs=0.01) and scores[-1] == pytest.approx(1.0, abs=0.01)
    assert scores[1] == pytest.approx(1 - 0.75 ** 2, abs=0.01) and scores[2] == pytest.approx(0.75, abs=0.01)
    assert verify_watermark(triggers, "mallory", blend(0.25)).matched == 0  # a quarter of the way: no trigger matched, yet 0.44


def test_a_noisy_surrogate_trained_on_marked_answers_is_still_caught(triggers):
    torch.manual_seed(1)
    options = WatermarkOptions(**OPTIONS)
    stolen = lambda images: [(alter(victim(x), options) + 0.02 * torch.randn_like(victim(x))).clamp(0, 1)  # noqa: E731
                             for x in images]
    verdict = verify_watermark(triggers, "mallory", stolen, "stolen")
    assert verdict.matched == 12 and verdict.stolen and verdict.median_closeness < 0.5
    assert set(verdict.as_dict()) >= {"triggers", "matched", "fraction", "p_value", "stolen"}


def test_reference_models_set_the_bar(triggers):
    """A model that blurs everything by about the mark's radius cannot be told apart from the trigger set
    alone; an independent model of the same kind as reference removes the evidence, while a suspect that
    reproduces the marks still beats it on every trigger (null rate 1/2 with one reference)."""
    def near_mark(seed):
        gen = torch.Generator().manual_seed(seed)
        return lambda images: [(blur(victim(x), 2.5) + 0.01 * torch.randn(victim(x).shape, generator=gen)).clamp(0, 1)
                               for x in images]

    alone = verify_watermark(triggers, "mallory", near_mark(0), "near-mark")
    assert alone.matched == 12 and alone.stolen  # documented limit
    with_reference = verify_watermark(triggers, "mallory", near_mark(0), "near-mark", references=[near_mark(1)])
    assert with_reference.references == 1 and with_reference.null_rate == 0.5
    assert 2 <= with_reference.matched <= 10 and not with_reference.stolen
    copy = lambda images: [alter(victim(x), WatermarkOptions(**OPTIONS)) for x in images]  # noqa: E731
    caught = verify_watermark(triggers, "mallory", copy, "copy", references=[near_mark(1), _blurry(5.0)])
    assert caught.matched == 12 and caught.null_rate == pytest.approx(1 / 3) and caught.stolen
    with pytest.raises(ImgstealError, match="closeness"):
        verify_watermark(triggers, "mallory", copy, closeness=0)


def _detection(per_image, bits=100):
    from imgsteal.defenses.fingerprint import FingerprintDetection

    matched = round(sum(per_image) * bits)
    return FingerprintDetection(images=len(per_image), bits=bits, accuracy=sum(per_image) / len(per_image),
                                matched_bits=matched, total_bits=bits * len(per_image),
                                p_value=binomial_p_value(matched, bits * len(per_image)), per_image=list(per_image))


def test_fingerprint_verdict_is_relative_to_unstamped_models():
    """A decoder biased towards the owner's bits reads 58% from unstamped images: the bitwise binomial p
    (bits as if independent) calls that significant; the verdict, against unstamped references, does not."""
    from imgsteal.defenses.fingerprint import fingerprint_verdict

    gen = torch.Generator().manual_seed(0)
    per = lambda mean, n: (mean + 0.03 * torch.randn(n, generator=gen)).clamp(0, 1).tolist()  # noqa: E731
    unstamped = _detection(per(0.58, 16))
    suspect_clean = _detection(per(0.59, 16))
    assert suspect_clean.p_value < 1e-6  # the bitwise test alone would accuse it
    references = [_detection(per(0.58, 16)), _detection(per(0.57, 16))]
    verdict = fingerprint_verdict(suspect_clean, references)
    assert not verdict.found and verdict.reference_images == 32 and "no evidence" in verdict.summary()
    assert not fingerprint_verdict(unstamped, references).found
    stolen = fingerprint_verdict(_detection(per(0.80, 16)), references)
    assert stolen.found and stolen.p_value < 1e-6 and "FOUND" in stolen.summary()
    # Without references the null is 50% with images as units, and a margin is still required.
    assert fingerprint_verdict(_detection(per(0.80, 16))).found
    assert not fingerprint_verdict(_detection(per(0.53, 16))).found
    assert not fingerprint_verdict(_detection([0.9])).found  # one image: nothing significant to claim


def test_a_two_step_surrogate_from_an_undefended_service_is_not_accused(triggers, kit):
    """Issue 15's case: a tiny surrogate trained 2 steps on clean answers (about 8 dB from the victim)
    is closer to the blurred answer than to the clean one, and must not be accused."""
    import torch.nn.functional as F

    from imgsteal.models import build_model

    torch.manual_seed(0)
    x = torch.stack([decode_image(kit.png_bytes(seed=seed)) for seed in range(12)])
    y = victim(x)
    model = build_model("srresnet", scale=2, n_blocks=1, channels=8)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(2):
        loss = F.l1_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def surrogate(images):
        with torch.no_grad():
            return [model(image[None])[0].clamp(0, 1) for image in images]

    verdict = verify_watermark(triggers, "mallory", surrogate, "two-step")
    assert verdict.closer >= 10 and verdict.matched == 0 and not verdict.stolen
