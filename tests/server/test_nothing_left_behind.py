"""Commands that fail on their arguments leave no database, pair store or folder behind."""

import contextlib
import http.server
import socket
import threading

import pytest
from typer.testing import CliRunner

from imgsteal.cli import app
from imgsteal.data.pairs import PairStore
from imgsteal_testkit import write_images

runner = CliRunner()


def fails_cleanly(cwd, *args) -> str:
    """Run `imgsteal ARGS` in the empty folder `cwd`; it must fail and leave `cwd` as it was."""
    before = sorted(p.name for p in cwd.iterdir())
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code != 0, result.output
    assert sorted(p.name for p in cwd.iterdir()) == before, result.output
    return result.output


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def test_serve_with_a_wrong_model_creates_no_database(empty_cwd):
    out = fails_cleanly(empty_cwd, "serve", "--model", "WRONG", "--port", 0)
    assert "WRONG" in out and "Traceback" not in out
    fails_cleanly(empty_cwd, "serve", "--model", "WRONG", "--port", 0, "--defense", "watermark")  # nor its trigger DB


def test_serve_with_a_wrong_defence_creates_no_database(empty_cwd, tiny_victim):
    out = fails_cleanly(empty_cwd, "serve", "--model", tiny_victim, "--port", 0, "--defense", "nosuch")
    assert "nosuch" in out


def test_serve_on_a_port_in_use_says_so_and_creates_no_database(empty_cwd, tiny_victim):
    with socket.socket() as taken:  # another server holds the port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for extra in ([], ["--defense", "watermark"]):  # nor the watermark's trigger DB
            out = fails_cleanly(empty_cwd, "serve", "--model", tiny_victim, "--port", port, *extra)
            assert f"cannot listen on 127.0.0.1:{port}" in out and "--port" in out, out
            assert "Traceback" not in out
        out = fails_cleanly(empty_cwd, "serve", "--model", tiny_victim, "--port", port, "--db", "keys/api.sqlite",
                            "--port-file", "port.txt")
        assert "cannot listen" in out


def test_the_server_library_binds_before_it_opens_its_database(tmp_path, tiny_translator):
    from imgsteal.errors import ImgstealError
    from imgsteal.victim.server import serve

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ImgstealError, match="cannot listen"):
            serve(tiny_translator, tmp_path / "api.sqlite", port=taken.getsockname()[1], port_file=tmp_path / "port")
    assert list(tmp_path.iterdir()) == []


class _RefusingHandler(http.server.BaseHTTPRequestHandler):
    """An API that refuses every key, as imgsteal's does an unknown one (401, JSON detail)."""

    def _refuse(self):
        body = b'{"detail": "invalid API key"}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _refuse

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def refusing_api():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RefusingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_harvest_with_a_refused_key_leaves_no_store(empty_cwd, tmp_path, monkeypatch):
    write_images(tmp_path / "adv", 2, size=(16, 16))
    monkeypatch.setenv("IMGSTEAL_API_KEY", "isk_not_a_real_key")
    with refusing_api() as url:
        out = fails_cleanly(empty_cwd, "harvest", "--oracle", url, "--inputs", tmp_path / "adv", "--out", "pairs")
    assert "refused the API key" in out


def test_harvest_from_an_unreachable_server_leaves_no_store(empty_cwd, tmp_path, monkeypatch):
    from imgsteal.attack.http_oracle import RetryPolicy

    monkeypatch.setattr(RetryPolicy, "backoff", lambda self, retry: 0.0)  # retry at once: the test stays fast
    write_images(tmp_path / "adv", 2, size=(16, 16))
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = fails_cleanly(empty_cwd, "harvest", "--oracle", f"http://127.0.0.1:{port}", "--inputs", tmp_path / "adv",
                        "--out", "pairs")
    assert "cannot reach" in out


def test_harvest_with_a_missing_victim_or_inputs_leaves_no_store(empty_cwd, tmp_path, tiny_victim):
    write_images(tmp_path / "adv", 2, size=(16, 16))
    fails_cleanly(empty_cwd, "harvest", "--oracle", "runs/nosuch", "--inputs", tmp_path / "adv", "--out", "pairs")
    fails_cleanly(empty_cwd, "harvest", "--oracle", tiny_victim, "--inputs", "nosuch-folder", "--out", "pairs")


def test_a_pair_store_is_created_by_its_first_pair_and_reads_empty_before(tmp_path):
    root = tmp_path / "store"
    with PairStore(root) as store:
        assert len(store) == 0 and not store.has("0" * 64) and store.records() == [] and store.total_cost() == 0
        assert not root.exists()
        store.add(b"in", b"out", source="x", input_size=(1, 1), output_size=(4, 4), cost_usd=0.5)
        assert (root / "manifest.sqlite").is_file() and len(store) == 1
    with PairStore(root, create=False) as store:
        assert len(store) == 1 and store.total_cost() == 0.5

