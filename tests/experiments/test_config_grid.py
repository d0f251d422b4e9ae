"""Experiment configs, grid expansion, done-markers and the missing-dataset check."""

from pathlib import Path

import pytest

from imgsteal.experiments.config import ConfigError, ExperimentConfig, check_datasets, load_config, task_fingerprints
from imgsteal.experiments.grid import (
    GridCell, cell_state, check_not_stale, expand_grid, fraction_label, mark_done, stale_cells, task_cells,
)

REPO = Path(__file__).resolve().parents[2]


def test_default_grid_is_the_papers(tiny_sr):
    config = tiny_sr()
    del config["grid"]
    cfg = ExperimentConfig.model_validate(config)
    cells = expand_grid(cfg)
    assert len(cells) == 4 * 5 * 5  # fractions x augmentations x seeds
    assert {c.fraction for c in cells} == {0.25, 0.5, 0.75, 1.0}
    assert {c.augmentation for c in cells} == {"none", "flip", "rotation", "cutout", "contrast"}
    assert {c.seed for c in cells} == {0, 1, 2, 3, 4}
    assert len({c.id for c in cells}) == len(cells)
    # seed-major: the first seed's whole grid comes first
    assert {c.seed for c in cells[:20]} == {0}


def test_grid_overrides_and_augmentation_fractions(tiny_sr):
    config = tiny_sr(fractions=[1.0, 0.25, 0.5], augmentations=["none", "flip", "cutout"], seeds=[3, 7],
                     augmentation_fractions=[0.25])
    config["tasks"].append({**config["tasks"][0], "name": "sr2", "grid": {"augmentations": ["none", "rotation"], "seeds": 1}})
    cfg = ExperimentConfig.model_validate(config)
    first = task_cells(cfg, cfg.tasks[0])
    # none at every fraction, the others only at 25%
    assert sorted((c.augmentation, c.fraction) for c in first if c.seed == 3) == [
        ("cutout", 0.25), ("flip", 0.25), ("none", 0.25), ("none", 0.5), ("none", 1.0)]
    assert {c.seed for c in first} == {3, 7}
    second = task_cells(cfg, cfg.tasks[1])
    assert {c.seed for c in second} == {0}
    assert {c.augmentation for c in second} == {"none", "rotation"}
    assert cfg.task_grid(cfg.tasks[1]).fractions == [0.25, 0.5, 1.0]  # inherited, sorted


def test_cell_ids_and_folders():
    cell = GridCell("super_resolution", 0.5, "flip", 1)
    assert cell.id == "super_resolution/f050-flip-s1"
    assert cell.folder("/x") == Path("/x/cells/super_resolution/f050-flip-s1")
    assert fraction_label(0.25) == "025" and fraction_label(1.0) == "100" and fraction_label(0.125) == "012.5"


@pytest.mark.parametrize("change, message", [
    ({"surrogate": {"seed": 3}}, "set by the grid"),
    ({"surrogate": {"epochz": 3}}, "unknown surrogate settings epochz"),
    ({"surrogate": {"arch": "pix2pix"}}, "surrogate is one of srresnet, edsr, msrresnet"),
    ({"kind": "style", "surrogate": {"arch": "pix2pix"}}, "style_set"),
    ({"victim": {}}, "exactly one of"),
    ({"victim": {"train": {"arch": "cyclegan"}}}, "does not fit a sr task"),
    ({"name": "a/b"}, "letters, digits"),
])
def test_invalid_task_settings_are_refused_with_the_field(tiny_sr, write_config, change, message):
    config = tiny_sr()
    config["tasks"][0].update(change)
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(config))


def test_unknown_top_level_key_and_bad_grid(tiny_sr, write_config):
    config = tiny_sr()
    config["gird"] = {}
    with pytest.raises(ConfigError, match="gird"):
        load_config(write_config(config))
    config = tiny_sr(fractions=[0.0, 0.5])
    with pytest.raises(ConfigError, match=r"grid\.fractions"):
        load_config(write_config(config))


def test_missing_dataset_fails_naming_the_path(tiny_sr, tmp_path):
    config = tiny_sr()
    config["tasks"][0]["test_sets"]["DIV2K Test"] = "div2k:{data_root}/DIV2K:valid"
    cfg = ExperimentConfig.model_validate({**config, "data_root": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError) as info:
        check_datasets(cfg)
    assert str(tmp_path / "nowhere" / "DIV2K") in str(info.value)
    assert "DIV2K Test" in str(info.value)
    config = tiny_sr()
    config["tasks"][0]["victim"] = {"model": str(tmp_path / "no-victim.safetensors")}
    with pytest.raises(ConfigError, match="victim model not found: .*no-victim.safetensors"):
        check_datasets(ExperimentConfig.model_validate(config))


def test_presets_validate_and_name_their_datasets(tmp_path):
    paper = sorted((REPO / "configs" / "paper").glob("*.yaml"))
    demo = sorted((REPO / "configs" / "demo").glob("*.yaml"))
    assert {p.stem for p in paper} == {"monet2photo", "selfie2anime", "super_resolution"}
    assert "super_resolution" in {p.stem for p in demo}
    for path in paper:
        cfg = load_config(path, data_root=str(tmp_path / "data"))
        grid = cfg.task_grid(cfg.tasks[0])
        assert grid.seed_list() == [0, 1, 2, 3, 4] and grid.fractions == [0.25, 0.5, 0.75, 1.0]
        assert cfg.price_usd == 0.016
        with pytest.raises(ConfigError, match=str(tmp_path / "data")):
            check_datasets(cfg)
    for path in demo:
        cfg = load_config(path)
        grid = cfg.task_grid(cfg.tasks[0])
        assert len(grid.seed_list()) == 2 and len(grid.fractions) == 2
    sr = load_config(REPO / "configs" / "paper" / "super_resolution.yaml")
    assert "cutout" not in [a.value for a in sr.task_grid(sr.tasks[0]).augmentations]  # as in the paper


def test_done_marker_and_stale_settings(tiny_sr, tmp_path):
    cfg = ExperimentConfig.model_validate(tiny_sr())
    cells = expand_grid(cfg)
    out = tmp_path / "exp"
    prints = task_fingerprints(cfg, cfg.tasks[0])
    assert [cell_state(c, out) for c in cells] == ["pending", "pending"]
    mark_done(cfg, cells[0], out, {"cell": cells[0].as_dict(), "records": []})
    assert [cell_state(c, out) for c in cells] == ["done", "pending"]
    assert not list(out.rglob("*.tmp"))
    check_not_stale(cfg, cells, out)
    # Speed-only settings do not change the fingerprints; training settings do.
    faster = tiny_sr()
    faster["tasks"][0].update(device="cuda")
    faster["tasks"][0]["surrogate"]["checkpoint_every"] = 5
    cfg_fast = ExperimentConfig.model_validate(faster)
    assert task_fingerprints(cfg_fast, cfg_fast.tasks[0]) == prints
    check_not_stale(cfg_fast, cells, out)
    longer = tiny_sr()
    longer["tasks"][0]["surrogate"]["epochs"] = 9
    cfg2 = ExperimentConfig.model_validate(longer)
    assert task_fingerprints(cfg2, cfg2.tasks[0])["surrogate"] != prints["surrogate"]
    assert stale_cells(cfg2, cells, out) == ["sr/f050-none-s0 (changed: surrogate.epochs)"]
    with pytest.raises(Exception, match="other settings"):
        check_not_stale(cfg2, cells, out)


def test_defense_axis_expands_cells_with_their_own_folders(tiny_sr):
    raw = tiny_sr()
    raw["grid"]["defenses"] = ["none", "watermark", "strong"]
    raw["defense_setups"] = {"strong": {"defenses": ["watermark", "pgd"], "watermark": {"fraction": 0.5}}}
    cfg = ExperimentConfig.model_validate(raw)
    cells = expand_grid(cfg)
    assert {c.defense for c in cells} == {"none", "watermark", "strong"}
    keys = {c.key for c in cells}
    assert "f050-none-s0" in keys and "f050-none-s0-dwatermark" in keys and "f050-none-s0-dstrong" in keys
    assert cfg.defense_setup("strong").defenses == ["watermark", "pgd"]
    assert cfg.defense_setup("watermark").options("watermark").fraction == 0.005  # the option model's default
    raw["grid"]["defenses"] = ["none", "nosuch"]
    with pytest.raises(Exception, match="nosuch"):
        ExperimentConfig.model_validate(raw)


def test_time_left_follows_the_pace_so_far():
    from imgsteal.experiments.runner import time_left

    assert time_left(60.0, 2, 8) == ", about 3 min left"  # 30 s a cell, 6 cells to go
    assert time_left(20.0, 2, 4) == ", about 20 s left"
    assert time_left(100.0, 4, 4) == ""  # nothing left to estimate
