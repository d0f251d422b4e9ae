"""Ctrl-C during a harvest says, in one line, how many pairs are stored and that re-running resumes."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from imgsteal.cli import app
from imgsteal.data.pairs import PairStore
from imgsteal_testkit import write_images

runner = CliRunner()


def test_ctrl_c_says_how_many_pairs_are_stored_and_a_rerun_resumes(tmp_path, sr_victim, monkeypatch):
    write_images(tmp_path / "x", 4, size=(32, 32))
    out = tmp_path / "pairs"
    args = ["harvest", "--oracle", str(sr_victim), "--inputs", str(tmp_path / "x"), "--out", str(out), "--downscale", "4"]
    add = PairStore.add

    def add_then_interrupt(self, *a, **k):  # the user presses Ctrl-C once the second pair is stored
        result = add(self, *a, **k)
        if len(self) == 2:
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(PairStore, "add", add_then_interrupt)
    interrupted = runner.invoke(app, args)
    assert interrupted.exit_code == 130, interrupted.output
    lines = [line for line in interrupted.stderr.splitlines() if line.startswith("interrupted")]
    assert lines == [f"interrupted: 2 pairs stored in {out}; run the same command again to resume "
                     "(stored inputs are not sent again)"], interrupted.stderr[-600:]
    assert "Traceback" not in interrupted.output
    monkeypatch.setattr(PairStore, "add", add)
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout[again.stdout.index("{"):])
    assert report["already_stored"] == 2 and report["queried"] == 2 and report["stored_pairs"] == 4
