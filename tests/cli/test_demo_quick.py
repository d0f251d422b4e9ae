"""The demo's whole chain (victim -> HTTP harvest -> 2 surrogates -> A/B/C -> report) with a tiny preset."""

import json

import pytest

from imgsteal.demo import SRDemoPreset, run_demo

TINY = SRDemoPreset(n_blocks=1, channels=8, victim_pretrain_epochs=1, victim_gan_epochs=1, victim_repeat=1,
                    surrogate_epochs=1, surrogate_repeat=1, patch=16, batch_size=8)


@pytest.mark.slow
def test_sr_demo_writes_report_and_results(tmp_path):
    results = run_demo(tmp_path, tasks=("sr",), progress=False, sr_preset=TINY)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["sr"]["headline"] == results["sr"]["headline"]
    assert set(saved["sr"]["test_sets"]) == {"benchmark photos", "SR benchmark"}
    assert saved["sr"]["harvest"]["stored_pairs"] == 59  # every bundled adversary photo answered once
    html = (tmp_path / "report.html").read_text()
    for name in ("benchmark photos", "SR benchmark"):
        row = saved["sr"]["headline"][name]
        assert f"{row['psnr_surrogate_vs_victim']:.2f} dB" in html and f"{row['psnr_bicubic_vs_victim']:.2f} dB" in html
    assert html.count("<img") >= 5 * 4  # LR | bicubic | F_V | F_A | HR rows
    # A second run resumes every stage: nothing is retrained or re-queried.
    again = run_demo(tmp_path, tasks=("sr",), progress=False, sr_preset=TINY)
    assert again["sr"]["harvest"]["queried"] == 0
