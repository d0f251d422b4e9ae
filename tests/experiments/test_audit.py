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


@pytest.mark.slow
def test_audit_of_a_service_by_url_queries_only_through_its_api(victim_and_pool, monkeypatch):
    from imgsteal.data.pairs import PairStore
    from imgsteal.victim.launch import running_server

    victim, root = victim_and_pool
    with running_server(victim, root / "api.sqlite") as server:
        monkeypatch.setenv("IMGSTEAL_API_KEY", server.create_key("auditor"))
        result = runner.invoke(app, ["audit", "--oracle", server.url, "--inputs", str(root / "pool"),
                                     "--test", f"held out={root / 'test'}", "--out", str(root / "audit"),
                                     "--device", "cpu", "--quiet", "--budget", "2", "--attack", "paper", "--seeds", "1",
                                     "--steps", "2", "--surrogate", "n_blocks=1", "--surrogate", "channels=8",
                                     "--surrogate", "patch=8"])
        assert result.exit_code == 0, result.output
        listing = runner.invoke(app, ["keys", "list", "--db", str(root / "api.sqlite")]).output
    out = root / "audit"
    # the scale came from the API's /v1/info; the pool of 6 was sampled down to the largest budget (2)
    with PairStore(out / "tasks" / "victim" / "pairs", create=False) as store:
        assert len(store) == 2 and all(r.input_size == (24, 24) for r in store.records())
    assert len(list((out / "tasks" / "victim" / "victim_cache").glob("*.png"))) == 2  # the 2 test images
    # every answer came through the key: 2 harvest queries and the 2 test images
    (line,) = [row for row in listing.splitlines() if "auditor" in row]
    assert line.split()[-2] == "4"
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 and "held out" in rows[1]


def test_audit_of_a_third_party_url_needs_its_scale(victim_and_pool, tmp_path):
    victim, root = victim_and_pool
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\n")
    result = runner.invoke(app, _args("http://127.0.0.1:9", root, "--budget", "2", "--api-spec", str(spec)))
    assert result.exit_code == 2 and "--scale" in result.output, result.output
    result = runner.invoke(app, _args(victim, root, "--budget", "2", "--scale", "4"))
    assert result.exit_code == 2 and "reached by URL" in result.output, result.output
