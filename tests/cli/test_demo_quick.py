"""The demo's whole chain (victim -> HTTP harvest -> 2 surrogates -> A/B/C -> report) on tiny networks.

The demo is the packaged experiment preset; the tests shrink its networks with overrides, as any
config can (no demo-only presets in code).
"""

import json

import pytest

from imgsteal.demo import demo_config, run_demo

TINY_SR = {"tasks": {"sr": {  # the shipped victim; tiny surrogates
    "surrogate": {"n_blocks": 1, "channels": 8, "steps": 8, "repeat": 1, "patch": 16, "batch_size": 8},
}}}


def test_demo_is_the_packaged_preset_and_validates_its_selection():
    cfg = demo_config()
    assert [t.name for t in cfg.tasks] == ["sr", "style"]
    assert [t.name for t in demo_config(("style",)).tasks] == ["style"]
    with pytest.raises(Exception, match="unknown demo setting"):
        demo_config(("nosuch",))
    # The configs under configs/demo start from the same preset: one source of the demo's sizes.
    from imgsteal.experiments.config import load_config

    sr = load_config("configs/demo/super_resolution.yaml").tasks[0]
    assert {k: v for k, v in sr.surrogate.items() if k != "steps"} == \
        {k: v for k, v in cfg.task("sr").surrogate.items() if k != "steps"} and sr.victim == cfg.task("sr").victim
    # The SR victim is shipped, and good enough to mean something; --train-victim trains one instead.
    assert cfg.task("sr").victim.model.endswith("victims/demo-sr/model.safetensors")
    assert demo_config(train_victim=True).task("sr").victim.train["arch"] == "srgan"
    # So is the style victim: a 128 px CycleGAN whose generator up-samples without a checkerboard.
    assert cfg.task("style").victim.model.endswith("victims/demo-style/model.safetensors")
    assert demo_config(train_victim=True).task("style").victim.train["upsample"] == "resize"


def test_shipped_style_victim_answers_a_photo_with_a_painting_of_it():
    """The shipped style victim loads, keeps the size, changes the photo (it is a painter, not the
    identity) and keeps its layout (the scene stays recognisable)."""
    import torch

    from imgsteal.data.demo import demo_data
    from imgsteal.data.images import load_image
    from imgsteal.metrics import ssim
    from imgsteal.victim.inference import load_translator

    translator = load_translator(demo_config().expand(demo_config().task("style").victim.model), device="cpu")
    assert translator.kind == "style"
    photo = load_image(sorted(demo_data().benchmark_photos.iterdir())[0])
    photo = torch.nn.functional.interpolate(photo[None], size=(128, 128), mode="bilinear", antialias=True)[0]
    painting = translator.translate(photo)
    assert painting.shape == photo.shape
    assert float((painting - photo).abs().mean()) > 0.05
    gray = lambda x: x.mean(0, keepdim=True)[None]  # noqa: E731
    assert float(ssim(gray(painting), gray(photo))[0]) > 0.2


@pytest.mark.slow
def test_sr_demo_writes_report_and_results(tmp_path, capsys):
    results = run_demo(tmp_path, tasks=("sr",), progress=False, overrides=TINY_SR)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["sr"]["headline"] == results["sr"]["headline"]
    assert set(saved["sr"]["test_sets"]) == {"benchmark photos", "SR benchmark"}
    assert saved["sr"]["harvest"]["stored_pairs"] == 59  # every bundled adversary photo answered once
    assert len(saved["sr"]["test_sets"]["SR benchmark"]["psnr"]["B"]["runs"]) == 2  # two surrogate seeds
    html = (tmp_path / "report.html").read_text()
    for name in ("benchmark photos", "SR benchmark"):
        row = saved["sr"]["headline"][name]
        assert f"{row['psnr_surrogate_vs_victim']:.2f} dB" in html and f"{row['psnr_bicubic_vs_victim']:.2f} dB" in html
        assert f"{row['psnr_bicubic_vs_truth']:.2f} dB" in html  # the victim is shown next to bicubic upscaling
    assert html.count("<img") >= 4 * 4  # LR | F_V | F_A | HR rows
    assert (tmp_path / "experiment" / "report.html").is_file()
    timings = saved["sr"]["timings"]
    assert timings["victim_s"] == 0 and timings["surrogates_s"] > 0  # the shipped victim is not trained
    headline = saved["sr"]["headline"]["benchmark photos"]
    assert headline["victim_beats_bicubic"] is True  # the shipped victim is worth copying: 27.18 dB, bicubic 26.55
    assert headline["psnr_victim_vs_truth"] > headline["psnr_bicubic_vs_truth"] + 0.5
    printed = capsys.readouterr().out
    assert "report:" in printed and "PSNR(F_A, F_V)" in printed
    # A second run resumes every stage: nothing is retrained or re-queried, and the timings of the run
    # that computed each stage are kept.
    again = run_demo(tmp_path, tasks=("sr",), progress=False, overrides=TINY_SR)
    assert again["sr"]["harvest"] == saved["sr"]["harvest"]
    assert again["sr"]["timings"] == pytest.approx(timings)
    assert "reused" in capsys.readouterr().out
