"""`imgsteal serve` stops promptly and tidily: the first SIGTERM stops accepting, a model call still
running is abandoned within a few seconds, the databases are closed (no -wal/-shm left) and the port
file is removed."""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request

from typer.testing import CliRunner

from imgsteal.cli import app
from imgsteal_testkit import png_bytes

runner = CliRunner()
SLOW_WIDTH = 23  # only requests of this width block in the model (memory planning runs other sizes)


def test_sigterm_during_a_model_call_stops_within_seconds_and_leaves_nothing(tmp_path, tiny_translator, monkeypatch):
    import imgsteal.victim.inference as inference

    in_model, release = threading.Event(), threading.Event()
    run = tiny_translator._run

    def slow_run(x):
        if x.shape[-1] == SLOW_WIDTH:
            in_model.set()
            release.wait(120)  # a model call of minutes (a full-size photo on a CPU)
        return run(x)

    monkeypatch.setattr(tiny_translator, "_run", slow_run)
    monkeypatch.setattr(inference, "load_translator", lambda *a, **k: tiny_translator)
    exits = []

    def fake_exit(code):  # exit_now_if_a_model_call_runs would end pytest itself
        exits.append(code)
        release.set()

    monkeypatch.setattr(os, "_exit", fake_exit)
    db, port_file = tmp_path / "api.sqlite", tmp_path / "port"
    key = runner.invoke(app, ["keys", "create", "--name", "a", "--db", str(db)]).output.strip().splitlines()[-1]
    answers, stopped_at = [], []

    def client():
        deadline = time.monotonic() + 60
        while not port_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        request = urllib.request.Request(f"http://127.0.0.1:{port_file.read_text()}/v1/translate",
                                         data=png_bytes(16, SLOW_WIDTH), method="POST",
                                         headers={"Authorization": f"Bearer {key}", "Content-Type": "image/png"})
        threading.Thread(target=lambda: answers.append(_status(request)), daemon=True).start()
        assert in_model.wait(60)
        stopped_at.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGTERM)

    sigterm_before = signal.getsignal(signal.SIGTERM)  # not always SIG_DFL: other libraries (Ray) set their own
    threading.Thread(target=client, daemon=True).start()
    result = runner.invoke(app, ["serve", "--model", "unused", "--port", "0", "--db", str(db), "--port-file",
                                 str(port_file), "--defense", "watermark", "--watermark-db", str(tmp_path / "wm.sqlite"),
                                 "--device", "cpu"])
    took = time.monotonic() - stopped_at[0]
    release.set()
    assert result.exit_code == 0, result.output
    assert took < 10, f"serve took {took:.1f} s to stop after SIGTERM"
    assert "stopped" in result.output and exits == [0]  # the abandoned call was not waited for
    assert not port_file.exists()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["api.sqlite", "wm.sqlite"], left  # no -wal / -shm: every connection closed cleanly
    assert signal.getsignal(signal.SIGTERM) is sigterm_before  # the handlers serve installed are gone


def _status(request) -> int:
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except Exception as exc:  # the connection is closed by the shutdown
        return getattr(exc, "code", -1)
