"""`surrogate train --resume` on a finished run says it was already complete (no "0.0 img/s")."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

from imgsteal.cli import app
from imgsteal.data.images import encode_png
from imgsteal.data.pairs import PairStore

runner = CliRunner()


def test_resume_of_a_finished_run_says_nothing_was_trained(tmp_path):
    gen = torch.Generator().manual_seed(0)
    with PairStore(tmp_path / "pairs") as store:
        for _ in range(2):
            x = torch.rand(3, 12, 12, generator=gen)
            store.add(encode_png(x), encode_png(torch.rand(3, 48, 48, generator=gen)), source=None,
                      input_size=(12, 12), output_size=(48, 48), cost_usd=0.0)
    args = ["surrogate", "train", "--store", str(tmp_path / "pairs"), "--out", str(tmp_path / "fa"), "--steps", "2",
            "--batch-size", "2", "--patch", "8", "--n-blocks", "1", "--channels", "4", "--device", "cpu"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "(2 steps, " in first.output and "img/s" in first.output
    again = runner.invoke(app, [*args, "--resume"])
    assert again.exit_code == 0, again.output
    assert "the run was already complete at 2 steps; nothing was trained" in again.output
    assert "img/s" not in again.output
