"""`imgsteal serve --defense NAME`: the registry, the flags, and a served victim with a watermark."""

from __future__ import annotations

import os
import stat

import httpx
import pytest
import torch
from typer.testing import CliRunner

from imgsteal.cli import app
from imgsteal.defenses.registry import DEFENSES, DefenseContext, DefenseSetup, build_defenses, setup_from_options
from imgsteal.defenses.watermark import TriggerStore
from imgsteal.errors import ImgstealError
from imgsteal.victim.accounts import AccountsDB


def test_serve_flags_are_generated_from_the_option_models():
    """Every field of every defence's options model, and of ServerSettings, is an `imgsteal serve` flag."""
    from imgsteal.victim.server import ServerSettings

    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    for name, spec in DEFENSES.items():
        for field in spec.options_model().model_fields:
            assert f"--{name}-{field.replace('_', '-')}" in result.output
    from imgsteal.cli.serve import SETTING_FLAGS

    for field in ServerSettings.model_fields:
        flag = SETTING_FLAGS.get(field) or f"--{field.replace('_', '-')}"
        assert f"{flag} " in result.output
    assert "(default 0.005)" in result.output  # the watermark fraction's default, from WatermarkOptions


def test_options_are_grouped_per_defence_and_context_fills_the_rest(tmp_path):
    setup = setup_from_options(["watermark", "pgd"], {"watermark": {"fraction": 0.1}, "pgd": {"epsilon": 0.1}})
    assert setup.options("watermark").fraction == 0.1 and setup.options("pgd").epsilon == 0.1
    assert setup.options("pgd").steps == 10  # the options model's default
    with pytest.raises(ImgstealError, match="--watermark-fraction given, but --defense watermark is not"):
        setup_from_options(["pgd"], {"watermark": {"fraction": 0.1}})
    with pytest.raises(ImgstealError, match="unknown defence 'nope'"):
        setup_from_options(["nope"], {})
    with pytest.raises(ImgstealError, match="--pgd-discriminator"):
        build_defenses(DefenseSetup(defenses=["pgd"]))  # no discriminator given and no victim to take it from
    # The watermark database goes next to the API database, unless one is given.
    (wm,) = build_defenses(DefenseSetup(defenses=["watermark"]), DefenseContext(api_db=tmp_path / "api.sqlite"))
    assert wm.store.path == tmp_path / "api-watermark.sqlite"
    wm.close()


def test_combined_defences_apply_in_order_and_log_every_label(api, victim, victim_run, kit, tmp_path):
    setup = DefenseSetup(defenses=["watermark", "pgd"], watermark={"fraction": 1.0, "alteration": "monochrome"},
                         pgd={"epsilon": 0.02, "steps": 1})
    defenses = build_defenses(setup, DefenseContext(api_db=tmp_path / "api.sqlite", victim_model=victim_run))
    client, db, headers = api(victim, defenses)
    assert client.post("/v1/translate", content=kit.png_bytes(seed=1), headers=headers).status_code == 200
    with AccountsDB(db) as accounts:
        assert [q["defense"] for q in accounts.queries()] == ["watermark:monochrome,pgd"]
    defenses[0].close()


def test_serve_refuses_bad_defence_flags(tmp_path, victim_run):
    runner = CliRunner()
    base = ["serve", "--model", str(victim_run), "--db", str(tmp_path / "api.sqlite"), "--device", "cpu"]
    bad = runner.invoke(app, base + ["--defense", "nope"])
    assert bad.exit_code == 2 and "unknown defence 'nope'" in bad.output
    stray = runner.invoke(app, base + ["--watermark-fraction", "0.1"])
    assert stray.exit_code == 2 and "--defense watermark" in stray.output
    wrong = runner.invoke(app, base + ["--defense", "watermark", "--watermark-alteration", "sepia"])
    assert wrong.exit_code == 2 and "--watermark-alteration" in wrong.output


@pytest.mark.slow  # about 10 s or more on the busy 2-core box: a real `imgsteal serve` subprocess
def test_served_watermark_logs_labels_keeps_triggers_private_and_verifies_a_url(tmp_path, victim_run, kit):
    """A real `imgsteal serve --defense watermark` subprocess: every answer to 'mallory' is a trigger;
    the same service, asked by another key, reproduces the alteration, so verifying it as a suspect
    URL convicts it, while the clean victim checkpoint is not accused."""
    from imgsteal.victim.launch import running_server

    wm_db = tmp_path / "owner" / "watermark.sqlite"
    from imgsteal.victim.launch import ServiceConfig

    config = ServiceConfig(defenses=DefenseSetup(defenses=["watermark"], watermark={
        "db": str(wm_db), "fraction": 1.0, "alteration": "blur", "blur_sigma": 1.5}))
    with running_server(victim_run, tmp_path / "api.sqlite", workdir=tmp_path / "server", rate_per_s=0,
                        config=config) as server:
        key = server.create_key("mallory")
        for seed in range(8):
            r = httpx.post(f"{server.url}/v1/translate", content=kit.png_bytes(seed=seed),
                           headers={"Authorization": f"Bearer {key}", "Content-Type": "image/png"}, timeout=60)
            assert r.status_code == 200
        assert [q["defense"] for q in server.queries("mallory")] == ["watermark:blur"] * 8
        suspect_key = server.create_key("verifier")
        runner = CliRunner()
        caught = runner.invoke(app, ["watermark", "verify", "--suspect", server.url, "--client", "mallory",
                                     "--triggers", str(wm_db), "--api-key", suspect_key])
        clean = runner.invoke(app, ["watermark", "verify", "--suspect", str(victim_run), "--client", "mallory",
                                    "--triggers", str(wm_db)])
        log_text = server.log_tail(100_000)
    assert caught.exit_code == 0, caught.output
    assert "8/8 triggers" in caught.output and "REPRODUCES" in caught.output
    assert "0/8 triggers" in clean.output and "no evidence" in clean.output
    assert stat.S_IMODE(os.stat(wm_db).st_mode) == 0o600
    with TriggerStore(wm_db, create=False) as store:
        assert store.count("mallory") == 8
        secret = store.secret()
    for text in (log_text, caught.output, clean.output):
        assert secret.hex() not in text
    assert "watermark" in log_text  # the startup line names the defences, nothing more
    assert torch.get_num_threads() == 1
