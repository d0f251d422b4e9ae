"""Start the victim's inference API in a subprocess on loopback, for the demo, tests and benchmarks.

`running_server(model)` runs `python -m imgsteal serve` on 127.0.0.1 with a free port (the server
binds port 0 and reports the port it got, so there is no race for it), waits for /healthz, and
stops the server (SIGTERM, then SIGKILL) on exit. The adversary reaches such a server through
`imgsteal.pipeline.oracle.open_oracle(model, transport="http")`, exactly as over the network.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx

from pydantic import BaseModel, ConfigDict, Field

from imgsteal.defenses.registry import DefenseSetup
from imgsteal.errors import ImgstealError
from imgsteal.files import atomic_write_text
from imgsteal.victim.server import ServerSettings

class ServiceConfig(BaseModel):
    """A whole service configuration: the server's limits and its output defences.

    `imgsteal serve --config FILE` reads it (JSON or YAML); `running_server` hands it over that way, so
    starting a server from code never rebuilds command-line flags by hand.
    """

    model_config = ConfigDict(extra="forbid")

    settings: ServerSettings = Field(default_factory=ServerSettings)
    defenses: DefenseSetup = Field(default_factory=DefenseSetup)


def load_service_config(path: str | Path) -> ServiceConfig:
    """Read a ServiceConfig file; ImgstealError naming the file and the invalid fields."""
    from imgsteal.config import load_yaml_config

    return load_yaml_config(path, ServiceConfig, "service config")


@dataclass
class RunningServer:
    """A served victim: its base URL, its keys/query-log database, the process and its log file."""

    url: str
    db_path: Path
    process: subprocess.Popen
    log_path: Path

    def create_key(self, name: str, account: str | None = None) -> str:
        """A new API key named `name`, of `account` if given (works while the server runs)."""
        from imgsteal.victim.accounts import AccountsDB

        with AccountsDB(self.db_path) as accounts:
            return accounts.create_key(name, account)[1]

    def queries(self, key_name: str | None = None) -> list[dict]:
        """The server's query log (answered queries), optionally of one key."""
        from imgsteal.victim.accounts import AccountsDB

        with AccountsDB(self.db_path) as accounts:
            return accounts.queries(key_name)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _wait_until_ready(process: subprocess.Popen, port_file: Path, log_path: Path, host: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    url = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            raise ImgstealError(f"the inference server exited with code {process.returncode}:\n{tail}")
        if url is None and port_file.exists():
            url = f"http://{host}:{int(port_file.read_text())}"
        if url is not None:
            try:
                if httpx.get(f"{url}/healthz", timeout=2.0).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
        time.sleep(0.1)
    raise ImgstealError(f"the inference server did not answer /healthz within {timeout_s:.0f} s (log: {log_path})")


def _stop(process: subprocess.Popen, grace_s: float = 15.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)  # uvicorn finishes in-flight requests and closes the log
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def running_server(
    model_path: str | Path,
    db_path: str | Path | None = None,
    *,
    device: str = "cpu",
    startup_timeout_s: float = 120.0,
    workdir: str | Path | None = None,
    config: ServiceConfig | None = None,
    log_level: str = "warning",
    **settings,
) -> Iterator[RunningServer]:
    """Serve `model_path` on 127.0.0.1 (free port) in a subprocess for the duration of the block.

    db_path: keys and query log (default: a temporary file, gone afterwards); workdir: where the port
    file, the service config and server.log go (default: a temporary folder); config: the server's
    settings and defences; settings: ServerSettings fields by name (e.g. rate_per_s=0, max_batch=4),
    applied over `config`.
    """
    config = config or ServiceConfig()
    if settings:
        merged = ServerSettings.model_validate({**config.settings.model_dump(), **settings})
        config = ServiceConfig(settings=merged, defenses=config.defenses)
    host = "127.0.0.1"
    with contextlib.ExitStack() as stack:
        work = Path(workdir) if workdir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="imgsteal-serve-")))
        work.mkdir(parents=True, exist_ok=True)
        db = Path(db_path) if db_path else work / "api.sqlite"
        port_file, log_path, config_path = work / "server.port", work / "server.log", work / "service.json"
        port_file.unlink(missing_ok=True)
        atomic_write_text(config_path, config.model_dump_json(indent=2))
        cmd = [sys.executable, "-m", "imgsteal", "serve", "--model", str(model_path), "--host", host, "--port", "0",
               "--db", str(db), "--device", device, "--port-file", str(port_file), "--config", str(config_path),
               "--log-level", log_level]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            url = _wait_until_ready(process, port_file, log_path, host, startup_timeout_s)
            yield RunningServer(url=url, db_path=db, process=process, log_path=log_path)
        finally:
            _stop(process)
