"""DAWN-style watermark: keyed selection, alterations, the owner-only trigger store, the server hook."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat

import pytest
import torch

from imgsteal.data.images import decode_image, sha256_bytes
from imgsteal.defenses.watermark import (
    Alteration, TriggerStore, WatermarkDefense, WatermarkOptions, alter, blur, embed_text, is_trigger, monochrome,
    trigger_score,
)
from imgsteal.victim.accounts import AccountsDB


def _shas(n: int, salt: str = "") -> list[str]:
    return [hashlib.sha256(f"{salt}{i}".encode()).hexdigest() for i in range(n)]


def test_selection_rate_matches_the_fraction_and_is_deterministic():
    secret = bytes(range(32))
    shas = _shas(20_000)
    for fraction in (0.005, 0.05, 0.2):
        chosen = [s for s in shas if is_trigger(secret, "mallory", s, fraction)]
        # Binomial(20000, f): 5 standard deviations of slack.
        sd = (len(shas) * fraction * (1 - fraction)) ** 0.5
        assert abs(len(chosen) - len(shas) * fraction) < 5 * sd
        assert chosen == [s for s in shas if is_trigger(secret, "mallory", s, fraction)]
    # Nested: a query selected at 0.05 stays selected at 0.2 (one score per (key, image)).
    small = {s for s in shas if is_trigger(secret, "mallory", s, 0.05)}
    assert small <= {s for s in shas if is_trigger(secret, "mallory", s, 0.2)}


def test_selection_depends_on_the_client_and_on_the_secret():
    shas = _shas(4000)
    a = {s for s in shas if is_trigger(b"k" * 32, "alice", s, 0.1)}
    b = {s for s in shas if is_trigger(b"k" * 32, "bob", s, 0.1)}
    c = {s for s in shas if is_trigger(b"x" * 32, "alice", s, 0.1)}
    # Independent draws overlap in about 1% of the queries, not 10%.
    assert len(a & b) < 0.3 * len(a) and len(a & c) < 0.3 * len(a)
    assert 0 <= trigger_score(b"k" * 32, "alice", shas[0]) < 1


def test_alterations_change_the_image_as_figure_8_does():
    torch.manual_seed(0)
    image = torch.rand(3, 40, 56)
    blurred = blur(image, 2.0)
    assert blurred.shape == image.shape and 0 <= blurred.min() and blurred.max() <= 1
    # Blur removes high frequencies: neighbouring pixels get much closer.
    assert (blurred[..., 1:] - blurred[..., :-1]).abs().mean() < 0.5 * (image[..., 1:] - image[..., :-1]).abs().mean()
    mono = monochrome(image)
    assert torch.equal(mono[0], mono[1]) and torch.equal(mono[1], mono[2])
    flat = torch.full((3, 48, 64), 0.5)
    texted = embed_text(flat, "imgsteal")
    changed = (texted - flat).abs().amax(0) > 0.2
    assert 0.01 < changed.float().mean() < 0.6  # white text with a black outline, not the whole image
    assert torch.equal(alter(flat, WatermarkOptions(alteration=Alteration.text)), texted)


def test_trigger_store_is_owner_only_and_keeps_its_secret(tmp_path):
    path = tmp_path / "owner" / "wm.sqlite"
    with TriggerStore(path) as store:
        secret = store.secret()
        img = torch.rand(3, 8, 8)
        store.add("mallory", "ab" * 32, "blur", img, img * 0.5, img)
        store.add("mallory", "ab" * 32, "blur", img, img * 0.5, img)  # idempotent
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(secret) == 32
    os.chmod(path, 0o644)  # loosened by someone: tightened again on open
    with TriggerStore(path, create=False) as store:
        assert store.secret() == secret
        assert store.count("mallory") == 1 and store.clients() == ["mallory"]
        (trigger,) = store.triggers("mallory")
        assert torch.allclose(trigger.input, img, atol=1 / 255)
        assert torch.allclose(trigger.altered, img * 0.5, atol=1 / 255)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_the_defence_alters_selected_answers_and_records_them(tmp_path):
    defense = WatermarkDefense(WatermarkOptions(db=tmp_path / "wm.sqlite", fraction=0.5, alteration=Alteration.monochrome))
    torch.manual_seed(1)
    selected = 0
    for i, sha in enumerate(_shas(40, "q")):
        x, y = torch.rand(3, 4, 4), torch.rand(3, 16, 16)
        out, label = defense.apply("mallory", x, y, sha)
        if defense.selects("mallory", sha):
            selected += 1
            assert label == "watermark:monochrome" and torch.equal(out[0], out[1])
            assert defense.store.has("mallory", sha)
        else:
            assert label is None and out is y and not defense.store.has("mallory", sha)
    assert 0 < selected < 40 and defense.store.count("mallory") == selected
    defense.close()


class TriggerAlreadyStored:
    """Runs after the watermark in the defence chain: the answer has not left yet, the trigger must be on disk."""

    def __init__(self, db):
        self.db = db
        self.checked = []

    def apply(self, key_name, input_image, output_image, input_sha256):
        with sqlite3.connect(self.db) as con:  # another connection: sees only committed rows
            row = con.execute("SELECT COUNT(*) FROM triggers WHERE client = ? AND input_sha256 = ?",
                              (key_name, input_sha256)).fetchone()
        self.checked.append(row[0])
        return output_image, None


def test_server_commits_the_trigger_before_answering_and_logs_the_label(api, victim, kit, tmp_path):
    db = tmp_path / "wm.sqlite"
    watermark = WatermarkDefense(WatermarkOptions(db=db, fraction=1.0, alteration=Alteration.blur, blur_sigma=2))
    probe = TriggerAlreadyStored(db)
    client, api_db, headers = api(victim, [watermark, probe])
    data = kit.png_bytes(seed=3)
    r = client.post("/v1/translate", content=data, headers=headers)
    assert r.status_code == 200
    assert probe.checked == [1]
    clean = victim.translate(decode_image(data))
    assert torch.allclose(decode_image(r.content), blur(clean, 2), atol=1 / 255 + 1e-6)
    (trigger,) = watermark.store.triggers("mallory")
    assert trigger.input_sha256 == sha256_bytes(data)
    assert torch.allclose(trigger.clean, clean, atol=1 / 255 + 1e-6)
    with AccountsDB(api_db) as accounts:
        assert [q["defense"] for q in accounts.queries()] == ["watermark:blur"]
    # Nothing of the watermark leaves with the answer.
    secret = watermark.store.secret()
    assert secret.hex() not in str(r.headers) and secret not in r.content
    assert not any("watermark" in k.lower() or "trigger" in k.lower() for k in r.headers)
    watermark.close()


def test_same_query_same_answer(tmp_path):
    defense = WatermarkDefense(WatermarkOptions(db=tmp_path / "wm.sqlite", fraction=1.0))
    x, y = torch.rand(3, 4, 4), torch.rand(3, 16, 16)
    first, _ = defense.apply("mallory", x, y, "cd" * 32)
    again, _ = defense.apply("mallory", x, y, "cd" * 32)
    assert torch.equal(first, again) and defense.store.count() == 1
    defense.close()


def test_options_are_validated(tmp_path):
    with pytest.raises(ValueError):
        WatermarkOptions(db=tmp_path / "x", fraction=0)
    with pytest.raises(ValueError):
        WatermarkOptions(db=tmp_path / "x", alteration="sepia")
