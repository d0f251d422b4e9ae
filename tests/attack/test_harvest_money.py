"""Money in the harvest's report is rounded for people: 6 significant digits, no float noise."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from imgsteal.attack.harvest import HarvestReport, format_usd
from imgsteal.cli import app
from imgsteal_testkit import write_images

runner = CliRunner()


def test_the_printed_report_rounds_money_to_six_significant_digits(tmp_path, sr_victim):
    write_images(tmp_path / "x", 3, size=(32, 32))
    result = runner.invoke(app, ["harvest", "--oracle", str(sr_victim), "--inputs", str(tmp_path / "x"), "--out",
                                 str(tmp_path / "pairs"), "--downscale", "4", "--price", "0.0045"])
    assert result.exit_code == 0, result.output
    raw = result.stdout[result.stdout.index("{"):]
    per_answer = 0.0045 * 32 * 32 / 65536  # 32x32 answers, priced per 256x256
    for field in ("spent_usd", "total_usd"):
        text = re.search(rf'"{field}": ([0-9.e-]+)', raw).group(1)
        assert text == "0.000210937", text  # 3 x 7.03125e-05 summed is 0.00021093749999999997 unrounded
        assert json.loads(raw)[field] == pytest.approx(3 * per_answer, rel=1e-5)


def test_report_and_progress_share_one_rounding():
    report = HarvestReport(spent_usd=0.0008437500000000001, total_usd=12.500000000000002, elapsed_s=1.23456789)
    assert report.as_dict()["spent_usd"] == 0.00084375 and report.as_dict()["total_usd"] == 12.5
    assert report.as_dict()["elapsed_s"] == 1.235
    assert format_usd(0.0008437500000000001) == "$0.00084375" and format_usd(12.500000000000002) == "$12.5"
