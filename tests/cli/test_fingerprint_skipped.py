"""`fingerprint train` reports a broken input once and counts the skipped files in its summary."""

from __future__ import annotations

from typer.testing import CliRunner

from imgsteal.cli import app
from imgsteal_testkit import write_images

runner = CliRunner()


def test_a_broken_image_is_reported_once_and_counted(tmp_path):
    write_images(tmp_path / "img", 4, size=(40, 40))
    broken = tmp_path / "img" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (tmp_path / "img" / "notes.txt").write_text("not an image")
    result = runner.invoke(app, ["fingerprint", "train", "--images", str(tmp_path / "img"), "--out", str(tmp_path / "fp"),
                                 "--bits", "8", "--size", "32", "--steps", "2", "--batch-size", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "broken.png" in line]
    assert len(lines) == 1 and lines[0].startswith(f"skipped {broken}"), result.stderr[-800:]
    assert "skipped files: 1 unreadable, 1 not images by extension" in result.stdout
