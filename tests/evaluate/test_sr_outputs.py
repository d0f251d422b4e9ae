"""SR evaluation keeps its outputs' provenance: every scored image named by its input's stem, a
manifest mapping names to inputs, and folders `imgsteal study create` takes as they are."""

from __future__ import annotations

import csv

import torch

from imgsteal.data.images import bicubic_upscale, load_image
from imgsteal.evaluate.sr import evaluate_sr
from imgsteal.study.create import StudySpec, TaskSpec, create_study
from imgsteal_testkit import write_images


def _victim(x: torch.Tensor) -> torch.Tensor:
    return bicubic_upscale(x, 2)


def _surrogate(x: torch.Tensor) -> torch.Tensor:
    return (bicubic_upscale(x, 2) * 0.9).clamp(0, 1)


def test_sr_outputs_carry_the_input_stem_with_a_manifest(tmp_path):
    paths = write_images(tmp_path / "hr", 3, size=(32, 24))
    paths[1] = paths[1].rename(paths[1].with_name("beach, sunset.png"))  # a comma survives the CSV
    out = tmp_path / "eval"
    evaluate_sr(_victim, [_surrogate], {"my set": paths}, out, scale=2, gallery_count=2, progress=False)

    folder = out / "outputs" / "my_set"
    stems = sorted(p.stem for p in paths)
    for label in ("lr", "hr", "bicubic", "victim", "surrogate0"):
        assert sorted(p.stem for p in (folder / label).glob("*.png")) == stems, label
    with open(folder / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["name"]: r["input"] for r in rows} == {f"{p.stem}.png": str(p) for p in paths}
    # the saved images are what was scored: F_V's answer on the LR of that very input
    hr = load_image(folder / "hr" / "beach, sunset.png")
    assert hr.shape == load_image(paths[1]).shape
    assert load_image(folder / "lr" / "beach, sunset.png").shape[-1] == hr.shape[-1] // 2
    assert load_image(folder / "victim" / "beach, sunset.png").shape == hr.shape
    gallery = sorted(p.name for p in (out / "gallery").glob("*_victim.png"))
    assert gallery == ["my set_00_img_000_victim.png", "my set_01_beach, sunset_victim.png"]


def test_study_create_takes_the_sr_outputs(tmp_path):
    paths = write_images(tmp_path / "hr", 4, size=(32, 24))
    out = tmp_path / "eval"
    evaluate_sr(_victim, [_surrogate], {"set": paths}, out, scale=2, gallery_count=0, progress=False)
    folder = out / "outputs" / "set"
    task = TaskSpec(name="sr", originals=folder / "hr", victim=folder / "victim", surrogate=folder / "surrogate0")
    study = create_study(StudySpec(tasks=[task], pairs=4, seed=0), tmp_path / "study")
    assert sorted(i.stem for i in study.items) == sorted(p.stem for p in paths)


class _Scaled:
    scale = 2

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, x):
        return self.fn(x)


def test_the_gallery_cell_keeps_sr_outputs_and_the_others_do_not(tmp_path):
    from imgsteal.pipeline.kinds import SUPER_RESOLUTION

    paths = write_images(tmp_path / "hr", 2, size=(32, 24))
    kw = dict(evaluation={}, style_set=None, size=0, device="cpu", progress=False)
    SUPER_RESOLUTION.score(_Scaled(_victim), _Scaled(_surrogate), {"Set 5": paths, "other": paths[:1]},
                           folder=tmp_path / "kept", keep_outputs=True, **kw)
    outputs = tmp_path / "kept" / "evaluation" / "outputs"
    assert sorted(p.name for p in outputs.iterdir()) == ["Set_5"]  # the gallery's (first) test set only
    kept = outputs / "Set_5"
    assert sorted(p.name for p in (kept / "surrogate0").iterdir()) == ["img_000.png", "img_001.png"]
    assert (kept / "manifest.csv").is_file()
    SUPER_RESOLUTION.score(_Scaled(_victim), _Scaled(_surrogate), {"Set 5": paths}, folder=tmp_path / "other", **kw)
    assert not (tmp_path / "other" / "evaluation").exists()
