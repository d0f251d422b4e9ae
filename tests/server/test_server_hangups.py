"""Clients that hang up, and clients that trickle (issue 16 items 3 and 5), against the real server
(uvicorn with the service's own config, in a thread, on 127.0.0.1).

- A request whose client leaves while it waits for the model is dropped before the model runs;
  one whose client leaves while the model runs is computed but not logged as answered.
- Connections that trickle their headers or body (1 byte every 0.5 s) or send nothing are closed
  within the time-outs (set to 1-1.5 s here), while normal requests are still answered.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from imgsteal.victim.accounts import AccountsDB
from imgsteal.victim.server import ServerSettings, create_app, uvicorn_config


class SlowModel:
    """A 1x 'model' that takes `delay_s` per call once `slow` is set; counts the images it ran."""

    def __init__(self, delay_s: float = 0.6) -> None:
        self.delay_s = delay_s
        self.slow = False
        self.images_run = 0
        self.running = threading.Event()
        self.device = torch.device("cpu")

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if self.slow:
            self.images_run += len(batch)
            self.running.set()
            time.sleep(self.delay_s)
        return batch.clone()

    def info(self) -> dict:
        return {"kind": "sr", "scale": 1}


def png(side: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@contextlib.contextmanager
def live(app, settings: ServerSettings) -> Iterator[int]:
    import uvicorn

    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn_config(app, settings, "error"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def request_bytes(key: str, body: bytes) -> bytes:
    head = (f"POST /v1/translate HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: image/png\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def send(port: int, key: str, body: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(request_bytes(key, body))
    return s


def status_of(s: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1]) if data else 0


def test_hung_up_requests_are_dropped_before_the_model_and_not_logged(tmp_path: Path):
    model = SlowModel()
    settings = ServerSettings(rate_per_s=0, max_wait_ms=1, model_workers=1)
    db = tmp_path / "api.sqlite"
    app = create_app(model, db, settings)
    with AccountsDB(db) as accounts:
        keys = [accounts.create_key(f"k{i}")[1] for i in range(3)]
    model.slow = True
    with live(app, settings) as port:
        first = send(port, keys[0], png(16, 0))  # runs; its client leaves while the model works
        assert model.running.wait(10)
        queued = [send(port, keys[1 + i % 2], png(16, 1 + i)) for i in range(4)]  # wait behind it
        deadline = time.monotonic() + 10
        while app.state.service.batcher.waiting < 4:  # all four are queued for the model
            assert time.monotonic() < deadline, app.state.service.batcher.waiting
            time.sleep(0.01)
        for s in [first, *queued]:
            s.close()  # all five hang up
        deadline = time.monotonic() + 10
        while app.state.service.batcher.waiting or app.state.service.abandoned < 5:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.2)  # nothing else may reach the model
        assert model.images_run == 1
        stays = send(port, keys[2], png(16, 9))
        assert status_of(stays) == 200
        stays.close()
    service = app.state.service
    assert model.images_run == 2  # the first request and the one that stayed
    assert service.batcher.dropped == 4 and service.abandoned == 5
    with AccountsDB(db) as accounts:
        logged = accounts.queries()
    assert [q["key_name"] for q in logged] == ["k2"]  # only the answer actually sent


def closed_within(s: socket.socket, limit_s: float, trickle: bytes = b"", every_s: float = 0.5) -> tuple[float, bytes]:
    """Send `trickle` one byte every `every_s` until the server closes; (seconds until closed, bytes received)."""
    started = time.monotonic()
    s.settimeout(every_s)
    received, i = b"", 0
    while time.monotonic() - started < limit_s:
        if i < len(trickle):
            try:
                s.send(trickle[i:i + 1])
            except OSError:
                break
            i += 1
        try:
            chunk = s.recv(4096)
        except socket.timeout:
            continue
        except OSError:
            break
        if not chunk:
            break
        received += chunk
    else:
        return float("inf"), received
    return time.monotonic() - started, received


def test_trickling_and_idle_connections_are_closed_within_the_timeouts(tmp_path: Path):
    from imgsteal.victim.inference import Translator

    settings = ServerSettings(rate_per_s=0, header_timeout_s=1.0, body_timeout_s=1.5, keep_alive_s=1.0, max_connections=16)
    db = tmp_path / "api.sqlite"
    app = create_app(Translator(torch.nn.Identity(), kind="sr", scale=1), db, settings)
    with AccountsDB(db) as accounts:
        key = accounts.create_key("k")[1]
    body = png(16, 3)
    slow_headers = request_bytes(key, body)[:60]
    slow_body_head = request_bytes(key, body)[: -len(body)]
    results: dict[str, list] = {}

    def client(name: str, setup: bytes, trickle: bytes) -> None:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if setup:
            s.sendall(setup)
        results.setdefault(name, []).append(closed_within(s, 6.0, trickle))
        s.close()

    with live(app, settings) as port:
        threads = [threading.Thread(target=client, args=(name, setup, trickle)) for name, setup, trickle in [
            ("headers", b"", slow_headers), ("headers", b"", slow_headers),
            ("body", slow_body_head, body), ("body", slow_body_head, body),
            ("idle", b"", b""), ("idle", b"", b""),
        ]]
        for t in threads:
            t.start()
        time.sleep(0.3)
        ok = send(port, key, body)  # a normal client is served meanwhile
        assert status_of(ok) == 200
        ok.close()
        for t in threads:
            t.join(timeout=15)
        # keep-alive: an idle connection after an answer is closed too
        s = send(port, key, body)
        assert status_of(s) == 200
        after_answer, _ = closed_within(s, 6.0)
        s.close()
    print({k: [round(t, 2) for t, _ in v] for k, v in results.items()}, "keep-alive", round(after_answer, 2))
    for name, limit in (("headers", 1.0), ("body", 1.5), ("idle", 1.0)):
        for elapsed, received in results[name]:
            assert limit * 0.8 <= elapsed <= limit + 1.0, (name, elapsed)
            assert received.startswith(b"HTTP/1.1 408"), (name, received[:40])
    assert after_answer <= 1.0 + 1.0


def test_connections_beyond_the_cap_are_closed_at_accept(tmp_path: Path):
    from imgsteal.victim.inference import Translator

    settings = ServerSettings(rate_per_s=0, header_timeout_s=5.0, max_connections=3)
    app = create_app(Translator(torch.nn.Identity(), kind="sr", scale=1), tmp_path / "api.sqlite", settings)
    with live(app, settings) as port:
        held = [socket.create_connection(("127.0.0.1", port), timeout=2) for _ in range(3)]
        time.sleep(0.2)
        extra = socket.create_connection(("127.0.0.1", port), timeout=2)
        assert extra.recv(100) == b""  # closed at once
        extra.close()
        for s in held:
            s.close()
        time.sleep(0.2)
        again = socket.create_connection(("127.0.0.1", port), timeout=2)
        again.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(again) == 200
        again.close()
