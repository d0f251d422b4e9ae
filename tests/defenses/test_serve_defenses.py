"""`imgsteal serve --defense NAME`: the registry, the flags, and a served victim with a watermark."""

from __future__ import annotations

import inspect
import os
import stat

import httpx
import pytest
import torch
from typer.testing import CliRunner

from imgsteal.cli import app
from imgsteal.defenses.registry import SERVE_FLAGS, build_defenses, option_flags, split_flags
from imgsteal.defenses.watermark import TriggerStore
from imgsteal.errors import ImgstealError
from imgsteal.victim.accounts import AccountsDB


def test_every_serve_flag_is_a_defence_option_and_an_imgsteal_serve_option():
    from imgsteal.cli.serve import serve

    params = inspect.signature(serve).parameters
    assert "defense" in params
    for flag in SERVE_FLAGS:
        assert flag in params and flag in option_flags()


def test_flags_are_split_per_defence_with_defaults(tmp_path):
    per = split_flags(["watermark", "pgd"], {"watermark_fraction": 0.1, "pgd_epsilon": 0.1, "pgd_steps": None},
                      {"watermark_db": tmp_path / "wm.sqlite", "pgd_device": "cpu", "fingerprint_device": "cpu"})
    assert per == {"watermark": {"fraction": 0.1, "db": tmp_path / "wm.sqlite"}, "pgd": {"epsilon": 0.1, "device": "cpu"}}
    with pytest.raises(ImgstealError, match="--watermark-fraction is set but --defense watermark is not"):
        split_flags(["pgd"], {"watermark_fraction": 0.1})
    with pytest.raises(ImgstealError, match="unknown defence 'nope'"):
        split_flags(["nope"], {})
    with pytest.raises(ImgstealError, match="--pgd-discriminator"):
        build_defenses(["pgd"], {})  # the discriminator is required


def test_combined_defences_apply_in_order_and_log_every_label(api, victim, victim_run, kit, tmp_path):
    defenses = build_defenses(["watermark", "pgd"], {"watermark_fraction": 1.0, "watermark_alteration": "monochrome",
                                                     "pgd_discriminator": victim_run, "pgd_epsilon": 0.02, "pgd_steps": 1},
                              {"watermark_db": tmp_path / "wm.sqlite"})
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


def test_served_watermark_logs_labels_keeps_triggers_private_and_verifies_a_url(tmp_path, victim_run, kit):
    """A real `imgsteal serve --defense watermark` subprocess: every answer to 'mallory' is a trigger;
    the same service, asked by another key, reproduces the alteration, so verifying it as a suspect
    URL convicts it, while the clean victim checkpoint is not accused."""
    from imgsteal.victim.launch import running_server

    wm_db = tmp_path / "owner" / "watermark.sqlite"
    with running_server(victim_run, tmp_path / "api.sqlite", workdir=tmp_path / "server", rate=0,
                        defense=["watermark"], watermark_db=wm_db, watermark_fraction=1.0,
                        watermark_alteration="blur", watermark_blur_sigma=1.5) as server:
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
