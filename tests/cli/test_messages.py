"""Messages a newcomer meets: they name what the user gave and say what to do."""

import re

import pytest
import torch
from typer.testing import CliRunner

from imgsteal.cli import app
from imgsteal_testkit import write_images

runner = CliRunner()


def fails(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    return result.output


@pytest.mark.parametrize("kind", ["pickled object", "not a torch file"])
def test_a_bad_inception_weights_file_gets_imgsteals_message(tmp_path, kind):
    write_images(tmp_path / "a", 2, size=(16, 16))
    write_images(tmp_path / "b", 2, size=(16, 16), seed=1)
    bad = tmp_path / "weights.pth"
    if kind == "pickled object":
        torch.save({"model": object()}, bad)
    else:
        bad.write_bytes(b"this is not a weights file")
    out = fails("fid", tmp_path / "a", tmp_path / "b", "--inception-weights", bad, "--no-cache")
    assert str(bad) in out and "--inception-weights" in out
    assert "weights_only" not in out and "WeightsUnpickler" not in out
