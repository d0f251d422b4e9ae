"""An experiment config takes an imported public victim instead of training one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from imgsteal.cli import app
from imgsteal_testkit import tiny_sr_config
from victim_import import reference_nets as ref

runner = CliRunner()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["basicsr", "onnx"])
def test_tiny_sr_experiment_attacks_an_imported_victim(tmp_path: Path, kind: str, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    if kind == "basicsr":
        torch.save({"params_ema": ref.msrresnet_state(nf=8, nb=1)}, tmp_path / "net_g.pth")
        source, extra = tmp_path / "net_g.pth", []
    else:
        pytest.importorskip("onnxruntime")
        import warnings

        from imgsteal.models import build_model

        torch.manual_seed(0)
        net = build_model("msrresnet", channels=8, n_blocks=1).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (torch.rand(1, 3, 12, 12),), str(tmp_path / "sr.onnx"), input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "a", 3: "b"}},
                              dynamo=False)
        source, extra = tmp_path / "sr.onnx", ["--scale", "4"]
    victim = tmp_path / "data" / "victims" / "srgan_x4"
    result = runner.invoke(app, ["victim", "import", str(source), "--out", str(victim), *extra])
    assert result.exit_code == 0, result.output
    config = tiny_sr_config(tmp_path / "data", fractions=[1.0])
    config["tasks"][0]["victim"] = {"model": str(victim)}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = runner.invoke(app, ["experiment", "run", str(path), "--out", str(tmp_path / "exp"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "8 queries" in result.output and (tmp_path / "exp" / "results.json").exists()
    # the victim's answers in the report are the imported network's
    from imgsteal.data.images import load_image
    from imgsteal.victim.inference import load_translator

    gallery = tmp_path / "exp" / "tasks" / "sr" / "gallery"
    expected = load_translator(victim, "cpu").translate(load_image(gallery / "00_input.png"))
    # (the gallery's input PNG is a quantised copy of the float query: allow one more level)
    assert (load_image(gallery / "00_victim.png") - expected).abs().max() <= 2 / 255
