"""Files `imgsteal serve` and the runs leave in a checkout are git-ignored."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_serves_default_database_its_wal_files_and_runs_are_ignored():
    paths = ["imgsteal-api.sqlite", "imgsteal-api.sqlite-wal", "imgsteal-api.sqlite-shm", "runs/demo/report.html"]
    result = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=ROOT, capture_output=True, text=True)
    assert sorted(result.stdout.split()) == sorted(paths)
