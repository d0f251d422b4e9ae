"""The adaptive-attack scorecard (issue 15, item 3): the adaptive attacks really change what the
surrogate trains on, the threshold comes from independent models only, and the table has a row per
defence x attack."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from imgsteal.attack.methods import build_source
from imgsteal.attack.methods.adaptive import ANSWER_TRANSFORMS, FinetuneSource
from imgsteal.attack.surrogate import SurrogateConfig
from imgsteal.defenses import scorecard
from imgsteal.errors import ImgstealError

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "defense" / "demo-scorecard.yaml"


def _pairs(n: int = 4, side: int = 16, scale: int = 4):
    gen = torch.Generator().manual_seed(0)
    inputs = [torch.randint(0, 256, (3, side, side), generator=gen, dtype=torch.uint8) for _ in range(n)]
    # answers with texture (JPEG and resizing leave a flat image alone)
    ramp = torch.linspace(0, 1, side * scale)
    texture = lambda: torch.randint(-25, 26, (3, side * scale, side * scale), generator=gen).float()  # noqa: E731
    targets = [(torch.outer(ramp, ramp.flip(0))[None] * 180 + 40 + 5 * k + texture()).clamp(0, 255).round().to(torch.uint8)
               for k in range(n)]
    return inputs, targets, scale


def _cfg(attack: str, **kw) -> SurrogateConfig:
    return SurrogateConfig(store="unused", attack=attack, patch=None, batch_size=4, steps=10, **kw)


@pytest.mark.parametrize("attack", ANSWER_TRANSFORMS)
def test_answer_transforms_change_what_the_surrogate_trains_on(attack):
    inputs, targets, scale = _pairs()
    stored = [t.clone() for t in targets]
    plain = build_source(_cfg("paper"), inputs, targets, scale, steps_per_epoch=1).batch(0, 0)
    attacked = build_source(_cfg(attack), inputs, targets, scale, steps_per_epoch=1).batch(0, 0)
    assert torch.equal(plain[0], attacked[0])  # same queries, same order
    diff = (plain[1] - attacked[1]).abs()
    assert diff.mean() > 0.5 / 255, f"{attack} left the answers (almost) unchanged"
    assert diff.mean() < 0.2  # ... but they are still the answers
    assert all(torch.equal(a, b) for a, b in zip(targets, stored))  # the harvested pairs are untouched


def test_jpeg_quality_sets_how_much_changes():
    inputs, targets, scale = _pairs()
    plain = build_source(_cfg("paper"), inputs, targets, scale, steps_per_epoch=1).batch(0, 0)[1]

    def err(q):
        cfg = _cfg("jpeg", adaptive={"jpeg_quality": q})
        return (build_source(cfg, inputs, targets, scale, steps_per_epoch=1).batch(0, 0)[1] - plain).abs().mean()

    assert err(10) > err(90) > 0


def test_finetune_switches_to_clean_pairs_without_victim_answers():
    inputs, targets, scale = _pairs(side=32)
    cfg = _cfg("finetune", adaptive={"finetune_fraction": 0.5})
    source = build_source(cfg, inputs, targets, scale, steps_per_epoch=2)
    assert isinstance(source, FinetuneSource) and source.switch_at == 5
    early = source.batch(0, 0)[1]
    late_x, late_y = source.batch(3, 0)  # global step 6: fine-tuning
    # early targets are (crops of) the answers; late targets are the attacker's own query images
    assert early.shape[-1] == 32 * scale
    assert late_y.shape[-1] == 32 and late_x.shape[-1] == 32 // scale
    queries = torch.stack([q.float() / 255 for q in inputs])
    assert any(torch.allclose(y, q, atol=1 / 255) for y in late_y for q in queries)


def test_finetune_needs_super_resolution():
    gen = torch.Generator().manual_seed(0)
    x = [torch.randint(0, 256, (3, 16, 16), generator=gen, dtype=torch.uint8) for _ in range(2)]
    cfg = SurrogateConfig(store="unused", arch="pix2pix", attack="finetune", size=16, steps=4)
    with pytest.raises(ImgstealError, match="super-resolution"):
        build_source(cfg, x, x, 1, steps_per_epoch=2)


def test_threshold_from_ten_independent_models_gives_at_most_one_percent():
    scores = [0.1, 0.3, 0.2, 0.05, 0.25, 0.12, 0.18, 0.22, 0.27, 0.15]
    t = scorecard.fpr_threshold(scores, 0.01)
    assert t == max(scores)
    assert sum(s > t for s in scores) / len(scores) <= 0.01
    with pytest.raises(ImgstealError, match="at least 10"):
        scorecard.fpr_threshold(scores[:9], 0.01)
    # with 200 models, 1% lets the 2 highest above the threshold
    many = [i / 200 for i in range(200)]
    t = scorecard.fpr_threshold(many, 0.01)
    assert sum(s > t for s in many) == 2
    assert scorecard.fpr_upper_bound(0, 10) == pytest.approx(1 - 0.05 ** 0.1, abs=1e-6)  # ~0.26
    assert scorecard.fpr_upper_bound(0, 300) < 0.01 < scorecard.fpr_upper_bound(0, 100)


def test_demo_preset_has_enough_independent_models():
    from imgsteal.defenses.evaluate import load_defense_config

    cfg = load_defense_config(CONFIG)
    assert cfg.scorecard.independent_count() >= 10
    assert set(cfg.runs) == {"watermark", "fingerprint", "pgd", "boxfree"}
    labels = [label for label, _ in scorecard.experiments(cfg, cfg.scorecard)]
    assert labels[0] == "independent models"
    raw = cfg.model_dump()
    raw["scorecard"]["independent_seeds"] = []
    raw["scorecard"]["attacks"] = ["paper"]
    raw["scorecard"]["augmentations"] = []
    with pytest.raises(ValueError, match="at least 10"):
        type(cfg).model_validate(raw)


def test_scorecard_thresholds_from_independent_models_only_and_a_row_per_defence_and_attack(tmp_path, monkeypatch):
    """Fake cells on disk: the statistic of each cell's surrogate is in a file. Defended surrogates score
    high; if any of them entered the calibration, the threshold would move."""
    from imgsteal.defenses.evaluate import load_defense_config

    cfg = load_defense_config(CONFIG)
    section = cfg.scorecard
    ctx = SimpleNamespace(cfg=cfg, experiment=tmp_path, defenses=lambda run: cfg.setup(run).defenses)
    pool = scorecard.independent_cells(ctx, section)
    assert len(pool) >= 10 and all(c.defense == "none" for c in pool)
    independent_scores = {}
    for i, cell in enumerate(pool):
        independent_scores[cell.key] = 0.1 + 0.01 * i
    for run in ["none", *cfg.runs]:
        for col in scorecard.columns(section):
            for seed in section.seeds:
                cell = scorecard._cell(ctx, run, col, seed)
                folder = cell.folder(tmp_path)
                (folder / "surrogate").mkdir(parents=True, exist_ok=True)
                value = independent_scores.get(cell.key, 0.9 if col.attack != "jpeg" else 0.05)
                (folder / "surrogate" / "stat.txt").write_text(str(value))
                (folder / "result.json").write_text(json.dumps(
                    {"records": [{"metrics": {"psnr": {"B": 30.0}, "ssim": {"B": 0.9}}}]}))
    for cell in pool:  # the extra independent seeds have folders too
        (cell.folder(tmp_path) / "surrogate").mkdir(parents=True, exist_ok=True)
        (cell.folder(tmp_path) / "surrogate" / "stat.txt").write_text(str(independent_scores[cell.key]))
    scored = []

    def fake_verifier(ctx, run, cache, fpr):
        if run == "pgd":
            return None

        def score(folders):
            scored.append((run, list(folders)))
            return [float((folder / "stat.txt").read_text()) for folder in folders]
        # the fingerprint run: a margin over the independent models' mean that puts the floor above them all
        return "watermark", score, ((lambda values: sum(values) / len(values) + 0.8) if run == "fingerprint" else None)

    monkeypatch.setattr(scorecard, "verifier", fake_verifier)
    costs = {run: {"psnr_db": 40.0, "ssim": 0.99} for run in cfg.runs}
    card = scorecard.build_scorecard(ctx, section, costs, log=lambda m: None)
    n_cols = len(scorecard.columns(section))
    assert len(card["rows"]) == (1 + len(cfg.runs)) * n_cols
    assert {(r["run"], r["attack"]) for r in card["rows"]} == \
        {(run, c.label) for run in ["none", *cfg.runs] for c in scorecard.columns(section)}
    for run in ("watermark", "fingerprint", "boxfree"):
        cal = card["calibration"][run]
        mean = sum(independent_scores.values()) / len(independent_scores)
        floor = mean + 0.8 if run == "fingerprint" else None
        assert cal["floor"] == pytest.approx(floor)
        assert cal["threshold"] == pytest.approx(floor or max(independent_scores.values()))
        assert cal["false_positives"] == 0 and cal["independent_models"] == len(pool)
        assert set(cal["independent"]) == {c.key for c in pool}
    rows = {(r["run"], r["attack"]): r for r in card["rows"]}
    assert rows[("watermark", "paper")]["verification_rate"] == 1.0
    assert rows[("watermark", "jpeg")]["verification_rate"] == 0.0  # scored below the threshold
    assert rows[("fingerprint", "paper")]["verification_rate"] == 0.0  # above every independent model, not above their mean by the margin
    assert rows[("pgd", "paper")]["verification_rate"] is None
    assert rows[("boxfree", "paper")]["cost_psnr_db"] == 40.0
    # every run's models are scored in one call (the box-free rank test makes its decoys once for all)
    assert [run for run, _ in scored] == ["watermark", "fingerprint", "boxfree"]
    header, table = scorecard.scorecard_rows(card)
    assert len(table) == len(card["rows"]) and "verified" in header
    png = scorecard.plot_scorecard(card, tmp_path / "fig" / "scorecard.png")
    assert png.stat().st_size > 1000


def test_cell_text_prints_a_p_value_against_its_level():
    # the box-free threshold sits a hair below -log10 alpha: p = alpha is verified and must not read "2.000 > 2.000"
    assert scorecard._comparison(2.0, 2.0 - 1e-9, "-log10 p of the decoy-key rank test") == "p 0.01 <= 0.01"
    assert scorecard._comparison(1.456, 2.0 - 1e-9, "-log10 p of the decoy-key rank test") == "p 0.035 > 0.01"
    assert scorecard._comparison(0.215, 0.172, "alteration reproduced") == "0.215 > 0.172"
    assert scorecard._comparison(0.141, 0.172, "alteration reproduced") == "0.141 <= 0.172"


@pytest.mark.parametrize("name", ["paper-scorecard.yaml", "demo-boxfree.yaml"])
def test_presets_validate_with_enough_independent_models(name):
    from imgsteal.defenses.evaluate import load_defense_config

    cfg = load_defense_config(CONFIG.with_name(name))
    archs = len(cfg.scorecard.independent_archs)
    assert cfg.scorecard.independent_count(archs) >= 10
    assert "boxfree" in cfg.runs and cfg.boxfree.train["images"]
    if name.startswith("paper"):
        assert scorecard.fpr_upper_bound(0, cfg.scorecard.independent_count(archs)) < 0.05


def test_the_fingerprint_s_chance_floor_is_the_binomial_test_s():
    """A bit accuracy is verified only when strictly above the floor, and exactly then is it above
    chance by the one-sided binomial test at 1% (the fingerprint's own verdict's test)."""
    from imgsteal.defenses.verify import binomial_p_value

    for trials in (64, 256, 801):
        floor = scorecard.chance_floor(trials)
        for matched in range(trials // 2, trials + 1):
            assert (matched / trials > floor) == (binomial_p_value(matched, trials) < 0.01), (trials, matched)
