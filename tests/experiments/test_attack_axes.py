"""The attack axes of the grid: methods, query budgets (nested subsets of one harvest), surrogate
architectures and query selection, each a coordinate of a cell run through the same pipeline."""

from __future__ import annotations

import csv
import json

import pytest

from imgsteal.data.pairs import PairStore
from imgsteal.experiments.config import ConfigError, ExperimentConfig, check_datasets
from imgsteal.experiments.grid import expand_grid
from imgsteal.experiments.runner import run_experiment


def test_axes_expand_into_cells_with_readable_folder_names(tiny_sr):
    cfg = ExperimentConfig.model_validate(tiny_sr(fractions=[1.0], attacks=["paper", "few-shot"], budgets=[2, "all"],
                                                  surrogates=["srresnet", "edsr"]))
    keys = {c.key for c in expand_grid(cfg)}
    assert len(keys) == 2 * 2 * 2
    assert {"f100-none-s0", "f100-none-s0-b2", "f100-none-s0-afew-shot-b2-medsr"} <= keys


@pytest.mark.parametrize("grid, message", [
    ({"budgets": [0]}, "at least 1"),
    ({"attacks": ["nosuch"]}, "attacks"),
    ({"selections": ["diverse"]}, "give `budgets`"),
    ({"surrogates": ["pix2pix"]}, "srresnet, edsr, msrresnet"),
])
def test_bad_axes_are_refused_before_anything_runs(tiny_sr, grid, message):
    with pytest.raises(Exception, match=message):
        ExperimentConfig.model_validate(tiny_sr(**grid))


def test_a_budget_larger_than_the_pool_is_refused_before_any_query(tiny_sr):
    cfg = ExperimentConfig.model_validate(tiny_sr(budgets=[9]))  # 8 adversary images
    with pytest.raises(ConfigError, match="budget of 9 queries is more than the 8 images"):
        check_datasets(cfg)


@pytest.mark.slow
def test_budgets_methods_and_selection_run_through_the_pipeline(tiny_sr, tmp_path):
    raw = tiny_sr(fractions=[1.0], attacks=["paper", "few-shot"], budgets=[2, 4], selections=["random", "diverse"])
    raw["tasks"][0]["surrogate"] = {"n_blocks": 1, "channels": 8, "patch": 8, "batch_size": 2, "steps": 3}
    cfg = ExperimentConfig.model_validate(raw)
    out = tmp_path / "exp"
    run = run_experiment(cfg, out, progress=False, log=lambda _: None)
    assert not run.failed and len(run.finished) == 8
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {(r["attack"], r["budget"], r["selection"], r["queries"]) for r in rows} == {
        (a, b, s, b) for a in ("paper", "few-shot") for b in ("2", "4") for s in ("random", "diverse")}
    # One harvest of every input serves the random budgets; diverse selection queried only its budget.
    with PairStore(out / "tasks" / "sr" / "pairs", create=False) as store:
        assert len(store) == 8
    with PairStore(out / "tasks" / "sr" / "selected" / "diverse" / "pairs", create=False) as store:
        assert len(store) == 4
    few = json.loads((out / "cells" / "sr" / "f100-none-s0-afew-shot-b2" / "surrogate" / "config.json").read_text())
    assert few["attack"] == "few-shot" and few["budget"] == 2 and few["steps"] == 3


def test_bundled_attack_presets_are_valid():
    from pathlib import Path

    from imgsteal.experiments.config import load_config

    root = Path(__file__).resolve().parents[2] / "configs" / "attacks"
    demo = load_config(root / "demo.yaml")
    assert demo.task_grid(demo.task("sr")).attacks == ["paper", "few-shot"]
    assert demo.task("sr").surrogate["steps"] == 1000  # compute-matched across budgets
    packed = demo.task("sr-packed")
    assert packed.harvest.pack_pixels == 512 * 512 and packed.harvest.inputs == demo.task("sr").harvest.inputs
    paper = load_config(root / "paper-sr.yaml")
    grid = paper.task_grid(paper.tasks[0])
    assert grid.surrogates == ["srresnet", "edsr"] and grid.budgets[-1] == "all"
    style = load_config(root / "paper-monet2photo.yaml")
    grid = style.task_grid(style.tasks[0])
    assert grid.surrogates == ["pix2pix", "pix2pix_resnet"] and grid.attacks == ["paper", "domain-shift", "few-shot"]
    assert style.tasks[0].surrogate["steps"] == 70000 and grid.budgets[-1] == "all"


def test_packed_budgets_count_mosaics_and_are_checked_before_any_query(tiny_sr):
    raw = tiny_sr(budgets=[3])
    raw["tasks"][0]["harvest"]["pack_pixels"] = 24 * 24  # 8 images of 12 x 12 px: 4 per mosaic, 2 mosaics
    with pytest.raises(ConfigError, match="budget of 3 queries is more than the 2 mosaics of at most 576 px"):
        check_datasets(ExperimentConfig.model_validate(raw))
    raw["grid"]["budgets"] = [2]
    check_datasets(ExperimentConfig.model_validate(raw))
    raw["grid"]["selections"] = ["diverse"]
    with pytest.raises(Exception, match="packed queries .* cannot be combined"):
        ExperimentConfig.model_validate(raw)


def test_a_task_can_start_from_another_task_of_the_base(tiny_sr, write_config):
    from imgsteal.experiments.config import load_config, task_settings

    base = write_config(tiny_sr(), "base.yaml")
    cfg = load_config(write_config({"base": str(base), "name": "packed", "tasks": {
        "sr": {}, "sr-packed": {"from": "sr", "title": "Tiny SR, packed", "harvest": {"pack_pixels": 576}}}}))
    plain, packed = cfg.tasks
    assert (plain.name, packed.name, packed.title) == ("sr", "sr-packed", "Tiny SR, packed")
    assert packed.harvest.pack_pixels == 576 and plain.harvest.pack_pixels is None
    assert packed.harvest.inputs == plain.harvest.inputs and packed.surrogate == plain.surrogate
    # packing is part of what the harvest's numbers depend on; an unpacked harvest's settings do not name it
    assert task_settings(cfg, packed)["harvest"]["pack_pixels"] == 576
    assert "pack_pixels" not in task_settings(cfg, plain)["harvest"]
    with pytest.raises(ConfigError, match=r"nosuch \(the `from` of x\) are not in the base"):
        load_config(write_config({"base": str(base), "name": "x", "tasks": {"x": {"from": "nosuch"}}}, "bad.yaml"))


@pytest.mark.slow
def test_packed_queries_run_through_the_pipeline(tiny_sr, tmp_path):
    raw = tiny_sr(fractions=[1.0], budgets=[1, "all"])
    raw["tasks"][0]["harvest"]["pack_pixels"] = 24 * 24
    raw["tasks"][0]["surrogate"] = {"n_blocks": 1, "channels": 8, "patch": 8, "batch_size": 2, "steps": 3}
    out = tmp_path / "exp"
    run = run_experiment(ExperimentConfig.model_validate(raw), out, progress=False, log=lambda _: None)
    assert not run.failed and len(run.finished) == 2
    with PairStore(out / "tasks" / "sr" / "pairs", create=False) as store:  # 2 mosaics of 4 images, a pair each
        assert store.query_count() == 2 and [r.input_size for r in store.records()] == [(12, 12)] * 8
    rows = {r["budget"]: r for r in csv.DictReader(open(out / "results.csv"))}
    assert rows["1"]["queries"] == "1" and rows[""]["queries"] == "2"  # "" = all
