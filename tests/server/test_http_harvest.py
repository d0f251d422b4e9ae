"""Harvesting over HTTP end to end: the demo's served oracle, and a harvest killed with SIGKILL and
resumed (every input answered exactly once in the store; the server answered at most inputs +
concurrency queries)."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from imgsteal.attack.harvest import harvest, prepare_query
from imgsteal.data.images import sha256_bytes
from imgsteal.data.pairs import PairStore


def write_inputs(folder: Path, count: int, size: int = 24) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for i in range(count):
        path = folder / f"x{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def stored_count(store: Path) -> int:
    db = store / "manifest.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM queries").fetchone()[0]
    except sqlite3.OperationalError:  # created but schema not there yet
        return 0


def test_served_oracle_harvests_over_http_and_stops_the_server(tiny_victim, tmp_path):
    from imgsteal.victim.launch import served_oracle

    inputs = write_inputs(tmp_path / "adversary", 6, size=32)
    with served_oracle(tiny_victim, concurrency=3) as oracle, PairStore(tmp_path / "pairs") as store:
        url = oracle.url
        assert url.startswith("http://127.0.0.1:")
        assert oracle.info()["task"] == "sr"
        report = harvest(oracle, inputs, store, downscale=2, progress=False)
        assert report.queried == 6 and report.failed == 0
        x, y = store.load_pair(store.records()[0])
        assert x.shape == (3, 16, 16) and y.shape == (3, 64, 64)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/healthz", timeout=2)


def test_killed_harvest_resumes_with_every_input_answered_once(live_server, tmp_path):
    count, concurrency = 60, 4
    inputs = write_inputs(tmp_path / "adversary", count)
    expected = {sha256_bytes(prepare_query(p, None)[0]) for p in inputs}
    store = tmp_path / "pairs"
    key = live_server.create_key("killed-harvest")
    cmd = [sys.executable, "-m", "imgsteal", "harvest", "--oracle", live_server.url, "--api-key", key,
           "--inputs", str(tmp_path / "adversary"), "--out", str(store), "--concurrency", str(concurrency)]
    with open(tmp_path / "harvest1.log", "wb") as log:
        first = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while stored_count(store) < 3 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = stored_count(store)
    assert 3 <= killed_at < count, (tmp_path / "harvest1.log").read_text()[-2000:]

    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    log_rows = live_server.queries("killed-harvest")

    with PairStore(store, create=False) as pairs:
        records = pairs.records()
        assert len(records) == count
        assert {r.input_sha256 for r in records} == expected
        for r in records:
            x, y = pairs.load_pair(r)
            assert y.shape[-2:] == (4 * x.shape[-2], 4 * x.shape[-1])
    answered = {(row["input_sha256"], row["output_sha256"]) for row in log_rows}
    assert all((r.input_sha256, r.output_sha256) in answered for r in records)  # the store holds what was served
    assert {row["input_sha256"] for row in log_rows} == expected
    assert count <= len(log_rows) <= count + concurrency
