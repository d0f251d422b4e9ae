"""Aggregation over seeds, the plateau, Table 6 and the cost figures, on synthetic numbers."""

import math

import pytest

from imgsteal.attack.harvest import query_cost
from imgsteal.experiments.aggregate import (
    Stat, aggregate, cost_by_fraction, find_plateau, fraction_before, records_from_results, summarize_task, table6,
)
from imgsteal.experiments.config import ExperimentConfig


def result(fraction, aug, seed, b, c, queries, cost=None, test_set="T", a=0.7):
    return {"cell": {"task": "sr", "fraction": fraction, "augmentation": aug, "seed": seed, "id": f"sr/{fraction}-{aug}-{seed}"},
            "records": [{"test_set": test_set, "n_images": 3, "metrics": {"ssim": {"A": a, "B": b, "C": c}}}],
            "queries": queries, "cost_usd": queries * 0.016 if cost is None else cost}


def test_stat_mean_and_sample_std():
    s = Stat.of([1.0, 2.0, 3.0])
    assert s.mean == 2.0 and s.std == pytest.approx(1.0) and s.n == 3
    assert Stat.of([5.0]).std == 0.0
    assert Stat.of([1.0, float("inf")]).mean == 1.0  # PSNR of identical images is inf; it does not poison the mean
    assert Stat.of([0.61234, 0.5]).text(2) == "0.56 ± 0.08"


def test_plateau_is_the_smallest_fraction_within_one_std_of_the_best():
    higher = {0.25: Stat(0.50, 0.02, 5), 0.5: Stat(0.58, 0.02, 5), 0.75: Stat(0.61, 0.01, 5), 1.0: Stat(0.615, 0.01, 5)}
    assert find_plateau(higher, higher_is_better=True) == (0.75, 1.0)
    rising = {0.25: Stat(0.40, 0.01, 5), 0.5: Stat(0.50, 0.01, 5), 0.75: Stat(0.60, 0.01, 5), 1.0: Stat(0.70, 0.01, 5)}
    assert find_plateau(rising, True) == (1.0, 1.0)
    fid = {0.25: Stat(90.0, 3.0, 5), 0.5: Stat(70.0, 3.0, 5), 0.75: Stat(68.0, 3.0, 5), 1.0: Stat(69.0, 1.0, 5)}
    assert find_plateau(fid, higher_is_better=False) == (0.5, 0.75)  # lower is better; 70 is within 3 of 68
    assert fraction_before(0.75, [0.25, 0.5, 0.75, 1.0]) == 0.5
    assert fraction_before(1.0, [0.25, 0.5, 0.75, 1.0]) == 0.75
    assert fraction_before(0.25, [0.25, 0.5]) == 0.25


def test_aggregate_summary_and_table6(tiny_sr):
    config = tiny_sr(fractions=[0.25, 0.5, 1.0], augmentations=["none", "flip", "rotation"], seeds=2)
    cfg = ExperimentConfig.model_validate(config)
    results = []
    curve = {0.25: 0.50, 0.5: 0.60, 1.0: 0.605}
    for seed, jitter in ((0, -0.01), (1, 0.01)):
        for fraction, c in curve.items():
            results.append(result(fraction, "none", seed, b=c + 0.1 + jitter, c=c + jitter, queries=int(8 * fraction)))
            results.append(result(fraction, "flip", seed, b=c + 0.12 + jitter, c=c + 0.02 + jitter, queries=int(8 * fraction)))
    records = records_from_results(results)
    assert len(records) == 12 and records[0]["test_set"] == "T"
    stats = aggregate(records)
    none_half = stats[("sr", 0.5, "none", "T", "ssim", "C")]
    assert none_half.mean == pytest.approx(0.60) and none_half.std == pytest.approx(math.sqrt(2) * 0.01)
    assert none_half.n == 2

    cfg.tasks[0].test_sets = {"T": "unused"}
    summary = summarize_task(cfg, cfg.tasks[0], stats, records)
    assert summary.metric == "ssim"
    plateau_c = [p for p in summary.plateaus if p.experiment == "C"][0]
    assert plateau_c.fraction == 0.5 and plateau_c.best_fraction == 1.0
    assert summary.plateau == 0.5 and summary.before_plateau == 0.25
    assert "plateau at 50%" in summary.statement()
    assert [c["queries"] for c in summary.costs] == [2, 4, 8]

    header, rows = table6([summary], stats)
    assert header == ["Task", "Test set", "Metric", "Baseline (before plateau)", "Flip", "Rotation"]
    assert rows == [["Tiny SR", "T", "(C) SSIM at 25%", "0.500 ± 0.014", "0.520 ± 0.014", "-"]]


def test_cost_arithmetic_at_the_papers_price():
    # The paper's section 8 estimates at $0.016 per 256 x 256 query (it rounds: $1250, $160, $50).
    assert 80_000 * 0.016 == pytest.approx(1280.0)
    assert 10_000 * 0.016 == pytest.approx(160.0)
    assert 2_700 * 0.016 == pytest.approx(43.2)
    assert query_cost(256, 256) == pytest.approx(0.016)
    records = records_from_results([
        result(0.5, "none", 0, 0.5, 0.5, queries=40_000, cost=40_000 * query_cost(256, 256)),
        result(0.5, "none", 1, 0.5, 0.5, queries=40_000, cost=40_000 * query_cost(256, 256)),
        result(1.0, "none", 0, 0.5, 0.5, queries=80_000, cost=80_000 * query_cost(512, 512)),
    ])
    rows = cost_by_fraction(records, "sr", price=0.016)
    assert rows[0] == {"fraction": 0.5, "queries": 40_000, "flat_cost_usd": pytest.approx(640.0),
                       "harvest_cost_usd": pytest.approx(640.0)}
    assert rows[1]["flat_cost_usd"] == pytest.approx(1280.0)
    assert rows[1]["harvest_cost_usd"] == pytest.approx(4 * 1280.0)  # 512 x 512 answers cost 4 x 256 x 256
