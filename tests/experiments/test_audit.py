"""`imgsteal audit`: the owner's fidelity-vs-queries report, through the experiment pipeline."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from imgsteal.cli import app
from imgsteal_testkit import make_sr_model, write_images

runner = CliRunner()


@pytest.fixture
def victim_and_pool(tmp_path):
    victim = tmp_path / "victim" / "model.safetensors"
    make_sr_model(victim)
    write_images(tmp_path / "pool", 6, size=(96, 96), seed=2)
    write_images(tmp_path / "test", 2, size=(48, 48), seed=3)
    return victim, tmp_path


def _args(victim, root, *extra):
    return ["audit", "--oracle", str(victim), "--inputs", str(root / "pool"), "--test", f"held out={root / 'test'}",
            "--out", str(root / "audit"), "--device", "cpu", "--quiet", *extra]


@pytest.mark.slow
def test_audit_reports_fidelity_against_queries_and_dollars(victim_and_pool):
    victim, root = victim_and_pool
    result = runner.invoke(app, _args(victim, root, "--budget", "4", "--attack", "paper", "--attack", "few-shot",
                                      "--seeds", "1", "--steps", "3", "--surrogate", "n_blocks=1",
                                      "--surrogate", "channels=8", "--surrogate", "patch=8"))
    assert result.exit_code == 0, result.output
    out = root / "audit"
    html = (out / "report.html").read_text()
    assert "What a copy costs" in html and "plots/budget_curves.png" in html
    assert "queries (and dollars) each attack needs" in html and "$0.0" in html
    assert "copies made by few-shot at each budget" in html
    svg = (out / "plots" / "budget_curves.svg").read_text()
    assert "few-shot" in svg and "no copy (baseline vs F_V)" in svg and "$0.064" in svg  # 4 queries at $0.016
    cells = sorted(p.name for p in (out / "cells" / "victim").iterdir())
    assert cells == sorted(f"f100-none-s0{a}-b{b}" for a in ("", "-afew-shot") for b in (1, 2, 4))


@pytest.mark.parametrize("extra, message", [
    (["--budget", "7"], "more than the 6 images"),
    (["--budget", "0"], "at least 1"),
    (["--budget", "2", "--attack", "nosuch"], "attacks"),
])
def test_audit_refuses_bad_input_before_any_query(victim_and_pool, extra, message):
    victim, root = victim_and_pool
    result = runner.invoke(app, _args(victim, root, *extra))
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (root / "audit" / "tasks").exists()


def test_audit_of_a_url_says_what_to_give_instead(victim_and_pool):
    victim, root = victim_and_pool
    result = runner.invoke(app, ["audit", "--oracle", "http://127.0.0.1:9", "--inputs", "x", "--budget", "2",
                                 "--test", "t=x"])
    assert result.exit_code == 2 and "model file" in result.output
