"""Extraction monitor: the per-key detector on synthetic feature streams, the features, and the server wiring."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from imgsteal.data.images import decode_image, encode_png
from imgsteal.defenses.monitor import (FEATURE_DIM, ExtractionMonitor, MonitorConfig, mosaic_tiles, query_features,
                                      query_image_features, shapiro_w)


def _stream(kind: str, n: int, seed: int = 0) -> list[np.ndarray]:
    """Synthetic feature streams: 'diverse' (every query a new point), 'album' (near-copies of 3 points),
    'pairs' (each new point sent twice, nearly the same: PRADA's synthetic-query pattern)."""
    rng = np.random.default_rng(seed)
    bases = 0.05 * rng.standard_normal((n, FEATURE_DIM))
    out = []
    for i in range(n):
        if kind == "diverse":
            base = bases[i]
        elif kind == "album":
            base = bases[i % 3]
        else:
            base = bases[i // 2]
        out.append((base + 0.001 * rng.standard_normal(FEATURE_DIM)).astype(np.float32))
    return out


def _first_alert(monitor: ExtractionMonitor, stream, key_id: int = 1):
    for i, f in enumerate(stream, 1):
        alerts = monitor.observe(key_id, f"key{key_id}", f)
        if alerts:
            return i, alerts[0]
    return None, None


def test_many_distinct_images_are_flagged_near_copies_are_not():
    cfg = MonitorConfig(distinct=20, min_images=8)
    at, alert = _first_alert(ExtractionMonitor(cfg), _stream("diverse", 60))
    assert at == 20 and alert.test == "distinct" and alert.statistic == 20 and alert.queries == 20
    assert alert.label() == "alert:distinct=20" and alert.action == "log"
    monitor = ExtractionMonitor(cfg)
    assert _first_alert(monitor, _stream("album", 300)) == (None, None)
    assert monitor.stats(1)["distinct"] == 3 and monitor.flagged(1) is None


def test_distinct_images_must_also_be_a_large_share_of_the_queries():
    """25 new images hidden among 250 near-copies: 10%, under distinct_share 0.5, not flagged."""
    album = _stream("album", 250, seed=1)
    new = _stream("diverse", 25, seed=2)
    stream = album[:]
    for i, f in enumerate(new):
        stream.insert(10 * i + 5, f)
    assert _first_alert(ExtractionMonitor(MonitorConfig(distinct=20, distinct_share=0.5)), stream) == (None, None)
    at, _ = _first_alert(ExtractionMonitor(MonitorConfig(distinct=20, distinct_share=0.05)), stream)
    assert at is not None


def test_prada_normality_test():
    """Natural-looking streams give about normal nearest-query distances; a seed-and-perturb pattern does not."""
    cfg = MonitorConfig(distinct=0, normality=0.9, min_images=20)
    at, alert = _first_alert(ExtractionMonitor(cfg), _stream("pairs", 80))
    assert at is not None and alert.test == "normality" and alert.statistic < 0.9
    assert alert.label().startswith("alert:normality=0.")
    assert _first_alert(ExtractionMonitor(cfg), _stream("diverse", 80)) == (None, None)
    assert shapiro_w([1.0, 1.0, 1.0]) == 1.0 and shapiro_w([1.0]) == 1.0


def test_alert_once_history_cap_and_key_eviction():
    monitor = ExtractionMonitor(MonitorConfig(distinct=8, history=16, max_keys=2))
    stream = _stream("diverse", 40)
    alerts = [monitor.observe(1, "a", f) for f in stream]
    assert sum(len(a) for a in alerts) == 1  # flagged once
    state = monitor._keys[("key", 1)]
    assert state.features.shape == (16, FEATURE_DIM) and len(state.distances) == 16  # bounded memory
    monitor.observe(2, "b", stream[0])
    monitor.observe(3, "c", stream[0])
    assert set(monitor._keys) == {("key", 2), ("key", 3)}  # the least recently seen key was dropped


def test_an_account_s_keys_are_watched_together():
    """A harvest spread over 3 keys of one account (7 images each): no key reaches 20 distinct images, the
    account does, at its 20th; the same over keys of 3 accounts is not flagged (what accounts are for)."""
    stream = _stream("diverse", 21)
    monitor = ExtractionMonitor(MonitorConfig(distinct=20))
    raised = [(i, monitor.observe(1 + i % 3, f"k{i % 3}", f, account="acme")) for i, f in enumerate(stream, 1)]
    flagged = [(i, alerts) for i, alerts in raised if alerts]
    assert len(flagged) == 1 and flagged[0][0] == 20
    alert = flagged[0][1][0]
    assert alert.account == "acme" and alert.statistic == 20 and alert.queries == 20 and alert.key_id == 1 + 20 % 3
    assert alert.label() == "alert:distinct=20 account=acme"
    assert monitor.flagged(1) is None and monitor.stats(account="acme")["images"] == 21
    apart = ExtractionMonitor(MonitorConfig(distinct=20))
    assert not any(apart.observe(1 + i % 3, f"k{i % 3}", f, account=f"a{i % 3}") for i, f in enumerate(stream))


def test_query_features_tell_variants_from_new_images(kit):
    x = decode_image(kit.png_bytes(height=48, width=64, seed=0))
    f = query_features(x)
    assert f.shape == (FEATURE_DIM,) and f.dtype == np.float32
    radius = MonitorConfig().radius
    variant = decode_image(encode_png((x * 1.02).clamp(0, 1)))  # re-encoded, 2% brighter
    assert np.linalg.norm(f - query_features(variant)) < radius
    other = decode_image(kit.png_bytes(height=48, width=64, seed=5))
    assert np.linalg.norm(f - query_features(other)) > radius
    assert query_features(torch.rand(3, 700, 500)).shape == (FEATURE_DIM,)  # large inputs are subsampled first
    assert query_features(x[:1]).shape == (FEATURE_DIM,)


def _downscaled(spec: str, count: int | None = None) -> list[torch.Tensor]:
    """Bundled photos as super-resolution queries (4x downscaled, 8-bit), as the harvest sends them."""
    from imgsteal.data.images import bicubic_downscale, load_image, quantize
    from imgsteal.data.layouts import resolve_images

    return [quantize(bicubic_downscale(load_image(p).clamp(0, 1), 4)) for p in resolve_images(spec)[:count]]


def test_mosaic_tiles_cut_packed_queries_along_their_seams_only():
    """Shelf-packed mosaics of real photos are cut only between photos (every found tile is a union of
    whole photos) and mostly into the photos themselves; a photo and a blank image are one tile."""
    from imgsteal.attack.packing import compose, shelf_pack

    photos = _downscaled("demo:attacker", 24)
    exact = 0
    for layout in shelf_pack([(x.shape[-1], x.shape[-2]) for x in photos], 256 * 256):
        placed = [(t.y, t.x, t.y + photos[t.index].shape[-2], t.x + photos[t.index].shape[-1]) for t in layout.tiles]
        tiles = mosaic_tiles(compose(layout, photos))
        for top, left, bottom, right in tiles:
            for y0, x0, y1, x1 in placed:
                inside = top <= y0 and left <= x0 and y1 <= bottom and x1 <= right
                apart = y1 <= top or bottom <= y0 or x1 <= left or right <= x0
                assert inside or apart, (tiles, placed)
        exact += len(set(tiles) & set(placed))
    assert exact >= 17, exact  # 17 of 24 photos cut out exactly (measured: 17)
    for photo in photos[:6]:
        assert mosaic_tiles(photo) == [(0, 0, *photo.shape[-2:])]
    assert mosaic_tiles(torch.zeros(3, 40, 50)) == [(0, 0, 40, 50)]


def test_benign_photos_are_never_cut(kit):
    """No bundled victim or benchmark photo, full size or downscaled 4x, reads as a mosaic."""
    from imgsteal.data.images import load_image
    from imgsteal.data.layouts import resolve_images

    for spec in ("demo:victim_photos", "demo:benchmark_photos"):
        for path in resolve_images(spec):
            image = load_image(path)
            assert len(mosaic_tiles(image)) == 1, path.name
    for photo in _downscaled("demo:victim_photos") + _downscaled("demo:benchmark_photos"):
        assert len(mosaic_tiles(photo)) == 1


def test_a_packed_query_counts_as_the_images_it_carries():
    """The 59 attacker photos packed into 512 x 512 mosaics are 2 requests: counted by request the key
    is never flagged; counted by image it is flagged by its first request."""
    from imgsteal.attack.packing import compose, shelf_pack

    photos = _downscaled("demo:attacker")
    mosaics = [compose(layout, photos) for layout in shelf_pack([(x.shape[-1], x.shape[-2]) for x in photos], 512 * 512)]
    assert len(mosaics) == 2
    at, alert = _first_alert(ExtractionMonitor(MonitorConfig()), [query_image_features(m) for m in mosaics])
    assert at == 1 and alert.queries == 1 and alert.statistic >= 20
    off = MonitorConfig(mosaics=False)
    monitor = ExtractionMonitor(off)
    assert _first_alert(monitor, [query_image_features(m, off.mosaics) for m in mosaics]) == (None, None)
    assert monitor.stats(1)["images"] == 2 and monitor.stats(1)["queries"] == 2


def test_server_logs_the_alert_and_applies_the_policy(tmp_path, kit, victim):
    """Monitor on, revoke policy: the 4th distinct image flags the key; its answer is withheld (403), its
    row carries the alert, `keys list` shows it, the next request gets 403 too. Throttle policy: 429."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from imgsteal.cli import app
    from imgsteal.victim.accounts import AccountsDB
    from imgsteal.victim.server import ServerSettings, create_app

    for policy, refused in (("revoke", 403), ("throttle", 429)):
        db = tmp_path / f"{policy}.sqlite"
        settings = ServerSettings(rate_per_s=0, monitor=True, monitor_policy=policy, monitor_min_images=2,
                                  monitor_distinct=4, monitor_throttle_rate=0.01)
        with AccountsDB(db) as accounts:
            key = accounts.create_key("mallory")[1]
            honest = accounts.create_key("alice")[1]
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "image/png"}
        with TestClient(create_app(victim, db, settings)) as client:
            codes = [client.post("/v1/translate", content=kit.png_bytes(seed=s), headers=headers).status_code
                     for s in range(5)]
            same = kit.png_bytes(seed=0)
            alice = {"Authorization": f"Bearer {honest}", "Content-Type": "image/png"}
            assert [client.post("/v1/translate", content=same, headers=alice).status_code for _ in range(6)] == [200] * 6
        assert codes == [200, 200, 200, refused, refused], policy
        with AccountsDB(db) as accounts:
            rows = accounts.queries("mallory")
            assert [r["monitor"] for r in rows] == [None, None, None, "alert:distinct=4 (answer withheld)"]
            keys = {k.name: k for k in accounts.list_keys()}
        assert keys["mallory"].alert == f"distinct=4 after 4 queries ({policy})" and keys["alice"].alert is None
        assert keys["mallory"].revoked == (policy == "revoke")
        listed = CliRunner().invoke(app, ["keys", "list", "--db", str(db)])
        assert listed.exit_code == 0 and f"distinct=4 after 4 queries ({policy})" in listed.stdout


def test_an_account_flagged_together_loses_all_its_keys(tmp_path, kit, victim):
    """Two keys of account acme send 2 distinct images each (distinct 4): neither key is flagged, the
    account is at the 4th, whose answer is withheld; with revoke, every key of acme (a third one too, never used) gets 403 and is
    revoked in the database; a key of another account goes on; `keys list` shows the account's alert."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from imgsteal.cli import app
    from imgsteal.victim.accounts import AccountsDB
    from imgsteal.victim.server import ServerSettings, create_app

    db = tmp_path / "api.sqlite"
    settings = ServerSettings(rate_per_s=0, monitor=True, monitor_policy="revoke", monitor_min_images=2, monitor_distinct=4)
    with AccountsDB(db) as accounts:
        tokens = {name: accounts.create_key(name, account)[1]
                  for name, account in (("a1", "acme"), ("a2", "acme"), ("a3", " acme "), ("b1", "other"))}
    def post(client, name, seed):
        return client.post("/v1/translate", content=kit.png_bytes(seed=seed),
                           headers={"Authorization": f"Bearer {tokens[name]}", "Content-Type": "image/png"}).status_code
    with TestClient(create_app(victim, db, settings)) as client:
        codes = [post(client, name, seed) for name, seed in (("a1", 0), ("a2", 1), ("a1", 2), ("a2", 3))]
        after = {name: post(client, name, 10) for name in ("a1", "a2", "a3", "b1")}
    assert codes == [200, 200, 200, 403] and after == {"a1": 403, "a2": 403, "a3": 403, "b1": 200}
    with AccountsDB(db) as accounts:
        assert [r["monitor"] for r in accounts.queries("a2")] == [None, "alert:distinct=4 account=acme (answer withheld)"]
        keys = {k.name: k for k in accounts.list_keys()}
    assert {n: k.account for n, k in keys.items()} == {"a1": "acme", "a2": "acme", "a3": "acme", "b1": "other"}
    assert all(keys[n].revoked for n in ("a1", "a2", "a3")) and not keys["b1"].revoked
    assert keys["a3"].alert == "account acme: distinct=4 after 4 queries (revoke)" and keys["b1"].alert is None
    listed = CliRunner().invoke(app, ["keys", "list", "--db", str(db)])
    assert listed.exit_code == 0 and "account acme: distinct=4 after 4 queries (revoke)" in listed.stdout
    made = CliRunner().invoke(app, ["keys", "create", "--name", "c1", "--account", "acme", "--db", str(db)])
    assert made.exit_code == 0
    with AccountsDB(db) as accounts:
        assert {k.name: k.account for k in accounts.list_keys()}["c1"] == "acme"


def test_monitor_is_off_by_default_and_settings_are_validated():
    from pydantic import ValidationError

    from imgsteal.victim.server import ServerSettings

    assert ServerSettings().monitor_config() is None
    assert ServerSettings(monitor=True).monitor_config() == MonitorConfig()
    with pytest.raises(ValidationError):
        ServerSettings(monitor_policy="shout")
    with pytest.raises(ValidationError):
        ServerSettings(monitor_history=2)


def test_a_database_from_before_the_monitor_gets_the_column(tmp_path):
    import sqlite3

    from imgsteal.victim.accounts import AccountsDB, QueryRecord

    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as old:
        old.executescript("""
            CREATE TABLE api_keys (key_id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
                public_id TEXT NOT NULL UNIQUE, salt TEXT NOT NULL, key_hash TEXT NOT NULL, created_at REAL NOT NULL,
                revoked_at REAL);
            CREATE TABLE query_log (query_id INTEGER PRIMARY KEY AUTOINCREMENT, key_id INTEGER NOT NULL,
                queried_at REAL NOT NULL, input_sha256 TEXT NOT NULL, input_bytes INTEGER NOT NULL,
                input_width INTEGER NOT NULL, input_height INTEGER NOT NULL, output_sha256 TEXT NOT NULL,
                latency_ms REAL NOT NULL, defense TEXT);""")
    with AccountsDB(db) as accounts:
        key = accounts.create_key("old")[0]
        accounts.log_queries([QueryRecord(key.key_id, 0.0, "a" * 64, 1, 1, 1, "b" * 64, 1.0, monitor="alert:distinct=20")])
        assert accounts.queries()[0]["monitor"] == "alert:distinct=20"
        assert accounts.list_keys()[0].account is None
        accounts.create_key("new", "acme")
    with AccountsDB(db) as again:  # opening twice adds nothing twice
        assert again.list_keys()[0].alert is None and again.list_keys()[1].account == "acme"


def test_a_packed_harvest_gets_none_of_its_answers_under_revoke(tmp_path, victim):
    """The 59 attacker photos in two 512 x 512 mosaics, default monitor, revoke policy: the first mosaic
    carries 20+ new photos, so the query that shows the extraction is itself refused (403) and logged as
    withheld; the second is refused too. Under `log` both are answered, the alert at the first."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from imgsteal.attack.packing import compose, shelf_pack
    from imgsteal.victim.accounts import AccountsDB
    from imgsteal.victim.server import ServerSettings, create_app

    photos = _downscaled("demo:attacker")
    mosaics = [encode_png(compose(layout, photos))
               for layout in shelf_pack([(x.shape[-1], x.shape[-2]) for x in photos], 512 * 512)]
    for policy, codes_wanted, note in (("revoke", [403, 403], " (answer withheld)"), ("log", [200, 200], "")):
        db = tmp_path / f"{policy}.sqlite"
        with AccountsDB(db) as accounts:
            token = accounts.create_key("packer")[1]
        settings = ServerSettings(rate_per_s=0, monitor=True, monitor_policy=policy)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "image/png"}
        with TestClient(create_app(victim, db, settings)) as client:
            codes = [client.post("/v1/translate", content=m, headers=headers).status_code for m in mosaics]
        assert codes == codes_wanted, policy
        with AccountsDB(db) as accounts:
            monitor = [r["monitor"] for r in accounts.queries("packer")]
        assert monitor[0] is not None and monitor[0].startswith("alert:distinct=") and monitor[0].endswith(note)
