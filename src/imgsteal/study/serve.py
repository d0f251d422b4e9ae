"""Run the questionnaire with uvicorn on a socket bound up front, so port 0 (any free port) works
and the real address can be announced before the first request.

Access logs (`--log-level info`) never hold a credential: participant tokens in `/p/<token>` paths
are replaced by `<token>` and query strings are dropped (the admin key never travels in a URL).
"""

from __future__ import annotations

import logging
import re
import socket
from pathlib import Path
from typing import Callable

from imgsteal.errors import ImgstealError
from imgsteal.study.model import DB_FILE
from imgsteal.study.store import StudyStore

_TOKEN_PATH = re.compile(r"/p/[^/?#\s]+")


def redact_path(path: str) -> str:
    """A request path with participant tokens replaced and the query string dropped, for logs."""
    path = path.split("?", 1)[0]
    return _TOKEN_PATH.sub("/p/<token>", path)


class RedactingAccessFilter(logging.Filter):
    """A filter for uvicorn's access logger: rewrites the logged path with `redact_path`."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_path(args[2]), *args[3:])
        elif isinstance(record.msg, str):
            record.msg = _TOKEN_PATH.sub("/p/<token>", record.msg)
        return True


def install_log_redaction() -> None:
    """Attach RedactingAccessFilter to uvicorn's access logger (idempotent)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactingAccessFilter) for f in access.filters):
        access.addFilter(RedactingAccessFilter())


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free port. Raises ImgstealError if taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ImgstealError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def study_urls(study_dir: str | Path, host: str, port: int, root_path: str = "") -> tuple[str, str, str]:
    """(participant URL, researcher results URL, admin key) for a server on host:port.

    The results page asks for the admin key (kept in a cookie afterwards); it is never part of a URL."""
    shown_host = f"[{host}]" if ":" in host else host
    base = f"http://{shown_host}:{port}{root_path.rstrip('/')}"
    admin_key = StudyStore(Path(study_dir) / DB_FILE).admin_key()
    return f"{base}/", f"{base}/admin", admin_key


def serve_study(
    study_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    root_path: str = "",
    log_level: str = "warning",
    on_ready: Callable[[str, str, str], None] | None = None,
) -> None:
    """Serve the study until interrupted. `on_ready(participant_url, admin_url, admin_key)` runs once bound."""
    import uvicorn

    from imgsteal.study.app import create_app

    app = create_app(study_dir)
    sock = bind_socket(host, port)
    actual_port = sock.getsockname()[1]
    if on_ready is not None:
        on_ready(*study_urls(study_dir, host, actual_port, root_path))
    from imgsteal.victim.slow_clients import BodyDeadline, guarded_h11

    # Slow clients: headers within 10 s, bodies (small forms) within 30 s, idle keep-alive 5 s, 256 connections.
    config = uvicorn.Config(BodyDeadline(app, 30.0), root_path=root_path, log_level=log_level,
                            access_log=log_level in ("info", "debug"), lifespan="on", http=guarded_h11(10.0, 256),
                            timeout_keep_alive=5, limit_concurrency=257)
    install_log_redaction()  # after Config, which (re)configures uvicorn's loggers
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
