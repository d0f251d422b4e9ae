"""`imgsteal harvest` on a folder with a broken image and a text file: one plain line each, counted."""

import json

from typer.testing import CliRunner

from imgsteal.cli import app
from imgsteal_testkit import make_sr_model, write_images


def test_harvest_reports_each_skipped_file_in_one_line_and_counts_them(tmp_path, sr_victim):
    write_images(tmp_path / "adv", 3, size=(32, 32))
    (tmp_path / "adv" / "broken.png").write_bytes(b"GIF89a but not really")
    (tmp_path / "adv" / "notes.txt").write_text("where the photos came from")
    result = CliRunner().invoke(app, ["harvest", "--oracle", str(sr_victim), "--inputs", str(tmp_path / "adv"),
                                      "--out", str(tmp_path / "pairs"), "--downscale", "4"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert report["queried"] == 3 and report["unreadable"] == 1 and report["not_images"] == 1
    lines = [line for line in result.stderr.splitlines() if "broken.png" in line or "notes.txt" in line]
    assert lines == [
        f"left out 1 file(s) under {tmp_path / 'adv'} that are not images by extension"
        " (.png, .jpg, .jpeg, .webp, .bmp): notes.txt",
        f"skipped {tmp_path / 'adv' / 'broken.png'}: not a readable image (unknown format or not an image)",
    ]
    for bad in ("Warning", "warnings.warn", "object at 0x"):
        assert bad not in result.stderr


def test_evaluate_names_each_skipped_test_file_and_sums_them_up(tmp_path):
    victim = make_sr_model(tmp_path / "victim" / "model.safetensors")
    surrogate = make_sr_model(tmp_path / "fa" / "model.safetensors", seed=1, role="surrogate")
    write_images(tmp_path / "test", 2, size=(32, 32))
    (tmp_path / "test" / "broken.png").write_bytes(b"not a png")
    (tmp_path / "test" / "notes.txt").write_text("about the test set")
    result = CliRunner().invoke(app, ["evaluate", "--task", "sr", "--victim", str(victim), "--surrogate", str(surrogate),
                                      "--test", f"T={tmp_path / 'test'}", "--out", str(tmp_path / "ev"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert sum("broken.png" in line for line in result.stderr.splitlines()) == 1
    assert "input files skipped: 1 unreadable, 1 not images by extension (each named above)" in result.stdout
