"""Writing files safely: every atomic write and every owner-only file in the toolkit goes through here.

- `atomic_write_bytes` / `atomic_write_text`: readers never see half a file (temp file in the same
  folder, fsync, rename); concurrent writers of the same bytes are harmless (last rename wins).
- `write_private` / `create_private_file` / `private_dir`: secrets (HMAC keys, trigger sets, API key
  hashes, fingerprints, study tokens) are owner-only (0600 files, 0700 folders) from the first byte:
  created with the mode, never chmod-ed after a world-readable write.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Callable, IO

PRIVATE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None], mode: int | None = None) -> Path:
    """Call `write(file)` on a temporary file beside `path`, fsync it and rename it onto `path`.

    mode: the new file's permission bits (e.g. 0o600); default: the process umask's. Creates parents.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)
        else:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes, mode: int | None = None) -> Path:
    """Write `data` to `path` atomically (see `atomic_write`)."""
    return atomic_write(path, lambda f: f.write(data), mode)


def atomic_write_text(path: str | Path, text: str, mode: int | None = None) -> Path:
    """Write UTF-8 `text` to `path` atomically (see `atomic_write`)."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode)


def is_private(path: str | Path) -> bool:
    """True when neither group nor others may read, write or execute `path`."""
    return stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0


def write_private(path: str | Path, data: bytes) -> Path:
    """Atomically write `data` as an owner-only (0600) file; creates parent folders."""
    return atomic_write_bytes(path, data, PRIVATE_MODE)


def make_private(path: str | Path) -> Path:
    """Tighten an existing secret file to owner-only (0600) if group or others have any access."""
    if not is_private(path):
        os.chmod(path, PRIVATE_MODE)
    return Path(path)


def read_private(path: str | Path) -> bytes:
    """Read a secret file, tightening its mode to 0600 first if someone loosened it."""
    return make_private(path).read_bytes()


def create_private_file(path: str | Path) -> Path:
    """Create an empty owner-only (0600) file at `path` (and its parents) unless it exists."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_MODE)
    except FileExistsError:
        return path
    os.close(fd)
    return path


def private_dir(path: str | Path) -> Path:
    """Create (or tighten) an owner-only (0700) folder for secrets; parents are created as usual."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
    os.chmod(path, PRIVATE_DIR_MODE)
    return path


def safe_name(name: str) -> str:
    """A file-name-safe version of a display name (letters, digits, - and _; others become _)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "unnamed"
