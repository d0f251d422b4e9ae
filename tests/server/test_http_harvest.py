"""Harvesting over HTTP end to end: the demo's served oracle, and a harvest killed with SIGKILL and
resumed (every input answered exactly once in the store; the server answered at most inputs +
concurrency queries)."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

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


@pytest.mark.slow  # over 10 s on the busy 2-core box (subprocesses / served model / reference features)
def test_served_oracle_harvests_over_http_and_stops_the_server(tiny_victim, tmp_path):
    from imgsteal.pipeline.oracle import open_oracle

    inputs = write_inputs(tmp_path / "adversary", 6, size=32)
    with open_oracle(tiny_victim, transport="http", concurrency=3) as oracle, PairStore(tmp_path / "pairs") as store:
        url = oracle.url
        assert url.startswith("http://127.0.0.1:")
        assert oracle.info()["kind"] == "sr"
        report = harvest(oracle, inputs, store, downscale=2, progress=False)
        assert report.queried == 6 and report.failed == 0
        x, y = store.load_pair(store.records()[0])
        assert x.shape == (3, 16, 16) and y.shape == (3, 64, 64)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/healthz", timeout=2)


@pytest.mark.slow  # over 10 s on the busy 2-core box (subprocesses / served model / reference features)
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


# -- the API key stays out of process listings (issue 16 item 6) ------------------------------------

KEY = "isk_1_0123456789abcdef"


@contextlib.contextmanager
def keyed_echo_api() -> Iterator[tuple[str, list[str]]]:
    """An imgsteal-shaped API on 127.0.0.1 that echoes images for `Bearer KEY`; yields (url, keys seen)."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def _reply(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(self.headers.get("Authorization", ""))
            if self.headers.get("Authorization") != f"Bearer {KEY}":
                self._reply(401, b'{"error": "missing or unknown API key"}', "application/json")
            elif self.path == "/v1/info":
                self._reply(200, b'{"task": "echo", "scale": 1}', "application/json")
            else:
                self._reply(200, body, "image/png")

        do_GET = do_POST = _serve

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def run_harvest_cli(tmp_path: Path, url: str, *extra: str, env: dict | None = None):
    from typer.testing import CliRunner

    from imgsteal.cli import app

    if not (tmp_path / "adversary").exists():
        write_inputs(tmp_path / "adversary", 2, size=8)
    out = tmp_path / f"pairs{len(list(tmp_path.glob('pairs*')))}"
    return CliRunner().invoke(app, ["harvest", "--oracle", url, "--inputs", str(tmp_path / "adversary"),
                                    "--out", str(out), *extra], env={"IMGSTEAL_API_KEY": None, **(env or {})})


def key_file(tmp_path: Path, mode: int, key: str = KEY) -> Path:
    path = tmp_path / f"key-{mode:o}"
    path.write_text(key + "\n")
    path.chmod(mode)
    return path


def test_harvest_reads_the_key_from_the_environment_without_a_warning(tmp_path):
    with keyed_echo_api() as (url, seen):
        result = run_harvest_cli(tmp_path, url, env={"IMGSTEAL_API_KEY": KEY})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["queried"] == 2
    assert set(seen) == {f"Bearer {KEY}"}
    assert "warning" not in result.stderr and KEY not in result.output


def test_harvest_reads_an_owner_only_key_file_before_the_environment(tmp_path):
    with keyed_echo_api() as (url, seen):
        result = run_harvest_cli(tmp_path, url, "--api-key-file", str(key_file(tmp_path, 0o600)),
                                 env={"IMGSTEAL_API_KEY": "isk_9_stale"})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["queried"] == 2 and set(seen) == {f"Bearer {KEY}"}
    assert "warning" not in result.stderr


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_others_may_read_is_refused_before_anything_is_sent(tmp_path, mode):
    with keyed_echo_api() as (url, seen):
        result = run_harvest_cli(tmp_path, url, "--api-key-file", str(key_file(tmp_path, mode)))
    assert result.exit_code == 2
    assert f"mode {mode:04o}" in result.stderr and "chmod 600" in result.stderr
    assert seen == [] and KEY not in result.output


def test_a_key_on_the_command_line_works_with_a_warning_on_stderr(tmp_path):
    with keyed_echo_api() as (url, seen):
        result = run_harvest_cli(tmp_path, url, "--api-key", KEY)
        both = run_harvest_cli(tmp_path, url, "--api-key", KEY, "--api-key-file", str(key_file(tmp_path, 0o600)))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["queried"] == 2
    assert "process listings" in result.stderr and "IMGSTEAL_API_KEY" in result.stderr
    assert "warning" not in result.stdout
    assert both.exit_code == 2 and "not both" in both.stderr


def test_an_empty_key_file_is_a_clear_error(tmp_path):
    with keyed_echo_api() as (url, seen):
        result = run_harvest_cli(tmp_path, url, "--api-key-file", str(key_file(tmp_path, 0o600, key="")))
        missing = run_harvest_cli(tmp_path, url, "--api-key-file", str(tmp_path / "nope"))
    assert result.exit_code == 2 and "one line" in result.stderr
    assert missing.exit_code == 2 and "no such file" in missing.stderr
    assert seen == []


def test_a_key_no_header_can_carry_is_refused_without_showing_it(tmp_path):
    with keyed_echo_api() as (url, seen):
        padded = run_harvest_cli(tmp_path, url, env={"IMGSTEAL_API_KEY": f"  {KEY}\n"})
        broken = run_harvest_cli(tmp_path, url, env={"IMGSTEAL_API_KEY": "isk_1_secret part"})
    assert padded.exit_code == 0, padded.output  # surrounding whitespace is dropped
    assert broken.exit_code == 2 and "not shown" in broken.stderr and "secret" not in broken.output
    assert set(seen) == {f"Bearer {KEY}"}
