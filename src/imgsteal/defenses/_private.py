"""Owner-only files for the defences' secrets: HMAC keys, trigger sets, fingerprints.

Secrets are created with mode 0600 from the first byte (os.open with the mode, never chmod after a
world-readable write), and an existing file with a looser mode is tightened before it is used.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

PRIVATE_MODE = 0o600


def is_private(path: str | Path) -> bool:
    """True when neither group nor others may read, write or execute `path`."""
    return stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0


def make_private(path: str | Path) -> None:
    """Tighten an existing file to owner-only (0600)."""
    os.chmod(path, PRIVATE_MODE)


def write_private(path: str | Path, data: bytes) -> Path:
    """Atomically write `data` to `path` as an owner-only (0600) file; creates parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return path


def read_private(path: str | Path) -> bytes:
    """Read a secret file, tightening its mode first if someone loosened it."""
    path = Path(path)
    if not is_private(path):
        make_private(path)
    return path.read_bytes()
