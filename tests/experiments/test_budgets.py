"""The fidelity-vs-queries lines and the "queries needed to reach" table are read against the paper's method."""

from __future__ import annotations

from imgsteal.experiments.budgets import budget_lines, default_targets, queries_to_reach, reach_table


def record(attack: str, queries: int, ssim: float, seed: int = 0) -> dict:
    return {"task": "style", "test_set": "bench", "defense": "none", "augmentation": "none", "fraction": 1.0,
            "attack": attack, "arch": None, "selection": "random", "queries": queries, "seed": seed,
            "metrics": {"ssim": {"B": ssim}}}


def test_the_paper_line_comes_first_and_sets_the_target_whatever_the_names_sort_to():
    records = [record("few-shot", 4, 0.518), record("few-shot", 59, 0.519), record("domain-shift", 4, 0.40),
               record("domain-shift", 59, 0.50), record("paper", 4, 0.426), record("paper", 59, 0.524),
               record("paper", 59, 0.520, seed=1)]
    lines = budget_lines(records, "style", "bench", "ssim")
    assert [line.attack for line in lines] == ["paper", "domain-shift", "few-shot"]
    (name, full), (_, half) = default_targets(lines, baseline=0.474)
    assert name == "paper at 59 queries" and abs(full - 0.522) < 1e-9 and abs(half - 0.498) < 1e-9
    assert queries_to_reach(lines[2], half) == 4 and queries_to_reach(lines[2], full) is None
    header, rows = reach_table(lines, default_targets(lines, 0.474), "ssim", price=0.016)
    assert "paper at 59 queries" in header[1]
    assert rows[2][0] == "few-shot" and "not reached" in rows[2][1] and rows[2][2].startswith("4 queries")


def test_tasks_on_the_same_victim_and_test_set_share_a_panel(tiny_sr):
    from imgsteal.experiments.config import ExperimentConfig
    from imgsteal.experiments.report import budget_panels

    raw = tiny_sr(fractions=[1.0], budgets=[1, "all"])
    packed = {**raw["tasks"][0], "name": "sr-packed", "harvest": {**raw["tasks"][0]["harvest"], "pack_pixels": 576}}
    other = {**raw["tasks"][0], "name": "other", "test_sets": {"tiny test": raw["tasks"][0]["test_sets"]["tiny test"] + "x"}}
    cfg = ExperimentConfig.model_validate({**raw, "tasks": [raw["tasks"][0], packed, other]})
    records = [{**record("paper", q, v), "task": task, "test_set": "tiny test", "metrics": {"psnr": {"B": v}}}
               for task in ("sr", "sr-packed", "other") for q, v in ((1, 20.0), (2, 25.0))]
    panels = budget_panels(cfg, records)
    assert len(panels) == 2  # sr and sr-packed together; other (another test set) alone
    labels = [line.label for line in panels[0][1]]
    assert labels == ["paper", "paper [sr-packed]"] and [line.label for line in panels[1][1]] == ["paper"]
