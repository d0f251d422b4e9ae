"""Box-free output watermark: networks, similarity, calibration, a tiny full training run (stage 1,
stage 2, calibration), surrogates verified or not, secrets, the CLI and the served defence."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from typer.testing import CliRunner

from imgsteal.cli import app
from imgsteal.data.images import decode_image, encode_png, quantize
from imgsteal.defenses.boxfree import (
    CALIBRATION_FILE, KEY_FILE, MARK_FILE, MODEL_FILE, BoxfreeDefense, BoxfreeModel, BoxfreeTrainConfig, decoy_p_values, detail, grid_marks,
    load_mark, make_pairs, mark_ncc, mark_ssim, module_suspect, new_mark, psnr, random_keys, train_boxfree, train_surrogate,
    verify_boxfree,
)
from imgsteal.errors import ImgstealError
from imgsteal.models import build_model


def test_networks_take_any_size_and_the_residual_is_bounded():
    emb = build_model("boxfree_embedder", mark_size=16, channels=4, strength=0.012)
    ext = build_model("boxfree_extractor", mark_size=16, channels=4)
    mark = new_mark(16)
    for shape in [(2, 3, 32, 32), (1, 3, 21, 37)]:
        x = torch.rand(shape)
        marked = emb(x, mark[None])
        assert marked.shape == x.shape
        assert (marked - x).abs().max() <= 0.012 + 1e-6  # by construction: PSNR >= 38.4 dB
        assert psnr(marked, x) >= 38.4
        out = ext(marked, marked - x)
        assert out.shape == (shape[0], 1, 16, 16) and 0 <= out.min() and out.max() <= 1


def test_a_larger_peak_never_costs_an_answer_more_than_min_psnr():
    """strength is the residual's peak; min_psnr scales down any answer's residual that would cost more,
    so the served (8-bit) answer stays >= min_psnr dB from the unmarked one whatever the peak."""
    torch.manual_seed(0)
    answers = quantize(torch.rand(4, 3, 48, 48))
    key = new_mark(16)[None]
    for strength, clip in ((0.016, 1.0), (0.05, 1.0), (0.05, 3.0), (0.2, 3.0)):
        capped = build_model("boxfree_embedder", mark_size=16, channels=4, strength=strength, smooth=5, band=15,
                             padding_mode="replicate", keyed="filters", min_psnr=38.0, clip=clip)
        with torch.no_grad():
            marked = quantize(capped(answers, key))
        costs = [psnr(m, a) for m, a in zip(marked, answers)]
        assert min(costs) >= 38.0, (strength, clip, costs)
        assert (marked - answers).abs().max() <= strength + 0.5 / 255 + 1e-6  # the peak holds too
        if clip == 3.0:  # a residual that is not a plateau of clipped pixels is scaled to the budget's edge
            assert max(costs) < 38.05, (strength, costs)
    uncapped = build_model("boxfree_embedder", mark_size=16, channels=4, strength=0.05, smooth=5, band=15,
                           padding_mode="replicate", keyed="filters")
    with torch.no_grad():
        assert psnr(quantize(uncapped(answers, key)), answers) < 38.0  # the cap is what holds it


def test_a_spread_residual_reaches_every_region_of_a_large_answer():
    """spread=0 normalises the residual over the whole image, so a large answer with one detailed
    corner carries it there only; spread=k normalises per k x k window: the flat regions carry it too.
    Both stay within `strength`; an even spread is refused before training."""
    torch.manual_seed(0)
    answer = torch.full((1, 3, 96, 96), 0.5)
    answer[..., :24, :24] = torch.rand(1, 3, 24, 24)  # detail in one corner, the rest nearly flat
    answer[..., 24:, :] += 0.01 * torch.rand(1, 3, 72, 96)
    mark = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(2)).round()
    changed = {}
    for spread in (0, 15):
        torch.manual_seed(1)
        emb = build_model("boxfree_embedder", mark_size=16, channels=4, strength=0.012, spread=spread)
        residual = emb(answer, mark) - answer
        assert residual.abs().max() <= 0.012 + 1e-6
        changed[spread] = (residual[..., 32:, 32:].abs() > 0.5 / 255).float().mean().item()  # the flat region
    assert changed[15] > 0.3 and changed[15] > 3 * changed[0], changed
    from pydantic import ValidationError

    for bad in ({"spread": 4}, {"band": 4}):
        with pytest.raises(ValidationError, match="must be odd"):
            BoxfreeTrainConfig(images=["demo:victim"], **bad)


def test_a_band_passed_residual_leaves_single_pixels_alone():
    """smooth=1 makes the residual 1-2 px detail (what a real copy treats as noise); smooth=5, band=15
    moves it to 5-15 px structure: less than half as much of its energy is in single-pixel detail, none
    of it is a flat offset inside the image (replicate padding: no structured border), and it stays within `strength`. smooth must be odd and below band."""
    torch.manual_seed(0)
    answer = torch.rand(1, 3, 64, 64)
    mark = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(2)).round()
    fine_share = {}
    for smooth, band in ((1, 3), (5, 15)):
        torch.manual_seed(1)
        emb = build_model("boxfree_embedder", mark_size=16, channels=4, strength=0.012, smooth=smooth, band=band,
                          padding_mode="replicate")
        residual = emb(answer, mark) - answer
        assert residual.abs().max() <= 0.012 + 1e-6 and residual.abs().mean() > 0.002
        fine_share[smooth] = (detail(residual).pow(2).sum() / residual.pow(2).sum()).item()
        inner = residual[..., 8:-8, 8:-8]  # at the borders the replicate padding leaves an offset
        assert abs(inner.mean().item()) < 0.1 * inner.abs().mean().item()
    assert fine_share[1] > 0.9 and fine_share[5] < 0.5 * fine_share[1], fine_share
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="must be odd"):
        BoxfreeTrainConfig(images=["demo:victim"], smooth=4, band=15)
    with pytest.raises(ValidationError, match="smaller than band"):
        BoxfreeTrainConfig(images=["demo:victim"], smooth=5, band=5)


def test_matched_extractor_draws_the_mark_only_where_the_residual_is():
    gen = torch.Generator().manual_seed(0)
    ext = build_model("boxfree_matched_extractor", mark_size=16)
    mark = (torch.arange(16)[None, :, None] // 4 + torch.arange(16)[None, None, :] // 4).remainder(2).float()
    ext.mark.copy_(mark[None])
    x = torch.nn.functional.interpolate(torch.rand(2, 3, 6, 6, generator=gen), size=(32, 32), mode="bilinear")
    residual = 0.012 * torch.randn(2, 3, 32, 32, generator=gen).sign()  # fine detail, as the embedder's
    with torch.no_grad():
        marked, clean = ext(x + residual, residual), ext(x, residual)
        half = ext(x + 0.5 * residual, residual)  # a surrogate that learnt half of the residual
    assert mark_ssim(marked.mean(0), mark) > 0.9 and mark_ssim(clean.mean(0), mark) < 0.1
    assert float(clean.max()) < 0.1  # a blank
    assert 0.1 < mark_ssim(half.mean(0), mark) < mark_ssim(marked.mean(0), mark)


def test_mark_similarity_needs_shape_and_contrast():
    mark = new_mark(16)
    assert mark.shape == (1, 16, 16) and set(mark.unique().tolist()) <= {0.0, 1.0}
    assert mark_ssim(mark, mark) == pytest.approx(1.0)
    assert abs(mark_ssim(torch.zeros_like(mark), mark)) < 0.01  # the blank
    assert mark_ssim(0.02 * mark, mark) < 0.1  # a faint extraction is no match, though its NCC is 1
    assert mark_ncc(0.02 * mark, mark) == pytest.approx(1.0)
    assert mark_ssim(1 - mark, mark) < 0 and mark_ncc(torch.full_like(mark, 0.3), mark) == 0.0


def test_mark_files(tmp_path):
    from PIL import Image

    logo = torch.zeros(3, 40, 40)
    logo[:, 10:30, 15:25] = 1
    (tmp_path / "logo.png").write_bytes(encode_png(logo))
    mark = load_mark(tmp_path / "logo.png", 16)
    assert mark.shape == (1, 16, 16) and mark.max() > 0.9 and mark.min() < 0.1
    Image.new("RGB", (20, 20), (90, 90, 90)).save(tmp_path / "flat.png")
    with pytest.raises(ImgstealError, match="uniform"):
        load_mark(tmp_path / "flat.png", 16)
    with pytest.raises(ImgstealError, match="not found"):
        load_mark(tmp_path / "none.png", 16)


@pytest.mark.parametrize("keyed", ["filters", "code"])
def test_hints_of_many_keys_are_the_forward_pass_s_residuals(keyed):
    torch.manual_seed(0)
    emb = build_model("boxfree_embedder", mark_size=16, channels=4, smooth=5, band=15, padding_mode="replicate",
                      decorrelated=True, saturate=False, keyed=keyed).eval()
    answers = torch.rand(3, 3, 40, 40)
    keys = random_keys(4, 16, torch.Generator().manual_seed(1))
    with torch.no_grad():
        for key, hint in zip(keys, emb.hints(answers, list(keys))):
            assert torch.allclose(hint, emb(answers, key[None]) - answers, atol=1e-5)
        # a key per answer (stage 1) is each answer with its own key
        each = emb(answers, keys[:3]) - answers
        for i in range(3):
            assert torch.allclose(each[i], (emb(answers[i : i + 1], keys[i : i + 1]) - answers[i : i + 1])[0], atol=1e-5)
    if keyed == "filters":  # a key's filter bank: the same for the same key, independent draws for two keys
        assert torch.equal(emb.key_filters(keys[0]), emb.key_filters(keys[0].clone()))
        a, b = emb.key_filters(keys[0]).flatten(), emb.key_filters(keys[1]).flatten()
        assert abs(torch.nn.functional.cosine_similarity(a, b, dim=0).item()) < 0.5
    # decoys are drawn like the owner's key: 8 x 8 black/white grids, nearly uniform ones framed
    assert set(keys.unique().tolist()) <= {0.0, 1.0} and keys.shape == (4, 1, 16, 16)
    framed = grid_marks(torch.zeros(1, 64), 8)[0, 0]
    assert framed[0].eq(1).all() and framed[-1].eq(0).all()


def test_stage_one_keeps_the_residuals_of_different_keys_apart():
    """Trained on random keys with the distinctness loss, H gives two keys nearly uncorrelated residuals
    on the same answer; without it they stay alike (and a copy would carry the decoys' residuals too)."""
    from imgsteal.defenses.boxfree import BoxfreeStage1Recipe

    torch.set_num_threads(1)
    images = torch.nn.functional.interpolate(torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0)),
                                             size=(32, 32), mode="bicubic").clamp(0, 1)
    cosine = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        emb = build_model("boxfree_embedder", mark_size=16, channels=8, smooth=3, band=9, padding_mode="replicate",
                          decorrelated=True, saturate=False)
        ext = build_model("boxfree_matched_extractor", mark_size=16, smooth=3, band=9, in_band=True)
        mark = new_mark(16)
        ext.mark.copy_(mark[None])
        recipe = BoxfreeStage1Recipe(emb, ext, build_model("boxfree_discriminator", channels=8), mark, torch.device("cpu"),
                                     1e-3, 0.0, 0.01, 0, distinct_weight=weight)
        recipe.begin_epoch(0)
        picks = torch.Generator().manual_seed(1)
        for _ in range(60):
            recipe.train_step((None, images[torch.randint(0, 16, (8,), generator=picks)]))
        keys = random_keys(8, 16, torch.Generator().manual_seed(5))
        with torch.no_grad():
            residuals = [(emb.eval()(images, k[None]) - images).flatten(1) for k in keys]
        pairs = [torch.nn.functional.cosine_similarity(residuals[i], residuals[j], dim=1).abs().mean().item()
                 for i in range(8) for j in range(i + 1, 8)]
        cosine[weight] = sum(pairs) / len(pairs)
    assert cosine[1.0] < 0.25 and cosine[1.0] < 0.5 * cosine[0.0], cosine


def _rank_model(tmp_path, answers):
    """A BoxfreeModel with a random (untrained) embedder whose stored verification answers are `answers`."""
    run = tmp_path / "run"
    for folder, prefix in ((run / "queries", "query"), (run / "answers", "answer")):
        folder.mkdir(parents=True)
        for i, a in enumerate(answers):
            (folder / f"{prefix}_{i:03d}.png").write_bytes(encode_png(a))
    torch.manual_seed(0)
    emb = build_model("boxfree_embedder", mark_size=16, channels=8, smooth=5, band=15, padding_mode="replicate",
                      decorrelated=True, saturate=False)
    ext = build_model("boxfree_matched_extractor", mark_size=16, smooth=5, band=15, in_band=True)
    key = random_keys(1, 16, torch.Generator().manual_seed(99))[0]
    return BoxfreeModel(emb, ext, key, run_dir=run, key=key, decoy_seed=7)


def test_the_rank_test_accuses_innocent_models_at_most_alpha_of_the_time_and_finds_a_copy(tmp_path):
    """Innocent suspects (their own errors, nothing of the key) get p-values spread like a uniform
    draw; a suspect that carries half of the owner's residual beats every decoy. The p-value, the
    share threshold and the decoys are what the verdict reports."""
    gen = torch.Generator().manual_seed(3)
    smooth = torch.nn.functional.interpolate(torch.rand(6, 3, 6, 6, generator=gen), size=(48, 48), mode="bicubic")
    answers = [quantize(a) for a in smooth.clamp(0, 1)]
    model = _rank_model(tmp_path, answers)
    refs = torch.stack(model.reference_answers())
    innocent = []
    for i in range(20):  # each its own blur / noise: errors of every band, none of them the key's
        g = torch.Generator().manual_seed(100 + i)
        noise = torch.nn.functional.avg_pool2d(torch.randn(refs.shape, generator=g), 5, 1, 2) * 0.03
        innocent.append([quantize(r) for r in (refs + noise).clamp(0, 1)])
    with torch.no_grad():
        hint = next(model.embedder.hints(refs, [model.key]))
    copy = [quantize(r) for r in (refs + 0.5 * hint + 0.3 * (innocent[0][0] - refs[0])).clamp(0, 1)]
    tests = model.rank_tests([*innocent, copy], decoys=99, alpha=0.05)
    p_innocent = [t.p_value for t in tests[:20]]
    assert sum(p <= 0.05 for p in p_innocent) <= 4, p_innocent  # Binomial(20, 0.05): P(>= 5) = 0.3%
    assert max(p_innocent) > 0.5 and min(p_innocent) < 0.5  # spread, not all pushed one way
    best = tests[-1]
    assert best.p_value == pytest.approx(0.01) and best.verified and best.share > best.share_threshold
    assert 0.3 < best.share < 0.7 and best.z > 3
    # the decision needs enough decoys for its level, and the answers must fit the stored queries
    with pytest.raises(ImgstealError, match="cannot give p <= 0.01"):
        model.rank_tests([copy], decoys=50, alpha=0.01)
    with pytest.raises(ImgstealError, match="answers for"):
        model.rank_tests([copy[:3]], decoys=99, alpha=0.05)
    # the decoys read once serve the owner's key and any other key alike
    table = model.share_table([innocent[0], copy], model.decoy_keys(99))
    again = model.rank_tests([innocent[0], copy], decoys=99, alpha=0.05, table=table)
    assert [t.p_value for t in again] == [tests[0].p_value, best.p_value]
    shares = model.share_table([innocent[0], copy], model.key[None])
    assert decoy_p_values(shares, table)[0].tolist() == [tests[0].p_value, best.p_value]
    with pytest.raises(ImgstealError, match="decoy table"):
        model.rank_tests([copy], decoys=99, alpha=0.05, table=table)


def test_registry_and_clear_errors(tmp_path):
    from imgsteal.defenses.registry import DEFENSES, DefenseSetup, build_defenses

    assert "boxfree" in DEFENSES
    with pytest.raises(ImgstealError, match="--boxfree-model"):
        build_defenses(DefenseSetup(defenses=["boxfree"]))
    with pytest.raises(ImgstealError, match="not a trained box-free watermark"):
        build_defenses(DefenseSetup(defenses=["boxfree"], boxfree={"model": str(tmp_path)}))
    runner = CliRunner()
    missing = runner.invoke(app, ["watermark", "verify", "--method", "boxfree", "--model", str(tmp_path),
                                  "--suspect", str(tmp_path / "nope"), "--device", "cpu"])
    assert missing.exit_code == 2 and "watermark train --method boxfree" in missing.output
    no_model = runner.invoke(app, ["watermark", "verify", "--method", "boxfree", "--suspect", "x"], env={})
    assert no_model.exit_code == 2 and "--model" in no_model.output
    wrong = runner.invoke(app, ["watermark", "calibrate", "--method", "dawn", "--model", str(tmp_path), "--reference", "x"])
    assert wrong.exit_code == 2 and "only boxfree" in wrong.output
    refs = runner.invoke(app, ["watermark", "verify", "--method", "boxfree", "--model", str(tmp_path), "--suspect", "x",
                               "--reference", "y"])
    assert refs.exit_code == 2 and "takes no --reference" in refs.output
    with pytest.raises(ValueError, match="cannot give p <= 0.01"):
        BoxfreeTrainConfig(images=["x"], decoys=50)
    # a run folder of an older imgsteal (no key: its embedder knew only its mark) is refused, not misread
    (tmp_path / MODEL_FILE).write_bytes(b"x")
    (tmp_path / MARK_FILE).write_bytes(b"x")
    with pytest.raises(ImgstealError, match="train it again"):
        BoxfreeModel.load(tmp_path)


# -- a tiny full run ---------------------------------------------------------------------------------
def _write_images(folder, n, seed, size=64):
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        coarse = rng.integers(0, 256, size=(9, 9, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((size, size), Image.BICUBIC).save(folder / f"img_{i}.png")
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Stage 1, stage 2 (one surrogate on marked, one on clean answers) and 3 calibration models, at
    32 px on 8 synthetic images, the images being the answers (about a minute on the busy box)."""
    root = tmp_path_factory.mktemp("boxfree")
    images = _write_images(root / "images", 8, seed=0)
    # A fixed mark (the default draws a fresh secret one each run, which made the verdicts vary run to run)
    grid = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(5)).round()
    mark = root / "mark.png"
    mark.write_bytes(encode_png(torch.nn.functional.interpolate(grid, size=(16, 16))[0].expand(3, -1, -1)))
    torch.set_num_threads(1)
    cfg = BoxfreeTrainConfig(images=[str(images)], mark=str(mark), size=32, mark_size=16, crops_per_image=4, queries=8, channels=8,
                             extractor_channels=16, steps=300, batch_size=8, surrogates=2, negatives=2,
                             surrogate_steps=300, finetune_steps=300, calibration_models=3, decoys=199, device="cpu")
    with pytest.MonkeyPatch.context() as patch:  # the secret key and decoy seed too, for the same reason
        patch.setattr("imgsteal.defenses.boxfree.secrets.randbits", lambda bits: 0x5A3C_96E1_0F72_B4D8 % (1 << bits))
        result = train_boxfree(cfg, root / "run", progress=False)
    return root, root / "run", cfg, result


@pytest.mark.slow
def test_marked_answers_keep_fidelity_and_carry_the_mark(trained):
    root, run, _, result = trained
    assert result.psnr_db >= 38.0, result.as_dict()
    assert result.marked.ssim >= 0.9 and result.clean.ssim <= 0.2, result.as_dict()
    model = BoxfreeModel.load(run)
    image = decode_image((root / "images" / "img_0.png").read_bytes())  # 64 px: another size than the 32 px crops
    marked = decode_image(encode_png(model.embed(image)))  # through 8-bit PNG, as served
    assert psnr(marked, image) >= 38.0
    # Every score reads an image against the owner's clean answer to the same query.
    assert model.score([marked], [image]).ssim >= 0.8 and model.score([image], [image]).ssim <= 0.2
    blank = model.extract(image, image)
    assert float(blank.max()) < 0.5  # the extractor returns a (nearly) blank image for a clean one
    # What a sharper or blurrier model adds to the answer is not the mark.
    sharp = (image + 0.5 * detail(image[None])[0]).clamp(0, 1)
    soft = image - detail(image[None], 5)[0]
    for other in (sharp, soft):
        assert model.score([other], [image]).ssim <= 0.2
    with pytest.raises(ImgstealError, match="cannot be compared"):
        model.extract(image[:, :32, :32], image)


@pytest.mark.slow
def test_secrets_are_owner_only_and_never_printed(trained):
    _, run, _, result = trained
    assert stat.S_IMODE(os.stat(run).st_mode) == 0o700
    for name in (MODEL_FILE, MARK_FILE, KEY_FILE, CALIBRATION_FILE, "metrics.json"):
        assert stat.S_IMODE(os.stat(run / name).st_mode) == 0o600, name
    assert not (run / "model.safetensors").exists()  # the embedder lives only in the private model file
    assert "mark" not in json.dumps(result.as_dict()).replace("marked", "")


@pytest.mark.slow
def test_surrogate_on_marked_answers_is_verified_and_independent_one_is_not(trained, tmp_path):
    """Attackers train on crops the owner never used: one on marked answers, one on clean answers
    (another seed); the stored threshold was calibrated on other independent models."""
    root, run, cfg, result = trained
    model = BoxfreeModel.load(run)
    attacker_images = _write_images(tmp_path / "attacker", 8, seed=7)
    inputs, answers, _ = make_pairs(cfg.model_copy(update={"images": [str(attacker_images)], "seed": 3}), torch.device("cpu"))
    marked = [quantize(model.embed(a)) for a in answers]
    stolen = train_surrogate(inputs, marked, "unet", {"ngf": 8, "depth": 3, "use_dropout": False},
                             tmp_path / "stolen", steps=300, seed=11)
    innocent = train_surrogate(inputs, answers, "unet", {"ngf": 8, "depth": 3, "use_dropout": False},
                               tmp_path / "innocent", steps=300, seed=12)
    yes = verify_boxfree(model, module_suspect(stolen), "stolen")
    no = verify_boxfree(model, module_suspect(innocent), "innocent")
    assert yes.decoys == 199 and yes.alpha == 0.01  # as trained
    assert yes.verified and yes.p_value <= 0.01 and yes.share > yes.share_threshold, (yes, no)
    assert not no.verified and no.share < no.share_threshold, (yes, no)
    assert yes.similarity > no.similarity  # the mark the extractor draws agrees

    # The same through the CLI, with the surrogates as checkpoints (run folders).
    runner = CliRunner()
    base = ["watermark", "verify", "--method", "boxfree", "--model", str(run), "--device", "cpu"]
    out = runner.invoke(app, base + ["--suspect", str(tmp_path / "stolen"), "--json", str(tmp_path / "v.json")])
    assert out.exit_code == 0, out.output
    assert "CARRIES the box-free watermark" in out.output and "threshold" in out.output and "p = " in out.output
    verdict = json.loads((tmp_path / "v.json").read_text())
    assert verdict["verified"] and verdict["p_value"] <= verdict["alpha"] and verdict["share"] > verdict["share_threshold"]
    out = runner.invoke(app, base + ["--suspect", str(tmp_path / "innocent")])
    assert out.exit_code == 0 and "no evidence" in out.output, out.output
    mark_png = (run / MARK_FILE).read_bytes()
    assert str(mark_png[:64]) not in out.output


@pytest.mark.slow
def test_calibrate_command_uses_reference_models_only(trained, tmp_path):
    _, run, _, _ = trained
    refs = sorted((run / "calibration").glob("independent-*"))
    before = json.loads((run / CALIBRATION_FILE).read_text())
    out = CliRunner().invoke(app, ["watermark", "calibrate", "--method", "boxfree", "--model", str(run), "--device", "cpu",
                                   *sum((["--reference", str(r)] for r in refs), [])])
    assert out.exit_code == 0, out.output
    after = json.loads((run / CALIBRATION_FILE).read_text())
    assert after["models"] == len(refs) and after["decoys"] == 199 and after["rule"].startswith("decoy-key rank test")
    # the same models read the same at training and now: the rank test is deterministic given the decoy seed
    assert list(after["p_values"].values()) == pytest.approx(list(before["p_values"].values()))
    assert after["false_positives"] == sum(p <= 0.01 for p in after["p_values"].values())
    assert f"independent models accused at alpha 0.01" in out.output
    assert stat.S_IMODE(os.stat(run / CALIBRATION_FILE).st_mode) == 0o600


@pytest.mark.slow
def test_served_defence_labels_answers_boxfree(trained, api, victim, kit):
    from imgsteal.defenses.registry import DefenseContext, build_defenses, setup_from_options
    from imgsteal.victim.accounts import AccountsDB

    _, run, _, _ = trained
    defenses = build_defenses(setup_from_options(["boxfree"], {"boxfree": {"model": run}}), DefenseContext())
    assert isinstance(defenses[0], BoxfreeDefense)
    client, db, headers = api(victim, defenses)
    data = kit.png_bytes(seed=1)
    response = client.post("/v1/translate", content=data, headers=headers)
    assert response.status_code == 200
    answer = decode_image(response.content)
    clean = victim.translate(decode_image(data))
    assert answer.shape == clean.shape and psnr(answer, quantize(clean)) >= 38.0
    with AccountsDB(db) as accounts:
        assert [q["defense"] for q in accounts.queries()] == ["boxfree"]


def test_train_command_is_thin_and_prints_no_secret(tmp_path):
    images = _write_images(tmp_path / "images", 4, seed=1, size=40)
    out = tmp_path / "bf"
    result = CliRunner().invoke(app, ["watermark", "train", "--method", "boxfree", "--images", str(images), "--out", str(out),
                                      "--size", "32", "--mark-size", "16", "--steps", "3", "--surrogates", "0",
                                      "--negatives", "0", "--calibration-models", "0", "--batch-size", "4",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "PSNR" in result.output and "not checked on independent models yet" in result.output
    assert stat.S_IMODE(os.stat(out / MARK_FILE).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(out / KEY_FILE).st_mode) == 0o600
    model = BoxfreeModel.load(out)
    with pytest.raises(ImgstealError, match="calibrate"):
        model.calibration()
    # --queries (64) crops spread over the 4 images, each as large as the smallest image allows (the
    # default side, 128 px, does not fit in 40 px images)
    assert len(model.queries()) == 64 and {tuple(q.shape) for q in model.queries()} == {(3, 40, 40)}
    assert [a.shape for a in model.reference_answers()] == [q.shape for q in model.queries()]  # identity service
    assert stat.S_IMODE(os.stat(out / "answers").st_mode) == 0o700


def test_training_on_a_victims_answers(tmp_path, victim_run, victim):
    """With --victim the answers are the victim's outputs (here a tiny SR model): queries are its
    inputs, stage-2 and calibration models are SR surrogates of its scale (a smoke test, a few steps)."""
    images = _write_images(tmp_path / "images", 3, seed=2, size=40)
    scale = int(victim.scale)
    cfg = BoxfreeTrainConfig(images=[str(images)], victim=str(victim_run), size=8 * scale, mark_size=8, crops_per_image=1,
                             queries=2, channels=4, extractor_channels=4, steps=3, batch_size=2, surrogates=1, negatives=1,
                             surrogate_steps=2, finetune_steps=2, calibration_models=2, decoys=99, device="cpu")
    result = train_boxfree(cfg, tmp_path / "run", progress=False)
    assert result.scale == scale and result.checked == 2 and result.false_positives is not None
    assert result.psnr_db >= 38.0
    model = BoxfreeModel.load(tmp_path / "run")
    # verification queries are larger than the training crops: 128 px answers by default
    assert [tuple(q.shape) for q in model.queries()] == [(3, 128 // scale, 128 // scale)] * 2
    assert [tuple(a.shape) for a in model.reference_answers()] == [(3, 128, 128)] * 2
    verdict = verify_boxfree(model, lambda xs: [victim.translate(x) for x in xs], "victim")  # the unmarked victim
    assert verdict.queries == 2 and verdict.decoys == 99
