"""ONNX and TorchScript victims: the contract declared on import (range, channel order, scale,
fixed size) is applied around the raw network, so imgsteal still sees [0, 1] RGB images."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from imgsteal.errors import CheckpointError
from imgsteal.victim.formats import ImportOptions, import_model
from imgsteal.victim.inference import load_translator


class TanhSR(nn.Module):
    """A x2 SR net in the [-1, 1], BGR convention (as some exported models are)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 12, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(nn.functional.pixel_shuffle(self.conv(x), 2))


def _expected(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[0, 1] RGB -> the net in [-1, 1] BGR -> back to [0, 1] RGB (computed here, independently)."""
    with torch.no_grad():
        y = net(x[:, [2, 1, 0]] * 2 - 1)
    return ((y[:, [2, 1, 0]] + 1) / 2).clamp(0, 1)


def _export_onnx(net: nn.Module, path, fixed: int | None = None) -> None:
    pytest.importorskip("onnxruntime")
    size = fixed or 16
    dynamic = None if fixed else {"x": {0: "n", 2: "h", 3: "w"}, "y": {0: "n", 2: "h2", 3: "w2"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.rand(1, 3, size, size),), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes=dynamic, dynamo=False)


def test_onnx_model_with_declared_contract(tmp_path):
    net = TanhSR()
    _export_onnx(net, tmp_path / "sr.onnx")
    options = ImportOptions(input_range=(-1, 1), channel_order="bgr")
    result = import_model(tmp_path / "sr.onnx", tmp_path / "run", options)
    assert result.info["runtime"] == "onnx" and result.info["scale"] == 2 and result.info["kind"] == "sr"  # scale probed
    assert (tmp_path / "run" / "model.onnx").exists()
    translator = load_translator(tmp_path / "run", "cpu")
    x = torch.rand(2, 3, 12, 20)
    assert (translator(x) - _expected(net, x)).abs().max() < 1e-5


def test_onnx_fixed_size_model_is_resized_to_its_input(tmp_path):
    net = TanhSR()
    _export_onnx(net, tmp_path / "fixed.onnx", fixed=16)
    result = import_model(tmp_path / "fixed.onnx", tmp_path / "run", ImportOptions(input_range=(-1, 1), channel_order="bgr"))
    assert result.info["input_size"] == 16
    translator = load_translator(tmp_path / "run", "cpu")
    x = torch.rand(3, 3, 16, 16)  # batch 3 through a batch-1 export: run image by image
    assert (translator(x) - _expected(net, x)).abs().max() < 1e-5
    assert translator(torch.rand(1, 3, 10, 12)).shape == (1, 3, 20, 24)


def test_torchscript_model(tmp_path):
    net = TanhSR().eval()
    torch.jit.script(net).save(str(tmp_path / "sr.pt"))
    result = import_model(tmp_path / "sr.pt", tmp_path / "run", ImportOptions(input_range=(-1, 1), channel_order="bgr", scale=2))
    assert result.info["runtime"] == "torchscript" and result.info["detected"]["format"] == "torchscript"
    x = torch.rand(1, 3, 9, 11)
    assert (load_translator(tmp_path / "run", "cpu")(x) - _expected(net, x)).abs().max() < 1e-5
    # used directly as a model file too (contract then defaults to [0, 1] RGB)
    direct = load_translator(tmp_path / "sr.pt", "cpu")
    with torch.no_grad():
        assert (direct(x) - net(x).clamp(0, 1)).abs().max() < 1e-5


def test_runtime_format_mismatch_and_bad_scale(tmp_path):
    torch.jit.script(TanhSR().eval()).save(str(tmp_path / "sr.pt"))
    with pytest.raises(CheckpointError, match="--format onnx, but the file is a torchscript model"):
        import_model(tmp_path / "sr.pt", tmp_path / "run", ImportOptions(format="onnx"))
    torch.save({"a": torch.zeros(1)}, tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match="--format torchscript, but the file is a torch weights file"):
        import_model(tmp_path / "w.pth", tmp_path / "run", ImportOptions(format="torchscript"))
    (tmp_path / "junk.bin").write_bytes(b"\x00garbage-not-a-model")
    with pytest.raises(CheckpointError, match="not a torch, safetensors, TorchScript or ONNX file"):
        import_model(tmp_path / "junk.bin", tmp_path / "run")


def test_onnx_with_external_data_is_refused(tmp_path):
    onnx = pytest.importorskip("onnx")
    _export_onnx(TanhSR(), tmp_path / "sr.onnx")
    model = onnx.load(str(tmp_path / "sr.onnx"))
    onnx.save(model, str(tmp_path / "split.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="split.data", size_threshold=0)
    with pytest.raises(CheckpointError, match="external-data files"):
        import_model(tmp_path / "split.onnx", tmp_path / "run")
